"""Resampling with the gather of the moved rows: Triton (two launches, no host sync) vs PyTorch.

Cases: one image of N in {64, 256, 1024} particles of 3x256x256 float32 pixels; ``balanced`` weights
(log-weights 0.3 N(0, 1): ESS about 0.9, a few rows move; resampling forced with threshold 1) and
``degenerate`` ones (one particle holds the weight: N - 1 rows move).

Variants:
- ``torch_unfused``: :func:`resample_ref` + :func:`gather_rows` (eager, the sampler's CPU path; the
  gather looks the moved rows up on the host);
- ``torch_searchsorted``: the textbook baseline: softmax, cumsum, ``searchsorted`` of the systematic
  points, ``x[:, idx]`` (copies every row);
- ``torch_multinomial``: ``torch.multinomial`` + ``x[:, idx]`` (copies every row);
- ``torch_moved_rows``: ``index_copy_`` of only the moved rows, with their indices known in advance;
- ``copy_moved``: a plain copy of as many bytes as the moved rows hold (the bound);
- ``triton_fused``: :func:`resample_and_gather_triton` (in place);
- on CUDA, ``triton_graph`` and ``copy_moved_graph``: the same two replayed as CUDA graphs (GPU time
  without Python launch overhead, as inside ``sample(..., cuda_graph=True)``).

Bytes: the DRAM traffic of the copy, (distinct rows read + rows written) x D x 4 for the variants that copy the
moved rows (degenerate weights: one source row, read once and then from L2, against N - 1 written; before
2026-12-07 two bytes per moved row's byte were counted, which put the degenerate rows above 100% of copy), 2 x N x D
x 4 for those that copy every row. ``copy_moved`` copies distinct rows, so it is the bound only for balanced
weights. ``/ copy_moved`` is the time relative to it; target: ``triton_fused`` within 1.5x of it (measured on an
H200 in bench/results/). ``rel err``: fraction
of rows that differ from :func:`resample_ref` + :func:`gather_rows` (0 for exact; the two textbook
baselines produce a different, sorted arrangement and have no error entry).

    python -m bench.bench_resample           # full sizes, CUDA
    python -m bench.bench_resample --smoke   # tiny, CPU
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

if "--smoke" in sys.argv and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bench import runner  # noqa: E402

NAME = "resample"
PARTICLES_FULL = (64, 256, 1024)
EVENT_FULL = (3, 256, 256)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    runner.add_common_args(parser, compiled=False, variants=("torch_unfused", "torch_searchsorted", "torch_multinomial",
                                                             "torch_moved_rows", "triton_fused", "triton_graph",
                                                             "copy_moved", "copy_moved_graph"))
    parser.add_argument("--particles", type=runner.positive_int, nargs="*", default=None)
    parser.add_argument("--weights", nargs="*", default=["balanced", "degenerate"], choices=("balanced", "degenerate"))
    return parser.parse_args(argv)


def _log_weights(kind: str, N: int, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(N)
    if kind == "balanced":
        lw = 0.3 * torch.randn(1, N, generator=gen, dtype=torch.float64)
    elif kind == "degenerate":
        lw = torch.full((1, N), -50.0, dtype=torch.float64)
        lw[0, N // 3] = 0.0
    else:
        raise SystemExit(f"--weights {kind!r} is not one of balanced, degenerate")
    return lw.to(device)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from afdps.kernels import resample as rs
    from afdps.kernels.philox import uniform_rows

    device, env, triton_ok = runner.prepare(args)
    Ns = args.particles or ((8,) if args.smoke else PARTICLES_FULL)
    event = (3, 8, 8) if args.smoke else EVENT_FULL
    D = event[0] * event[1] * event[2]
    keys = torch.tensor([20240607], dtype=torch.int64, device=device)
    thr = torch.full((1,), 1.0, dtype=torch.float64, device=device)
    all_rows = []
    for kind in args.weights:
        for N in Ns:
            lw = _log_weights(kind, N, device)
            x = torch.randn(1, N, D, device=device)
            anc, *_ = rs.resample_ref(lw, keys, threshold=1.0)
            slots = torch.arange(N, device=device)
            moved = (anc[0] != slots)
            dst, src = slots[moved], anc[0][moved]
            n_moved = int(dst.numel())
            n_src = int(src.unique().numel())  # distinct rows read (degenerate: one, read once from DRAM)
            moved_bytes = (n_src + n_moved) * D * x.element_size()  # DRAM traffic of copying the moved rows
            want = rs.gather_rows(x.clone(), anc)
            row_bytes = D * x.element_size()

            def frac_wrong(out):
                return float((out != want).any(-1).float().mean())

            def unfused():
                a, *_ = rs.resample_ref(lw, keys, threshold=1.0)
                return rs.gather_rows(x, a)

            def searchsorted():
                w = torch.softmax(lw, -1)
                c = torch.cumsum(w, -1)
                u = uniform_rows(keys, 1, 1)[:, 0, :].to(torch.float64)
                pts = (torch.arange(N, device=device, dtype=torch.float64) + u) / N
                idx = torch.searchsorted(c / c[:, -1:], pts, right=True).clamp_(max=N - 1)
                return x[:, idx[0]]

            gen = torch.Generator(device=device).manual_seed(1)

            def multinomial():
                idx = torch.multinomial(torch.softmax(lw, -1).float(), N, replacement=True, generator=gen)
                return x[:, idx[0]]

            def moved_rows(x=x):
                return x.index_copy_(1, dst, x.index_select(1, src))

            # errors first, each on a fresh copy (the timed variants then work in place on x: repeating a
            # stable arrangement's gather copies the same rows again, so every repetition costs the same)
            err_unfused = frac_wrong(rs.gather_rows(x.clone(), rs.resample_ref(lw, keys, threshold=1.0)[0]))
            err_moved = frac_wrong(moved_rows(x.clone()))
            err_fused = None
            if triton_ok:
                xt = x.clone()
                rs.resample_and_gather_triton(xt, lw, keys, threshold=thr)
                err_fused = frac_wrong(xt)
                del xt
            variants = {
                "torch_unfused": runner.Variant(unfused, bytes=moved_bytes, error=err_unfused),
                "torch_searchsorted": runner.Variant(searchsorted, bytes=2 * N * row_bytes,
                                                     note="same ancestors, sorted arrangement: every row copied"),
                "torch_multinomial": runner.Variant(multinomial, bytes=2 * N * row_bytes,
                                                    note="different random stream"),
                "torch_moved_rows": runner.Variant(moved_rows, bytes=moved_bytes, error=err_moved),
            }
            if n_moved:
                a_buf = torch.empty(n_moved, D, device=device)
                b_buf = torch.empty(n_moved, D, device=device)
                variants["copy_moved"] = runner.Variant(lambda: b_buf.copy_(a_buf), bytes=2 * n_moved * row_bytes)
                if device.type == "cuda":  # GPU time without Python launch overhead, as inside a captured sampler
                    variants["copy_moved_graph"] = runner.Variant(lambda: b_buf.copy_(a_buf),
                                                                  bytes=2 * n_moved * row_bytes, cuda_graph=True)
            if triton_ok:
                variants["triton_fused"] = runner.Variant(
                    lambda: rs.resample_and_gather_triton(x, lw, keys, threshold=thr), bytes=moved_bytes,
                    error=err_fused)
                if device.type == "cuda":
                    variants["triton_graph"] = runner.Variant(
                        lambda: rs.resample_and_gather_triton(x, lw, keys, threshold=thr),
                        bytes=moved_bytes, error=err_fused, cuda_graph=True)
            rows = runner.run_case(NAME, f"{kind} N={N} moved={n_moved}", f"1x{N}x{'x'.join(map(str, event))}",
                                   "float32", moved_bytes, variants, device, rep_ms=args.rep, env=env,
                                   only=args.variants,
                                   relative_to="copy_moved" if n_moved else None)
            runner.emit(NAME, f"resample {kind} N={N} ({n_moved} rows move; {env['device']})", rows, args)
            all_rows += rows
            del x, want, variants
            runner.release(device)
    return all_rows


if __name__ == "__main__":
    main()
