#!/usr/bin/env bash
# make gpu-check: on a CUDA machine without network, in under 6 minutes:
#   1. pip install --no-deps --no-build-isolation -e .
#   2. pytest -m "gpu or interpreter" with TRITON_INTERPRET unset (the interpreter-marked kernel tests
#      then run the real kernels on the GPU: tests/tolerances.py picks the CUDA device);
#   3. the kernel benchmarks at full size (particle_step, resample, fourier) and a whole sampler step
#      (eager vs CUDA graph), markdown tables in
#      bench/results/gpu_check-<time>.md and CSV rows appended to bench/results/<name>.csv (with $OUT set, the
#      device tool's, every new file of bench/results is packed into $OUT/bench_results.tgz after each stage).
# Each stage has its own time limit, so one that hangs cannot eat the others' time.
#
#   bash bench/gpu_check.sh             # the real thing (needs CUDA)
#   bash bench/gpu_check.sh --dry-run   # print the commands only
#   bash bench/gpu_check.sh --smoke     # CPU: no install, no pytest, benchmarks in --smoke mode into a temp dir
# Environment: PYTHON (default python3), GPU_CHECK_PYTEST_ARGS (extra pytest arguments).
set -uo pipefail
cd "$(dirname "$0")/.."

. bench/gpu_common.sh
setup_mode gpu_check "${1:-}"

need_cuda gpu-check "--smoke or --dry-run"

mkdir -p "$RESULTS"
if [ "$MODE" != dry ]; then
  {
    echo "# gpu-check $STAMP"
    echo
    "$PY" - <<'PYEOF'
import subprocess, torch
try:
    import triton; tv = triton.__version__
except ImportError:
    tv = "none"
dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
from bench.runner import git_revision  # (+dirty where the working tree that runs differs from the revision)
git = git_revision()
print(f"device: {dev}; torch {torch.__version__}; triton {tv}; git {git or 'unknown'}")
PYEOF
  } > "$REPORT"
fi

T0=$(date +%s)
# Time limits (seconds) are ceilings against hangs. The kernel stages took 190 s on an H200 (2026-11-28); the
# torch.compile baseline of the particle step compiles for a minute or so, so it gets its own run (B*N = 256, the
# target case) after the guaranteed one. The score network is make gpu-adm's (its own device call: the two together
# need more than one 10-minute call; make gpu-session is the one call of a 15-minute lease).
if [ "$MODE" != smoke ]; then
  install_package
  # (350 tests; one process needed more than 140 s, so pytest-xdist's workers where the machine has them)
  run 140 "$PY" -m pytest -q $(pytest_workers) -m "gpu or interpreter" -p no:cacheprovider ${GPU_CHECK_PYTEST_ARGS:-}
fi
SMOKE=""
ROWS256="--rows 256"
[ "$MODE" = smoke ] && SMOKE="--smoke" && ROWS256=""
run 35 "$PY" -m bench.bench_particle_step $SMOKE --no-compile --markdown "$REPORT"
run 25 "$PY" -m bench.bench_langevin $SMOKE --markdown "$REPORT"
run 35 "$PY" -m bench.bench_resample $SMOKE --markdown "$REPORT"
run 50 "$PY" -m bench.bench_fourier $SMOKE --markdown "$REPORT"
run 65 "$PY" -m bench.bench_particle_step $SMOKE $ROWS256 --variants torch_unfused torch_randn torch_compile triton_fused --markdown "$REPORT"
if [ "$MODE" = smoke ]; then
  run 30 "$PY" -m bench.bench_sampler --smoke --markdown "$REPORT"
else  # a whole AFDPS step at 256x256, eager vs CUDA-graph replay
  run 60 "$PY" -m bench.bench_sampler --size 256 --particles 64 256 --backend triton --cuda-graph --markdown "$REPORT"
fi
T1=$(date +%s)

if [ "$MODE" != dry ]; then
  echo
  echo "gpu-check finished in $((T1 - T0)) s (status $STATUS); tables: $REPORT; CSV rows: $RESULTS/*.csv"
fi
exit $STATUS
