"""``afdps eval``: benchmark AFDPS, FK and DPS on restoration tasks (PSNR, SSIM, accuracy, ESS, time).

The work is :func:`afdps.engine.evaluate.evaluate`; this module parses the options, loads the prior and
the images, and rewrites ``results.md``, ``results.csv`` and ``per_image.csv`` after each task x method.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..api import load_classifier, load_mnist_test, load_prior
from ..engine.data import image_files, load_image_folder
from ..engine.distributed import env_world
from ..engine.evaluate import (DEFAULT_TASKS, METHODS, TASKS, NotEvalRows, csv_text, evaluate, markdown_table,
                               read_eval_rows, sampler_options)
from ..engine.loading import arch_record, same_arch
from ..engine.io import checkpoint_changed, content_digest, output_folder, write_json, write_text
from ..engine.potentials import POTENTIALS
from ..shipped import SHIPPED_CLASSIFIERS, data_path
from ..engine.sampler import DEFAULT_CORRECTOR_SNR, TEMPERINGS, default_potential
from ._common import (DEFAULT_THREADS, add_fast_network, add_sampler_extras, format_snr, nonneg_float,
                      is_shipped_prior, open_fraction_float, nonneg_int, positive_int, power_float, sigma_float, steps_int, prior_digest,
                      resolve_device, seed_int, snr_schedule, threads_text)

HELP = "benchmark AFDPS, FK and DPS on restoration tasks (PSNR, SSIM, accuracy, ESS, time)"
MEMORY_OPTIONS = "in afdps eval: num_particles is --particles, the images per call --batch-size"



def method_settings(args, methods) -> str:
    """The settings of the methods that ran, for the head of results.md (those of a method that did not run
    would describe nothing in its table)."""
    parts = []
    if any(m != "dps" for m in methods):
        tempering = args.tempering + (f" (ESS target {args.tempering_ess:g})" if args.tempering.startswith("adaptive")
                                      else "")
        potential = args.potential if args.potential != "auto" else "auto (" + ", ".join(
            f"{m} {_auto_potential(m, args.tempering)}" for m in methods if m != "dps") + ")"
        parts.append(f"Particle methods: tempering {tempering}, potential {potential}, time grid power "
                     f"{args.time_power:g}, resampling below ESS/N {args.ess_threshold:g}")
    if "afdps-ode" in methods:
        parts.append(f"afdps-ode: {args.corrector_steps} Langevin step(s), rule {args.corrector}, r = "
                     f"{format_snr(args.corrector_snr)}")
    if "dps" in methods:
        parts.append(f"{'dps' if parts else 'DPS'}: zeta = {args.dps_zeta:g}, time grid power "
                     f"{args.dps_time_power:g}, one sample per image, no weights (best = mean)")
    return "; ".join(parts)

def _auto_potential(method: str, tempering: str) -> str:
    """The potential that ``--potential auto`` gives particle method ``method`` (the sampler's rule)."""
    opts = sampler_options(method, particles=1, steps=1, seeds=[0])
    return default_potential(opts["method"], opts.get("eta", 0.5), tempering=tempering)


def _split(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise ValueError(f"--{what} {value!r}: unknown {', '.join(bad) or '(empty)'}; available: {', '.join(allowed)}")
    if len(set(items)) < len(items):
        twice = sorted({v for v in items if items.count(v) > 1})[0]
        raise ValueError(f"--{what} {value!r} names {twice} more than once")
    return items


def add_arguments(p) -> None:
    p.add_argument("--prior", default="mnist", help="'mnist' (shipped) or a checkpoint path")
    p.add_argument("--arch", default=None,
                   help="architecture of a checkpoint: adm-ffhq256, adm-imagenet256, or a JSON file of its config")
    p.add_argument("--images", default=None, help="folder of test images, resized so the shorter side fits and "
                   "centre-cropped to the prior's size (.npy: not resized) (default for 1x28x28 priors: the shipped "
                   "MNIST test digits, scored also by the shipped classifier)")
    p.add_argument("--classifier", default="mnist",
                   help="digit classifier of the accuracy columns (MNIST digits only): 'mnist' (shipped) or a "
                   "checkpoint that afdps train-classifier wrote (default: mnist)")
    p.add_argument("--task", default=None, help=f"comma-separated, from {', '.join(TASKS)} "
                   "(default: the four tasks of the image size)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--num-images", type=positive_int, default=100, help="images to restore (the first ones)")
    p.add_argument("--particles", type=positive_int, default=16, help="particles per image")
    p.add_argument("--steps", type=steps_int, default=100, help="time steps")
    p.add_argument("--sigma-y", type=sigma_float, default=0.05, help="measurement noise on [-1, 1]")
    p.add_argument("--tempering", choices=TEMPERINGS, default="linear", help="lam schedule of the particle methods")
    p.add_argument("--tempering-ess", type=open_fraction_float, default=0.5,
                   help="ESS target of --tempering adaptive / adaptive-linear, in (0, 1) (default: 0.5)")
    p.add_argument("--potential", choices=("auto",) + POTENTIALS, default="auto",
                   help="where the likelihood is evaluated along the path (spec section 9); auto: tweedie for fk "
                   "(eta 0.5; scaled with --tempering none), scaled for afdps-sde and afdps-ode")
    p.add_argument("--time-power", type=power_float, default=2.0, help="time grid power (VP; 1 = uniform)")
    p.add_argument("--dps-zeta", type=nonneg_float, default=None,
                   help=f"DPS step size (default: {MNIST_ZETA:g} for the shipped mnist prior, chosen on its "
                   f"development digits; {PAPER_ZETA:g} for other priors, as in the DPS paper)")
    p.add_argument("--dps-steps", type=steps_int, default=None, help="DPS steps (default: --steps)")
    p.add_argument("--dps-time-power", type=power_float, default=1.0,
                   help="DPS's time grid power (default 1: uniform, as in the DPS paper; --time-power is the particle "
                   "methods')")
    p.add_argument("--corrector-steps", type=nonneg_int, default=1, help="Langevin steps per step of afdps-ode")
    p.add_argument("--corrector-snr", type=snr_schedule, default=DEFAULT_CORRECTOR_SNR,
                   help="Langevin step-size parameter r of afdps-ode (spec section 2), or r_early,r_late: the first "
                        "half of the steps, the rest")
    p.add_argument("--batch-size", type=positive_int, default=10, help="images per sampler call")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="seed of image 0 (image i uses seed + i: its measurement noise and sampler streams), and of "
                   "the motion-blur kernel and the random70 mask, which every image shares")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--backend", default=None, choices=("auto", "torch", "triton"),
                   help="kernels or PyTorch references (default: AFDPS_BACKEND, else auto)")
    p.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                   help="torch CPU threads (default: half the cores, at most 8; here %(default)s)")
    p.add_argument("--out", default="eval_out", help="output folder")
    p.add_argument("--resume", action="store_true", help="keep the image rows of an interrupted run in --out (the "
                   "same settings of the methods that run, methods and tasks in any order; a larger --num-images "
                   "extends it, a smaller one that keeps every row takes back an extension; the same checkpoint or "
                   "images under another path continue it) and run only the missing images")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_sampler_extras(p, resample=False)
    add_fast_network(p)


# the options each method uses (settings of the others are neither warned about as used nor compared on --resume)
PARTICLE_METHODS = ("afdps-sde", "afdps-ode", "fk")
USED_BY = {**{k: PARTICLE_METHODS for k in ("particles", "tempering", "tempering_ess", "potential", "time_power",
                                            "ess_threshold", "backend")},
           **{k: ("afdps-ode",) for k in ("corrector_steps", "corrector_snr", "corrector")},
           **{k: ("dps",) for k in ("dps_zeta", "dps_steps", "dps_time_power")}}


def unused_options(args, methods, defaults: dict) -> list[str]:
    """A warning for each option given a value other than its default that no method of ``methods`` uses
    (``--tempering-ess`` also without adaptive tempering): it changes nothing, which the user should know."""
    notes = []
    for key, users in USED_BY.items():
        value = getattr(args, key)
        if value is None or value == defaults.get(key):
            continue
        flag = "--" + key.replace("_", "-")
        if not set(users) & set(methods):
            notes.append(f"{flag} {_text(value)} changes nothing: it applies to {', '.join(users)}, and --methods "
                         f"{','.join(methods)} runs none of them")
        elif key == "tempering_ess" and not args.tempering.startswith("adaptive"):
            notes.append(f"{flag} {_text(value)} changes nothing: it is the ESS target of --tempering adaptive or "
                         f"adaptive-linear, not of {args.tempering}")
    if args.steps != defaults.get("steps") and args.dps_steps is not None and set(methods) == {"dps"}:
        notes.append(f"--steps {args.steps} changes nothing: --methods dps runs --dps-steps {args.dps_steps}")
    return notes


def _read_settings(path: Path) -> dict:
    """The settings a run in ``--out`` wrote, for ``--resume``; a clear refusal where the file is not such."""
    try:
        settings = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume: {str(path)!r} is not the settings file afdps eval writes (not JSON: {exc}); "
                         "the run there cannot be compared with this one, so choose another --out") from None
    if not isinstance(settings, dict):
        raise ValueError(f"--resume: {str(path)!r} is not the settings file afdps eval writes (a JSON "
                         f"{type(settings).__name__}, not an object); choose another --out")
    return settings


def _held_rows(path: Path, per_image: bool = True) -> list[dict]:
    """The per-image (or summary) rows a run in ``--out`` wrote, for ``--resume``; a file that is not such is named."""
    try:
        return read_eval_rows(path, per_image)
    except NotEvalRows as exc:
        if exc.line is None:
            raise ValueError(f"--resume: {str(path)!r} is not the {'per-image' if per_image else 'summary'} CSV "
                             f"afdps eval writes ({exc.reason}); choose another --out") from None
        raise ValueError(f"--resume: {str(path)!r}, line {exc.line}: {exc.reason}; choose another --out, or remove "
                         "the line to run its image again") from None


def _defaults() -> dict:
    """The options' defaults, as argparse gives them."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    return vars(p.parse_args([]))


def _shown(key: str, value) -> str:
    """A setting of settings.json as its option takes it (``corrector_snr`` ``0.1,0.2``, not a tuple's text)."""
    if key == "corrector_snr" and isinstance(value, str) and value.startswith("("):
        try:
            return repr(format_snr(tuple(float(v) for v in value.strip("()").split(","))))
        except ValueError:
            pass
    return repr(value)


def _text(value) -> str:
    return format_snr(value) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)


MNIST_ZETA, PAPER_ZETA = 3.0, 1.0  # docs/design.md: zeta 0.3 / 1 / 3 / 10 on the shipped prior's first digits

IMAGE_HASHES = "image_sha256"  # settings.json: the first 16 hex digits of each image's float32 sha256, in order
PRIOR_HASH = "prior_sha256"  # settings.json: the checkpoint's content_digest (afdps.engine.io)

# options added after runs were written with settings.json, and the value those runs had in effect
ADDED_LATER = {"fast_network": False, "ssim": "[-1, 1]", "classifier": "mnist"}
SSIM = "[0, 1]"  # settings.json: the range SSIM is taken on (afdps.ssim: [-1, 1] before 2026-12-07, where a resume
# would average per-image values of both conventions)


def _differ(old: dict, new: dict, methods, shape) -> list[tuple]:
    """``(setting, old value, new value)`` of each setting that differs between a run's settings.json and this
    invocation's, compared as what runs: methods and tasks as sets (the default tasks by name), ``dps_steps`` None
    as ``steps``, and only the settings of the methods that run (``USED_BY``)."""
    def norm(d):
        c = dict(d)
        c["methods"] = sorted({m.strip() for m in str(c.get("methods", "")).split(",") if m.strip()})
        task = c.get("task")
        c["task"] = sorted(DEFAULT_TASKS.get(shape[1], ()) if task is None else
                           {t.strip() for t in str(task).split(",") if t.strip()})
        for key in ("command", "debug"):  # (argparse's, in settings.json files before 2026-12-06)
            c.pop(key, None)
        c.setdefault("ess_threshold", 0.5)  # (left out of settings.json at its default)
        c.setdefault("dps_time_power", 1.0)  # (settings.json before 2026-12-07: DPS always ran on the uniform grid)
        if not str(c.get("tempering", "linear")).startswith("adaptive"):
            c.pop("tempering_ess", None)  # (left out where unused; a changed --tempering is named itself)
        if not set(PARTICLE_METHODS) & set(methods):  # DPS alone: its steps are all that --steps can mean
            c["dps_steps"] = c.get("steps") if c.get("dps_steps") is None else c["dps_steps"]
            c.pop("steps", None)
        elif c.get("dps_steps") is None and (old.get("dps_steps"), new.get("dps_steps")) != (None, None):
            c["dps_steps"] = c.get("steps")  # (not where both left it: a changed --steps is named once)
        for key, users in USED_BY.items():
            if not set(users) & set(methods):
                c.pop(key, None)
        return c
    a, b = norm(old), norm(new)
    differ = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if "tempering" in [k for k, _, _ in differ]:  # (its ESS target exists on one side only: the tempering says it)
        differ = [d for d in differ if d[0] != "tempering_ess"]
    return differ


def run(args) -> int:
    torch.set_num_threads(args.threads)
    if env_world()[1] > 1:
        raise ValueError("afdps eval runs in one process (every rank would run the whole benchmark and write the same "
                         "files); afdps restore shards images over torchrun's ranks")
    methods = _split(args.methods, METHODS, "methods")
    odd = [m for m in methods if m in ("afdps-sde", "afdps-ode")]
    if args.potential == "tweedie" and odd:
        raise ValueError(f"--potential tweedie is FK's (eta 0.5, one vector-Jacobian product per step): it runs with "
                         f"--methods fk; {' and '.join(odd)} take{'s' if len(odd) == 1 else ''} noisy, scaled or "
                         "inflated (or auto)")
    for note in unused_options(args, methods, _defaults()):
        print(f"afdps eval: warning: {note}", file=sys.stderr)
    device = resolve_device(args.device)
    prior = load_prior(args.prior, args.arch, device=device, inference=args.fast_network)
    digest = prior_digest(args.prior)
    if args.dps_zeta is None:  # a resumed run keeps the zeta it ran with (runs before 2026-12-06 had 1 by default;
        ran = Path(args.out)  # a settings file without results is a run refused before its first row: not a run)
        held = args.resume and (ran / "settings.json").exists() and (ran / "per_image.csv").exists()
        old = _read_settings(ran / "settings.json").get("dps_zeta") if held else None
        args.dps_zeta = old if old is not None else MNIST_ZETA if is_shipped_prior(digest, "mnist") else PAPER_ZETA
    shape = tuple(prior.event_shape)
    tasks = _split(args.task, TASKS, "task") if args.task is not None else list(DEFAULT_TASKS.get(shape[1], ()))
    if not tasks:
        raise ValueError(f"afdps eval's tasks are defined for 1x28x28 digits and 256x256 images; this prior's are "
                         f"{'x'.join(map(str, shape))} (afdps restore takes any size, with its tasks or your kernel "
                         "and mask)")
    labels = classifier = names = None
    if args.images is None:
        if shape != (1, 28, 28):
            raise ValueError(f"--images FOLDER is needed for a prior of {'x'.join(map(str, shape))} images "
                             "(without it: the shipped MNIST test digits, for 1x28x28 priors)")
        if args.num_images > 1000:
            raise ValueError(f"--num-images {args.num_images}: the shipped MNIST test digits are 1000; pass at most "
                             "1000 or --images FOLDER")
        images, labels = load_mnist_test(args.num_images)
        classifier = load_classifier(args.classifier)
    elif args.classifier != "mnist":
        raise ValueError(f"--classifier {args.classifier} scores the shipped MNIST test digits against their labels; "
                         "--images has no labels (leave --classifier out)")
    else:
        images = load_image_folder(args.images, shape, args.num_images)
        names = [f.name for f in image_files(args.images)[:args.num_images]]
    out = output_folder(args.out)
    previous = None
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu ({threads_text(torch.get_num_threads())})")  # what times this invocation's rows
    hashes = [hashlib.sha256(np.ascontiguousarray(im.float().numpy()).tobytes()).hexdigest()[:16] for im in images]
    settings = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in vars(args).items()
                if k not in ("resume", "no_progress", "threads", "out", "device", "backend", "debug", "command")}
    if not args.tempering.startswith("adaptive"):
        settings.pop("tempering_ess")  # unused: runs from before the option resume as they were
    if args.ess_threshold == 0.5:
        settings.pop("ess_threshold")  # the default: runs from before the option resume as they were
    settings["ssim"] = SSIM
    if args.classifier != "mnist":  # (its bytes: one retrained in place scores otherwise; the shipped one's, by
        # any path, is the shipped classifier)
        bytes_of = content_digest(args.classifier)
        shipped = data_path(SHIPPED_CLASSIFIERS["mnist"])
        settings["classifier"] = ("mnist" if shipped.is_file() and bytes_of == content_digest(shipped) else
                                  f"{Path(args.classifier).resolve()} sha256 {bytes_of}")
    settings["arch"] = arch_record(args.arch)  # (a JSON config file: its path and its contents' digest)
    held = [f for f in ("results.csv", "per_image.csv") if (out / f).exists()]
    if held:
        if not args.resume:
            raise ValueError(f"{str(out)!r} holds results of an earlier run; pass --resume to continue it, or choose "
                             "another --out")
        lost = [f for f in ("settings.json", "per_image.csv") if not (out / f).exists()]
        if lost:
            raise ValueError(f"--resume: the run in {str(out)!r} lacks {' and '.join(lost)}, so it cannot be "
                             "continued; choose another --out")
        old = _read_settings(out / "settings.json")
        ran_on = old.pop(IMAGE_HASHES, None)  # runs before 2026-12-06 did not record their images
        ran_with = old.pop(PRIOR_HASH, None)  # runs before 802ec81 (2026-12-06) did not record their checkpoint's bytes
        if ran_with is not None and ran_with != digest and old.get("prior") == settings.get("prior"):
            raise checkpoint_changed(args.prior, f"the run in {str(out)!r}", ran_with, digest)
        if ran_with == digest and old.get("prior") != settings.get("prior"):
            # the same bytes, moved or named otherwise (the shipped name, or its file's path): the same checkpoint,
            # recorded under the name the run started with (other bytes under another name differ as a setting)
            print(f"afdps eval: --prior {args.prior} has the bytes of {old.get('prior')}, which the run in {out}/ used")
            settings["prior"] = old.get("prior")
        changed = [i for i, (a, b) in enumerate(zip(ran_on or [], hashes)) if a != b]
        if changed:
            raise ValueError(f"--resume: image {changed[0]} ({len(changed)} in all) is not the image the run in "
                             f"{str(out)!r} restored (the images changed); choose another --out")
        if ran_on and old.get("images") != settings.get("images") and None not in (old.get("images"),
                                                                                   settings.get("images")):
            # the images the run restored (by their hashes) under another path: the same run; recorded under this
            # path, which holds every image the run now covers (an extension's new ones are this folder's)
            print(f"afdps eval: --images {args.images} holds the images of {old['images']}, which the run in {out}/ "
                  "restored")
            old["images"] = settings["images"]
        if old.get("arch") != settings["arch"] and same_arch(old.get("arch"), settings["arch"]):
            old["arch"] = settings["arch"]  # the same config (its digest, or for runs before 2026-12-07 its path)
        if settings.get("classifier") == "mnist" and str(old.get("classifier", "")).endswith(
                f" sha256 {content_digest(data_path(SHIPPED_CLASSIFIERS['mnist']))}"):
            old["classifier"] = "mnist"  # (runs before 2026-12-07 recorded the shipped file by its path)
        old = {**{k: v for k, v in ADDED_LATER.items() if k in settings}, **old}  # runs from before an option was
        # added ran as its default does
        rows = _held_rows(out / "per_image.csv")
        differ = _differ(old, settings, methods, shape)
        if [k for k, _, _ in differ] == ["num_images"] and isinstance(old["num_images"], int):
            top = 1 + max((r["image"] for r in rows), default=-1)  # the images the run holds rows of
            if args.num_images > old["num_images"]:
                print(f"afdps eval: extending the run in {out}/ from {old['num_images']} to {args.num_images} images")
            elif args.num_images >= top:  # an extension stopped before its rows: the run as it was
                print(f"afdps eval: the run in {out}/ was set to {old['num_images']} images and holds rows of images "
                      f"up to {top - 1}; continuing it with {args.num_images}")
            else:
                raise ValueError(f"--resume: the run in {str(out)!r} holds rows of images 0 to {top - 1}; --num-images "
                                 f"{args.num_images} would drop them (pass at least {top})")
        elif differ:
            why = (" (SSIM is taken on [0, 1] since 2026-12-07; the run's rows took it on [-1, 1]: finish it with the "
                   "code it began with, or start it again)" if "ssim" in [k for k, _, _ in differ] else "")
            raise ValueError(f"--resume: the settings differ from those of the run in {str(out)!r} ("
                             + "; ".join(f"{k}: {_shown(k, a)} there, {_shown(k, b)} here" for k, a, b in differ)
                             + f"; only --num-images may change){why}")
        previous = (_held_rows(out / "results.csv", per_image=False) if (out / "results.csv").exists() else [], rows)
        timed_on = {(r["task"], r["method"]): r.get("device", "") for r in previous[0]}
        for r in rows:  # rows written before per-image rows named their device: their pair's summary's
            if r.get("device", "") == "":
                r["device"] = timed_on.get((r["task"], r["method"]), "")
        kept = {(r["task"], r["method"]) for r in previous[1]}
        print(f"afdps eval: resuming: {len(previous[1])} image row(s) of {len(kept)} task x method pair(s) kept from "
              f"{out}/; only the missing images run")
    write_json(out / "settings.json", {**settings, PRIOR_HASH: digest, IMAGE_HASHES: hashes})
    t0 = time.perf_counter()
    planned = len(tasks) * len(methods)

    mixed: dict = {}  # (task, method) -> the devices of a pair summarised in this invocation over rows of several

    def elsewhere(summary) -> str:
        devices = {d for r in summary for d in str(r["device"]).split(" + ")} - {"", name}
        return f" (rows timed on {', '.join(sorted(devices))} before: results.csv's device column)" if devices else ""

    def write(summary, per_image):
        timed_on: dict = {}  # (task, method) -> the devices that timed its rows, in order
        for r in per_image:
            r.setdefault("device", name)  # a row kept from an earlier invocation keeps the device that timed it
            if r["device"] != "" and r["device"] not in timed_on.setdefault((r["task"], r["method"]), []):
                timed_on[(r["task"], r["method"])].append(r["device"])
        for r in summary:  # (a summary kept from an earlier invocation keeps its device)
            if "device" not in r:
                devices = timed_on.get((r["task"], r["method"])) or [name]
                r["device"] = " + ".join(map(str, devices))
                if len(devices) > 1:
                    mixed[(r["task"], r["method"])] = r["device"]
            r.update({"sigma_y": args.sigma_y, "seed": args.seed, "prior": settings["prior"]})
            if r["method"] == "dps":  # its own grid and step size: the particle methods' settings are not its
                r.update(dps_zeta=args.dps_zeta, dps_time_power=args.dps_time_power)
            else:
                r.update({"tempering": args.tempering, "time_power": args.time_power,
                          "ess_threshold": args.ess_threshold,
                          **({"tempering_ess": args.tempering_ess} if args.tempering.startswith("adaptive") else {})})
            if r["method"] == "afdps-ode":
                r.update(corrector_steps=args.corrector_steps, corrector=args.corrector,
                         corrector_snr=format_snr(args.corrector_snr))
        finished = sum(r["images"] == len(images) for r in summary)
        done = "" if finished == planned else f" (partial: {finished} of {planned} task x method rows)"
        older = ("; a row marked \"k of n images\" is an earlier invocation's summary over its first k images, which "
                 "this one has not finished yet" if finished < len(summary) else "")
        network = (f"; network: {args.prior}'s inference path (--fast-network: bfloat16, fused kernels)"
                   if args.fast_network else "")
        header = (f"# afdps eval: prior {settings['prior']}, {len(images)} image{'s' if len(images) != 1 else ''}, "
                  f"sigma_y {args.sigma_y}, device {name}{elsewhere(summary)}, "
                  f"{time.perf_counter() - t0:.0f} s{' in this invocation (resumed)' if previous else ''}{done}\n\n"
                  f"{method_settings(args, methods)}{network}. Means ± standard errors over images; "
                  + (f"accuracy: fraction classified as the true digit by the "
                     f"{'shipped classifier' if args.classifier == 'mnist' else 'classifier ' + args.classifier}; "
                     if classifier is not None else "")
                  + "N: particles per image; NFE: score evaluations per particle (DPS: each with a backward pass)"
                  + f"{older}.\n\n")
        # per-image rows first: --resume keeps a finished pair only with its images' rows
        write_text(out / "per_image.csv", csv_text(per_image, digits=9))
        write_text(out / "results.csv", csv_text(summary))
        write_text(out / "results.md", header + markdown_table(summary, images=len(images)))
        return header

    summary, per_image = evaluate(
        prior, images, tasks=tasks, methods=methods, particles=args.particles, steps=args.steps,
        sigma_y=args.sigma_y, labels=labels, classifier=classifier, seed=args.seed, batch_size=args.batch_size,
        tempering=args.tempering, potential=None if args.potential == "auto" else args.potential, time_power=args.time_power, dps_zeta=args.dps_zeta, dps_steps=args.dps_steps,
        dps_time_power=args.dps_time_power,
        corrector_steps=args.corrector_steps, corrector_snr=args.corrector_snr, corrector=args.corrector, device=device, backend=args.backend,
        progress=False if args.no_progress else None, on_result=write, previous=previous,
        tempering_ess=args.tempering_ess, ess_threshold=args.ess_threshold, names=names)
    print(write(summary, per_image) + markdown_table(summary, images=len(images)))
    for (task, method), devices in mixed.items():
        print(f"afdps eval: warning: {task} x {method}'s rows were timed on {devices}: its s / image averages them "
              "(per_image.csv's device column names each row's); PSNR, SSIM and accuracy are unaffected",
              file=sys.stderr)
    print(f"wrote results.md, results.csv, per_image.csv to {out}/")
    return 0
