"""Forward-pass throughput of the ADM UNet (engine/models/adm.py), many variants in one process.

One GitHub-markdown row per (config, batch, variant): median ms per forward, images/s, TFLOP/s (from the FLOP
count of ``torch.utils.flop_counter.FlopCounterMode`` on one image), % of the device's dense peak for the dtype
(``PEAKS``, by device name; ``-`` elsewhere), the first call's seconds (``torch.compile``'s compile time, cuDNN's
autotuning) and the error against a float64 forward of the same network on the batch's first images
(``||out - ref|| / ||ref||``). Weights are random (N(0, 0.02)): timing does not depend on them.

Variants (``--variants``, comma-separated; ``+`` adds modifiers):

=====================  ============================================================================================
``fp32``               float32 parameters and activations (on CUDA PyTorch's default: TF32 convolutions)
``autocast``           bfloat16 autocast of the torso, float32 parameters, the modules' float32 GroupNorm (before
                       issue 12)
``autocast-fused``     the same with the fused GroupNorm + scale-shift + SiLU kernel
``fast``               ``ADMUNet.to_inference(bfloat16, contiguous)``: bfloat16 parameters, fused norms
``fast-cl``            ``to_inference(bfloat16, channels_last)``: also the GroupNorm statistics from the kernels that
                       write the norms' inputs, and the input convolution with its bias and statistics in one kernel
``fast-cl-noconvin``   ``to_inference(..., fused_conv_in=False)``: the statistics from the residual kernels only
``fast-cl-nostats``    ``to_inference(..., fused_stats=False, fused_conv_in=False)``: every GroupNorm makes its own
                       statistics (the path measured on 2026-12-04; its residual kernel is the same code, the
                       GroupNorm apply kernel now reads its shift with the sums)
``fast-cl-unfused``    ``to_inference(bfloat16, channels_last, fused_norm=False)`` (the modules' GroupNorm)
``best``               the fastest variant measured so far in this run for the same config and batch (before
                       modifiers)
``+cudnn``             ``torch.backends.cudnn.benchmark = True`` (autotuned convolution algorithms; time these in a
                       process without plain variants: cuDNN's plan cache ignores the flag, which a CUDA run warns of)
``+graph``             the forward replayed from a CUDA graph (``EpsilonModel(cuda_graph=True)``'s mechanism)
``+compile``           ``torch.compile`` of the network (default mode)
=====================  ============================================================================================

``--gn-sweep CHUNKS:PROGRAMS`` (e.g. ``32,128,512:1024,4096``) first times ``fast-cl+cudnn`` on the first config and
batch with each setting of the GroupNorm kernel's channel block (at least CHUNK bytes of a pixel) and launch size
(``afdps.kernels.groupnorm.CHUNK_BYTES``, ``PROGRAMS``), one row each, and keeps the fastest for the run;
``--gn-chunk-bytes`` and ``--gn-programs`` set them directly.

``--profile VARIANT`` writes the kernels of two forwards of that variant (the first batch and config), grouped
into convolutions, layout transforms, attention, GroupNorm and element-wise work, to ``--profile-out``.

Examples
--------
python -m bench.bench_adm --configs adm-ffhq256 --batches 64 --variants autocast,fast,fast-cl,best+cudnn+graph
python -m bench.bench_adm --smoke        # tiny config, batch 2, one iteration per variant, CPU
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``afdps`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afdps.cli._common import nonneg_int, positive_int  # noqa: E402
from afdps.engine.models import ADM_PRESETS, ADMUNet  # noqa: E402
from bench.runner import device_arg, markdown_arg  # noqa: E402

TINY = {
    "image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2,2",
    "attention_resolutions": "16,8", "num_heads": 4, "num_head_channels": 32,
    "use_scale_shift_norm": True, "resblock_updown": True, "learn_sigma": True,
}
CONFIGS = {**ADM_PRESETS, "tiny": TINY}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Dense tensor-core peaks (TFLOP/s) from the vendors' data sheets, without sparsity: (bf16/fp16, tf32).
# dense bf16 and TF32 TFLOP/s from NVIDIA's data sheets (half the "with sparsity" figures), the first key contained
# in the device's name wins: the PCIe and NVL parts are slower than the SXM ones (an H100 PCIe at 989 put its
# "% of peak" 1.3x low)
PEAKS = {"H200 NVL": (835.0, 418.0), "H200": (989.0, 494.0), "H100 PCIe": (756.0, 378.0), "H100 NVL": (835.0, 418.0),
         "H100": (989.0, 494.0), "A100": (312.0, 156.0)}
BASES = ("fp32", "autocast", "autocast-fused", "fast", "fast-cl", "fast-cl-noconvin", "fast-cl-nostats",
         "fast-cl-unfused")
MODIFIERS = ("cudnn", "graph", "compile")
PARITY_IMAGES = 4
HEADER = ("| config | device | batch | variant | dtype | ms / forward (median) | images/s | TFLOP/s | % of peak "
          "| first call s | rel. error vs float64 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def set_groupnorm(chunk_bytes: int | None = None, programs: int | None = None):
    """Set the GroupNorm kernel's ``CHUNK_BYTES`` and ``PROGRAMS`` (``None`` keeps one); returns the module."""
    from afdps.kernels import groupnorm as gn

    gn.CHUNK_BYTES = chunk_bytes or gn.CHUNK_BYTES
    gn.PROGRAMS = programs or gn.PROGRAMS
    return gn


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


def peak_tflops(device_name: str, low_precision: bool):
    for key, (low, tf32) in PEAKS.items():
        if key in device_name:
            return low if low_precision else tf32
    return None


def parse_variant(name: str) -> tuple[str, tuple[str, ...]]:
    """``"fast-cl+cudnn+graph"`` -> ``("fast-cl", ("cudnn", "graph"))``; raises ValueError naming what is allowed."""
    base, *mods = name.strip().split("+")
    if base not in BASES + ("best",):
        raise ValueError(f"variant base {base!r} is not one of {', '.join(BASES + ('best',))}")
    for m in mods:
        if m not in MODIFIERS:
            raise ValueError(f"variant modifier {m!r} in {name!r} is not one of {', '.join(MODIFIERS)}")
    return base, tuple(mods)


def build(base: str, config: dict, device) -> tuple[torch.nn.Module, torch.dtype | None]:
    """The network of a variant base (random weights, seed 0) and the autocast dtype to call it with."""
    torch.manual_seed(0)
    with torch.device(device):  # built where it runs: the ImageNet configuration has 553M parameters
        model = ADMUNet(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.02)
    if base == "fp32":
        return model, None
    if base in ("autocast", "autocast-fused"):
        return model.set_fused_norm(base == "autocast-fused"), torch.bfloat16
    fmt = torch.channels_last if base.startswith("fast-cl") else torch.contiguous_format
    return model.to_inference(torch.bfloat16, fmt, fused_norm=base != "fast-cl-unfused",
                              fused_stats=base not in ("fast-cl-nostats", "fast-cl-unfused"),
                              fused_conv_in=base == "fast-cl" or base == "fast"), None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(config: dict, batch: int, device):
    g = torch.Generator().manual_seed(0)
    size = config["image_size"]
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).float().to(device)
    return x, t


def float64_reference(config: dict, batch: int, device) -> torch.Tensor:
    """The float64 forward of the variants' network on the first images of their input batch."""
    model, _ = build("fp32", config, device)
    x, t = _inputs(config, batch, device)
    n = min(PARITY_IMAGES, batch)
    with torch.inference_mode():
        return model.double()(x[:n].double(), t[:n].double())


def measure(config_name: str, batch: int, variant: str, device, *, iters: int, warmup: int, flops: float,
            ref: torch.Tensor | None, base_override: str | None = None) -> dict:
    """Time one variant: median seconds of ``iters`` forwards after ``warmup``; error of its first outputs."""
    base, mods = parse_variant(variant)
    base = base_override or base
    config = CONFIGS[config_name]
    model, autocast_dtype = build(base, config, device)
    torch.backends.cudnn.benchmark = "cudnn" in mods
    forward = torch.compile(model) if "compile" in mods else model
    x, t = _inputs(config, batch, device)
    if base.startswith("fast-cl"):
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        out = forward(x, t, autocast_dtype=autocast_dtype)  # compilation and autotuning happen here
        _sync(device)
        first = time.perf_counter() - start
        if "graph" in mods:
            if device.type != "cuda":
                raise ValueError(f"variant {variant!r} captures a CUDA graph; the device is {device}")
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    forward(x, t, autocast_dtype=autocast_dtype)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = forward(x, t, autocast_dtype=autocast_dtype)

            def call():
                graph.replay()
        else:
            def call():
                forward(x, t, autocast_dtype=autocast_dtype)
        for i in range(warmup + iters):
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        err = None
        if ref is not None:
            o = out[: ref.shape[0]].double()
            err = float((o - ref).norm() / ref.norm())
    seconds = statistics.median(times)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    low = base != "fp32"
    peak = peak_tflops(name, low)
    tflops = flops * batch / seconds / 1e12
    row = {"config": config_name, "device": name, "batch": batch,
           "variant": (base + "".join("+" + m for m in mods)) if base_override is None else
           f"best={base}" + "".join("+" + m for m in mods),
           "dtype": "bfloat16" if low else "float32", "ms": 1e3 * seconds, "images/s": batch / seconds,
           "TFLOP/s": tflops, "% of peak": None if peak is None else 100 * tflops / peak, "first call s": first,
           "rel err": err, "base": base, "gflop/image": flops / 1e9}
    del model, forward, out
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def format_row(r: dict) -> str:
    pct = "-" if r["% of peak"] is None else f"{r['% of peak']:.1f}"
    err = "-" if r["rel err"] is None else f"{r['rel err']:.2e}"
    return (f"| {r['config']} | {r['device']} | {r['batch']} | {r['variant']} | {r['dtype']} | {r['ms']:.2f} | "
            f"{r['images/s']:.1f} | {r['TFLOP/s']:.3g} | {pct} | {r['first call s']:.2f} | {err} |")


CATEGORIES = (  # (name, regular expression on the lower-cased kernel name), first match wins
    ("input convolution (fused Triton)", r"_conv_in_kernel"),
    ("sampler kernels (Triton)", r"_particle_step|_blur_|_resample_kernel|_moved_list|_langevin|_stage1"),
    ("FFT (cuFFT)", r"fft"),
    ("layout transform", r"nchwtonhwc|nhwctonchw|nchw2nhwc|nhwc2nchw|transpose|permute"),
    ("convolution / GEMM", r"conv|gemm|xmma|cutlass|wgmma|implicit|sm90|sm80|dgrad|fprop|cudnn|cublas"),
    ("attention", r"flash|fmha|attention|efficient|softmax"),
    ("GroupNorm (fused Triton)", r"_groupnorm"),
    ("residual add (fused Triton)", r"_residual_add"),
    ("GroupNorm (PyTorch)", r"group_norm|groupnorm|rowwise_moments|batch_norm"),
    ("element-wise, copies, cat", r"elementwise|vectorized|copy|cat|unrolled|fill|pool|upsample|interp"),
)


def kernel_table(events) -> tuple[list, dict, float]:
    """(name, calls, total us) of the device kernels, their totals per category, and the total."""
    rows = []
    for e in events:
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0.0)
        dev = getattr(e, "device_type", None)
        if us and (dev is None or "CUDA" in str(dev)):
            rows.append((e.key, int(e.count), float(us)))
    rows.sort(key=lambda r: -r[2])
    total = sum(r[2] for r in rows)
    cats: dict = {}
    for name, _, us in rows:
        low = name.lower()
        cat = next((c for c, rx in CATEGORIES if re.search(rx, low)), "other")
        cats[cat] = cats.get(cat, 0.0) + us
    return rows, cats, total


def profile(config_name: str, batch: int, base: str, mods, device, out: Path | None) -> None:
    """Kernels of two forwards of one variant (eager; a graph replays the same kernels), printed and appended to
    ``out``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    config = CONFIGS[config_name]
    model, autocast_dtype = build(base, config, device)
    torch.backends.cudnn.benchmark = "cudnn" in mods
    x, t = _inputs(config, batch, device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode():
        for _ in range(2):
            model(x, t, autocast_dtype=autocast_dtype)
        _sync(device)
        with torch_profile(activities=acts) as prof:
            for _ in range(2):
                model(x, t, autocast_dtype=autocast_dtype)
            _sync(device)
    title = (f"### Kernels of two forwards: {config_name}, batch {batch}, {base}{''.join('+' + m for m in mods)} "
             f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})")
    write_report(kernel_report(prof.key_averages(), title, 2, "forward"), out)


def kernel_report(events, title: str, per: float, unit: str, top: int = 30) -> str:
    """Markdown of the device kernels of ``events`` (a profiler's ``key_averages()``) per ``unit`` (``per`` of them
    were profiled): the totals by category, then the ``top`` kernels."""
    rows, cats, total = kernel_table(events)
    lines = [title, "", f"{sum(r[1] for r in rows) / per:g} kernel launches per {unit}; {total / per / 1e3:.2f} ms "
             f"of kernel time per {unit}.", "", f"| category | ms / {unit} | share |", "| --- | --- | --- |"]
    for cat, us in sorted(cats.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {cat} | {us / per / 1e3:.2f} | {100 * us / max(total, 1e-9):.1f}% |")
    lines += ["", f"| kernel | calls / {unit} | ms / {unit} | share |", "| --- | --- | --- | --- |"]
    for name, calls, us in rows[:top]:
        short = name if len(name) <= 110 else name[:107] + "..."
        lines.append(f"| `{short}` | {calls / per:g} | {us / per / 1e3:.3f} | {100 * us / max(total, 1e-9):.1f}% |")
    return "\n".join(lines) + "\n"


def write_report(text: str, out: Path | None) -> None:
    """Print ``text`` and append it to ``out`` (if given)."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as fh:
            fh.write(text + "\n")
    print(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="adm-ffhq256", help=f"comma-separated, of {', '.join(sorted(CONFIGS))}")
    parser.add_argument("--batches", default="64", help="comma-separated batch sizes")
    parser.add_argument("--variants", default="autocast,fast,fast-cl", help="comma-separated (module docstring)")
    parser.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=positive_int, default=10, help="timed forwards per variant")
    parser.add_argument("--warmup", type=nonneg_int, default=3, help="untimed forwards first (after the first call)")
    parser.add_argument("--no-parity", action="store_true", help="skip the float64 reference forward")
    parser.add_argument("--profile", default=None, help="variant whose kernels to profile (e.g. best+cudnn)")
    parser.add_argument("--profile-out", default=None,
                        help="markdown file the profile is appended to (default: --markdown's file; else printed only)")
    parser.add_argument("--markdown", type=markdown_arg, default=None, help="markdown file the table is appended to")
    parser.add_argument("--best-out", default=None, help="file to write the fastest plain variant's name to")
    parser.add_argument("--csv", action="store_true", help="append rows to bench/results/adm.csv")
    parser.add_argument("--header", action="store_true", help="print the table header first")
    parser.add_argument("--gn-sweep", default=None,
                        help="CHUNKS:PROGRAMS, comma-separated each: time the GroupNorm kernel's settings first")
    parser.add_argument("--gn-best-out", default=None,
                        help="file to write the fastest --gn-sweep setting to, as this script's options")
    parser.add_argument("--gn-chunk-bytes", type=positive_int, default=None, help="afdps.kernels.groupnorm.CHUNK_BYTES")
    parser.add_argument("--gn-programs", type=positive_int, default=None, help="afdps.kernels.groupnorm.PROGRAMS")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny config, batch 2, one iteration per variant on the CPU (checks the script runs)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.configs, args.batches, args.device, args.iters, args.warmup = "tiny", "2", "cpu", 1, 0
    try:
        args.configs = [c.strip() for c in args.configs.split(",")]
        for c in args.configs:
            if c not in CONFIGS:
                raise ValueError(f"config {c!r} is not one of {', '.join(sorted(CONFIGS))}")
        try:
            args.batches = [int(b) for b in str(args.batches).split(",")]
        except ValueError:
            raise ValueError(f"--batches must be comma-separated integers >= 1, e.g. 16,64,256; got "
                             f"{args.batches!r}") from None
        args.variants = [v.strip() for v in args.variants.split(",")]
        for v in args.variants + ([args.profile] if args.profile else []):
            parse_variant(v)
        if args.profile and {"graph", "compile"} & set(parse_variant(args.profile)[1]):
            raise ValueError(f"--profile {args.profile}: the profile runs the network eagerly (+cudnn at most); a "
                             "+graph or +compile title would name what did not run")
    except ValueError as exc:
        parser.error(str(exc))
    given = args.gn_sweep
    try:
        if args.gn_sweep is not None:
            chunks, programs = args.gn_sweep.split(":")
            args.gn_sweep = [(int(c), int(p)) for c in chunks.split(",") for p in programs.split(",")]
            if min(min(cp) for cp in args.gn_sweep) < 1:
                raise ValueError
    except ValueError:
        parser.error(f"--gn-sweep must be CHUNKS:PROGRAMS, positive integers, e.g. 32,128:1024,4096; got "
                     f"{given!r}")
    if min(args.batches) < 1 or args.iters < 1 or args.warmup < 0:
        parser.error(f"batches and --iters must be >= 1 and --warmup >= 0, got {args.batches}, {args.iters}, "
                     f"{args.warmup}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} asked for but CUDA is not available")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.header:
        print(HEADER, flush=True)
    md = Path(args.markdown) if args.markdown else None
    if md is not None and args.header:
        md.parent.mkdir(parents=True, exist_ok=True)
        with md.open("a") as fh:
            fh.write("\n" + HEADER + "\n")
    rows = []
    status = 0
    tuned = {"cudnn" in parse_variant(v)[1] for v in args.variants} | ({True} if args.gn_sweep else set())
    if device.type == "cuda" and len(tuned) > 1:  # (bench/gpu_adm.sh runs them in separate processes)
        note = ("bench_adm: warning: cuDNN-autotuned (+cudnn) and plain variants in one process: cuDNN's plan cache is "
                "keyed without torch.backends.cudnn.benchmark, so a variant may run the plans another chose; time "
                "them in separate processes")
        print(note, file=sys.stderr, flush=True)
        if md is not None:
            with md.open("a") as fh:
                fh.write(f"\n{note}\n")
    gn = set_groupnorm(args.gn_chunk_bytes, args.gn_programs)
    if args.gn_sweep:
        config_name, batch = args.configs[0], args.batches[0]
        timed = []
        for chunk, programs in args.gn_sweep:
            set_groupnorm(chunk, programs)
            try:
                row = measure(config_name, batch, "fast-cl+cudnn", device, iters=args.iters, warmup=args.warmup,
                              flops=flops_per_image(CONFIGS[config_name]), ref=None)
            except Exception as exc:  # one setting's failure must not end the sweep
                print(f"GroupNorm {chunk} B, {programs} programs failed: {type(exc).__name__}: {exc}", flush=True)
                status = 1
                continue
            row["variant"] += f" (GroupNorm: {chunk} B, {programs} programs)"
            timed.append((row["ms"], chunk, programs))
            print(format_row(row), flush=True)
            if md is not None:
                with md.open("a") as fh:
                    fh.write(format_row(row) + "\n")
        if not timed:
            raise SystemExit("--gn-sweep: every GroupNorm setting failed")
        _, chunk, programs = min(timed)
        set_groupnorm(chunk, programs)
        print(f"GroupNorm kept: CHUNK_BYTES {gn.CHUNK_BYTES}, PROGRAMS {gn.PROGRAMS}", flush=True)
        if args.gn_best_out:
            Path(args.gn_best_out).write_text(f"--gn-chunk-bytes {gn.CHUNK_BYTES} --gn-programs {gn.PROGRAMS}\n")
    for config_name in args.configs:
        flops = flops_per_image(CONFIGS[config_name])
        for batch in args.batches:
            ref = None if args.no_parity else float64_reference(CONFIGS[config_name], batch, device)
            done = []
            for variant in args.variants:
                base, mods = parse_variant(variant)
                override = None
                if base == "best":
                    plain = [r for r in done if "+" not in r["variant"]]
                    if not plain:
                        raise SystemExit(f"variant {variant!r} needs a plain variant measured before it")
                    override = min(plain, key=lambda r: r["ms"])["base"]
                try:
                    row = measure(config_name, batch, variant, device, iters=args.iters, warmup=args.warmup,
                                  flops=flops, ref=ref, base_override=override)
                except Exception as exc:  # one variant's failure (a compile error, memory) must not end the run
                    failed = f"| {config_name} | - | {batch} | {variant} | failed: {type(exc).__name__}: " \
                             f"{' '.join(str(exc).split())[:300]} |"
                    print(failed, flush=True)
                    if md is not None:
                        with md.open("a") as fh:
                            fh.write(failed + "\n")
                    status = 1
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                done.append(row)
                rows.append(row)
                print(format_row(row), flush=True)
                if md is not None:
                    with md.open("a") as fh:
                        fh.write(format_row(row) + "\n")
            plain = [r for r in done if "+" not in r["variant"]]
            if args.best_out and plain and config_name == args.configs[0] and batch == args.batches[0]:
                Path(args.best_out).write_text(min(plain, key=lambda r: r["ms"])["base"] + "\n")
            if args.profile and config_name == args.configs[0] and batch == args.batches[0]:
                base, mods = parse_variant(args.profile)
                if base == "best":
                    plain = [r for r in done if "+" not in r["variant"]]
                    base = min(plain, key=lambda r: r["ms"])["base"] if plain else "fast-cl"
                out = Path(args.profile_out) if args.profile_out else md  # neither: printed only
                try:
                    profile(config_name, batch, base, mods, device, out)
                except Exception as exc:
                    print(f"profile failed: {type(exc).__name__}: {exc}", flush=True)
                    status = 1
    if args.csv and args.smoke and not os.environ.get("AFDPS_BENCH_RESULTS"):
        print("bench_adm: --smoke writes CSV rows only into $AFDPS_BENCH_RESULTS, not beside bench/results/adm.csv's "
              "measurements", file=sys.stderr)
    elif args.csv:
        from bench.runner import append_csv, environment

        env = environment(device)
        append_csv("adm", [{"bench": "adm", "case": r["config"], "shape": f"{r['batch']}x3x{CONFIGS[r['config']]['image_size']}^2",
                            "dtype": r["dtype"], "variant": r["variant"], "ms": r["ms"], "rel err": r["rel err"],
                            "note": f"{r['images/s']:.1f} img/s, {r['TFLOP/s']:.1f} TFLOP/s, first call "
                                    f"{r['first call s']:.1f} s", **env} for r in rows])
    return status


if __name__ == "__main__":
    sys.exit(main())
