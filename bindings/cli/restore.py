"""``afdps restore``: restore measured images you hold (the work: :func:`afdps.engine.restore.restore`).

    afdps restore blurry/*.png --prior mnist --task gaussian-blur --out restored/
    afdps restore --manifest jobs.jsonl --prior ffhq_10m.pt --arch adm-ffhq256 --out restored/ --resume

Per image: ``measurement.png``, ``best.png``, ``mean.png``, ``std.png`` (colour-mapped per-pixel std, scaled to the
image's largest), ``mean.npy``/``std.npy`` (float, the mean not clipped), ``ess.png``, ``metrics.json`` (and ``particles.npz`` with ``--save-particles``) under
``OUT/<name>/``; ``OUT/index.html`` shows them all; ``OUT/journal.jsonl`` lists finished images, which
``--resume`` skips (a killed run restarts where it stopped and gives the same outputs). SIGTERM ends
the run after the current image's files with exit status 143.

Under ``torchrun`` (``torchrun --nproc-per-node R -m afdps.cli restore ...``) the images are sharded across
the ranks (each journals its own ``journal.rank<r>.jsonl``; rank 0 writes the index); with
``--particle-parallel`` every rank takes a share of each image's particles instead. Sharded, the outputs equal a
one-process run's byte for byte (at the same --threads on the CPU); particle-parallel, to the last bits of the network's batched arithmetic (each
rank calls it on its own particles).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from ..api import load_prior
from ..engine.distributed import ParticleGroup, env_world, init_from_env
from ..engine.loading import arch_record
from ..engine.lpips import load_lpips
from ..engine.potentials import POTENTIALS
from ..engine.restore import BLUR_TASKS, BOUNDARIES, RESTORE_TASKS, Interrupted, jobs_from_inputs, jobs_from_manifest, restore
from ..engine.sampler import DEFAULT_CORRECTOR_SNR, TEMPERINGS
from ..engine.validation import MIN_SIGMA_Y
from ._common import (DEFAULT_THREADS, add_fast_network, add_sampler_extras, nonneg_int, open_fraction_float,
                      positive_int, power_float, sigma_float, steps_int, prior_digest, resolve_device, seed_int, snr_schedule)

HELP = "restore your own measured images (files, folders, globs or a manifest) with AFDPS"
MEMORY_OPTIONS = ("in afdps restore: num_particles is --particles, the prior's batch_size --network-batch; one "
                  "image per call")


def _or_auto(parse, what: str):
    """An argparse type: ``"auto"``, or what ``parse`` accepts (``what`` names it in the error)."""
    def convert(text: str):
        if text == "auto":
            return "auto"
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be {what} or 'auto', got {text!r}") from None

    convert.__name__ = f"{what} or 'auto'"
    return convert


_sigma = _or_auto(sigma_float, f"a number >= {MIN_SIGMA_Y:g} (below, 1 / sigma_y^2 nears float32's largest number)")
_batch = _or_auto(positive_int, "a positive integer")


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return v


_fraction.__name__ = "a fraction in [0, 1)"


def add_arguments(p) -> None:
    p.add_argument("inputs", nargs="*", help="measured images (PNG/JPEG/TIFF/BMP/NPY), folders or glob patterns "
                   "(of a folder or pattern: those files, hidden ones skipped); every input is read and checked "
                   "before the first image is restored")
    p.add_argument("--manifest", default=None, help="JSON-lines or CSV file with columns path, task, kernel, mask, "
                   "factor, sigma_y, seed and optionally name (a different operator per image; empty cells take the "
                   "options below; a row's relative paths are relative to the manifest, the options' to the working "
                   "folder)")
    p.add_argument("--prior", default="mnist", help="'mnist' (shipped) or a checkpoint path")
    p.add_argument("--arch", default=None,
                   help="architecture of a checkpoint: adm-ffhq256, adm-imagenet256, or a JSON file of its config")
    p.add_argument("--task", choices=RESTORE_TASKS, default=None,
                   help="the degradation (required unless the manifest names it per image)")
    p.add_argument("--kernel", default=None, help="blur kernel of --task blur (.npy or grayscale image; "
                   "normalised; applied as conv2d's cross-correlation)")
    p.add_argument("--kernel-flip", action="store_true", help="flip the kernel (it was defined for a true "
                   "convolution, as deepinv's BlurFFT and scipy.signal.fftconvolve apply it)")
    p.add_argument("--boundary", choices=BOUNDARIES, default=None,
                   help="blur boundary of the blur tasks (default: valid): valid (a real photo: the measurement is the part of a larger scene the kernel "
                   "saw whole, at most the prior's size minus the kernel's plus 1; the whole scene is restored) or "
                   "circular (wrap-around; the measurement has the prior's size)")
    p.add_argument("--mask", default=None, help="mask of --task box, random70 or denoise (image or .npy; "
                   "observed where at least half its largest value: white on black, 0/1 or 0/255; replaces the task's own mask: denoise with a mask inpaints its unobserved "
                   "pixels)")
    p.add_argument("--factor", type=positive_int, default=None, help="downsampling factor of --task sr4 (default: 4)")
    p.add_argument("--sigma-y", type=_sigma, default=0.05, help="noise std on [-1, 1], or 'auto' to estimate it "
                   "(Donoho's wavelet estimator on the finest Haar details)")
    p.add_argument("--seed", type=seed_int, default=0, help="base seed (each image's seed comes from it and the "
                   "image's file stem, so an image is restored the same whatever else is in the run)")
    p.add_argument("--out", required=True, help="output folder (under torchrun: one folder that every rank shares)")
    p.add_argument("--resume", action="store_true", help="continue a run in --out, skipping finished images")
    p.add_argument("--save-particles", action="store_true", help="also write particles.npz (float16)")
    p.add_argument("--reference", default=None, help="folder of clean images with the inputs' file stems (the whole restored scene, or for a "
                   "valid blur the measured window): PSNR/SSIM, and LPIPS with --lpips; an image without one is "
                   "reported and not scored")
    p.add_argument("--lpips", default=None, help="LPIPS weights (a saved lpips.LPIPS(net='alex').state_dict(); "
                   "nothing is downloaded) to score against --reference too")
    p.add_argument("--particles", type=positive_int, default=16, help="particles per image")
    p.add_argument("--steps", type=steps_int, default=100, help="time steps")
    p.add_argument("--method", choices=("sde", "ode"), default="sde", help="sampler")
    p.add_argument("--eta", type=float, default=0.5, help="guidance weight of the SDE (0.5: FK; 1: AFDPS-SDE)")
    p.add_argument("--potential", choices=("auto",) + POTENTIALS, default="auto",
                   help="intermediate potential (spec section 9); auto: tweedie with eta 0.5, scaled otherwise "
                   "(and with --tempering none)")
    p.add_argument("--tempering", choices=TEMPERINGS, default="linear", help="lam schedule")
    p.add_argument("--tempering-ess", type=open_fraction_float, default=0.5,
                   help="ESS target of --tempering adaptive / adaptive-linear, in (0, 1) (default: 0.5)")
    p.add_argument("--time-power", type=power_float, default=2.0, help="time grid power (VP)")
    p.add_argument("--corrector-steps", type=nonneg_int, default=1, help="Langevin steps per step (ode)")
    p.add_argument("--corrector-snr", type=snr_schedule, default=DEFAULT_CORRECTOR_SNR,
                   help="the corrector's r (ode), or r_early,r_late: the first half of the steps, the rest")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "triton"),
                   help="Triton kernels or PyTorch references (auto: AFDPS_BACKEND if set, else the kernels on CUDA)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help=f"torch CPU threads per process (default: half the cores, at most 8, shared by torchrun's "
                   f"ranks on the machine; here {DEFAULT_THREADS} for one process; on the CPU the results' last digits "
                   "depend on it, so byte-identical reruns need the same number)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines every 10%% instead)")
    p.add_argument("--tile-overlap", type=_fraction, default=0.25,
                   help="a measurement larger than the prior's frame is restored in overlapping tiles blended "
                   "linearly; at least this fraction of a tile is shared with each neighbour (the tiles are then spread "
                   "evenly; 0.5 needs about 4x the tiles of 0, 0.9 about 100x)")
    p.add_argument("--network-batch", type=_batch, default=None,
                   help="images per network call: a number, or auto (as many as fit in free memory; the network's "
                   "last bits can then vary with the free memory, so byte-identical reruns need a number) "
                   "(default: all of an image's particles in one call)")
    add_sampler_extras(p)
    add_fast_network(p)
    p.add_argument("--particle-parallel", action="store_true",
                   help="under torchrun: spread each image's particles over the ranks (default: shard the images)")


def _prior_name(args) -> str:
    """The prior as the journal keeps it: a shipped name, or a checkpoint's absolute path (and its --arch)."""
    name = str(Path(args.prior).resolve()) if Path(args.prior).exists() else args.prior
    return name + (f" --arch {arch_record(args.arch)}" if args.arch else "")  # (a JSON config with its contents' digest)


def run(args) -> int:
    if args.threads is None:  # torchrun's ranks on one machine share the cores (R x the default oversubscribed them)
        args.threads = max(1, DEFAULT_THREADS // int(os.environ.get("LOCAL_WORLD_SIZE", env_world()[1])))
    torch.set_num_threads(args.threads)
    if args.particle_parallel and env_world()[1] == 1:
        raise ValueError("--particle-parallel spreads particles over the ranks of a torchrun launch; this run has one "
                         "process (launch with torchrun --nproc-per-node R)")
    _, world_env, local_rank = env_world()
    device = resolve_device(args.device, local_rank)
    if bool(args.inputs) == bool(args.manifest):
        raise ValueError("name the measured images (files, folders or patterns) or --manifest FILE, not both "
                         "and not neither")
    if args.manifest:
        jobs = jobs_from_manifest(args.manifest, seed=args.seed, defaults={
            "task": args.task, "kernel": args.kernel, "mask": args.mask, "factor": args.factor,
            "sigma_y": args.sigma_y})
        missing = [j.name for j in jobs if j.task is None]
        if missing:
            raise ValueError(f"manifest rows without a task and no --task: {missing[:5]}")
    else:
        if args.task is None:
            raise ValueError(f"--task is required with image inputs; one of {', '.join(RESTORE_TASKS)}")
        jobs = jobs_from_inputs(args.inputs, task=args.task, kernel=args.kernel, mask=args.mask, factor=args.factor,
                                sigma_y=args.sigma_y, seed=args.seed)
    if args.kernel_flip and not any(j.task == "blur" for j in jobs):
        raise ValueError("--kernel-flip flips the kernel file of task blur; no image here has that task")
    if args.boundary is not None and not any(j.task in BLUR_TASKS for j in jobs):
        raise ValueError(f"--boundary {args.boundary} is the boundary of the blur tasks ({', '.join(BLUR_TASKS)}); no "
                         "image here has one")
    args.boundary = args.boundary or "valid"
    if device.type == "cuda" and world_env > 1:
        torch.cuda.set_device(device)
    rank, world = init_from_env(device)
    group = ParticleGroup() if args.particle_parallel else None
    if group is not None:
        group.split(args.particles)  # a clear error before any work when the ranks do not divide the particles
    prior = load_prior(args.prior, args.arch, device=device, batch_size=args.network_batch,
                       inference=args.fast_network)
    options = dict(num_particles=args.particles, num_steps=args.steps, method=args.method, eta=args.eta,
                   potential=None if args.potential == "auto" else args.potential, tempering=args.tempering,
                   tempering_ess=args.tempering_ess, time_power=args.time_power,
                   corrector_steps=args.corrector_steps, corrector=args.corrector, corrector_snr=args.corrector_snr,
                   ess_threshold=args.ess_threshold, resample=args.resample,
                   backend=None if args.backend == "auto" else args.backend,  # None: as journals kept it
                   progress=False if args.no_progress else None)
    log = print if rank == 0 else (lambda *a, **k: None)
    mode = "" if world == 1 else (f", {world} ranks sharing each image's particles" if group is not None
                                  else f", images sharded over {world} ranks")
    log(f"afdps restore: {len(jobs)} image(s), prior {args.prior}, {args.particles} particles, {args.steps} steps, "
        f"device {device}{mode} -> {args.out}/")
    try:
        records = restore(prior, jobs, args.out, sample_options=options, reference=args.reference,
                          resume=args.resume, save_particles=args.save_particles, kernel_flip=args.kernel_flip,
                          boundary=args.boundary, rank=rank, world=world, particle_group=group, log=print,
                          lpips=None if args.lpips is None else load_lpips(args.lpips, device),
                          tile_overlap=args.tile_overlap, prior_name=_prior_name(args),
                          prior_digest=prior_digest(args.prior),
                          device=device, progress=False if args.no_progress else None)
    except Interrupted as exc:
        print(f"afdps restore: {exc}", file=sys.stderr)
        return 143
    if rank != 0:
        return 0
    scored = [r for r in records if "psnr_mean" in r]
    if scored:
        mean_psnr = sum(r["psnr_mean"] for r in scored) / len(scored)
        print(f"afdps restore: mean PSNR of the weighted mean {mean_psnr:.2f} dB over {len(scored)} image(s)")
    journal = "journal.jsonl" if world == 1 or group is not None else "journal.rank*.jsonl"
    print(f"afdps restore: {len(records)} image(s) in {args.out}/ (index.html, {journal})")
    return 0
