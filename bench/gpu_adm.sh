#!/usr/bin/env bash
# make gpu-adm: issue 12's measurements of the score network on one CUDA GPU, in one device call (< 9 minutes):
#   1. pip install --no-deps --no-build-isolation -e .
#   2. bench.bench_adm, FFHQ configuration, batch 64: bfloat16 autocast (the path before issue 12),
#      ADMUNet.to_inference channels-last as measured on 2026-12-04 (fast-cl-nostats), with the GroupNorm statistics
#      from the residual kernels (fast-cl-noconvin) and with the fused input convolution too (fast-cl); then, in a
#      process of its own (cuDNN's plan cache ignores the autotuning flag), the GroupNorm kernel's channel block and
#      launch size timed (--gn-sweep, GPU_ADM_GN_SWEEP, empty for none: then the defaults the 2026-12-04 sweep chose;
#      the fastest is kept for the later stages), the fastest with cuDNN autotuning and with a CUDA graph, and its
#      kernel profile (every row with its error against a float64 forward);
#   3. the ImageNet configuration, batch 64;
#   4. the GPU tests of the kernels, the blur's kept spectra, CUDA-graph replays and the network (pytest -m "gpu or
#      interpreter", with pytest-xdist's 4 workers where installed: the interpreter-marked kernel tests run the
#      real kernels on the GPU; newest kernels first);
#   5. whole restorations (N = 256, 10 steps, random weights): the old network path, the fastest, with the
#      network's per-shape CUDA graph and inside the whole-run graph, the share of time outside the network and
#      each part's ms per step; the fastest's device kernels per step (--kernel-profile: cuFFT, the sampler's
#      kernels, the network's);
#   6. batches 16 and 256, the other variants (float32, contiguous, unfused); 7. torch.compile of the network (its
#      compile time), last: the likeliest to overrun.
# Everything lands in bench/results/gpu_adm-<time>.md (and bench/results/adm.csv); with $OUT set (the device tool)
# every new file of bench/results is packed into $OUT/bench_results.tgz after each stage. Stages are cut to a
# deadline (GPU_ADM_SECONDS, default 530 s after the start); a benchmark cut keeps its rows, a test stage cut fails.
#
#   bash bench/gpu_adm.sh             # the real thing (needs CUDA)
#   bash bench/gpu_adm.sh --dry-run   # print the commands only
#   bash bench/gpu_adm.sh --smoke     # CPU: no install, no pytest, tiny shapes into a temp dir
set -uo pipefail
cd "$(dirname "$0")/.."

. bench/gpu_common.sh
setup_mode gpu_adm "${1:-}"
BEST=$RESULTS/.adm_best
need_cuda gpu-adm "--smoke or --dry-run"
[ "$MODE" != dry ] && DEADLINE=$(( $(date +%s) + ${GPU_ADM_SECONDS:-530} ))
CUT_OK=1  # a stage cut by the deadline keeps the rows it wrote (each benchmark appends its rows as it goes)

mkdir -p "$RESULTS"
if [ "$MODE" != dry ]; then
  "$PY" -c "import torch, triton; from bench.runner import git_revision; g = git_revision(); print(f'# gpu-adm $STAMP\n\ndevice: {torch.cuda.get_device_name() if torch.cuda.is_available() else \"cpu\"}; torch {torch.__version__}; triton {triton.__version__}; git {g}\n')" > "$REPORT" 2>/dev/null \
    || echo "# gpu-adm $STAMP" > "$REPORT"
fi
T0=$(date +%s)
if [ "$MODE" = smoke ]; then
  SIZE="--smoke"; FFHQ=""; IMNET="--smoke"; ITERS=""; GRAPH=""; RES="$PY -m bench.bench_restoration --smoke"
else
  install_package
  SIZE=""; FFHQ="--configs adm-ffhq256"; IMNET="--configs adm-imagenet256"; ITERS="--iters 5 --warmup 1"; GRAPH="+graph"
  RES="$PY -m bench.bench_restoration --config adm-ffhq256 --particles 256 --steps 10"
fi
ADM="$PY -m bench.bench_adm $SIZE --markdown $REPORT --csv"
GN_SWEEP=${GPU_ADM_GN_SWEEP-32,128,512:1024,4096}  # empty: the defaults the 2026-12-04 sweep chose (128 B, 1024)
[ "$MODE" != dry ] && rm -f "$BEST" "$BEST.gn"  # (a cut first stage must not leave a stale choice)
# The cuDNN-autotuned variants run in processes of their own: cuDNN's plan cache is keyed without
# torch.backends.cudnn.benchmark, so in one process an autotuned variant reused the plans of the plain one before it
# (2026-12-04: ImageNet's "+cudnn" first call took 0.28 s after the plain one's 9.85 s), and the reverse.
run 100 $ADM $FFHQ $ITERS --batches 64 --best-out "$BEST" --header \
  --variants autocast,fast-cl-nostats,fast-cl-noconvin,fast-cl
NET=$(cat "$BEST" 2>/dev/null || echo fast-cl)
run 100 $ADM $FFHQ $ITERS --batches 64 --profile $NET+cudnn --profile-out "$REPORT" \
  ${GN_SWEEP:+--gn-sweep $GN_SWEEP --gn-best-out "$BEST.gn"} --variants $NET+cudnn${GRAPH:+,$NET+cudnn$GRAPH}
GN=$(cat "$BEST.gn" 2>/dev/null)  # the GroupNorm setting the sweep kept, for every later stage
run 40 $ADM $IMNET $ITERS $GN --batches 64 --header --variants fast-cl
run 55 $ADM $IMNET $ITERS $GN --batches 64 --variants fast-cl+cudnn${GRAPH:+,fast-cl+cudnn$GRAPH}
if [ "$MODE" != smoke ]; then
  # (231 tests: 112 of them ran in 120 s on one process on 2026-12-04, hence the workers; a cut here is a failure)
  CUT_OK=0 run 120 "$PY" -m pytest -q $(pytest_workers) -m "gpu or interpreter" -p no:cacheprovider tests/test_conv_in.py \
    tests/test_kept_spectrum.py tests/test_fourier.py tests/test_cuda_graph.py tests/test_residual.py \
    tests/test_groupnorm.py tests/test_adm.py
fi
HEAD="--header"
for extra in "--network autocast" "--network $NET --cudnn --kernel-profile $REPORT" "--network $NET --cudnn --cuda-graph" \
             "--network $NET --cudnn --whole-graph"; do
  [ "$MODE" = smoke ] && [[ "$extra" == *graph* ]] && continue  # CUDA only
  run 60 $RES $extra $GN --markdown "$REPORT" $HEAD
  HEAD=""
done
run 45 $ADM $FFHQ $ITERS $GN --batches 16,256 --no-parity --header --variants autocast,fast-cl
run 45 $ADM $FFHQ $ITERS $GN --batches 16,256 --no-parity --variants $NET+cudnn$GRAPH
run 90 $ADM $FFHQ $ITERS $GN --batches 64 --header --variants fp32,autocast-fused,fast,fast-cl-unfused
run 150 $ADM $FFHQ $GN --batches 64 --no-parity --header --variants fast-cl-unfused+cudnn+compile
T1=$(date +%s)
if [ "$MODE" != dry ]; then
  echo "gpu-adm finished in $((T1 - T0)) s (status $STATUS); report: $REPORT" | tee -a "$REPORT"
  save_results  # (the report's last line too)
  cat "$REPORT"
fi
exit $STATUS
