#!/usr/bin/env bash
# make gpu-check: on a CUDA machine without network, in under 6 minutes:
#   1. pip install --no-deps --no-build-isolation -e .
#   2. pytest -m "gpu or interpreter" with TRITON_INTERPRET unset (the interpreter-marked kernel tests
#      then run the real kernels on the GPU: tests/tolerances.py picks the CUDA device);
#   3. the kernel benchmarks at full size (particle_step, resample, fourier) and a whole sampler step
#      (eager vs CUDA graph), markdown tables in
#      bench/results/gpu_check-<time>.md and CSV rows appended to bench/results/<name>.csv.
# Each stage has its own time limit, so one that hangs cannot eat the others' time.
#
#   bash bench/gpu_check.sh             # the real thing (needs CUDA)
#   bash bench/gpu_check.sh --dry-run   # print the commands only
#   bash bench/gpu_check.sh --smoke     # CPU: no install, no pytest, benchmarks in --smoke mode into a temp dir
# Environment: PYTHON (default python3), GPU_CHECK_PYTEST_ARGS (extra pytest arguments).
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=full
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --smoke) MODE=smoke ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [--dry-run | --smoke]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS=bench/results
if [ "$MODE" = smoke ]; then
  RESULTS=$(mktemp -d)
  export AFDPS_BENCH_RESULTS=$RESULTS TRITON_INTERPRET=1
else
  unset TRITON_INTERPRET
fi
REPORT=$RESULTS/gpu_check-$STAMP.md
. bench/gpu_common.sh

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
try:
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    git = ""
print(f"device: {dev}; torch {torch.__version__}; triton {tv}; git {git or 'unknown'}")
PYEOF
  } > "$REPORT"
fi

T0=$(date +%s)
# Time limits (seconds) add up to 1110 s, more than a 15-minute device session: they are ceilings against hangs.
# The kernel stages took 190 s on an H200 (2026-11-28); the ADM and whole-restoration stages (added
# 2026-12-02, not run on a GPU yet) are expected at 15-30 s each, torch.compile last (the likeliest to overrun). The torch.compile baseline of the particle step compiles for
# a minute or so, so it gets its own run (B*N = 256, the target case) after the guaranteed one.
if [ "$MODE" != smoke ]; then
  install_package
  run 140 "$PY" -m pytest -q -m "gpu or interpreter" -p no:cacheprovider ${GPU_CHECK_PYTEST_ARGS:-}
fi
SMOKE=""
ROWS256="--rows 256"
[ "$MODE" = smoke ] && SMOKE="--smoke" && ROWS256=""
run 35 "$PY" -m bench.bench_particle_step $SMOKE --no-compile --markdown "$REPORT"
run 25 "$PY" -m bench.bench_langevin $SMOKE --markdown "$REPORT"
run 35 "$PY" -m bench.bench_resample $SMOKE --markdown "$REPORT"
run 50 "$PY" -m bench.bench_fourier $SMOKE --markdown "$REPORT"
run 65 "$PY" -m bench.bench_particle_step $SMOKE $ROWS256 --variants torch_unfused torch_compile triton_fused --markdown "$REPORT"
if [ "$MODE" = smoke ]; then
  run 30 "$PY" -m bench.bench_sampler --smoke --markdown "$REPORT"
  run 30 "$PY" bench/bench_adm.py --smoke --fused-norm --header
  run 30 "$PY" -m bench.bench_restoration --smoke --header
else  # a whole AFDPS step at 256x256, eager vs CUDA-graph replay
  run 60 "$PY" -m bench.bench_sampler --size 256 --particles 64 256 --backend triton --cuda-graph --markdown "$REPORT"
  # the score network (issue 12): bf16 eager vs the fused GroupNorm + SiLU kernel, both layouts, batch 64
  for cfg in adm-ffhq256 adm-imagenet256; do
    run 40 "$PY" bench/bench_adm.py --config $cfg --batch 64 --dtype bfloat16 --iters 10 --header
    run 40 "$PY" bench/bench_adm.py --config $cfg --batch 64 --dtype bfloat16 --iters 10 --fused-norm
    run 40 "$PY" bench/bench_adm.py --config $cfg --batch 64 --dtype bfloat16 --iters 10 --fused-norm --channels-last
    run 40 "$PY" bench/bench_adm.py --config $cfg --batch 64 --dtype bfloat16 --iters 10 --fused-norm --cuda-graph --cudnn-benchmark
  done
  # torch.compile of the network ("first call s" is the compile time), then whole restorations (issue 12):
  # N = 256, 10 steps (a tenth of a run), eager vs the network's per-shape CUDA graph vs the whole-run graph
  run 45 "$PY" -m bench.bench_restoration --config adm-ffhq256 --particles 256 --steps 10 --dtype bfloat16 --fused-norm --header
  run 45 "$PY" -m bench.bench_restoration --config adm-ffhq256 --particles 256 --steps 10 --dtype bfloat16 --fused-norm --cuda-graph
  run 60 "$PY" -m bench.bench_restoration --config adm-ffhq256 --particles 256 --steps 10 --dtype bfloat16 --fused-norm --whole-graph
  run 60 "$PY" -m bench.bench_restoration --config adm-ffhq256 --particles 256 --steps 10 --dtype bfloat16 --potential tweedie
  run 150 "$PY" bench/bench_adm.py --config adm-ffhq256 --batch 64 --dtype bfloat16 --iters 10 --fused-norm --compile
fi
T1=$(date +%s)

if [ "$MODE" != dry ]; then
  echo
  echo "gpu-check finished in $((T1 - T0)) s (status $STATUS); tables: $REPORT; CSV rows: $RESULTS/*.csv"
fi
exit $STATUS
