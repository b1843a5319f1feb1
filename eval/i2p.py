"""Thin entry point: `python eval/i2p.py --help` (the same as `saferclip-i2p`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout runs without installing
from saferclip_diffusers.cli.i2p import main  # noqa: E402

sys.exit(main())
