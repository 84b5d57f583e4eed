#!/usr/bin/env bash
# The GPU checks for a machine with a CUDA device (e.g. a lent H100/H200), in one run of
# at most ~9 minutes (a lent machine gives one command 10): the device tests (runtime,
# cuda model libraries, emulated schedules against the device's results), a short
# `mlc tune --target cuda`, then the benchmark; everything is written under $OUT
# (default ./gpu-results) as it goes, so a run cut short still reports what it reached.
#   bash benchmarks/gpu_device_run.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY -c "import mlc, cupy; print(mlc.Target.get('cuda')); print('cupy', cupy.__version__)" > "$OUT/target.txt" 2>&1
# the tests that need a device (the others run in CI): runtime, libraries, a few schedule families
timeout 150 $PY -m pytest -q -x -p no:cacheprovider tests/runtime/test_cuda.py \
    tests/codegen/test_gpu_library.py -k "device or cuda or Device" > "$OUT/tests.txt" 2>&1
echo "tests exit $?" >> "$OUT/tests.txt"
timeout 60 $PY benchmarks/bench_gpu.py --smoke --repeat 3 > "$OUT/bench_smoke.txt" 2>&1
echo "smoke exit $?" >> "$OUT/bench_smoke.txt"
# tuning on the device: a few candidates of a bundled MLP's kernels, timed with CUDA events
timeout 90 mlc tune mlp --target cuda --trials 16 --db "$OUT/gpu.db" --no-live > "$OUT/tune.txt" 2>&1
echo "tune exit $?" >> "$OUT/tune.txt"
timeout 200 $PY benchmarks/bench_gpu.py --repeat 10 --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.txt" 2>&1
echo "bench exit $?" >> "$OUT/bench_gpu.txt"
tail -n 3 "$OUT"/*.txt
