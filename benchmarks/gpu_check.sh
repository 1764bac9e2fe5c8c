#!/usr/bin/env bash
# Run on a CUDA machine from the repository root: installs carried wheels if present, then the check.
set -euo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "${OUT:-bench-out}" "$@"
