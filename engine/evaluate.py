"""Restoration benchmarks of AFDPS and its baselines on the paper's tasks (the work of ``afdps eval``).

For each task and method, every image is measured (``y = A x + sigma_y n``, its own seeded noise),
restored, and scored: PSNR and SSIM of the best particle (largest weight) and of the weighted mean,
the classifier's accuracy on both where a classifier exists (MNIST), the ensemble's diversity (distinct
labels among an image's particles; whether any particle has the right digit), wall time, score
evaluations per particle and the mean final normalised ESS. Writes ``results.csv`` (one row per task x method),
``per_image.csv`` and ``results.md`` (the command ``afdps eval`` of :mod:`afdps.cli.eval`).

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
sample per image, no weights). The particle methods share ``--tempering``, ``--potential`` and ``--time-power``.
"""
from __future__ import annotations

import csv
import io
import math
import time

import numpy as np
import torch

from . import ops
from .baselines import dps
from .io import markdown_table as io_table
from .io import progress_bar, skip
from .metrics import psnr, ssim
from .models import classify
from .sampler import DEFAULT_CORRECTOR_SNR, EnsembleDied, prepare, sample

__all__ = ["TASKS", "METHODS", "DEFAULT_TASKS", "make_operator", "run_method", "evaluate", "markdown_table",
           "csv_text", "read_csv_rows", "read_eval_rows", "NotEvalRows", "mean_se", "plus_minus", "measurements",
           "sampler_options"]

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
               potential: str | None = None,
               time_power: float = 2.0, dps_zeta: float = 1.0, dps_steps: int | None = None, corrector_steps: int = 1,
               corrector_snr: float | tuple = DEFAULT_CORRECTOR_SNR, corrector: str = "split", backend=None, tempering_ess: float = 0.5,
               ess_threshold: float = 0.5, dps_time_power: float = 1.0):
    """Restore measurements ``y (B, ...)`` with one method; returns an :class:`afdps.Result`.
    ``ess_threshold``: the particle methods resample an image when its normalised ESS falls below it (0:
    never). ``time_power`` is the particle methods' time grid, ``dps_time_power`` DPS's (1: uniform, as the DPS
    paper's)."""
    if method == "dps":
        return dps(prior, op, y, sigma_y, num_steps=dps_steps or steps, zeta=dps_zeta, seed=seeds, progress=False,
                   time_power=dps_time_power)
    return sample(prior, op, y, sigma_y, progress=False, **sampler_options(
        method, particles=particles, steps=steps, seeds=seeds, tempering=tempering, potential=potential,
        time_power=time_power, corrector_steps=corrector_steps, corrector_snr=corrector_snr, corrector=corrector,
        backend=backend, tempering_ess=tempering_ess, ess_threshold=ess_threshold))


def sampler_options(method: str, *, particles: int, steps: int, seeds, tempering="linear", potential=None,
                    time_power: float = 2.0, corrector_steps: int = 1, corrector_snr=DEFAULT_CORRECTOR_SNR,
                    corrector: str = "split", backend=None, tempering_ess: float = 0.5,
                    ess_threshold: float = 0.5) -> dict:
    """The options of :func:`afdps.sample` (and :func:`~afdps.engine.sampler.prepare`) that particle method
    ``method`` runs with."""
    kw = dict(num_particles=particles, num_steps=steps, seed=seeds, tempering=tempering, potential=potential,
              time_power=time_power, ess_threshold=ess_threshold, backend=backend,
              guidance=None)  # exact where the operator diagonalises A^T A, implicit (conjugate gradients) otherwise
    if tempering.startswith("adaptive"):  # (its target; the CLI warns of it given without adaptive tempering)
        kw["tempering_ess"] = tempering_ess
    if method == "afdps-sde":
        return dict(kw, method="sde", eta=1.0)
    if method == "fk":
        return dict(kw, method="sde", eta=0.5)
    if method == "afdps-ode":
        return dict(kw, method="ode", corrector_steps=corrector_steps, corrector=corrector, corrector_snr=corrector_snr)
    raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield i, min(i + size, n)


def evaluate(prior, images: torch.Tensor, *, tasks, methods, particles: int, steps: int, sigma_y: float = 0.05,
             labels: torch.Tensor | None = None, classifier=None, seed: int = 0, batch_size: int = 10,
             tempering: str = "linear", potential: str | None = None, time_power: float = 2.0, dps_zeta: float = 1.0,
             dps_steps: int | None = None, dps_time_power: float = 1.0,
             corrector_steps: int = 1, corrector_snr: float | tuple = DEFAULT_CORRECTOR_SNR, corrector: str = "split", device=None, backend=None,
             progress=None, on_result=None, previous=None, tempering_ess: float = 0.5,
             ess_threshold: float = 0.5, names: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Run every method on every task; returns ``(summary_rows, per_image_rows)``.

    Image ``i`` uses seed ``seed + i`` for its measurement noise and its sampler, so a row does not
    depend on ``batch_size`` beyond float32 rounding (the network's batched arithmetic). ``images (n, C, H, W)``
    on [-1, 1]; ``labels`` and ``classifier`` enable the accuracy columns; ``names`` (one per image, e.g. its file
    name) fill a ``file`` column of the per-image rows. ``on_result(summary, per_image)`` is called after each sampler call (batch of images)
    with the rows so far, the unfinished pair's images included (the command line rewrites its files then, so an
    interrupted run keeps every finished batch); the summary rows passed then include, for a pair of ``previous`` not
    finished yet, its earlier summary over fewer images (an extended run keeps its table until it is replaced).
    Each per-image row carries ``seconds``, its share of its batch's
    sampler time; a summary's ``wall_s`` and ``s_per_image`` sum and average them.

    ``previous``: ``(summary_rows, per_image_rows)`` of an interrupted run with the same settings, or of a run of
    the same settings on fewer images (the first ones: ``afdps eval --resume`` with a larger ``--num-images``). A
    task x method pair whose summary covers all ``n`` images is kept as it is; of any other pair the per-image rows
    are kept and only the batches with a missing image run (whole: rows depend on a batch's make-up at float32
    rounding, so the files then equal a run from scratch). Kept rows written before rows carried ``seconds`` take
    their old summary's ``s_per_image``.
    """
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
    if names is not None and len(names) != n:
        raise ValueError(f"names: {len(names)} for {n} images")
    summary, per_image, partial = _kept(previous, n)
    done = {(r["task"], r["method"]) for r in summary}
    # an unfinished pair's summary of an earlier invocation (an extended run's, over fewer images) stays in the
    # files written on the way, until the pair's new summary replaces it: an interrupted extension keeps its table
    carried = {(r["task"], r["method"]): r for r in (previous or ([], []))[0]
               if (r["task"], r["method"]) not in done and r["images"] < n}

    def report(current):  # current: the rows of the pair that is running
        ran = {(r["task"], r["method"]) for r in summary}
        on_result(summary + [r for k, r in carried.items() if k not in ran], per_image + current + _rows_of(partial))

    options = dict(particles=particles, steps=steps, tempering=tempering, potential=potential, time_power=time_power,
                   corrector_steps=corrector_steps, corrector_snr=corrector_snr, corrector=corrector, backend=backend,
                   tempering_ess=tempering_ess, ess_threshold=ess_threshold)
    # every pair's options checked before the first runs (they were checked as each pair began: a bad combination
    # stopped the run after hours, with the earlier pairs' rows written); the check leaves a prior's "auto" network
    # batch as it found it (each run chooses its own)
    chosen = getattr(prior, "auto_batch", None)
    for task in tasks:
        op = make_operator(task, shape, seed=seed)
        y = measurements(op, images[:min(batch_size, n)], sigma_y, seed).to(device)
        for method in methods:
            if method != "dps" and (task, method) not in done:
                try:
                    prepare(prior, op, y, sigma_y, **sampler_options(
                        method, seeds=[seed + i for i in range(y.shape[0])], **options))
                except (ValueError, MemoryError) as exc:  # (a MemoryError may carry no text: say what it is)
                    raise type(exc)(f"{method} on {task}: {str(exc) or type(exc).__name__}") from None
    if hasattr(prior, "auto_batch"):
        prior.auto_batch = chosen
    bar = progress_bar(len(tasks) * len(methods) * math.ceil(n / batch_size), "eval (batches)", progress, lines=True)
    try:
        for task in tasks:
            op = make_operator(task, shape, seed=seed)
            ys = measurements(op, images, sigma_y, seed)
            for method in methods:
                if (task, method) in done:
                    skip(bar, math.ceil(n / batch_size))
                    continue
                rows = dict(partial.pop((task, method), {}))  # image -> row
                batches = list(_batches(n, batch_size))
                ran = False
                for bi, (a, b) in enumerate(batches):
                    if all(i in rows for i in range(a, b)) and (ran or bi < len(batches) - 1):
                        skip(bar, 1)
                        continue
                    # A batch with an image missing runs whole, its rows replacing any kept: a row depends on the
                    # batch's make-up at float32 rounding (the network's batched arithmetic), and an extended run's
                    # batches are the from-scratch run's. (Every image kept but no summary: the last batch runs
                    # again for the run's NFE and potential.)
                    ran = True
                    y = ys[a:b].to(device)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    try:
                        res = run_method(method, prior, op, y, sigma_y, particles=particles, steps=steps,
                                         seeds=[seed + i for i in range(a, b)], tempering=tempering,
                                         potential=potential, time_power=time_power, dps_zeta=dps_zeta,
                                         dps_steps=dps_steps, dps_time_power=dps_time_power,
                                         corrector_steps=corrector_steps,
                                         corrector_snr=corrector_snr, corrector=corrector, backend=backend,
                                         tempering_ess=tempering_ess, ess_threshold=ess_threshold)
                    except EnsembleDied as exc:  # the image of this evaluation's list, not of the batch
                        raise EnsembleDied(f"{method} on {task}: {exc.template}", a + exc.image) from None
                    best, mean = res.best.float().cpu(), res.mean.float().cpu()
                    seconds = (time.perf_counter() - t0) / (b - a)
                    nfe = res.nfe
                    final_ess = res.ess[-1].cpu() if method != "dps" else None
                    if classifier is not None:
                        lab_best, _ = classify(classifier, best.clamp(-1, 1))
                        lab_mean, _ = classify(classifier, mean.clamp(-1, 1))
                        parts = res.particles.float().cpu()
                        lab_all = classify(classifier, parts.reshape(-1, *shape).nan_to_num().clamp(-1, 1))[0]
                        live = torch.isfinite(torch.as_tensor(res.log_weights)).cpu()
                        lab_all = torch.where(live, lab_all.view(*parts.shape[:2]), -1)  # dead particles: -1
                    for j, i in enumerate(range(a, b)):
                        truth = images[i].float()
                        row = {"task": task, "method": method, "image": i, **({"file": names[i]} if names else {}),
                               "psnr_best": psnr(best[j], truth), "ssim_best": ssim(best[j], truth),
                               "psnr_mean": psnr(mean[j], truth), "ssim_mean": ssim(mean[j], truth),
                               "final_ess": "" if final_ess is None else float(final_ess[j])}
                        if classifier is not None:
                            row["labels_distinct"] = len(set(lab_all[j].tolist()) - {-1})
                        if classifier is not None and labels is not None:
                            row["correct_best"] = int(lab_best[j] == labels[i])
                            row["correct_mean"] = int(lab_mean[j] == labels[i])
                            row["correct_any"] = int(bool((lab_all[j] == labels[i]).any()))
                        row["seconds"] = seconds
                        rows[i] = row
                    bar.update(1)
                    if on_result is not None and bi < len(batches) - 1:
                        report([rows[i] for i in sorted(rows)])
                rows = [rows[i] for i in sorted(rows)]
                per_image += rows
                summary.append(_summarise(task, method, rows, nfe=nfe, particles=1 if method == "dps"
                                          else particles, steps=(dps_steps or steps) if method == "dps" else steps))
                summary[-1]["potential"] = getattr(res, "potential", None) or "-"
                if on_result is not None:  # (with the kept rows of the pairs not reached yet: nothing kept is lost)
                    report([])
    finally:
        bar.close()
    return summary, per_image


def measurements(op, images: torch.Tensor, sigma_y: float, seed: int = 0) -> torch.Tensor:
    """``y_i = A x_i + noise`` for ``images (n, C, H, W)``, image ``i``'s noise seeded ``seed + i`` (float64
    measurement, returned float32): what :func:`evaluate` restores, so other studies can use the same."""
    y = torch.stack([op.measure(images[i:i + 1].double(), sigma_y, torch.Generator().manual_seed(seed + i))[0]
                     for i in range(images.shape[0])]).float()
    if not bool(torch.isfinite(y).all()):  # (it was refused later as "y has non-finite values", sigma_y unnamed)
        raise ValueError(f"sigma_y {sigma_y:g} makes measurements beyond float32's range (noise of that size "
                         "overflows; the images are in [-1, 1])")
    return y


def mean_se(values) -> tuple[float, float] | tuple[str, str]:
    """Mean and standard error (sample standard deviation / sqrt(n)) of ``values``; blank cells of the CSV
    (``""``) for what is not defined: both for no value, the error for one."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return "", ""
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else "")


def plus_minus(se, spec: str = ".2f") -> str:
    """`` ± se`` in format ``spec``, or nothing where the error is not defined (one value: ``""``)."""
    return "" if se in ("", None) else f" ± {se:{spec}}"


def _kept(previous, n: int):
    """What ``evaluate`` keeps of ``previous`` for ``n`` images: the summary and per-image rows of the pairs it
    finished on all ``n`` images, and ``{(task, method): {image: row}}`` of the others."""
    if not previous:
        return [], [], {}
    old_summary, old_rows = previous
    have: dict = {}
    for r in old_rows:
        have.setdefault((r["task"], r["method"]), set()).add(r["image"])
    # a pair is finished when its summary covers n images and its per-image rows are there (a per_image.csv cut
    # short outside afdps loses a finished pair's rows: its missing images run again)
    summary = [r for r in old_summary if r["images"] == n and have.get((r["task"], r["method"])) == set(range(n))]
    done = {(r["task"], r["method"]) for r in summary}
    rate = {(r["task"], r["method"]): r["s_per_image"] for r in old_summary if r["images"] != n}
    per_image, partial = [], {}
    for r in old_rows:
        key = (r["task"], r["method"])
        if r["image"] >= n:
            raise ValueError(f"the earlier run has image {r['image']} of {key[0]} x {key[1]}; {n} image(s) are asked "
                             f"for: a resumed run keeps every row it holds (ask for at least {r['image'] + 1})")
        if key in done:
            per_image.append(r)
        else:
            partial.setdefault(key, {})[r["image"]] = r if r.get("seconds", "") != "" else {**r, "seconds": rate.get(key, "")}
    return summary, per_image, partial


def _rows_of(partial: dict) -> list[dict]:
    """The rows of ``{(task, method): {image: row}}``, each pair's in image order."""
    return [rs[i] for rs in partial.values() for i in sorted(rs)]


def _summarise(task, method, rows, *, nfe, particles, steps) -> dict:
    out = {"task": task, "method": method, "images": len(rows), "particles": particles, "steps": steps, "nfe": nfe}
    for key in ("psnr_best", "ssim_best", "psnr_mean", "ssim_mean", "correct_best", "correct_mean", "correct_any",
                "labels_distinct", "final_ess"):
        m, se = mean_se(r[key] for r in rows if r.get(key, "") != "")
        name = key.replace("correct", "accuracy")
        out[name], out[name + "_se"] = m, se
    timed = [r["seconds"] for r in rows if r.get("seconds", "") != ""]
    out["wall_s"] = float(sum(timed))
    out["s_per_image"] = out["wall_s"] / len(timed) if timed else ""
    return out


def _fmt(v, se=None, digits=2):
    if v == "" or v is None:
        return "-"
    s = f"{v:.{digits}f}"
    return s + plus_minus(se, f".{digits}f")


def markdown_table(summary: list[dict], images: int | None = None) -> str:
    """The summary rows of :func:`evaluate` as a GitHub-markdown table (means ± standard errors). With ``images``, a
    row over fewer images (an earlier invocation's, kept while a resumed run extends it) says so by its method."""
    has_acc = any(r.get("accuracy_best", "") != "" for r in summary)
    head = ["task", "method", "N", "steps", "NFE", "PSNR best", "PSNR mean", "SSIM best", "SSIM mean"]
    if has_acc:
        head += ["acc. best", "acc. mean", "any right", "labels / image"]
    head += ["final ESS/N", "s / image"]
    lines = []
    for r in summary:
        method = r["method"] + (f" ({r['images']} of {images} images)" if images and r["images"] != images else "")
        cells = [r["task"], method, str(r["particles"]), str(r["steps"]), str(r["nfe"]),
                 _fmt(r["psnr_best"], r["psnr_best_se"]), _fmt(r["psnr_mean"], r["psnr_mean_se"]),
                 _fmt(r["ssim_best"], r["ssim_best_se"], 3), _fmt(r["ssim_mean"], r["ssim_mean_se"], 3)]
        if has_acc:
            cells += [_fmt(r["accuracy_best"], digits=2), _fmt(r["accuracy_mean"], digits=2),
                      _fmt(r.get("accuracy_any", ""), digits=2), _fmt(r.get("labels_distinct", ""), digits=1)]
        cells += [_fmt(r["final_ess"], digits=2), _fmt(r["s_per_image"], digits=3)]
        lines.append(cells)
    return io_table(head, lines) + "\n"


def read_csv_rows(path) -> list[dict]:
    """Rows written by :func:`csv_text`, numbers parsed back (empty cells stay ``""``). A row with fewer or more
    cells than the header (a file cut short, or edited, outside afdps) is left out: ``--resume`` runs its image
    again."""
    def parse(v):
        if v == "":
            return v
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                pass
        return v

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)
                if None not in row and None not in row.values()]


class NotEvalRows(ValueError):
    """A file that is not a CSV ``afdps eval`` writes: ``line`` is the first bad row's line (``None`` where the file
    itself does not read as CSV text) and ``reason`` says what is wrong, without the path (each caller names the file
    in its own words)."""

    def __init__(self, line, reason: str):
        super().__init__(reason if line is None else f"line {line}: {reason}")
        self.line, self.reason = line, reason


def read_eval_rows(path, per_image: bool = True) -> list[dict]:
    """:func:`read_csv_rows` of a ``results.csv`` or (``per_image``) ``per_image.csv`` of ``afdps eval``, checked:
    every row has a task and a method, and a per-image row an image index >= 0. Raises :class:`NotEvalRows` for a file
    that is not such (a binary or hand-edited file gave a bare codec or comparison error further on)."""
    try:
        rows = read_csv_rows(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise NotEvalRows(None, str(exc)) from None
    for line, r in enumerate(rows, 2):
        if not isinstance(r.get("task"), str) or not isinstance(r.get("method"), str) or (
                per_image and (not isinstance(r.get("image"), int) or r["image"] < 0)):
            raise NotEvalRows(line, "not a row afdps eval writes (a task, a method"
                              + (" and an image index >= 0)" if per_image else ")"))
    return rows


def csv_text(rows: list[dict], digits: int = 6) -> str:
    """Rows (dicts; the union of their keys in first-seen order as columns) as CSV text, floats to ``digits``
    significant digits (``afdps eval`` writes per-image rows with 9, so that a resumed run's means, taken over rows
    read back, agree with an uninterrupted run's at the summary's 6)."""
    fields = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.{digits}g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()
