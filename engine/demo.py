"""The demo: restore a bundled photo blurred by the paper's Gaussian kernel (the work of ``afdps demo``).

The photo (scikit-image's astronaut, 256x256) is blurred with the 61x61, std-3 Gaussian kernel and
noise ``sigma_y = 0.05`` on the [-1, 1] scale, then restored with AFDPS under a stationary Gaussian
prior fitted on the other bundled photos. Writes PNG files and ``metrics.json``; returns the metrics
(PSNR/SSIM of the measurement, the best particle, the weighted mean and the exact posterior mean).
"""
from __future__ import annotations

import time

import torch

from . import ops
from .data import DEMO_PHOTO, from_unit, load_photo, prior_photos
from .io import output_folder, save_png, write_json
from .metrics import psnr, ssim
from .plots import ess_plot
from .priors import SpectralGaussian
from .sampler import sample

__all__ = ["run_demo"]

OUTPUTS = ("truth.png", "measurement.png", "best.png", "mean.png", "std.png", "ess.png")  # and metrics.json


def run_demo(out, *, particles: int = 64, steps: int = 60, method: str = "sde", eta: float | None = None,
             tempering: str = "linear", size: int = 256, sigma_y: float = 0.05, seed: int = 0, device=None,
             progress=None, log=print) -> dict:
    """Run the demo into folder ``out``; ``log`` receives the lines to show (``print`` by default). ``eta``: the
    SDE's guidance weight, 1 (AFDPS-SDE) by default; the ODE has none (given with it, the sampler says it changes
    nothing). The outputs' names are fixed: a rerun into the same folder replaces them, and nothing else there."""
    if particles < 1 or steps < 1:
        raise ValueError(f"--particles and --steps must be >= 1, got {particles} and {steps}")
    largest = min(min(p.shape[-2:]) for p in prior_photos())  # the prior is fitted on size x size crops of them
    if not 64 <= size <= largest:
        raise ValueError(f"--size must be from 64 (the blur kernel is 61x61) to {largest} (the prior's photos are "
                         f"at least {largest} pixels on a side), got {size}")
    guided = {} if eta is None and method == "ode" else {"eta": 1.0 if eta is None else eta}
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = output_folder(out)  # a file there, or a folder that cannot be written, before the run (not after it)

    t0 = time.perf_counter()
    truth = load_photo(DEMO_PHOTO, size).float()
    shape = tuple(truth.shape)
    prior = SpectralGaussian.fit(prior_photos(), shape[-2:], num_crops=48, seed=0)
    op = ops.Blur(ops.gaussian_kernel(61, 3.0), shape)
    y = op.measure(truth[None], sigma_y, torch.Generator().manual_seed(seed)).to(device)
    log(f"afdps demo: {DEMO_PHOTO} {shape[1]}x{shape[2]}, Gaussian blur 61x61 std 3, sigma_y={sigma_y}, "
        f"{particles} particles, {steps} steps, AFDPS-{method.upper()} "
        + "".join(f"eta={v} " for v in guided.values()) + f"tempering={tempering}, device {device}")
    res = sample(prior, op, y, sigma_y, method=method, **guided, num_particles=particles, num_steps=steps,
                 tempering=tempering, potential="noisy", seed=seed, time_power=2.0, progress=progress)
    best, mean, std = res.best[0].cpu(), res.mean[0].cpu(), res.std[0].cpu()
    exact_mean, _ = prior.posterior_blur(op, y[0].cpu().double(), sigma_y)
    wall = time.perf_counter() - t0

    (out / "metrics.json").unlink(missing_ok=True)  # written last: present only beside a whole set of outputs
    save_png(from_unit(truth), out / "truth.png")
    save_png(from_unit(y[0].cpu()), out / "measurement.png")
    save_png(from_unit(best), out / "best.png")
    save_png(from_unit(mean), out / "mean.png")
    s = std.mean(0)
    save_png((255 * (s / max(float(s.max()), 1e-12))).clamp(0, 255).round().byte().numpy(), out / "std.png")
    ess_plot(res.ess[:, 0].numpy(), res.resampled[:, 0].numpy(), out / "ess.png")

    metrics = {
        "measurement": {"psnr": psnr(y[0].cpu(), truth), "ssim": ssim(y[0].cpu(), truth)},
        "best": {"psnr": psnr(best, truth), "ssim": ssim(best, truth)},
        "mean": {"psnr": psnr(mean, truth), "ssim": ssim(mean, truth)},
        "exact_posterior_mean": {"psnr": psnr(exact_mean.float(), truth), "ssim": ssim(exact_mean.float(), truth)},
        "resampling_events": int(res.resampled.sum()),
        "final_ess": float(res.ess[-1, 0]),
        "wall_seconds": wall,
        "device": str(device),
        "particles": particles,
        "steps": steps,
        "method": method, "eta": guided.get("eta"), "tempering": tempering, "potential": "noisy", "time_power": 2.0,
        "size": size, "sigma_y": sigma_y, "seed": seed,
    }
    write_json(out / "metrics.json", metrics)
    log("                        PSNR (dB)   SSIM")
    for k in ("measurement", "best", "mean", "exact_posterior_mean"):
        log(f"  {k:22s} {metrics[k]['psnr']:8.2f}   {metrics[k]['ssim']:.4f}")
    log(f"  resampled after {metrics['resampling_events']} of {steps} steps; wall time {wall:.1f} s")
    log(f"  wrote {', '.join(sorted(OUTPUTS))} and metrics.json to {out}/")
    return metrics
