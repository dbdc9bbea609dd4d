"""Forward-pass throughput of the ADM UNet (engine/models/adm.py).

Prints one GitHub-markdown table row (``--header`` adds the header): config, device, batch, dtype,
memory format, variant, median ms per forward, images/s, TFLOP/s (from the FLOP count of
``torch.utils.flop_counter.FlopCounterMode`` on one image) and % of the device's dense peak for the dtype
(``PEAKS``: bf16/fp16 and TF32, by device name; ``-`` for devices not in the table). ``--compile``: ``torch.compile`` of the
network (its compile time is in the "first call s" column); ``--cuda-graph``: the forward replayed from a CUDA
graph; ``--cudnn-benchmark``: cuDNN autotuning. ``--fused-norm``
runs every ResBlock's GroupNorm + scale-shift + SiLU as the fused Triton kernel (kernels/groupnorm.py). ``--dtype bfloat16``/``float16`` runs the torso
under autocast with float32 parameters (the time embedding and the output head stay float32);
float32 uses PyTorch's default TF32 settings on CUDA. Weights are random (N(0, 0.02)): timing does
not depend on them.

Examples
--------
python bench/bench_adm.py --config adm-ffhq256 --device cuda --batch 64 --dtype bfloat16 --iters 20
python bench/bench_adm.py --smoke        # tiny config, batch 2, one iteration, CPU
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from afdps.engine.models import ADM_PRESETS, ADMUNet

TINY = {
    "image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2,2",
    "attention_resolutions": "16,8", "num_heads": 4, "num_head_channels": 32,
    "use_scale_shift_norm": True, "resblock_updown": True, "learn_sigma": True,
}
CONFIGS = {**ADM_PRESETS, "tiny": TINY}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HEADER = ("| config | device | batch | dtype | memory format | variant | ms / forward (median) | images/s | TFLOP/s "
          "| % of peak | first call s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
# Dense tensor-core peaks (TFLOP/s) from the vendors' data sheets, without sparsity: (bf16/fp16, tf32).
PEAKS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0)}


def flops_per_image(config: dict) -> float:
    """Floating-point operations of one forward pass on one image (FlopCounterMode; a multiply-add is 2),
    counted on fake tensors: nothing is computed or allocated."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    with FakeTensorMode():
        model = ADMUNet(**config).eval()
        size = config["image_size"]
        x = torch.zeros(1, model.in_channels, size, size)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, torch.zeros(1))
    return float(counter.get_total_flops())


def peak_tflops(device_name: str, dtype: str):
    for key, (low, tf32) in PEAKS.items():
        if key in device_name:
            return low if dtype in ("bfloat16", "float16") else tf32
    return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="adm-ffhq256")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--channels-last", action="store_true", help="NHWC activations and weights")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--fused-norm", action="store_true", help="fused GroupNorm + scale-shift + SiLU kernel")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="replay the forward from a CUDA graph (EpsilonModel(cuda_graph=True)'s mechanism)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--header", action="store_true", help="print the table header first")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny config, batch 2, one iteration on the CPU (checks the script runs)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.config, args.batch, args.device, args.iters, args.warmup = "tiny", 2, "cpu", 1, 1
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        parser.error(f"--batch and --iters must be >= 1 and --warmup >= 0, got "
                     f"{args.batch}, {args.iters}, {args.warmup}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} asked for but CUDA is not available")
    if args.cuda_graph and not args.device.startswith("cuda"):
        parser.error("--cuda-graph needs --device cuda")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args) -> dict:
    device = torch.device(args.device)
    config = CONFIGS[args.config]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = ADMUNet(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.02)
    flops = flops_per_image(config)
    model = model.to(device=device, memory_format=memory_format).set_fused_norm(args.fused_norm)
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    forward = torch.compile(model) if args.compile else model

    size = config["image_size"]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, size, size, generator=generator)
    x = x.to(device=device, memory_format=memory_format)
    t = torch.randint(0, 1000, (args.batch,), generator=generator).float().to(device)
    autocast_dtype = DTYPES[args.dtype]

    times = []
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        forward(x, t, autocast_dtype=autocast_dtype)  # the first call: torch.compile's compilation happens here
        _sync(device)
        first = time.perf_counter() - start
        if args.cuda_graph:
            for _ in range(2):
                forward(x, t, autocast_dtype=autocast_dtype)
            _sync(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                forward(x, t, autocast_dtype=autocast_dtype)

            def call():
                graph.replay()
        else:
            def call():
                forward(x, t, autocast_dtype=autocast_dtype)
        for i in range(args.warmup + args.iters):
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tflops = flops * args.batch / seconds / 1e12
    peak = peak_tflops(name, args.dtype)
    return {
        "config": args.config,
        "device": name,
        "batch": args.batch,
        "dtype": args.dtype,
        "memory format": "channels_last" if args.channels_last else "contiguous",
        "variant": "+".join(["fused-norm"] * args.fused_norm + ["compile"] * args.compile + ["cuda-graph"] * args.cuda_graph
                            + ["cudnn-benchmark"] * args.cudnn_benchmark) or "eager",
        "first call s": first,
        "ms": 1e3 * seconds,
        "images/s": args.batch / seconds,
        "gflop/image": flops / 1e9,
        "TFLOP/s": tflops,
        "% of peak": None if peak is None else 100 * tflops / peak,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    row = run(args)
    if args.header:
        print(HEADER)
    pct = "-" if row["% of peak"] is None else f"{row['% of peak']:.1f}"
    print(f"| {row['config']} | {row['device']} | {row['batch']} | {row['dtype']} | {row['memory format']} | "
          f"{row['variant']} | {row['ms']:.2f} | {row['images/s']:.1f} | {row['TFLOP/s']:.3g} | {pct} | "
          f"{row['first call s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
