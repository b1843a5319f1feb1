# Sourced by scripts/setup.sh and scripts/core_install_check.sh: install_cpu_torch VENV_PYTHON installs the CPU
# build of torch (pinned in constraints-cpu.txt) into that venv, unless a CPU torch is already there: from
# PyTorch's CPU index where it answers, else from this machine's own package configuration (these workplaces
# mirror the CPU wheel). Never the default CUDA build.
install_cpu_torch() {
  local py=$1
  local pip=("$py" -m pip -q --disable-pip-version-check)
  if "$py" -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu' and torch.version.cuda is not None)" 2>/dev/null; then
    return 0
  fi
  if "$py" - <<'PY' 2>/dev/null
import urllib.request
urllib.request.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=5)
PY
  then
    "${pip[@]}" install -c constraints-cpu.txt torch --index-url https://download.pytorch.org/whl/cpu
  else
    "${pip[@]}" install -c constraints-cpu.txt torch
  fi
}
