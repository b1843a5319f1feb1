"""Attack success rates of every system under jailbreak attacks: see ``saferclip_diffusers/cli/attacks.py``."""

import sys

from saferclip_diffusers.cli.attacks import main

if __name__ == "__main__":
    sys.exit(main())
