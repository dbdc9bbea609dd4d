"""Bad input and faults, published (docs/reliability.md): every bad input below must be refused at the
entry with one sentence (no traceback, CLI exit status 2) naming the argument; every fault case must give
the outcome of the non-finite rule. The table in docs/reliability.md is generated from these cases and
compared with the file, so it cannot go stale: after changing a case or a message, regenerate it with
``AFDPS_WRITE_DOCS=1 python -m pytest tests/test_reliability.py``.
"""
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import afdps
from afdps import cli, ops
from afdps.baselines import dps
from afdps.engine import restore as rs
from afdps.engine.lpips import LPIPS, load_lpips
from afdps.engine.training import PRIOR_CONFIG, train_prior
from afdps.priors import EpsilonModel, GaussianMixture, SpectralGaussian

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
GM = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.5, 1.0]]), torch.stack([0.3 * torch.eye(2), 0.5 * torch.eye(2)]),
                     torch.tensor([0.4, 0.6]))
A2 = ops.Dense(torch.tensor([[1.0, 0.5]]))
Y2 = torch.tensor([[0.3], [-1.0]])


def _s(**kw):
    opts = dict(num_particles=4, num_steps=2, seed=0)
    opts.update(kw)
    return lambda: afdps.sample(opts.pop("prior", GM), opts.pop("op", A2), opts.pop("y", Y2), opts.pop("sigma_y", 0.5),
                                **opts)


class _Opaque(ops.LinearOperator):
    input_shape, output_shape = (2,), (1,)

    def A(self, x):
        return x[..., :1]

    def A_adjoint(self, v):
        return torch.cat([v, torch.zeros_like(v)], -1)

    def frobenius_sq(self):
        return 1.0


class _Duck:  # A and A_adjoint, not a LinearOperator
    input_shape, output_shape = (2,), (1,)
    A, A_adjoint = _Opaque.A, _Opaque.A_adjoint


class _NoAdjoint(ops.LinearOperator):
    input_shape, output_shape, A = (2,), (1,), _Opaque.A


class _Wide(_Opaque):
    def A(self, x):
        return x


class _OffAdjoint(_Opaque):
    def A_adjoint(self, v):
        return 2 * super().A_adjoint(v)


class _NoTrace(ops.LinearOperator):
    input_shape, output_shape, A, A_adjoint = (2,), (1,), _Opaque.A, _Opaque.A_adjoint


def _past_the_end():
    from afdps.engine.sampler import init, prepare, step
    plan = prepare(GM, A2, Y2, 0.5, num_particles=4, num_steps=1, seed=0)
    step(step(init(plan), plan)[0], plan)


class _WrongShapeScore:
    event_shape, schedule = (2,), afdps.VPSchedule()

    def score(self, x, t):
        return x[..., :1]


class _NumpyScore(_WrongShapeScore):
    def score(self, x, t):
        return x.detach().numpy()


class _TextSchedule(_WrongShapeScore):
    schedule = "vp"


def _files(tmp):
    (tmp / "text.pt").write_text("not a checkpoint")
    torch.save({"w": torch.zeros(2)}, tmp / "raw.pt")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "ema": {"w": torch.ones(2)}}, tmp / "two.pt")
    (tmp / "unet").mkdir(exist_ok=True)
    (tmp / "unet" / "config.json").write_text("{not json")
    (tmp / "bad.json").write_text("{not json")
    torch.save({k: v for k, v in LPIPS().state_dict().items() if k.startswith("lin")}, tmp / "heads.pth")
    # afdps restore's inputs
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp / "x.png")
    Image.fromarray(np.full((28, 28), 2.0, dtype=np.float32)).save(tmp / "float.tif")  # floats are read on [0, 1]
    np.save(tmp / "k.npy", np.ones((3, 3)))
    np.save(tmp / "bytes.npy", np.full((28, 28), 200.0))
    np.save(tmp / "two.npy", np.zeros((2, 28, 28)))
    np.save(tmp / "either.npy", np.zeros((3, 28, 3)))
    np.save(tmp / "empty.npy", np.zeros((0, 28)))
    (tmp / "notimg.png").write_text("not an image")
    Image.fromarray(np.zeros((28, 28, 4), dtype=np.uint8), "RGBA").save(tmp / "clear.png")  # every pixel transparent
    for name, row in (("seed.jsonl", {"path": "x.png", "task": "box", "seed": 1.5}),
                      ("negseed.jsonl", {"path": "x.png", "task": "box", "seed": -7}),
                      ("factor.jsonl", {"path": "x.png", "task": "sr4", "factor": 2.5}),
                      ("sigma.jsonl", {"path": "x.png", "task": "box", "sigma_y": True}),
                      ("kernel.jsonl", {"path": "x.png", "task": "box", "kernel": "k.npy"})):
        (tmp / name).write_text(json.dumps(row) + "\n")
    (tmp / "cells.csv").write_text("path,task\nx.png,box,extra\n")
    np.save(tmp / "nanmask.npy", np.full((28, 28), np.nan))
    with open(tmp / "archive.npy", "wb") as f:
        np.savez(f, a=np.zeros(3))
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp / "index.html.png")
    (tmp / "num.jsonl").write_text(json.dumps({"path": 5, "task": "box"}) + "\n")
    (tmp / "case.jsonl").write_text("".join(json.dumps({"path": "x.png", "task": "box", "name": n}) + "\n"
                                            for n in ("Digit", "digit")))
    return tmp


class _Up(_Opaque):  # float64 back for float32 particles
    def A(self, x):
        return x[..., :1].double()


def _eps(**kw):
    args = {"event_shape": (1, 4, 4), **kw}
    return lambda: EpsilonModel(args.pop("net", torch.nn.Identity()), **args)


def _api_cases(tmp):
    return [
        ("sample", "method='leapfrog'", _s(method="leapfrog")),
        ("sample", "tempering='cosine'", _s(tempering="cosine")),
        ("sample", "guidance='rk4'", _s(guidance="rk4")),
        ("sample", "resample='greedy'", _s(resample="greedy")),
        ("sample", "potential='bent'", _s(potential="bent")),
        ("sample", "num_particles=0", _s(num_particles=0)),
        ("sample", "num_particles=2.5", _s(num_particles=2.5)),
        ("sample", "num_particles='abc'", _s(num_particles="abc")),
        ("sample", "num_particles=True", _s(num_particles=True)),
        ("sample", "num_steps=0", _s(num_steps=0)),
        ("sample", "corrector_steps=-1", _s(corrector_steps=-1)),
        ("sample", "eta=nan", _s(eta=float("nan"))),
        ("sample", "eta='abc'", _s(eta="abc")),
        ("sample", "ess_threshold=1.5", _s(ess_threshold=1.5)),
        ("sample", "corrector_snr=0", _s(corrector_snr=0)),
        ("sample", "corrector_snr=(0.1, 0.2, 0.3)", _s(corrector_snr=(0.1, 0.2, 0.3))),
        ("sample", "time_power=0.5", _s(time_power=0.5)),
        ("sample", "sigma_y=0", _s(sigma_y=0)),
        ("sample", "sigma_y=-1", _s(sigma_y=-1)),
        ("sample", "sigma_y='abc'", _s(sigma_y="abc")),
        ("sample", "sigma_y=inf", _s(sigma_y=float("inf"))),
        ("sample", "seed='abc'", _s(seed="abc")),
        ("sample", "seed=1.5", _s(seed=1.5)),
        ("sample", "seed=True", _s(seed=True)),
        ("sample", "seed=[1] for 2 images", _s(seed=[1])),
        ("sample", "seed=[1.5, 2]", _s(seed=[1.5, 2])),
        ("sample", "dtype=torch.float16", _s(dtype=torch.float16)),
        ("sample", "backend='cuda'", _s(backend="cuda")),
        ("sample", "y without the batch dimension", _s(y=Y2[0])),
        ("sample", "y with an empty batch", _s(y=Y2[:0])),
        ("sample", "complex y", _s(y=Y2.to(torch.complex64))),
        ("sample", "bool y", _s(y=Y2 > 0)),
        ("sample", "y with NaN", _s(y=torch.tensor([[float("nan")], [0.0]]))),
        ("sample", "y a Python list", _s(y=[[0.3], [-1.0]])),
        ("sample", "prior without score", _s(prior=object())),
        ("sample", "operator shape differs from the prior's", _s(op=ops.Identity((3,)), y=torch.zeros(2, 3))),
        ("sample", "guidance='exact' with an operator that cannot diagonalise", _s(op=_Opaque(), guidance="exact")),
        ("sample", "potential='inflated' with such an operator", _s(op=_Opaque(), guidance="euler",
                                                                     potential="inflated")),
        ("sample", "potential='inflated' with guidance='implicit'", _s(method="ode", guidance="implicit",
                                                                          potential="inflated")),
        ("sample", "tempering_ess='abc'", _s(tempering_ess="abc")),
        ("sample", "callback=3", _s(callback=3)),
        ("sample", "corrector='metropolis'", _s(corrector="metropolis", method="ode")),
        ("sample", "potential='tweedie' with eta=1", _s(potential="tweedie", eta=1.0, tempering="linear")),
        ("sample", "potential='tweedie' without tempering", _s(potential="tweedie", eta=0.5, tempering="none")),
        ("sample", "a prior whose score has the wrong shape", _s(prior=_WrongShapeScore())),
        ("sample", "a prior whose score returns a NumPy array", _s(prior=_NumpyScore(), eta=1.0, potential="noisy")),
        ("sample", "prior.schedule='vp' (text)", _s(prior=_TextSchedule())),
        ("sample", "y on the meta device", _s(y=torch.empty(2, 1, device="meta"))),
        ("sample", "cuda_graph=True on the CPU", _s(cuda_graph=True, backend="torch")),
        ("sample", "num_particles=10**12 (memory)", _s(num_particles=10**12)),
        ("sample", "num_steps=10**9", _s(num_steps=10**9)),
        ("sample", "sigma_y=1e-300", _s(sigma_y=1e-300)),
        ("sample", "corrector_snr=1e300", _s(method="ode", corrector_snr=1e300)),
        ("sample", "an operator that is not a LinearOperator", _s(op=_Duck())),
        ("sample", "an operator without A_adjoint", _s(op=_NoAdjoint())),
        ("sample", "an operator whose A returns another shape", _s(op=_Wide())),
        ("sample", "an operator whose A_adjoint is not A's adjoint", _s(op=_OffAdjoint())),
        ("sample", "an operator without frobenius_sq, potential='scaled'", _s(op=_NoTrace(), eta=1.0,
                                                                               potential="scaled")),
        ("sample", "seed=2**64", _s(seed=2**64)),
        ("sample", "profile='no'", _s(profile="no")),
        ("sample", "one step past the last", _past_the_end),
        ("dps", "zeta=-1", lambda: dps(GM, A2, Y2, 0.5, num_steps=2, zeta=-1)),
        ("dps", "num_steps=0", lambda: dps(GM, A2, Y2, 0.5, num_steps=0)),
        ("dps", "num_steps=10**9", lambda: dps(GM, A2, Y2, 0.5, num_steps=10**9)),
        ("dps", "num_samples=0", lambda: dps(GM, A2, Y2, 0.5, num_steps=2, num_samples=0)),
        ("dps", "batch_size=0", lambda: dps(GM, A2, Y2, 0.5, num_steps=2, batch_size=0)),
        ("dps", "an empty batch", lambda: dps(GM, A2, Y2[:0], 0.5, num_steps=2)),
        ("dps", "seed='abc'", lambda: dps(GM, A2, Y2, 0.5, num_steps=2, seed="abc")),
        ("dps", "a VE prior", lambda: dps(GaussianMixture(GM.means, GM.covs, GM.weights,
                                                            schedule=afdps.VESchedule()), A2, Y2, 0.5, num_steps=2)),
        ("load_prior", "a missing file", lambda: afdps.load_prior(tmp / "nowhere.pt", arch="adm-ffhq256")),
        ("load_prior", "arch='adm-lsun'", lambda: afdps.load_prior(tmp / "raw.pt", arch="adm-lsun")),
        ("load_prior", "a text file", lambda: afdps.load_prior(tmp / "text.pt", arch="adm-ffhq256")),
        ("load_prior", "a raw state_dict without arch", lambda: afdps.load_prior(tmp / "raw.pt")),
        ("load_prior", "weights and their EMA", lambda: afdps.load_prior(tmp / "two.pt", arch="adm-ffhq256")),
        ("load_prior", "a cosine-schedule config", lambda: afdps.load_prior(
            tmp / "raw.pt", arch={"image_size": 8, "noise_schedule": "cosine"})),
        ("load_prior", "'mnist' with arch", lambda: afdps.load_prior("mnist", arch="adm-ffhq256")),
        ("load_prior", "path=123", lambda: afdps.load_prior(123)),
        ("load_prior", "device='gpu0'", lambda: afdps.load_prior("mnist", device="gpu0")),
        ("load_prior", "batch_size=0", lambda: afdps.load_prior("mnist", batch_size=0)),
        ("load_prior", "autocast_dtype=torch.int8", lambda: afdps.load_prior("mnist", autocast_dtype=torch.int8)),
        ("load_prior", "schedule='vp'", lambda: afdps.load_prior("mnist", schedule="vp")),
        ("load_prior", "a diffusers folder whose config.json is not JSON",
         lambda: afdps.load_prior(tmp / "unet", arch="diffusers")),
        ("load_prior", "arch a long JSON string (not a file)",
         lambda: afdps.load_prior(tmp / "raw.pt", arch='{"num_channels": ' + "1" * 300 + "}")),
        ("load_prior", "an arch JSON file that is not JSON", lambda: afdps.load_prior(tmp / "raw.pt",
                                                                                      arch=str(tmp / "bad.json"))),
        ("Blur", "boundary='reflect'", lambda: ops.Blur(ops.gaussian_kernel(3, 1.0), (1, 8, 8), boundary="reflect")),
        ("Blur", "a valid output_size larger than the valid part",
         lambda: ops.Blur(ops.gaussian_kernel(3, 1.0), (1, 8, 8), boundary="valid", output_size=(7, 6))),
        ("Blur", "output_size with a circular boundary",
         lambda: ops.Blur(ops.gaussian_kernel(3, 1.0), (1, 8, 8), output_size=(6, 6))),
        ("sample", "guidance='exact' with a valid blur",
         lambda: afdps.sample(afdps.priors.SpectralGaussian(torch.zeros(1), torch.ones(1, 4, 3), 4),
                              ops.Blur(ops.gaussian_kernel(3, 1.0), (1, 4, 4), boundary="valid"),
                              torch.zeros(1, 1, 2, 2), 0.5, num_steps=2, guidance="exact", potential="scaled")),
        ("load_lpips", "a weights file of the heads only", lambda: load_lpips(tmp / "heads.pth")),
        ("load_classifier", "a missing file", lambda: afdps.load_classifier(tmp / "nowhere.pt")),
        ("load_mnist_test", "n=1001", lambda: afdps.load_mnist_test(1001)),
        ("load_mnist_test", "n=2.5", lambda: afdps.load_mnist_test(2.5)),
        ("sample", "eta=-1", _s(eta=-1)),
        ("sample", "weights='no'", _s(weights="no")),
        ("sample", "denoise='x'", _s(denoise="x")),
        ("load_photo", "size=63.5", lambda: afdps.load_photo("astronaut", 63.5)),
        ("SpectralGaussian.fit", "size=(0, 0)",
         lambda: afdps.priors.SpectralGaussian.fit([torch.zeros(3, 8, 8)], (0, 0))),
        ("measure", "sigma_y=-1", lambda: A2.measure(torch.zeros(1, 2), -1.0)),
        ("Dense.A", "an integer tensor", lambda: A2.A(torch.ones(1, 2, dtype=torch.int64))),
        ("Blur", "a complex kernel", lambda: ops.Blur(torch.ones(3, 3, dtype=torch.complex64), (1, 8, 8))),
        ("Blur", "an all-zero kernel", lambda: ops.Blur(torch.zeros(3, 3), (1, 8, 8))),
        ("Blur", "image_shape=(1, 8.7, 8)", lambda: ops.Blur(torch.ones(3, 3), (1, 8.7, 8))),
        ("Inpaint", "a 0/255 mask", lambda: ops.Inpaint(torch.full((1, 4, 4), 255.0))),
        ("random_mask", "seed=-1", lambda: ops.random_mask((8, 8), 0.5, seed=-1)),
        ("load_classifier", "device='gpu0'", lambda: afdps.load_classifier("mnist", device="gpu0")),
        ("load_prior", "device='meta'", lambda: afdps.load_prior("mnist", device="meta")),
        ("to_unit", "a float image", lambda: afdps.engine.data.to_unit(np.zeros((4, 4, 3), np.float32))),
        ("restore", "a kernel file with task gaussian-blur",
         lambda: rs.jobs_from_inputs([tmp / "x.png"], task="gaussian-blur", kernel=str(tmp / "k.npy"))),
        ("restore", "a mask file with task sr4",
         lambda: rs.jobs_from_inputs([tmp / "x.png"], task="sr4", mask=str(tmp / "x.png"))),
        ("restore", "a factor with task box", lambda: rs.jobs_from_inputs([tmp / "x.png"], task="box", factor=2)),
        ("restore", "an .npy of 8-bit values", lambda: rs.read_image(tmp / "bytes.npy", 1)),
        ("restore", "an .npy of 2 channels", lambda: rs.read_image(tmp / "two.npy", 1)),
        ("restore", "an .npy of shape (3, 28, 3): (C, H, W) or (H, W, C)", lambda: rs.read_image(tmp / "either.npy", 1)),
        ("restore", "an empty .npy", lambda: rs.read_image(tmp / "empty.npy", 1)),
        ("restore", "a float TIFF of values 2 (floats are read on [0, 1])",
         lambda: rs.read_image(tmp / "float.tif", 1)),
        ("restore", "an image with transparent pixels", lambda: rs.read_image(tmp / "clear.png", 1)),
        ("restore", "a kernel file that is not an image", lambda: rs.read_kernel(tmp / "notimg.png")),
        ("restore", "a mask file that is not an image", lambda: rs.read_mask(tmp / "notimg.png", (28, 28))),
        ("restore", "sigma_y 'auto' for a 1x1 measurement", lambda: rs.estimate_sigma(torch.zeros(1, 1, 1))),
        ("restore", "a manifest seed of 1.5", lambda: rs.jobs_from_manifest(tmp / "seed.jsonl", defaults={})),
        ("restore", "a manifest seed of -7", lambda: rs.jobs_from_manifest(tmp / "negseed.jsonl", defaults={})),
        ("restore", "a manifest factor of 2.5", lambda: rs.jobs_from_manifest(tmp / "factor.jsonl", defaults={})),
        ("restore", "a manifest sigma_y of true", lambda: rs.jobs_from_manifest(tmp / "sigma.jsonl", defaults={})),
        ("restore", "a manifest kernel for task box", lambda: rs.jobs_from_manifest(tmp / "kernel.jsonl", defaults={})),
        ("restore", "a CSV manifest row with an extra cell",
         lambda: rs.jobs_from_manifest(tmp / "cells.csv", defaults={})),
        ("restore", "a missing reference folder",
         lambda: rs.restore(None, [], tmp / "out", sample_options={}, reference=tmp / "nowhere")),
        ("restore", "an output folder that is a file", lambda: rs.restore(None, [], tmp / "k.npy", sample_options={})),
        ("restore", "a mask of NaN", lambda: rs.read_mask(tmp / "nanmask.npy", (28, 28))),
        ("restore", "an .npz archive named .npy", lambda: rs.read_mask(tmp / "archive.npy", (28, 28))),
        ("restore", "an image named index.html", lambda: rs.jobs_from_inputs([str(tmp / "index.html.png")],
                                                                             task="denoise")),
        ("restore", "a manifest path that is a number", lambda: rs.jobs_from_manifest(tmp / "num.jsonl", defaults={})),
        ("restore", "manifest names Digit and digit (one folder on macOS and Windows)",
         lambda: rs.jobs_from_manifest(tmp / "case.jsonl", defaults={})),
        ("train_prior", "a config with learn_sigma=True",
         lambda: train_prior(tmp / "p.pt", steps=1, config={**PRIOR_CONFIG, "learn_sigma": True})),
        ("sample", "an operator returning float64 for float32 particles", _s(op=_Up())),
        ("sample_prior", "timesteps=[5.0, 0.5]", lambda: afdps.sample_prior(GM, 2, timesteps=[5.0, 0.5], seed=0)),
        ("priors", "EpsilonModel(num_train_steps=0)", _eps(num_train_steps=0)),
        ("priors", "EpsilonModel(event_shape=(1.5, 8, 8))", _eps(event_shape=(1.5, 8, 8))),
        ("priors", "EpsilonModel(schedule='ve')", _eps(schedule="ve")),
        ("priors", "EpsilonModel(net=a function)", _eps(net=lambda x, t: x)),
        ("priors", "EpsilonModel(learned_sigma='no')", _eps(learned_sigma="no")),
        ("priors", "GaussianMixture with a non-symmetric covariance",
         lambda: GaussianMixture([[0.0, 0.0]], [[[1.0, 0.9], [-0.9, 1.0]]], [1.0])),
        ("priors", "GaussianMixture with an indefinite covariance",
         lambda: GaussianMixture([[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], [1.0])),
        ("priors", "GaussianMixture with weight inf",
         lambda: GaussianMixture([[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]], [float("inf")])),
        ("priors", "SpectralGaussian.fit on an image with NaN",
         lambda: SpectralGaussian.fit([torch.full((1, 8, 8), float("nan"))], (8, 8))),
        ("priors", "SpectralGaussian with an infinite power",
         lambda: SpectralGaussian([0.0], torch.full((1, 8, 5), float("inf")), 8)),
    ]


CLI_CASES = [
    ["eval", "--batch-size", "0"],
    ["eval", "--task", ""],
    ["eval", "--task", "sr8"],
    ["eval", "--methods", "afdps,dps"],
    ["eval", "--num-images", "0"],
    ["eval", "--corrector-snr", "0.1,0"],
    ["eval", "--corrector-snr", "0.1,0.2,0.3"],
    ["eval", "--num-images", "1001"],
    ["eval", "--dps-steps", "0"],
    ["eval", "--sigma-y", "-1"],
    ["eval", "--time-power", "0.5"],
    ["eval", "--particles", "many"],
    ["eval", "--threads", "0"],
    ["eval", "--prior", "nowhere.pt", "--arch", "adm-ffhq256"],
    ["eval", "--potential", "bent"],
    ["eval", "--methods", "fk,fk"],
    ["eval", "--potential", "tweedie"],
    ["eval", "--device", "gpu0"],
    ["eval", "--tempering", "adaptive", "--tempering-ess", "1"],
    ["demo", "--size", "32"],
    ["demo", "--particles", "0"],
    ["demo", "--sigma-y", "abc"],
    ["demo", "--seed", "1.5"],
    ["demo", "--size", "100000"],
    ["demo", "--eta", "-1"],
    ["train-prior", "--out", "p.pt", "--steps", "0"],
    ["train-prior", "--out", "p.pt", "--ema-decay", "1.5"],
    ["train-classifier", "--out", "c.pt", "--lr", "-1"],
    ["train-prior", "--out", "p.pt", "--init-from", "mnist", "--num-channels", "64"],
    ["train-prior", "--out", ".", "--steps", "1"],
    ["train-prior", "--out", "p.pt", "--steps", "1", "--device", "gpu0"],
    ["restore", "--task", "box", "--out", "r"],
    ["restore", "nowhere.png", "--task", "box", "--out", "r"],
    ["restore", "x.png", "--task", "deblur", "--out", "r"],
    ["restore", "x.png", "--task", "box", "--sigma-y", "loud", "--out", "r"],
    ["restore", "x.png", "--task", "gaussian-blur", "--boundary", "reflect", "--out", "r"],
    ["restore", "x.png", "--task", "denoise", "--tile-overlap", "1", "--out", "r"],
    ["restore", "x.png", "--task", "denoise", "--network-batch", "0", "--out", "r"],
    ["restore", "x.png", "--task", "denoise", "--particle-parallel", "--out", "r"],
    ["restore", "x.png", "--task", "denoise", "--device", "gpu0", "--out", "r"],
    [],
]


def _one_line(text: str, tmp) -> str:
    text = text.replace(str(tmp), "<tmp>")
    text = re.sub(r"which has [\d.]+ GiB available", "which has <free> GiB available", text)
    return text.strip()


def _api_outcome(fn, tmp):
    try:
        fn()
    except (ValueError, TypeError, FileNotFoundError, MemoryError) as exc:
        return type(exc).__name__, _one_line(str(exc), tmp)
    except Exception as exc:  # noqa: BLE001  (reported by the test as a wrong kind of error)
        return f"UNEXPECTED {type(exc).__name__}", _one_line(str(exc), tmp)
    return "ACCEPTED", ""


def _cli_outcome(argv, tmp, capsys):
    try:
        rc = cli.main(argv + (["--out", str(tmp / "out")] if argv and argv[0] in ("eval", "demo") else []))
    except SystemExit as exc:  # argparse refuses: status 2, usage and one error line
        rc = exc.code
    err = capsys.readouterr().err
    last = [line for line in err.strip().splitlines() if line.strip()][-1:] or [""]
    return rc, "Traceback" in err, _one_line(last[0], tmp)


FAULTS = [
    ("one NaN score row at step 3 (SDE)", dict(method="sde"), {3: [(0, 1)]}, False),
    ("one inf score row at the last step (FK)", dict(method="sde", eta=0.5), {5: [(0, 2)]}, False),
    ("one NaN row, weights=False", dict(weights=False), {2: [(1, 0)]}, False),
    ("one NaN row in the corrector (ODE)", dict(method="ode"), {3: [(0, 3)]}, False),
    ("one NaN row, denoise=True, NaN final score", dict(denoise=True), {6: [(0, 0)]}, False),
    ("one NaN row, no resampling", dict(resample="none"), {1: [(1, 2)]}, False),
    ("every row of image 1 NaN at step 2", dict(), {2: [(1, i) for i in range(4)]}, True),
    ("every row NaN in the final denoising", dict(denoise=True), {6: [(0, i) for i in range(4)]}, True),
]


def _fault_outcome(opts, faults):
    from test_faults import FaultyPrior

    try:
        r = afdps.sample(FaultyPrior(faults), A2, Y2, 0.5, num_particles=4, num_steps=6, seed=1,
                         **{"tempering": "linear", "potential": "scaled", "eta": 1.0, **opts})
    except FloatingPointError as exc:
        return "FloatingPointError: " + str(exc)
    finite = all(bool(torch.isfinite(t).all()) for t in (r.best, r.mean, r.std))
    return f"{'finite' if finite else 'NON-FINITE'} best, mean, std; dead particles per image {r.dead.tolist()}"


def test_bad_inputs_and_faults_table(tmp_path, capsys):
    tmp = _files(tmp_path)
    rows, problems = [], []
    for area, what, fn in _api_cases(tmp):
        kind, msg = _api_outcome(fn, tmp)
        rows.append((area, what, kind, msg))
        if kind.startswith(("ACCEPTED", "UNEXPECTED")) or "\n" in msg or not msg:
            problems.append((area, what, kind, msg))
    for argv in CLI_CASES:
        rc, tb, msg = _cli_outcome(argv, tmp, capsys)
        rows.append(("cli", "afdps " + " ".join(json.dumps(a) if a == "" else a for a in argv), f"exit {rc}", msg))
        if rc != 2 or tb or not msg:
            problems.append(("cli", argv, rc, msg))
    assert not problems, problems
    assert len({(r[0], r[1]) for r in rows}) >= 60  # the target: at least 60 distinct bad inputs
    faults = []
    for what, opts, spec, fatal in FAULTS:
        outcome = _fault_outcome(opts, spec)
        faults.append((what, outcome))
        assert outcome.startswith("FloatingPointError" if fatal else "finite"), (what, outcome)
    text = _document(rows, faults)
    if os.environ.get("AFDPS_WRITE_DOCS"):
        DOC.write_text(text)
    assert DOC.read_text() == text, ("docs/reliability.md is stale: regenerate it with AFDPS_WRITE_DOCS=1 "
                                     "python -m pytest tests/test_reliability.py")
    said = (DOC.parents[1] / "README.md").read_text()  # (the README's count went stale: 182 against 186)
    assert f"({len(rows)} bad inputs of the API" in " ".join(said.split()), "README.md's count of bad inputs is stale"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _document(rows, faults) -> str:
    lines = ["# Reliability: bad input and faults", "",
             "Generated by `tests/test_reliability.py` (which fails when this file differs from what the code does",
             "now). Every bad input is refused at the entry with one sentence naming the argument and what is",
             "allowed; the command line exits 2 with that sentence and no traceback (`afdps --debug` shows one).",
             f"{len(rows)} bad inputs, 0 accepted. Fault cases follow the non-finite rule of `engine/sampler.py`:",
             "a particle whose state, score or log-weight increment is not finite dies (log-weight -inf) and never",
             "enters best, mean or std; an image whose particles all die is an error naming image, step and cause.",
             "The fault-injection suite (`tests/test_faults.py`) runs 36 more single-row cases (every method x",
             "weights x resampling x denoise on the reference backend; every method x weights x resampling on",
             "the Triton kernels) and the all-dead cases of every method and backend.", "",
             "| where | bad input | outcome | message |", "|---|---|---|---|"]
    lines += [f"| {a} | {_cell(w)} | {k} | {_cell(m)} |" for a, w, k, m in rows]
    lines += ["", "| fault (2 images, 4 particles, 6 steps) | outcome |", "|---|---|"]
    lines += [f"| {_cell(w)} | {_cell(o)} |" for w, o in faults]
    return "\n".join(lines) + "\n"
