# Sourced by bench/gpu_check.sh, bench/gpu_adm.sh and bench/gpu_eval.sh: MODE (full, dry, smoke) and PY are set by
# the caller (gpu_check and gpu_adm through setup_mode);
# CUT_OK=1 makes a stage stopped by its time limit (exit 124) a cut, not a failure (its finished rows are kept).
STATUS=0
# Files written under bench/results after this mark go back through the device tool: save_results packs them into
# $OUT/bench_results.tgz after every stage (one file, so that the tool's 8-file limit holds, and a call killed at
# its time limit still returns the stages it finished). A script run by another (gpu_session.sh) shares its mark.
if [ -z "${RESULTS_MARK:-}" ]; then RESULTS_MARK=$(mktemp); export RESULTS_MARK; fi

save_results() {  # pack bench/results' new and changed files into $OUT/bench_results.tgz (device tool, full mode)
  [ "${MODE:-}" = full ] && [ -n "${OUT:-}" ] && [ -d "$OUT" ] || return 0
  find bench/results -type f -newer "$RESULTS_MARK" -print0 | tar czf "$OUT/bench_results.tgz.part" --null -T - \
    && mv "$OUT/bench_results.tgz.part" "$OUT/bench_results.tgz"
  return 0
}

run() {  # run LIMIT_SECONDS CMD...: echo, then run under a time limit (not in --dry-run); a failure sets STATUS.
  # With DEADLINE (epoch seconds) set, the limit is cut to the time left, and a stage with under 10 s left is skipped.
  local limit=$1; shift
  echo "+ timeout $limit $*"
  [ "$MODE" = dry ] && return 0
  if [ -n "${DEADLINE:-}" ]; then
    local left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 10 ]; then echo "-- skipped, ${left} s left before the deadline: $*"; return 0; fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  timeout --kill-after=5 "$limit" "$@"
  local rc=$?
  if [ $rc -eq 124 ] && [ "${CUT_OK:-0}" = 1 ]; then echo "-- cut at its $limit s limit (finished rows kept): $*"
  elif [ $rc -ne 0 ]; then echo "!! exit $rc: $*"; STATUS=1; fi
  save_results
  return 0
}

pytest_workers() {  # "-n 4" where pytest-xdist is installed (the GPU image has it): the GPU tests in a quarter of the time
  "$PY" -c "import xdist" 2>/dev/null && echo "-n 4"
}

need_cuda() {  # need_cuda NAME HINT: exit 2 unless torch sees a CUDA device (full mode only)
  [ "$MODE" = full ] || return 0
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "$1 needs a CUDA device ($PY sees none); try $2" >&2
    exit 2
  fi
}

install_package() {  # pip install -e . without network; where that cannot build, lay the package out by links
  if [ "$MODE" = full ] && "$PY" -c "import afdps, os, sys; sys.exit(os.path.realpath(afdps.__file__) != os.path.realpath('bindings/__init__.py'))" 2>/dev/null; then
    echo "afdps is installed from this checkout already"  # (gpu_session.sh: the second script)
    return 0
  fi
  run 20 "$PY" -m pip install --no-deps --no-build-isolation -q -e .
  if [ "$MODE" = full ] && ! "$PY" -c "import afdps.kernels" 2>/dev/null; then
    # No setuptools to build with (no network): afdps -> bindings/, afdps/engine -> engine/,
    # afdps/kernels -> kernels/, as setup.py maps them.
    SHIM=$(mktemp -d)
    mkdir -p "$SHIM/afdps"
    for f in bindings/*; do ln -s "$PWD/$f" "$SHIM/afdps/"; done
    ln -s "$PWD/engine" "$SHIM/afdps/engine"
    ln -s "$PWD/kernels" "$SHIM/afdps/kernels"
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
    echo "pip install failed; using the package through links in $SHIM"
  fi
}

setup_mode() {  # setup_mode NAME [ARG]: MODE from ARG (--dry-run, --smoke or none), PY, STAMP, RESULTS (a temp dir
  # for --smoke, where kernels run under TRITON_INTERPRET=1) and REPORT=$RESULTS/NAME-$STAMP.md
  MODE=full
  case "${2:-}" in
    --dry-run) MODE=dry ;;
    --smoke) MODE=smoke ;;
    "") ;;
    *) echo "usage: bash bench/$1.sh [--dry-run | --smoke]" >&2; exit 2 ;;
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
  REPORT=$RESULTS/$1-$STAMP.md
}
