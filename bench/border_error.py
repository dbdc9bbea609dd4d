"""The border error of a real (non-circular) blur, before and after ``Blur(boundary="valid")``.

A measured photo is the valid part of a larger scene's blur. Each bundled photo is loaded at 316x316
(the scene), blurred by the paper's 61x61 std-3 Gaussian kernel without wrap-around and cropped to the
256x256 part the kernel saw whole, plus noise ``sigma_y = 0.05`` on [-1, 1]. It is restored under the
demo's stationary Gaussian prior (fitted on chelsea, coffee and rocket at 400x400: held out only for astronaut) by the exact posterior mean of two models:

- circular (before): the 256x256 measurement taken as a wrap-around blur of a 256x256 image;
- valid (after): the measurement as ``crop(blur(x))`` of the 316x316 scene (conjugate gradients).

PSNR against the true 256x256 window in the border band (the outer 30 px, half the kernel) and in the
interior. With ``--afdps N`` it also runs the sampler (FK, eta 0.5, the "noisy" potential, 60 steps, N
particles) on the valid model of the first photo and scores its weighted mean the same way.

    python -m bench.border_error --out border.md [--afdps 8]
"""
from __future__ import annotations

import argparse
import time

import torch

from afdps.cli._common import nonneg_int, positive_int  # noqa: E402
import afdps
from bench.runner import print_report
from afdps import ops
from afdps.priors import SpectralGaussian

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
K, STD, WINDOW, SIGMA_Y = 61, 3.0, 256, 0.05
BAND = K // 2


def band_psnr(x, truth):
    """(border band, interior) PSNR of ``x`` against ``truth``, both (C, 256, 256) on [-1, 1]."""
    inner = torch.zeros(truth.shape[-2:], dtype=torch.bool)
    inner[BAND:-BAND, BAND:-BAND] = True
    err = (x.double() - truth.double()).square().mean(0)
    return tuple(float(10 * torch.log10(4.0 / err[m].mean())) for m in (~inner, inner))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.add_argument("--afdps", type=nonneg_int, default=0, help="also sample the first photo with this many particles")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--skip-exact", action="store_true", help="only the sampler runs (with --afdps)")
    args = p.parse_args(argv)
    if args.skip_exact and not args.afdps:
        p.error("--skip-exact leaves only the sampler's run, which --afdps N asks for: with neither there is nothing "
                "to measure")
    torch.set_num_threads(args.threads)
    scene_size = WINDOW + K - 1
    kernel = ops.gaussian_kernel(K, STD)
    # the demo's prior photos, resized to 400 px (rocket is 300 px tall as stored, smaller than the scene)
    photos = [afdps.load_photo(n, 400) for n in ("chelsea", "coffee", "rocket")]
    prior_scene = SpectralGaussian.fit(photos, (scene_size, scene_size), num_crops=48, seed=0)
    prior_window = SpectralGaussian.fit(photos, (WINDOW, WINDOW), num_crops=48, seed=0)
    valid = ops.Blur(kernel, (3, scene_size, scene_size), boundary="valid")
    circular = ops.Blur(kernel, (3, WINDOW, WINDOW))
    rows = []
    for i, name in enumerate(() if args.skip_exact else PHOTOS):
        scene = afdps.load_photo(name, scene_size).double()
        truth = scene[:, BAND:BAND + WINDOW, BAND:BAND + WINDOW]
        y = valid.measure(scene[None], SIGMA_Y, torch.Generator().manual_seed(i))[0]
        before = prior_window.posterior_mean(circular, y, SIGMA_Y)
        t0 = time.perf_counter()
        after = prior_scene.posterior_mean(valid, y, SIGMA_Y)[:, BAND:BAND + WINDOW, BAND:BAND + WINDOW]
        t_cg = time.perf_counter() - t0
        row = {"photo": name, "measurement": band_psnr(y, truth), "circular": band_psnr(before, truth),
               "valid": band_psnr(after, truth), "cg_s": t_cg}
        rows.append(row)
        print(row, flush=True)
    lines = [] if args.skip_exact else ["| photo | measurement border / interior | circular model border / interior | valid model border / "
             "interior | border gain |", "|---|---|---|---|---|"]
    for r in rows:
        m, c, v = r["measurement"], r["circular"], r["valid"]
        lines.append(f"| {r['photo']} | {m[0]:.2f} / {m[1]:.2f} | {c[0]:.2f} / {c[1]:.2f} | {v[0]:.2f} / {v[1]:.2f} | "
                     f"{v[0] - c[0]:+.2f} dB |")
    if args.afdps:
        scene = afdps.load_photo(PHOTOS[0], scene_size).float()
        truth = scene[:, BAND:BAND + WINDOW, BAND:BAND + WINDOW]
        y = valid.measure(scene[None].double(), SIGMA_Y, torch.Generator().manual_seed(0)).float()
        lines += ["", f"AFDPS on {PHOTOS[0]} (FK, eta 0.5, potential 'noisy', 60 steps, {args.afdps} particles, seed 0; "
                  "the same measurement), weighted mean:", "",
                  "| model | guidance | border / interior PSNR | final ESS/N | wall |", "|---|---|---|---|---|"]
        for model, prior, op, crop in (("circular", prior_window, circular, False), ("valid", prior_scene, valid, True)):
            t0 = time.perf_counter()
            res = afdps.sample(prior, op, y, SIGMA_Y, num_particles=args.afdps, num_steps=60, potential="noisy",
                               eta=0.5, seed=0, progress=False)
            wall = time.perf_counter() - t0
            mean = res.mean[0, :, BAND:BAND + WINDOW, BAND:BAND + WINDOW] if crop else res.mean[0]
            b, n = band_psnr(mean, truth)
            lines.append(f"| {model} | {afdps.sampler.prepare(prior, op, y, SIGMA_Y).guidance} | {b:.2f} / {n:.2f} | "
                         f"{float(res.ess[-1, 0]):.2f} | {wall:.0f} s |")
            print(lines[-1], flush=True)
    print_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
