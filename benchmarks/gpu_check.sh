#!/usr/bin/env bash
# din's GPU checks in one run, for a machine with a CUDA GPU whose python3 has
# torch, numpy, safetensors, click, rich, pytest and hypothesis (numba optional):
#
#   bash benchmarks/gpu_check.sh [OUTDIR]     # logs in OUTDIR (default: $OUT or /tmp/din-gpu)
#
# 1. the CUDA tests (bit-identical aggregates, identical scores, deterministic
#    training) beside the CPU suite's aggregation tests;
# 2. benchmarks/gpu.py: train and evaluate rows/s, CPU beside GPU, and CIDs;
# 3. benchmarks/aggregate.py: GB/s and time to the first weight for 10 x 10M
#    and 50 x 10M parameters, numba CPU path beside the CUDA path, with the
#    GPU's copy rates as the limits.
# Each step runs even when an earlier one fails; the exit status is the tests'.
out=${1:-${OUT:-/tmp/din-gpu}}
mkdir -p "$out"
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'CPUs', len(__import__('os').sched_getaffinity(0)))"
python3 -m pytest -q -p no:cacheprovider tests/test_ml_device.py tests/test_ml_aggregate.py 2>&1 | tee "$out/tests.log"
status=${PIPESTATUS[0]}
python3 benchmarks/gpu.py 2>&1 | tee "$out/gpu.log"
python3 benchmarks/aggregate.py --no-flower --device cpu cuda --sizes 10x1e7 50x1e7 --repeat 2 2>&1 | tee "$out/aggregate.log"
exit "$status"
