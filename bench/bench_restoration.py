"""A whole restoration with an ADM prior of random weights: seconds per image and the share of time outside
the score network (issue 12's end-to-end measure).

Gaussian deblurring (61x61, std 3; 9x9 for the tiny config) of one image with N particles and K steps, the
sampler's ``profile=True`` timings (score = the network calls, with the Tweedie potential's VJP, and for that
potential also its two operator applications, which run inside it; the rest = Stage I, operator, fused
update and resampling). Variants of the prior: ``--network`` (a variant base of ``bench.bench_adm``: ``fp32``,
``autocast`` (bfloat16 autocast, the modules' GroupNorm), ``fast-cl`` (``ADMUNet.to_inference``), ...),
``--cudnn`` (cuDNN autotuning), ``--cuda-graph`` (``EpsilonModel(cuda_graph=True)``), or ``--whole-graph``
(``sample(..., cuda_graph=True)``: the whole run, network included, in one graph; needs the "scaled" potential).

    python -m bench.bench_restoration --config adm-ffhq256 --particles 256 --steps 100 --network fast-cl
    python -m bench.bench_restoration --smoke     # tiny config, 4 particles, 3 steps, CPU

``--kernel-profile FILE`` runs the timed restoration once more under ``torch.profiler`` (without the per-part
synchronisations) and appends its device kernels per step, grouped (network, cuFFT, the sampler's Triton kernels,
element-wise work), to FILE: where the time outside the network goes, kernel by kernel.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from afdps.cli._common import positive_int, steps_int  # noqa: E402
import afdps
from afdps.engine.models import ADM_PRESETS
from afdps.priors import EpsilonModel

from bench.bench_adm import BASES, TINY, build, kernel_report, set_groupnorm, write_report
from bench import runner  # noqa: E402

CONFIGS = {**ADM_PRESETS, "tiny": TINY}


def _network_batch(text: str):
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or auto, got {text!r}") from None


HEADER = ("| config | device | N | steps | potential | variant | network batch | s / image | time outside the network "
          "| ms / step by part |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="adm-ffhq256")
    p.add_argument("--particles", type=positive_int, default=256)
    p.add_argument("--steps", type=steps_int, default=100, help="time steps")
    p.add_argument("--potential", default="scaled", choices=("scaled", "tweedie", "noisy"))
    p.add_argument("--network", choices=BASES, default="fp32", help="how the network runs (bench.bench_adm's bases)")
    p.add_argument("--cudnn", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--network-batch", type=_network_batch, default="auto",
                   help="images per network call: a positive integer, or auto (default)")
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--whole-graph", action="store_true")
    p.add_argument("--device", type=runner.device_arg, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda or cpu")
    p.add_argument("--header", action="store_true")
    p.add_argument("--markdown", type=runner.markdown_arg, default=None,
                   help="markdown file the row (and header) is appended to")
    p.add_argument("--kernel-profile", default=None, metavar="FILE",
                   help="also profile the run's device kernels per step into FILE (markdown, appended)")
    p.add_argument("--gn-chunk-bytes", type=positive_int, default=None, help="afdps.kernels.groupnorm.CHUNK_BYTES")
    p.add_argument("--gn-programs", type=positive_int, default=None, help="afdps.kernels.groupnorm.PROGRAMS")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke and (args.cuda_graph or args.whole_graph):
        p.error("--smoke runs a tiny network on the CPU; --cuda-graph and --whole-graph need a CUDA run without it")
    if args.smoke:
        args.config, args.particles, args.steps, args.device = "tiny", 4, 3, "cpu"
    if (args.cuda_graph or args.whole_graph) and not args.device.startswith("cuda"):
        p.error("--cuda-graph and --whole-graph need --device cuda")
    if args.device.startswith("cuda") and not torch.cuda.is_available():  # (an AssertionError deep in torch)
        p.error(f"--device {args.device} asked for but CUDA is not available")
    if args.whole_graph and args.potential == "tweedie":
        p.error("--whole-graph cannot capture the Tweedie potential's VJP; use --potential scaled")
    return args


def run(args) -> dict:
    device = torch.device(args.device)
    config = CONFIGS[args.config]
    set_groupnorm(args.gn_chunk_bytes, args.gn_programs)
    net, autocast_dtype = build(args.network, config, device)
    torch.backends.cudnn.benchmark = bool(args.cudnn)
    size = int(config["image_size"])
    batch = args.network_batch
    prior = EpsilonModel(net, event_shape=(3, size, size), learned_sigma=bool(config.get("learn_sigma")),
                         batch_size=batch, autocast_dtype=autocast_dtype, cuda_graph=args.cuda_graph)
    k = 61 if size >= 64 else 9
    op = afdps.ops.Blur(afdps.ops.gaussian_kernel(k, k / 20.0), (3, size, size))
    y = op.measure(torch.zeros(1, 3, size, size, device=device), 0.05)
    kw = dict(num_particles=args.particles, num_steps=args.steps, seed=0, potential=args.potential, progress=False)
    if args.whole_graph:
        afdps.sample(prior, op, y, 0.05, cuda_graph=True, **kw)  # eager run + capture
    else:
        afdps.sample(prior, op, y, 0.05, **{**kw, "num_steps": 1})  # warm-up (cuDNN, Triton, graphs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = afdps.sample(prior, op, y, 0.05, cuda_graph=args.whole_graph, profile=not args.whole_graph, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    t = res.timings or {}
    if args.kernel_profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            afdps.sample(prior, op, y, 0.05, cuda_graph=args.whole_graph, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
        title = (f"### Kernels of a restoration step: {args.config}, N = {args.particles}, {args.steps} steps, "
                 f"potential {args.potential}, network {args.network} "
                 f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})")
        write_report(kernel_report(prof.key_averages(), title, args.steps, "step"), Path(args.kernel_profile))
    outside = sum(v for name, v in t.items() if name != "score")
    variant = "+".join([args.network] + [n for n, on in (("cudnn", args.cudnn), ("net-graph", args.cuda_graph),
                                                          ("whole-graph", args.whole_graph)) if on])
    return {"config": args.config, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "N": args.particles, "steps": args.steps, "potential": args.potential, "variant": variant,
            "s_per_image": wall, "network_batch": prior.auto_batch or batch, "outside_share": (outside / sum(t.values())) if t else None,
            "parts": ", ".join(f"{name} {1e3 * v / args.steps:.2f}" for name, v in sorted(t.items(), key=lambda kv: -kv[1]))
            or "-"}


def main(argv=None) -> int:
    args = parse_args(argv)
    r = run(args)
    share = "-" if r["outside_share"] is None else f"{100 * r['outside_share']:.2f}%"
    text = (f"| {r['config']} | {r['device']} | {r['N']} | {r['steps']} | {r['potential']} | {r['variant']} | "
            f"{r['network_batch']} | {r['s_per_image']:.2f} | {share} | {r['parts']} |")
    if args.header:
        text = HEADER + "\n" + text
    print(text)
    if args.markdown:
        runner.append_text(args.markdown, ("\n" if args.header else "") + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
