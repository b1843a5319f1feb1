"""``python -m saferclip_diffusers.launch ARGS`` = ``accelerate launch ARGS``, with the host workaround first.

On a CPU-only host whose torchvision wheel is CUDA-linked, the ``accelerate`` console script dies while importing
(accelerate -> timm -> torchvision) before any project code can apply the workaround in
:mod:`saferclip_diffusers._compat`. This entry point applies it, then hands over to accelerate's own launcher.
On a normal host the two commands are the same.
"""

from __future__ import annotations

import sys

from . import _compat

_compat.patch_cpu_torchvision()


def main(argv: list[str] | None = None) -> None:
    from accelerate.commands.launch import launch_command, launch_command_parser

    parser = launch_command_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    launch_command(args)


if __name__ == "__main__":
    main()
