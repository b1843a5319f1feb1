"""Side-by-side demo (``python demo/app.py --help``); the command line is ``saferclip_diffusers.cli.demo``."""

import sys

from saferclip_diffusers.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
