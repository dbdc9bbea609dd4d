"""Forward-pass throughput of the ADM UNet (engine/models/adm.py).

Prints one GitHub-markdown table row (``--header`` adds the header): config, device, batch, dtype,
memory format, median ms per forward and images/s. ``--dtype bfloat16``/``float16`` runs the torso
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
HEADER = ("| config | device | batch | dtype | memory format | ms / forward (median) | images/s |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")


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
    model = model.to(device=device, memory_format=memory_format)
    forward = torch.compile(model) if args.compile else model

    size = config["image_size"]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, size, size, generator=generator)
    x = x.to(device=device, memory_format=memory_format)
    t = torch.randint(0, 1000, (args.batch,), generator=generator).float().to(device)
    autocast_dtype = DTYPES[args.dtype]

    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            _sync(device)
            start = time.perf_counter()
            forward(x, t, autocast_dtype=autocast_dtype)
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "config": args.config + (" (compiled)" if args.compile else ""),
        "device": name,
        "batch": args.batch,
        "dtype": args.dtype,
        "memory format": "channels_last" if args.channels_last else "contiguous",
        "ms": 1e3 * seconds,
        "images/s": args.batch / seconds,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    row = run(args)
    if args.header:
        print(HEADER)
    print(f"| {row['config']} | {row['device']} | {row['batch']} | {row['dtype']} | "
          f"{row['memory format']} | {row['ms']:.2f} | {row['images/s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
