"""Train a safe text encoder: ``python train/train.py --config tiny --out runs/tiny`` (see saferclip_diffusers.cli.train)."""

import sys

from saferclip_diffusers.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
