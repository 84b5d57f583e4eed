#!/usr/bin/env bash
# The GPU checks for a machine with a CUDA device (e.g. the lent H200), in one run:
# the GPU tests (runtime, codegen, emulated schedules against the device's results),
# then the benchmark; everything is written under $OUT (default ./gpu-results).
#   bash benchmarks/gpu_device_run.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY -c "import mlc, cupy; print(mlc.Target.get('cuda')); print('cupy', cupy.__version__)" > "$OUT/target.txt" 2>&1
timeout 900 $PY -m pytest -q -p no:cacheprovider tests/runtime/test_cuda.py tests/codegen/test_nvptx.py \
    tests/schedule/test_gpu_schedules.py > "$OUT/tests.txt" 2>&1
echo "tests exit $?" >> "$OUT/tests.txt"
timeout 300 $PY benchmarks/bench_gpu.py --smoke --repeat 3 > "$OUT/bench_smoke.txt" 2>&1
echo "smoke exit $?" >> "$OUT/bench_smoke.txt"
timeout 1200 $PY benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.txt" 2>&1
echo "bench exit $?" >> "$OUT/bench_gpu.txt"
tail -n 3 "$OUT"/*.txt
