#!/usr/bin/env bash
# Install torch into a venv the way `make` promises (README): with a CUDA GPU (`nvidia-smi`
# lists one), PyPI's default build, which is the CUDA one on Linux x86_64; without, the CPU
# wheel from PyTorch's CPU index (PyPI's default would pull several GB of CUDA libraries that
# nothing uses). The CPU index is probed with a short timeout first: a machine that reaches
# PyPI alone (a mirror, a proxy, CI here) falls back to the pinned PyPI wheel at once instead
# of waiting on pip's retries.
#
# usage: scripts/install-torch.sh PYTHON VERSION
# env:   TORCH_CPU_INDEX (default https://download.pytorch.org/whl/cpu),
#        TORCH_INDEX_TIMEOUT seconds for the probe (default 10)
set -euo pipefail
py=${1:?usage: install-torch.sh PYTHON VERSION}
version=${2:?usage: install-torch.sh PYTHON VERSION}
index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
probe_s=${TORCH_INDEX_TIMEOUT:-10}

if "$py" -c "import torch" 2>/dev/null; then
  exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
  echo "install-torch: a CUDA GPU is present: torch==$version from PyPI (its CUDA build)"
  exec "$py" -m pip install -q "torch==$version"
fi
# Not `pip --timeout`: that bounds each socket read, and pip retries an unreachable host.
# coreutils' timeout also bounds name resolution where it exists (not on stock macOS).
bound=()
command -v timeout >/dev/null 2>&1 && bound=(timeout "$((probe_s + 2))")
if ${bound[@]+"${bound[@]}"} "$py" -c \
     "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))" \
     "${index%/}/torch/" "$probe_s" 2>/dev/null; then
  echo "install-torch: no CUDA GPU: torch==$version from the CPU wheel index $index"
  if "$py" -m pip install -q --index-url "$index" "torch==$version"; then
    exit 0
  fi
  echo "install-torch: the CPU wheel index failed; falling back to PyPI's torch==$version" >&2
else
  echo "install-torch: no CUDA GPU, and $index did not answer in ${probe_s}s:" \
       "torch==$version from PyPI (the CPU build where the configured index or find-links has it)"
fi
exec "$py" -m pip install -q "torch==$version"
