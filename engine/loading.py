"""Load learned priors (noise-prediction networks) and helper classifiers from checkpoints.

:func:`load_prior` turns a checkpoint into an :class:`~afdps.engine.priors.EpsilonModel` on the
1000-step DDPM linear schedule (``VPSchedule(0.1, 20.0)``):

- ADM / guided-diffusion UNets (:class:`~afdps.engine.models.ADMUNet`): a raw ``state_dict`` file
  (the public ``ffhq_10m.pt``, ``256x256_diffusion_uncond.pt``) with ``arch=`` a preset name, a
  ``create_model`` config dict or a JSON file of one; or afdps's own format
  ``{"format", "config", "state_dict", "meta"}``, which carries its config.
- diffusers ``UNet2DModel`` folders (``config.json`` + weights), with the optional ``diffusers``
  package.

Checkpoints are untrusted input: they are read with ``torch.load(weights_only=True)`` only, keys
must match the network exactly, and every failure is an exception naming the problem (no network is
ever returned with weights left at their random initialisation).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from torch import nn

from .io import scheduler_config
from .models import ADM_PRESETS, ADMUNet, MNISTClassifier, adm_config
from .priors import EpsilonModel
from .schedules import VPSchedule, check_schedule
from .validation import check_int
from .training import load_checkpoint, read_checkpoint

__all__ = ["load_prior", "load_classifier", "load_checkpoint", "DIFFUSERS", "arch_record", "same_arch"]

DIFFUSERS = "diffusers"
_LIST_AT_MOST = 5


def _allowed_archs() -> str:
    return ", ".join(sorted(ADM_PRESETS)) + f", {DIFFUSERS}, a config dict or a path to a JSON config file"


def _few(names) -> str:
    names = sorted(names)
    head = ", ".join(names[:_LIST_AT_MOST])
    return head + (f", ... ({len(names) - _LIST_AT_MOST} more)" if len(names) > _LIST_AT_MOST else "")


def _check_keys(module: nn.Module, sd: dict, what: str) -> None:
    """Raise ``ValueError`` listing missing keys, unexpected keys and shape mismatches."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = expected.keys() - sd.keys()
    unexpected = sd.keys() - expected.keys()
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs network {expected[k]}"
              for k in sorted(expected.keys() & sd.keys()) if tuple(sd[k].shape) != expected[k]]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
    if shapes:
        more = f", ... ({len(shapes) - _LIST_AT_MOST} more)" if len(shapes) > _LIST_AT_MOST else ""
        parts.append(f"{len(shapes)} shape mismatches ({'; '.join(shapes[:_LIST_AT_MOST])}{more})")
    if any(k.startswith("label_emb.") for k in unexpected):
        parts.append("the checkpoint is class-conditional (label_emb), and a class-conditional network cannot serve "
                     "as an unconditional prior")
    raise ValueError(f"{what} does not match the network: " + "; ".join(parts))


def _load_strict(build, sd: dict, what: str, device) -> nn.Module:
    """Build the module on the meta device (no random initialisation), check keys and shapes, then
    adopt the checkpoint's tensors (floating ones cast to float32), move it to ``device``, and
    return it in eval mode with its parameters frozen (gradients still flow to the input)."""
    with torch.device("meta"):
        module = build()
    _check_keys(module, sd, what)
    sd = {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in sd.items()}
    module.load_state_dict(sd, strict=True, assign=True)
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:  # a non-persistent buffer would be left uninitialised
        raise ValueError(f"{what}: the network has tensors a checkpoint cannot set: {_few(left)}")
    return module.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# ADM configs
# ----------------------------------------------------------------------------------------------


def _resolve_config(arch, ckpt_config, path) -> dict:
    if arch is None:
        if ckpt_config is None:
            raise ValueError(f"{str(path)!r} is a raw state_dict without a config: give its architecture (--arch, or "
                             f"arch= in Python): one of {_allowed_archs()}")
        return dict(ckpt_config)
    if isinstance(arch, dict):
        return dict(arch)
    if isinstance(arch, (str, Path)):
        if str(arch) in ADM_PRESETS:
            return dict(ADM_PRESETS[str(arch)])
        p = Path(arch)
        if p.suffix.lower() == ".json" or p.is_file():
            if not p.is_file():
                raise FileNotFoundError(f"no JSON config file at {str(p)!r}")
            try:
                config = json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"config file {str(p)!r} is not valid JSON ({exc})") from None
            if not isinstance(config, dict):
                raise ValueError(f"config file {str(p)!r} must hold a JSON object of ADMUNet arguments")
            return config
    raise ValueError(f"unknown arch {arch!r}: expected one of {_allowed_archs()}")


def arch_record(arch) -> str | None:
    """``arch`` as a run records it: a preset's name (or ``"diffusers"``) as it is; a JSON config file's absolute
    path with the sha256 of its parsed contents, ``"<path> (config sha256 <16 hex>)"``, so that a file edited in place
    (attention heads change no weight's shape, yet the network computes otherwise) is another architecture, and the
    same contents under another path are not."""
    if arch is None:
        return None
    if isinstance(arch, dict):
        return _config_digest(arch)
    if str(arch) in ADM_PRESETS or str(arch) == DIFFUSERS:
        return str(arch)
    p = Path(arch)
    try:
        return f"{p.resolve()} (config sha256 {_config_digest(json.loads(p.read_text()))})"
    except (OSError, ValueError):
        return str(arch)


def _config_digest(config) -> str:
    import hashlib
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def same_arch(a, b) -> bool:
    """Whether two recorded ``arch`` texts (:func:`arch_record`, or a bare path or name as runs before 2026-12-07
    recorded it) name the same architecture: by the config's digest where both have one, else by the resolved path
    or the name."""
    def parts(text):
        text = "" if text is None else str(text)
        head, _, digest = text.partition(" (config sha256 ")
        try:
            where = str(Path(head).resolve()) if head and head not in ADM_PRESETS and head != DIFFUSERS else head
        except OSError:
            where = head
        return where, digest.rstrip(")")
    (pa, da), (pb, db) = parts(a), parts(b)
    return da == db if da and db else pa == pb


# guided-diffusion's flags of the diffusion, not the network, that a copied config may hold: the values afdps runs
# with (an epsilon network on the linear schedule, VPSchedule(0.1, 20) with num_train_steps steps), and the flags of
# sampling or training only, which change nothing here
DIFFUSION_FLAGS = {"noise_schedule": "linear", "predict_xstart": False}
SAMPLING_FLAGS = ("timestep_respacing", "use_kl", "rescale_learned_sigmas", "sigma_small", "use_ddim", "clip_denoised")


def diffusion_flags(config: dict, what: str) -> tuple[dict, int | None]:
    """``(network config, diffusion_steps or None)``: a guided-diffusion config with its diffusion's flags taken
    out. A flag afdps cannot honour (a cosine schedule, an x0-predicting network, timesteps rescaled to 1000 with
    another number of steps) is refused, naming it: it would run the network on the wrong schedule."""
    config = {k: ({"true": True, "false": False}.get(v.lower(), v) if isinstance(v, str) and k in
                  (*DIFFUSION_FLAGS, "rescale_timesteps") else v) for k, v in config.items()}  # ("False", from argparse)
    for key, want in DIFFUSION_FLAGS.items():
        value = config.pop(key, want)
        if value != want:
            raise ValueError(f"{what}: {key}={value!r} is not supported: afdps runs epsilon-predicting networks on the "
                             f"linear schedule ({key}={want!r})")
    steps = config.pop("diffusion_steps", None)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"{what}: diffusion_steps must be a positive integer, got {steps!r}")
    rescale = config.pop("rescale_timesteps", False)
    if rescale not in (True, False):
        raise ValueError(f"{what}: rescale_timesteps must be true or false, got {rescale!r}")
    if rescale and steps not in (None, 1000):
        raise ValueError(f"{what}: rescale_timesteps=True with diffusion_steps={steps} feeds the network timesteps "
                         "scaled to 1000, which afdps does not do")
    for key in SAMPLING_FLAGS:
        config.pop(key, None)
    return config, steps


def _build_adm(config: dict, what: str):
    allowed = set(inspect.signature(ADMUNet.__init__).parameters) - {"self"}
    extra = sorted(set(config) - allowed)
    if extra:
        raise ValueError(f"{what}: config has arguments ADMUNet does not take: {extra} (allowed: {sorted(allowed)})")
    if config.get("class_cond"):
        raise ValueError(f"{what}: class-conditional models cannot serve as unconditional priors")
    try:
        adm_config(**config)  # validate before building: a bad value is a ValueError naming it
    except TypeError as exc:
        raise ValueError(f"{what}: bad config ({exc})") from None
    return lambda: ADMUNet(**config)


# ----------------------------------------------------------------------------------------------
# diffusers
# ----------------------------------------------------------------------------------------------


class DiffusersEpsilon(nn.Module):
    """Calls a diffusers ``UNet2DModel`` as ``net(x, t)`` and returns the tensor (``.sample``)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timesteps).sample


def _is_diffusers_folder(path: Path) -> bool:
    cfg = path / "config.json"
    if not (path.is_dir() and cfg.is_file()):
        return False
    try:
        return json.loads(cfg.read_text()).get("_class_name") == "UNet2DModel"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def _diffusers_schedule(folder: Path, num_train_steps: int, schedule):
    """``(schedule, num_train_steps)`` from the scheduler config beside a pipeline's ``unet/`` folder
    (``../scheduler/scheduler_config.json``), where there is one: its linear betas' continuous limit
    ``VPSchedule(N beta_start, N beta_end)`` and its ``num_train_timesteps`` N, unless the caller gave a schedule.
    A prediction type other than epsilon or a beta schedule other than linear is refused (the network would run
    on the wrong schedule). Without a scheduler config, the defaults (``VPSchedule(0.1, 20)``, 1000 steps)."""
    path = scheduler_config(folder)
    if not path.is_file():
        return schedule or VPSchedule(0.1, 20.0), DEFAULT_TRAIN_STEPS if num_train_steps is None else num_train_steps
    try:
        cfg = json.loads(path.read_text())
        kind, pred = cfg.get("beta_schedule", "linear"), cfg.get("prediction_type", "epsilon")
        n = int(cfg.get("num_train_timesteps", 1000))
        b0, b1 = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not a JSON object of a diffusers scheduler config "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from None
    if "beta_start" not in cfg or "beta_end" not in cfg or cfg.get("trained_betas") is not None:
        raise ValueError(f"{str(folder)!r}: its scheduler ({str(path)!r}) is not a DDPM-type config of linear betas "
                         "(beta_start, beta_end; no trained_betas); afdps cannot tell the network's schedule")
    if cfg.get("predict_epsilon", True) is False:  # (diffusers' key before prediction_type)
        pred = "sample"
    if pred != "epsilon":
        raise ValueError(f"{str(folder)!r}: its scheduler ({str(path)!r}) says prediction_type={pred!r}; afdps runs "
                         "epsilon-predicting networks only")
    if kind != "linear" and schedule is None:  # (a schedule the caller gives is theirs to answer for)
        raise ValueError(f"{str(folder)!r}: its scheduler ({str(path)!r}) says beta_schedule={kind!r}; afdps runs "
                         "networks of the linear beta schedule (or pass schedule= yourself in Python)")
    return schedule or VPSchedule(n * b0, n * b1), _train_steps(
        n, num_train_steps, f"{str(folder)!r}: its scheduler says num_train_timesteps={n}")


DEFAULT_TRAIN_STEPS = 1000
"""The DDPM steps of a network whose files do not say (ADM's)."""


def _train_steps(found: int | None, given: int | None, says: str) -> int:
    """The network's training steps: ``found`` in its files where they say (a guided-diffusion config, a diffusers
    scheduler), else ``given``, else 1000; a ``given`` that differs from ``found`` is refused (an explicit 1000 too:
    it was taken for the default and silently replaced)."""
    if given is None:
        return DEFAULT_TRAIN_STEPS if found is None else found
    if found is None or found == given:
        return given
    raise ValueError(f"{says}, num_train_steps={given} was passed")


def _load_diffusers(folder: Path, device, batch_size, autocast_dtype, num_train_steps, schedule) -> EpsilonModel:
    if not folder.exists():
        raise FileNotFoundError(f"no diffusers model folder at {str(folder)!r}")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} is not a diffusers model folder (no config.json)")
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:
        raise ImportError(
            "loading a diffusers UNet2DModel folder needs the optional dependency diffusers: "
            "pip install 'afdps[diffusers]' (or pip install diffusers)"
        ) from exc
    try:
        cls_name = json.loads((folder / "config.json").read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ValueError(f"{str(folder / 'config.json')!r} is not a JSON object of a diffusers config "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from None
    if cls_name not in (None, "UNet2DModel"):
        raise ValueError(f"{str(folder)!r} holds a diffusers {cls_name}; only UNet2DModel is supported")
    try:
        unet, info = UNet2DModel.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False,
                                                 output_loading_info=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"could not load the UNet2DModel in {str(folder)!r}: {exc}") from None
    # diffusers only warns about keys it could not fill (and leaves them at random values): refuse.
    parts = []
    for label, keys in (("missing", info.get("missing_keys")), ("unexpected", info.get("unexpected_keys")),
                        ("shape-mismatched", [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys") or []])):
        if keys:
            parts.append(f"{len(keys)} {label} keys ({_few(keys)})")
    if parts:
        raise ValueError(f"the weights in {str(folder)!r} do not match its config.json: " + "; ".join(parts))
    cfg = unet.config
    if getattr(cfg, "num_class_embeds", None) or getattr(cfg, "class_embed_type", None):
        raise ValueError(f"{str(folder)!r}: class-conditional UNet2DModels cannot serve as unconditional priors")
    size = cfg.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    cin, cout = int(cfg.in_channels), int(cfg.out_channels)
    if cout not in (cin, 2 * cin):
        raise ValueError(f"{str(folder)!r}: out_channels {cout} is neither in_channels {cin} (epsilon) nor "
                         f"{2 * cin} (epsilon and learned variance)")
    if getattr(cfg, "time_embedding_type", "positional") == "fourier":
        raise ValueError(f"{str(folder)!r}: a UNet2DModel with Fourier time embeddings (score-SDE's NCSN++, called with "
                         "the noise level sigma) is not a DDPM epsilon network; afdps feeds timesteps")
    schedule, num_train_steps = _diffusers_schedule(folder, num_train_steps, schedule)
    net = DiffusersEpsilon(unet).to(device).eval()
    return EpsilonModel(net, schedule, event_shape=(cin, h, w),
                        num_train_steps=num_train_steps, learned_sigma=cout == 2 * cin,
                        batch_size=batch_size, autocast_dtype=autocast_dtype)


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def check_path(path) -> None:
    """A checkpoint's path: a non-empty str or Path (``""`` is the current folder to pathlib)."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a file or folder path (str or Path), got {type(path).__name__}")
    if str(path).strip() == "":
        raise ValueError("path is empty; name a checkpoint file or folder")


def check_device(device) -> torch.device:
    """``device`` as a torch device this torch can hold a network on, checked before any checkpoint is read: a
    string torch cannot parse, a CUDA (or MPS, XPU) device this torch does not see, and ``"meta"`` (tensors without
    values) are refused by name."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if device.type == "meta":
        raise ValueError("device='meta' holds no values, so a network there cannot restore anything; use 'cpu' or "
                         "'cuda'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r}: this torch sees no CUDA device (torch {torch.__version__}); "
                             "use 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise ValueError(f"device={str(device)!r}: this torch has no {device.type} device available "
                             f"(torch {torch.__version__}); use 'cpu'" + (" or 'cuda'" if torch.cuda.is_available()
                                                                           else ""))
    return device


def _check_loader_args(path, device, batch_size, autocast_dtype, num_train_steps, schedule) -> None:
    check_path(path)
    check_device(device)  # (before the checkpoint is read, not after)
    if batch_size is not None and batch_size != "auto":
        check_int("batch_size", batch_size, 1)
    if num_train_steps is not None:
        check_int("num_train_steps", num_train_steps, 1)
    if autocast_dtype not in (None, torch.float16, torch.bfloat16):
        raise ValueError(f"autocast_dtype must be None, torch.float16 or torch.bfloat16, got {autocast_dtype!r}")
    check_schedule(schedule)


def _is_file(text: str) -> bool:
    """Whether ``text`` names an existing file (a name the OS cannot take, too long, is not one)."""
    try:
        return Path(text).is_file()
    except OSError:
        return False


def load_prior(path, arch=None, *, device="cpu", batch_size: int | None = None,
               autocast_dtype: torch.dtype | None = None, num_train_steps: int | None = None,
               schedule=None, cuda_graph: bool = False, inference: bool = False) -> EpsilonModel:
    """A diffusion prior from a checkpoint: an :class:`EpsilonModel` with the network in eval mode.

    Parameters
    ----------
    path : a checkpoint file or a diffusers ``UNet2DModel`` folder (the public ``afdps.load_prior`` also
        takes the names of the priors shipped with afdps).
    arch : for ADM checkpoints: ``"adm-ffhq256"``, ``"adm-imagenet256"``, a ``create_model``
        config dict (guided-diffusion spelling, plus ``in_channels``) or a path to a JSON file of
        one; may be omitted for afdps's own format, which stores its config. ``"diffusers"`` for a
        diffusers folder (detected from ``config.json`` when omitted).
    device : where the network lives.
    batch_size, autocast_dtype, cuda_graph : passed to :class:`EpsilonModel` (``batch_size`` an int, ``"auto"``
        or None; ``cuda_graph``: replay each network call shape from a CUDA graph).
    num_train_steps : DDPM steps of the network's discrete schedule (timestep ``k = N tau - 1``). Default (None):
        what its files say, a guided-diffusion config's ``diffusion_steps`` or for a diffusers ``unet/`` folder the
        ``num_train_timesteps`` of the pipeline's ``scheduler/scheduler_config.json`` beside it, else 1000 (ADM's).
        A number that differs from what the files say is refused (1000 included).
    schedule : the continuous schedule (default ``VPSchedule(0.1, 20.0)``: the limit of the DDPM
        linear betas 1e-4 to 0.02 over 1000 steps; for a diffusers folder with a scheduler config, the limit of
        its linear betas). Networks that predict x0 or v, or were trained on a cosine schedule, are refused where
        their config says so (guided-diffusion's ``predict_xstart`` and ``noise_schedule``, diffusers'
        ``prediction_type`` and ``beta_schedule``); a bare state_dict says nothing, and is taken to be an epsilon
        network of the linear schedule.
    inference : run the network on its inference path, :meth:`ADMUNet.to_inference` (bfloat16 torso,
        channels-last activations, the fused Triton kernels on CUDA): on an H200 the FFHQ configuration at
        batch 64 runs 926 images/s against 282 with bfloat16 autocast, relative error 1.1e-3 against a float64
        forward (autocast's 1.2e-3; docs/network.md). ADM networks only; ``autocast_dtype`` must be left None.
        Off by default: it changes the results' last digits against the float32 network.

    Returns
    -------
    EpsilonModel with ``event_shape = (in_channels, image_size, image_size)`` and ``learned_sigma``
    as the config says (the first half of the output channels is epsilon).

    Raises
    ------
    FileNotFoundError : no such file or folder.
    ValueError : unknown arch; not a checkpoint; a pickle that needs arbitrary objects; keys or shapes
        that do not match the network (the message lists the first few and the counts).
    ImportError : a diffusers folder without the ``diffusers`` package.
    """
    _check_loader_args(path, device, batch_size, autocast_dtype, num_train_steps, schedule)
    if not isinstance(inference, bool):
        raise TypeError(f"inference must be True or False, got {inference!r}")
    if inference and autocast_dtype is not None:
        raise ValueError(f"inference=True stores the network's torso in bfloat16 (ADMUNet.to_inference); "
                         f"autocast_dtype={autocast_dtype} cannot apply to it: leave it None")
    given_schedule = schedule
    schedule = schedule if schedule is not None else VPSchedule(0.1, 20.0)
    path = Path(path)
    if arch == DIFFUSERS or (arch is None and _is_diffusers_folder(path)):
        if inference:
            raise ValueError(f"inference=True is ADMUNet.to_inference, for ADM networks; {str(path)!r} is a "
                             "diffusers UNet2DModel folder (use autocast_dtype=torch.bfloat16 for it)")
        prior = _load_diffusers(path, device, batch_size, autocast_dtype, num_train_steps, given_schedule)
        prior.cuda_graph = bool(cuda_graph)
        return prior
    if isinstance(arch, str) and arch not in ADM_PRESETS and not (arch.lower().endswith(".json") or _is_file(arch)):
        raise ValueError(f"unknown arch {arch[:80]!r}{'...' if len(arch) > 80 else ''}: expected one of "
                         f"{_allowed_archs()}")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")

    sd, ckpt_config, _ = read_checkpoint(load_checkpoint(path), path)
    config = _resolve_config(arch, ckpt_config, path)
    if ckpt_config is not None and arch is not None and dict(ckpt_config) != config:
        raise ValueError(f"{str(path)!r} carries its own architecture, which differs from arch={arch!r}; leave arch "
                         "out")
    what = f"checkpoint {str(path)!r}"
    config, steps = diffusion_flags(config, what)
    num_train_steps = _train_steps(steps, num_train_steps, f"{what}: its config says diffusion_steps={steps}")
    net = _load_strict(_build_adm(config, what), sd, what, device)
    if inference:
        net.to_inference()
    image_size = int(config["image_size"])
    return EpsilonModel(net, schedule, event_shape=(net.in_channels, image_size, image_size),
                        num_train_steps=num_train_steps, learned_sigma=bool(config.get("learn_sigma", False)),
                        batch_size=batch_size, autocast_dtype=autocast_dtype, cuda_graph=cuda_graph)


def load_classifier(path, *, device="cpu") -> nn.Module:
    """A digit classifier in eval mode: logits ``(B, 10)`` for ``(B, 1, 28, 28)`` images on [-1, 1].

    ``path``: a file written by :func:`afdps.engine.training.train_classifier` (the public
    ``afdps.load_classifier`` also takes the name ``"mnist"`` of the shipped one).
    """
    check_path(path)
    check_device(device)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no classifier file at {str(path)!r}")
    sd, config, _ = read_checkpoint(load_checkpoint(path), path)
    config = dict(config or {})
    what = f"classifier {str(path)!r}"
    try:
        MNISTClassifier(**config)
    except TypeError as exc:
        hint = " (a diffusion prior's, from train-prior?)" if "image_size" in config else ""
        raise ValueError(f"{what}: bad config ({exc}){hint}; a classifier is what afdps train-classifier writes") \
            from None
    return _load_strict(lambda: MNISTClassifier(**config), sd, what, device)
