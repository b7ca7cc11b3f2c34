#!/usr/bin/env bash
# The GPU checks recorded in benchmarks/README.md ("GPU"), as one script for a machine
# with one NVIDIA GPU and JAX for CUDA installed: the test suite (12 workers), CPU against
# GPU on the MLP's central flow (bench_device.py), the run program (bench_run.py) and a
# sweep's growth with its members (bench_sweep_growth.py). Logs and JSON go to $OUT
# (default gpu_out/). Run from the repository root: bash benchmarks/gpu_checks.sh
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log() { echo "== $(date +%T) $*" | tee -a "$OUT/device.log"; }

log "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >>"$OUT/device.log" 2>&1
python3 - >>"$OUT/device.log" 2>&1 <<'PY' || { log "flowode does not run here; stopping"; exit 1; }
import importlib, jax
for m in ("jax", "jaxlib", "diffrax", "equinox", "lineax", "optimistix", "optax", "xarray"):
    print(m, importlib.import_module(m).__version__)
print(jax.devices())
import flowode as fo
ds = fo.simulate(fo.problems.softening_quartic(), lr=1.0, steps=20, flows=("gd", "rod", "central"))
print("smoke run ok:", float(ds.loss.isel(step=-1).max()))
PY

log "test suite, in the background (cvxpy is not installed: its two references skipped)"
(
    timeout -s INT "${TESTS_S:-210}" python3 -m pytest -q -n 12 -p no:cacheprovider \
        --ignore=tests/test_sdcp.py \
        --deselect tests/test_central_flow.py::test_two_critical_directions_match_cvxpy \
        -v -rfE --durations=15 >"$OUT/tests.log" 2>&1
    echo "pytest exit code $?" >>"$OUT/tests.log"
) &
tests=$!

cd benchmarks
log "bench_device (CPU against GPU; its wall times share the machine with the tests)"
timeout 200 python3 bench_device.py >>"$OUT/device.log" 2>&1
cp device_gpu.json "$OUT/" 2>/dev/null
log "waiting for the tests"
wait $tests
log "bench_run"
timeout "${RUN_S:-180}" python3 bench_run.py >"$OUT/run.log" 2>&1
cp run_gpu.json "$OUT/" 2>/dev/null
log "bench_sweep_growth"
timeout "${SWEEP_S:-150}" python3 bench_sweep_growth.py 1 16 256 1024 64 >"$OUT/sweep.log" 2>&1
cp sweep_growth_gpu.json "$OUT/" 2>/dev/null
log "done"
