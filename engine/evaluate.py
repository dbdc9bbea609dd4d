"""``afdps eval``: restoration benchmarks of AFDPS and its baselines on the paper's tasks.

For each task and method, every image is measured (``y = A x + sigma_y n``, its own seeded noise),
restored, and scored: PSNR and SSIM of the best particle (largest weight) and of the weighted mean,
the classifier's accuracy on both where a classifier exists (MNIST), wall time, score evaluations per
particle and the mean final normalised ESS. Writes ``results.csv`` (one row per task x method),
``per_image.csv`` and ``results.md`` into ``--out``.

Tasks (``sigma_y = 0.05`` on [-1, 1] by default). For 256x256 images, the paper's protocol; for 28x28
digits, versions scaled to the digit size (chosen here; a 61x61 std-3 blur has no digit analogue):

=================  ==================================  ==================================
task               256x256 (paper)                     28x28 (digits)
=================  ==================================  ==================================
gaussian-blur      Gaussian kernel 61x61, std 3.0      Gaussian kernel 9x9, std 1.5
motion-blur        motion kernel 61x61, intensity 0.5  motion kernel 9x9, intensity 0.5
sr4                x4 block averaging                  x4 block averaging (28 -> 7)
box                128x128 centred box missing         14x14 centred box missing
random70           70% of pixels missing (seeded)      70% of pixels missing (seeded)
=================  ==================================  ==================================

Methods: ``afdps-sde`` (SDE, eta = 1), ``afdps-ode`` (probability-flow ODE + one Langevin corrector
step), ``fk`` (SDE, eta = 0.5: the Feynman-Kac corrector baseline), ``dps`` (Chung et al., 2023; one
sample per image, no weights). The particle methods share ``--tempering`` and ``--time-power``.
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["TASKS", "METHODS", "DEFAULT_TASKS", "make_operator", "run_method", "evaluate", "load_image_folder",
           "add_arguments", "run"]

TASKS = ("gaussian-blur", "motion-blur", "sr4", "box", "random70")
DEFAULT_TASKS = {28: ("gaussian-blur", "sr4", "box", "random70"), 256: ("gaussian-blur", "motion-blur", "sr4", "box")}
METHODS = ("afdps-sde", "afdps-ode", "fk", "dps")
# Per image size: task -> parameters.
_TASK_PARAMS = {
    28: {"gaussian-blur": (9, 1.5), "motion-blur": (9, 0.5), "sr4": 4, "box": 14, "random70": 0.7},
    256: {"gaussian-blur": (61, 3.0), "motion-blur": (61, 0.5), "sr4": 4, "box": 128, "random70": 0.7},
}


def make_operator(task: str, image_shape, seed: int = 0):
    """The measurement operator of ``task`` for images of ``image_shape = (C, H, W)`` (H = W = 28 or 256)."""
    from afdps import ops

    shape = tuple(int(s) for s in image_shape)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in _TASK_PARAMS:
        raise ValueError(f"tasks are defined for square 28x28 (digits) and 256x256 (paper) images, got {shape}")
    p = _TASK_PARAMS[shape[1]][task]
    if task == "gaussian-blur":
        return ops.Blur(ops.gaussian_kernel(*p), shape)
    if task == "motion-blur":
        return ops.Blur(ops.motion_kernel(p[0], p[1], seed=seed), shape)
    if task == "sr4":
        return ops.BlockDownsample(p, shape)
    if task == "box":
        return ops.Inpaint(ops.box_mask(shape[1:], p), shape)
    return ops.Inpaint(ops.random_mask(shape[1:], p, seed=seed), shape)


def run_method(method: str, prior, op, y, sigma_y: float, *, particles: int, steps: int, seeds, tempering="linear",
               time_power: float = 2.0, dps_zeta: float = 1.0, dps_steps: int | None = None, corrector_steps: int = 1,
               corrector_snr: float = 0.1, backend=None):
    """Restore measurements ``y (B, ...)`` with one method; returns an :class:`afdps.Result`."""
    import afdps
    from afdps.baselines import dps

    if method == "dps":
        return dps(prior, op, y, sigma_y, num_steps=dps_steps or steps, zeta=dps_zeta, seed=seeds, progress=False)
    kw = dict(num_particles=particles, num_steps=steps, seed=seeds, tempering=tempering, time_power=time_power,
              backend=backend, progress=False)
    guidance = "exact" if getattr(op, "supports_exact", False) else "euler"
    if method == "afdps-sde":
        return afdps.sample(prior, op, y, sigma_y, method="sde", eta=1.0, guidance=guidance, **kw)
    if method == "fk":
        return afdps.sample(prior, op, y, sigma_y, method="sde", eta=0.5, guidance=guidance, **kw)
    if method == "afdps-ode":
        return afdps.sample(prior, op, y, sigma_y, method="ode", corrector_steps=corrector_steps,
                            corrector_snr=corrector_snr, guidance=guidance, **kw)
    raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")


def load_image_folder(folder, image_shape, num_images: int) -> torch.Tensor:
    """The first ``num_images`` images (sorted by name; PNG, JPEG, BMP, TIFF) of ``folder``, resized so the
    shorter side fits and centre-cropped to ``image_shape = (C, H, W)``, on [-1, 1]."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)
    if len(files) < num_images:
        raise ValueError(f"{str(folder)!r} holds {len(files)} images, --num-images asks for {num_images}")
    C, H, W = image_shape
    out = []
    for f in files[:num_images]:
        im = Image.open(f).convert("L" if C == 1 else "RGB")
        scale = max(H / im.height, W / im.width)
        im = im.resize((max(W, round(im.width * scale)), max(H, round(im.height * scale))), Image.Resampling.LANCZOS)
        r, c = (im.height - H) // 2, (im.width - W) // 2
        a = np.asarray(im, dtype=np.float32)[r:r + H, c:c + W]
        a = a[None] if C == 1 else a.transpose(2, 0, 1)
        out.append(torch.from_numpy(a / 127.5 - 1.0))
    return torch.stack(out)


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield i, min(i + size, n)


def evaluate(prior, images: torch.Tensor, *, tasks, methods, particles: int, steps: int, sigma_y: float = 0.05,
             labels: torch.Tensor | None = None, classifier=None, seed: int = 0, batch_size: int = 10,
             tempering: str = "linear", time_power: float = 2.0, dps_zeta: float = 1.0, dps_steps: int | None = None,
             corrector_steps: int = 1, corrector_snr: float = 0.1, device=None, backend=None,
             progress=None, on_result=None) -> tuple[list[dict], list[dict]]:
    """Run every method on every task; returns ``(summary_rows, per_image_rows)``.

    Image ``i`` uses seed ``seed + i`` for its measurement noise and its sampler, so a row does not
    depend on ``batch_size``. ``images (n, C, H, W)`` on [-1, 1]; ``labels`` and ``classifier`` enable
    the accuracy columns. ``on_result(summary, per_image)`` is called after each task x method (the
    command line rewrites its files then, so an interrupted run keeps what it finished).
    """
    from afdps.demo import psnr, ssim
    from afdps.engine.mnist import classify
    from afdps.engine.sampler import _progress

    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; available: {', '.join(METHODS)}")
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; available: {', '.join(TASKS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device or "cpu")
    n = images.shape[0]
    shape = tuple(images.shape[1:])
    bar = _progress(progress, len(tasks) * len(methods) * math.ceil(n / batch_size), "eval")
    summary, per_image = [], []
    try:
        for task in tasks:
            op = make_operator(task, shape, seed=seed)
            ys = torch.stack([op.measure(images[i:i + 1].double(), sigma_y,
                                         torch.Generator().manual_seed(seed + i))[0] for i in range(n)]).float()
            for method in methods:
                rows, wall, nfe = [], 0.0, 0
                for a, b in _batches(n, batch_size):
                    y = ys[a:b].to(device)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    res = run_method(method, prior, op, y, sigma_y, particles=particles, steps=steps,
                                     seeds=[seed + i for i in range(a, b)], tempering=tempering,
                                     time_power=time_power, dps_zeta=dps_zeta, dps_steps=dps_steps,
                                     corrector_steps=corrector_steps, corrector_snr=corrector_snr, backend=backend)
                    best, mean = res.best.float().cpu(), res.mean.float().cpu()
                    wall += time.perf_counter() - t0
                    nfe = res.nfe
                    final_ess = res.ess[-1].cpu() if method != "dps" else None
                    if classifier is not None:
                        lab_best, _ = classify(classifier, best.clamp(-1, 1))
                        lab_mean, _ = classify(classifier, mean.clamp(-1, 1))
                    for j, i in enumerate(range(a, b)):
                        truth = images[i].float()
                        row = {"task": task, "method": method, "image": i,
                               "psnr_best": psnr(best[j], truth), "ssim_best": ssim(best[j], truth),
                               "psnr_mean": psnr(mean[j], truth), "ssim_mean": ssim(mean[j], truth),
                               "final_ess": "" if final_ess is None else float(final_ess[j])}
                        if classifier is not None and labels is not None:
                            row["correct_best"] = int(lab_best[j] == labels[i])
                            row["correct_mean"] = int(lab_mean[j] == labels[i])
                        rows.append(row)
                    if bar is not None:
                        bar.update(1)
                per_image += rows
                summary.append(_summarise(task, method, rows, wall=wall, nfe=nfe, particles=1 if method == "dps"
                                          else particles, steps=(dps_steps or steps) if method == "dps" else steps))
                if on_result is not None:
                    on_result(summary, per_image)
    finally:
        if bar is not None:
            bar.close()
    return summary, per_image


def _summarise(task, method, rows, *, wall, nfe, particles, steps) -> dict:
    def mean_se(key):
        v = np.array([r[key] for r in rows if r.get(key, "") != ""], dtype=np.float64)
        if v.size == 0:
            return "", ""
        return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0)

    out = {"task": task, "method": method, "images": len(rows), "particles": particles, "steps": steps, "nfe": nfe}
    for key in ("psnr_best", "ssim_best", "psnr_mean", "ssim_mean", "correct_best", "correct_mean", "final_ess"):
        m, se = mean_se(key)
        name = key.replace("correct", "accuracy")
        out[name], out[name + "_se"] = m, se
    out["wall_s"] = wall
    out["s_per_image"] = wall / max(len(rows), 1)
    return out


def _fmt(v, se=None, digits=2):
    if v == "" or v is None:
        return "-"
    s = f"{v:.{digits}f}"
    return s + (f" ± {se:.{digits}f}" if se not in ("", None) else "")


def markdown_table(summary: list[dict]) -> str:
    has_acc = any(r.get("accuracy_best", "") != "" for r in summary)
    head = ["task", "method", "N", "steps", "NFE", "PSNR best", "PSNR mean", "SSIM best", "SSIM mean"]
    if has_acc:
        head += ["acc. best", "acc. mean"]
    head += ["final ESS/N", "s / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary:
        cells = [r["task"], r["method"], str(r["particles"]), str(r["steps"]), str(r["nfe"]),
                 _fmt(r["psnr_best"], r["psnr_best_se"]), _fmt(r["psnr_mean"], r["psnr_mean_se"]),
                 _fmt(r["ssim_best"], r["ssim_best_se"], 3), _fmt(r["ssim_mean"], r["ssim_mean_se"], 3)]
        if has_acc:
            cells += [_fmt(r["accuracy_best"], digits=2), _fmt(r["accuracy_mean"], digits=2)]
        cells += [_fmt(r["final_ess"], digits=2), _fmt(r["s_per_image"], digits=3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    from afdps.engine.mnist import _atomic_write

    _atomic_write(path, lambda f: f.write(text.encode()))


def _csv_text(rows: list[dict]) -> str:
    import io

    fields = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _split(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise ValueError(f"--{what} {value!r}: unknown {', '.join(bad) or '(empty)'}; available: {', '.join(allowed)}")
    return items


def add_arguments(p) -> None:
    p.add_argument("--prior", default="mnist", help="'mnist' (shipped) or a checkpoint path (default: mnist)")
    p.add_argument("--arch", default=None, help="architecture of a checkpoint (adm-ffhq256, adm-imagenet256, JSON)")
    p.add_argument("--images", default=None, help="folder of test images (default for 1x28x28 priors: the "
                   "shipped MNIST test digits, scored also by the shipped classifier)")
    p.add_argument("--task", default=None, help=f"comma-separated, from {', '.join(TASKS)} "
                   "(default: the four tasks of the image size)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--particles", type=int, default=16)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--sigma-y", type=float, default=0.05)
    p.add_argument("--tempering", choices=("none", "linear"), default="linear")
    p.add_argument("--time-power", type=float, default=2.0)
    p.add_argument("--dps-zeta", type=float, default=1.0, help="DPS step size (default: 1.0)")
    p.add_argument("--dps-steps", type=int, default=None, help="DPS steps (default: --steps)")
    p.add_argument("--corrector-steps", type=int, default=1, help="Langevin steps per step of afdps-ode (default: 1)")
    p.add_argument("--corrector-snr", type=float, default=0.1,
                   help="Langevin step-size rule r of afdps-ode (spec section 2; default: 0.1)")
    p.add_argument("--batch-size", type=int, default=10, help="images per sampler call (default: 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--backend", default=None, choices=("auto", "torch", "triton"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="eval_out", help="output folder (default: eval_out)")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from afdps.engine.loading import load_classifier, load_prior
    from afdps.engine.mnist import load_mnist_test

    if args.num_images < 1 or args.particles < 1 or args.steps < 1:
        raise ValueError(f"--num-images, --particles and --steps must be >= 1, got {args.num_images}, "
                         f"{args.particles}, {args.steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    methods = _split(args.methods, METHODS, "methods")
    prior = load_prior(args.prior, args.arch, device=device)
    shape = tuple(prior.event_shape)
    tasks = _split(args.task, TASKS, "task") if args.task else list(DEFAULT_TASKS.get(shape[1], ()))
    if not tasks:
        raise ValueError(f"no default tasks for {shape} images; name them with --task")
    labels = classifier = None
    if args.images is None:
        if shape != (1, 28, 28):
            raise ValueError(f"--images FOLDER is needed for a prior of {'x'.join(map(str, shape))} images "
                             "(without it: the shipped MNIST test digits, for 1x28x28 priors)")
        images, labels = load_mnist_test(args.num_images)
        classifier = load_classifier("mnist")
    else:
        images = load_image_folder(args.images, shape, args.num_images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    planned = len(tasks) * len(methods)

    def write(summary, per_image):
        for r in summary:
            r.update({"device": name, "sigma_y": args.sigma_y, "tempering": args.tempering,
                      "time_power": args.time_power, "seed": args.seed, "prior": args.prior})
            if r["method"] == "dps":
                r["dps_zeta"] = args.dps_zeta
            if r["method"] == "afdps-ode":
                r.update(corrector_steps=args.corrector_steps, corrector_snr=args.corrector_snr)
        done = "" if len(summary) == planned else f" (partial: {len(summary)} of {planned} task x method rows)"
        header = (f"# afdps eval: prior {args.prior}, {len(images)} images, sigma_y {args.sigma_y}, device {name}, "
                  f"{time.perf_counter() - t0:.0f} s{done}\n\nParticle methods: tempering {args.tempering}, time grid "
                  f"power {args.time_power:g}; afdps-ode: {args.corrector_steps} Langevin step(s) with r = "
                  f"{args.corrector_snr:g}; dps: zeta = {args.dps_zeta:g}, one sample per image, no weights (best = "
                  "mean). Means ± standard errors over images; accuracy: fraction classified as the true digit; NFE: "
                  "score evaluations per particle (DPS: each with a backward pass).\n\n")
        _write_atomic(out / "results.csv", _csv_text(summary))
        _write_atomic(out / "per_image.csv", _csv_text(per_image))
        _write_atomic(out / "results.md", header + markdown_table(summary))
        return header

    summary, per_image = evaluate(
        prior, images, tasks=tasks, methods=methods, particles=args.particles, steps=args.steps,
        sigma_y=args.sigma_y, labels=labels, classifier=classifier, seed=args.seed, batch_size=args.batch_size,
        tempering=args.tempering, time_power=args.time_power, dps_zeta=args.dps_zeta, dps_steps=args.dps_steps,
        corrector_steps=args.corrector_steps, corrector_snr=args.corrector_snr, device=device, backend=args.backend,
        progress=False if args.no_progress else None, on_result=write)
    print(write(summary, per_image) + markdown_table(summary))
    print(f"wrote results.md, results.csv, per_image.csv to {out}/")
    return 0
