"""Thin entry point: `python eval/utility.py --help` (the same as `saferclip-utility`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout runs without installing
from saferclip_diffusers.cli.utility import main  # noqa: E402

sys.exit(main())
