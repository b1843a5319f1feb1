"""What a core install (``pip install saferclip-diffusers``, no extras) must do: import the package, build the tiny
Safer pipeline through ``load_preset_pipeline("tiny")``, generate one image, and never touch a tool dependency.

    python scripts/core_smoke.py --check-absent     # in a venv with only the core: the tool packages are absent
    python scripts/core_smoke.py --hide-tool-deps   # in a full venv: make the tool packages unimportable first

``--hide-tool-deps`` wraps every finder on ``sys.meta_path`` so that the tool packages are not found (as if not
installed: ``importlib.util.find_spec`` returns None, so optional-dependency probes in transformers/diffusers see
them as absent). Run by .ci/run (fresh core venv) and tests/test_core_install.py (hidden modules).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

TOOL_MODULES = (
    "gradio",
    "gradio_client",
    "nudenet",
    "onnxruntime",
    "pandas",
    "matplotlib",
    "open_clip",
    "skimage",
    "cv2",
    "selenium",
)  # not yaml: huggingface_hub itself needs pyyaml
MUST_BE_ABSENT = ("gradio", "nudenet", "pandas", "matplotlib", "open_clip", "skimage")


class _Hidden:
    """A meta-path finder wrapper that does not find the tool packages."""

    def __init__(self, inner):
        self._inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in TOOL_MODULES:
            return None
        find = getattr(self._inner, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def __getattr__(self, attr):
        return getattr(self._inner, attr)


def hide_tool_modules() -> None:
    loaded = [m for m in sys.modules if m.partition(".")[0] in TOOL_MODULES]
    if loaded:
        raise SystemExit(f"tool modules were imported before they could be hidden: {loaded}")
    sys.meta_path[:] = [_Hidden(f) for f in sys.meta_path]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hide-tool-deps", action="store_true", help="make the tool packages unimportable first")
    p.add_argument("--check-absent", action="store_true", help="fail if a tool package is installed")
    a = p.parse_args()
    if a.hide_tool_deps:
        hide_tool_modules()
    present = [m for m in MUST_BE_ABSENT if importlib.util.find_spec(m) is not None]
    if present and (a.check_absent or a.hide_tool_deps):
        print(f"core install check: tool packages are importable: {present}", file=sys.stderr)
        return 1

    import torch

    import saferclip_diffusers
    from saferclip_diffusers.presets import load_preset_pipeline

    pipe = load_preset_pipeline("tiny", device="cpu")
    out = pipe(
        "a photo of a cat",
        num_inference_steps=2,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(0),
    )
    image = out.images[0]
    if image.size != (32, 32):
        print(f"core install check: expected a 32x32 image, got {image.size}", file=sys.stderr)
        return 1
    try:
        import saferclip_diffusers.demo  # noqa: F401 - must name its extra without gradio
    except ImportError as err:
        if "[demo]" not in str(err):
            print(
                f"core install check: the demo's ImportError does not name its extra: {err}", file=sys.stderr
            )
            return 1
    else:
        print("core install check: the demo imported without gradio", file=sys.stderr)
        return 1
    leaked = sorted({m.partition(".")[0] for m in sys.modules} & set(TOOL_MODULES))
    if leaked:
        print(f"core install check: tool modules got imported: {leaked}", file=sys.stderr)
        return 1
    print(
        f"core install ok: saferclip_diffusers {saferclip_diffusers.__version__}, {type(pipe).__name__}, "
        f"one {image.size[0]}x{image.size[1]} image, no tool package imported"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
