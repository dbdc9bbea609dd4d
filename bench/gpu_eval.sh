#!/usr/bin/env bash
# make gpu-eval: issue 8's development-split measurements on a CUDA machine, in one device call of under
# 10 minutes (the one-run `make eval-mnist` table, then the configuration grid on the same 100 digits):
#   1. pip install --no-deps --no-build-isolation -e .
#   2. afdps eval, all four methods x five tasks, 100 digits, N = 16, 100 steps (the README table in one run)
#      -> bench/results/eval_mnist_gpu-<time>/
#   3. bench/sweep_mnist.py on the same digits and tasks, most informative first, each stage in its own
#      folder bench/results/sweep_mnist_gpu-<time>/<stage>/ (a stage writes its rows after each configuration,
#      so one cut off by its time limit keeps what it finished):
#        potentials   every method x the potentials it can take, linear tempering, time power 2 (FK first;
#                     the defaults, SDE and ODE with "scaled", FK with "tweedie", are in the table already)
#        adaptive     the three defaults with adaptive tempering (ESS target 0.5)
#        power1       the ODE's and FK's defaults on the uniform time grid (the SDE's ran on the CPU)
#        ode_r0.1-0.3 afdps-ode with the corrector's r 0.1 then 0.3 (r = 0.3 and 0.1 then 0.2 ran on this CPU, 0.1 then 0.3 on x4 only: docs/quality.md)
#        fk_ess0      the default (FK) never resampled: the diversity lead (20 digits on this CPU:
#                     bench/results/fk_ess0_dev20_<task>/)
# Measured on an H200 (2026-12-04): step 2 took 129 s; a sweep configuration (one method, five tasks, 100 digits)
# 23-32 s, so the sweep's later stages need a second call. Every stage is cut to a deadline, GPU_EVAL_SECONDS
# (default 560) after the start.
#
#   bash bench/gpu_eval.sh             # the real thing (needs CUDA)
#   bash bench/gpu_eval.sh --remaining # the grid's configurations the 2026-12-04 call did not reach (no table)
#   bash bench/gpu_eval.sh --dry-run   # print the commands only (also --dry-run --remaining)
# Environment: PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=full
REMAINING=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry ;;
    --remaining) REMAINING=1 ;;
    *) echo "usage: bash bench/gpu_eval.sh [--dry-run] [--remaining]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
STAMP=$(date -u +%Y%m%d-%H%M%S)
. bench/gpu_common.sh
need_cuda gpu-eval --dry-run
CUT_OK=1
[ "$MODE" = full ] && unset TRITON_INTERPRET

T0=$(date +%s)
[ "$MODE" = full ] && DEADLINE=$((T0 + ${GPU_EVAL_SECONDS:-560}))
TASKS=gaussian-blur,motion-blur,sr4,box,random70
COMMON="--num-images 100 --particles 16 --steps 100"
SWEEP="$PY -m bench.sweep_mnist $COMMON --tasks $TASKS --batch-size 100 --device cuda"
SWEEP_OUT=bench/results/sweep_mnist_gpu-$STAMP  # (not OUT: the device tool's folder of files to return)
# Limits from the 2026-12-04 call: about 35 s per particle-method configuration (five tasks, 100 digits), the ODE's
# and FK's Tweedie potential up to twice that; the deadline cuts what does not fit.
install_package
if [ "$REMAINING" = 0 ]; then
  run 150 "$PY" -m afdps.cli eval --prior mnist $COMMON --dps-zeta 3 --batch-size 100 --task $TASKS --device cuda \
    --no-progress --out bench/results/eval_mnist_gpu-$STAMP
  run 110 $SWEEP --methods fk --potentials noisy,scaled,inflated --out $SWEEP_OUT/potentials_fk
  run 200 $SWEEP --methods afdps-sde,afdps-ode --potentials noisy,inflated --out $SWEEP_OUT/potentials
fi  # else: done on 2026-12-04 (bench/results/sweep_mnist_gpu-20261204-152748/): FK noisy and scaled, the SDE's noisy
# and inflated; FK's and the ODE's "inflated" and the ODE's "noisy" ran on all five tasks on the CPU
# (bench/results/fk_inflated_dev100/, ode_inflated_dev100/, ode_noisy_dev100/)
run 100 $SWEEP --methods afdps-sde,afdps-ode --potentials scaled --temperings adaptive --out $SWEEP_OUT/adaptive
run 70 $SWEEP --methods fk --potentials tweedie --temperings adaptive --out $SWEEP_OUT/adaptive_fk
# (the stages below all ran on the CPU on the 100 digits of every task by 2026-12-08: bench/results/{sde,fk,ode}_p1_dev100/,
# ode_r0.1-0.3_dev100/, fk_ess0_dev100/; the GPU reruns them after the adaptive stages, one run of other random draws)
run 70 $SWEEP --methods afdps-ode --potentials scaled --time-powers 1 --out $SWEEP_OUT/power1
run 70 $SWEEP --methods fk --potentials tweedie --time-powers 1 --out $SWEEP_OUT/power1_fk
run 70 $SWEEP --methods afdps-ode --potentials scaled --corrector-snr 0.1,0.3 --out $SWEEP_OUT/ode_r0.1-0.3
run 70 $SWEEP --methods fk --potentials tweedie --ess-threshold 0 --out $SWEEP_OUT/fk_ess0
T1=$(date +%s)
if [ "$MODE" != dry ]; then
  echo
  echo "gpu-eval finished in $((T1 - T0)) s (status $STATUS); bench/results/eval_mnist_gpu-$STAMP, $SWEEP_OUT/*/sweep.md"
fi
exit $STATUS
