#!/usr/bin/env bash
# make gpu-session: the one device call of a 15-minute lease (under 10 minutes of command time, so that the machine's
# start, the transfers and a rerun of a failed stage fit): the open measurements, most needed first.
#   1. bench/gpu_adm.sh (issue 12: the score network's speed, its GPU tests, whole restorations), cut to
#      GPU_ADM_SECONDS (default 400 s here), without its GroupNorm sweep (GPU_ADM_GN_SWEEP, empty here: the
#      2026-12-04 sweep's choice is the default; it compiled 6 settings, about 100 s); its later stages (other
#      batches and variants, torch.compile) give way;
#   2. bench/gpu_eval.sh --remaining (issue 8: the configuration grid's cells not yet run on 100 digits), cut to what
#      is left of GPU_SESSION_SECONDS (default 560 s after the start).
# Every new file of bench/results comes back in $OUT/bench_results.tgz (refreshed after each stage; unpack it in the
# checkout: tar xzf bench_results.tgz). make gpu-check (the particle kernels, measured on 2026-11-28) is a call of its own.
#
#   bash bench/gpu_session.sh             # the real thing (needs CUDA)
#   bash bench/gpu_session.sh --dry-run   # print the commands only
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --dry-run|"") ;;
  *) echo "usage: bash bench/gpu_session.sh [--dry-run]" >&2; exit 2 ;;
esac
T0=$(date +%s)
RESULTS_MARK=$(mktemp)
export RESULTS_MARK  # one mark for both scripts: the tarball holds everything either wrote
STATUS=0
GPU_ADM_SECONDS=${GPU_ADM_SECONDS:-400} GPU_ADM_GN_SWEEP=${GPU_ADM_GN_SWEEP-} bash bench/gpu_adm.sh ${1:-} || STATUS=1
LEFT=$(( T0 + ${GPU_SESSION_SECONDS:-560} - $(date +%s) ))
if [ "$LEFT" -ge 30 ] || [ "${1:-}" = --dry-run ]; then
  GPU_EVAL_SECONDS=$LEFT bash bench/gpu_eval.sh --remaining ${1:-} || STATUS=1
else
  echo "gpu-session: ${LEFT} s left, gpu_eval.sh --remaining skipped"
fi
echo "gpu-session finished in $(( $(date +%s) - T0 )) s (status $STATUS)"
exit $STATUS
