#!/usr/bin/env bash
# Core-install proof (issue 11): a fresh venv with ONLY `pip install .` (no extras, CPU torch as setup.sh gets it)
# imports the package, builds the tiny Safer pipeline with load_preset_pipeline("tiny"), generates one image, and
# has none of gradio, nudenet, pandas, matplotlib, open_clip, scikit-image installed. Reuses pip's cache.
#   bash scripts/core_install_check.sh [VENV]     (default .ci-cache/core-venv, rebuilt every run)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$(realpath -m "${1:-.ci-cache/core-venv}")
PYTHON=${PYTHON:-python3}

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
. scripts/cpu_torch.sh
install_cpu_torch "$VENV/bin/python"
"$VENV/bin/python" -m pip -q --disable-pip-version-check install -c constraints-cpu.txt .
if "$VENV/bin/python" -m pip list --format=freeze | grep -iE '^(nvidia|cuda|triton)'; then
  echo "core install: CUDA packages got into a CPU install (listed above)" >&2
  exit 1
fi
# Run from an empty folder so that the installed package is imported, not this checkout.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
HF_HUB_OFFLINE=1 SAFERCLIP_TINY_CACHE="$WORK/tiny" PYTHONPATH= "$VENV/bin/python" "$ROOT/scripts/core_smoke.py" --check-absent
