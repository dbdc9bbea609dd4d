"""Checkpoint loading: round trips, strictness, weights_only, diffusers folders, shipped weights."""
import copy
import json
import pickle

import pytest
import torch

from afdps import load_classifier, load_prior
from afdps.engine.training import load_checkpoint
from afdps.engine.models import ADMUNet
from afdps.engine.priors import EpsilonModel
from afdps.engine.schedules import VPSchedule

# Smallest ADM layout that still has every block type: scale-shift ResBlocks, an up/down ResBlock
# pair, attention at 4x4, learned sigma (2 output channels for 1 input channel).
TINY = {
    "image_size": 8, "in_channels": 1, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,1",
    "attention_resolutions": "4", "num_head_channels": 32, "use_scale_shift_norm": True,
    "resblock_updown": True, "learn_sigma": True,
}


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = ADMUNet(**TINY)
    with torch.no_grad():
        for p in net.parameters():  # overwrite the zero-initialised output conv too
            p.normal_(0.0, 0.05)
    return net.eval()


@pytest.fixture(scope="module")
def files(tiny_net, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    sd = tiny_net.state_dict()
    torch.save({"config": TINY, "state_dict": sd, "meta": {"note": "test"}}, d / "own.pt")
    torch.save(sd, d / "raw.pt")
    (d / "tiny.json").write_text(json.dumps(TINY))
    return d


def _expected_score(net, x, tau):
    sched = VPSchedule(0.1, 20.0)
    with torch.no_grad():
        eps = net(x, torch.full((x.shape[0],), 1000 * tau - 1.0))[:, :1]
    return -eps / float(sched.sigma(tau))


@pytest.mark.parametrize("how", ["own", "raw-dict", "raw-json"])
def test_round_trip(tiny_net, files, how):
    if how == "own":
        prior = load_prior(files / "own.pt")
    elif how == "raw-dict":
        prior = load_prior(files / "raw.pt", arch=TINY)
    else:
        prior = load_prior(str(files / "raw.pt"), arch=str(files / "tiny.json"))
    assert isinstance(prior, EpsilonModel)
    assert prior.event_shape == (1, 8, 8)
    assert prior.learned_sigma is True and prior.num_train_steps == 1000
    assert isinstance(prior.schedule, VPSchedule) and prior.schedule.beta_max == 20.0
    assert not prior.net.training
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for tau in (0.05, 0.5, 1.0):
        torch.testing.assert_close(prior.score(x, tau), _expected_score(tiny_net, x, tau), rtol=0, atol=0)


def test_float16_checkpoint_loads_as_float32(tiny_net, tmp_path):
    sd = {k: v.half() for k, v in tiny_net.state_dict().items()}
    torch.save({"config": TINY, "state_dict": sd}, tmp_path / "half.pt")
    prior = load_prior(tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in prior.net.parameters())


def _raises(match, *args, exc=ValueError, **kwargs):
    with pytest.raises(exc, match=match) as info:
        load_prior(*args, **kwargs)
    return str(info.value)


def test_missing_key_named(tiny_net, tmp_path):
    sd = dict(tiny_net.state_dict())
    del sd["out.2.bias"]
    torch.save(sd, tmp_path / "m.pt")
    msg = _raises("1 missing keys", tmp_path / "m.pt", arch=TINY)
    assert "out.2.bias" in msg and "unexpected" not in msg


def test_unexpected_key_named(tiny_net, tmp_path):
    sd = dict(tiny_net.state_dict(), **{"extra.weight": torch.zeros(2)})
    torch.save({"config": TINY, "state_dict": sd}, tmp_path / "u.pt")
    msg = _raises("1 unexpected keys", tmp_path / "u.pt")
    assert "extra.weight" in msg


def test_wrong_shape_named(tiny_net, tmp_path):
    sd = dict(tiny_net.state_dict())
    sd["input_blocks.0.0.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(sd, tmp_path / "s.pt")
    msg = _raises("shape mismatch", tmp_path / "s.pt", arch=TINY)
    assert "input_blocks.0.0.weight" in msg and "(32, 3, 3, 3)" in msg and "(32, 1, 3, 3)" in msg


def test_wrong_architecture_lists_counts(files):
    # the tiny weights against the FFHQ layout: hundreds of differences, summarised with counts
    msg = _raises("does not match the network", files / "raw.pt", arch="adm-ffhq256")
    assert "missing keys" in msg and "more)" in msg and len(msg) < 2000


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "text.pt").write_text("this is not a checkpoint")  # (said "objects other than tensors ()" before)
    _raises(r"not a PyTorch checkpoint \(torch.save writes a zip archive or a pickle; this file begins b'this'\)",
            tmp_path / "text.pt", arch=TINY)
    (tmp_path / "empty.pt").write_bytes(b"")
    _raises("not a PyTorch checkpoint .*this file is empty", tmp_path / "empty.pt", arch=TINY)
    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert set(load_checkpoint(tmp_path / "legacy.pt")) == {"w"}  # torch.save's older pickle format still loads
    torch.save([1, 2, 3], tmp_path / "list.pt")
    _raises("holds a list", tmp_path / "list.pt", arch=TINY)
    torch.save({"a": 1}, tmp_path / "nontensor.pt")
    _raises("not a state_dict", tmp_path / "nontensor.pt", arch=TINY)


def test_unknown_arch_lists_allowed(files):
    msg = _raises("unknown arch 'adm-lsun'", files / "raw.pt", arch="adm-lsun")
    assert "adm-ffhq256" in msg and "adm-imagenet256" in msg and "diffusers" in msg


def test_raw_state_dict_needs_arch(files):
    _raises(r"give its architecture \(--arch, or arch= in Python\)", files / "raw.pt")


def test_missing_file_named(tmp_path):
    msg = _raises("no checkpoint file", tmp_path / "nowhere.pt", arch="adm-ffhq256", exc=FileNotFoundError)
    assert "nowhere.pt" in msg


def test_bad_config_value_named(files):
    _raises("num_channels", files / "raw.pt", arch=dict(TINY, num_channels=48))
    _raises("does not take", files / "raw.pt", arch=dict(TINY, not_an_argument=1))


class _Payload:
    """Unpickling this would call ``print``: stands for any code a pickle could run."""

    def __reduce__(self):
        return (print, ("a checkpoint ran code",))


def test_weights_only_refuses_custom_objects(tiny_net, tmp_path, capsys):
    torch.save({"config": TINY, "state_dict": tiny_net.state_dict(), "meta": _Payload()}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"state_dict": _Payload()}, f, protocol=2)
    for name in ("evil.pt", "evil.pkl"):
        msg = _raises("refusing to load", tmp_path / name)
        assert "weights_only" in msg
    assert "ran code" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="refusing"):
        load_checkpoint(tmp_path / "evil.pt")


def test_diffusers_round_trip(tmp_path):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is an optional extra (pip install diffusers)")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()
    unet.save_pretrained(tmp_path / "unet")
    prior = load_prior(tmp_path / "unet")  # detected from config.json
    assert prior.event_shape == (1, 8, 8) and prior.learned_sigma is False
    assert not prior.net.training
    x = torch.randn(2, 1, 8, 8)
    s = prior.score(x, 0.3)
    assert s.shape == x.shape and torch.isfinite(s).all()
    with torch.no_grad():
        ref = -unet(x, torch.full((2,), 299.0)).sample / float(prior.schedule.sigma(0.3))
    torch.testing.assert_close(s, ref)
    assert load_prior(tmp_path / "unet", arch="diffusers", num_train_steps=2000).timestep(0.5) == 999.0


def test_diffusers_learned_sigma_and_incomplete_weights(tmp_path):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is an optional extra (pip install diffusers)")
    from safetensors.torch import load_file, save_file
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=2, block_out_channels=(32, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    unet.save_pretrained(tmp_path / "unet")
    prior = load_prior(tmp_path / "unet", arch="diffusers")
    assert prior.learned_sigma is True and prior.score(torch.randn(1, 1, 8, 8), 0.5).shape == (1, 1, 8, 8)
    # diffusers itself only warns and initialises a missing tensor randomly; load_prior refuses
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(weights)
    del sd["conv_out.bias"]
    save_file(sd, weights)
    msg = _raises("do not match", tmp_path / "unet")
    assert "conv_out.bias" in msg


def test_diffusers_folder_missing(tmp_path):
    _raises("no diffusers model folder", tmp_path / "absent", arch="diffusers", exc=FileNotFoundError)


def test_shipped_prior_and_classifier_load():
    prior = load_prior("mnist")
    assert prior.event_shape == (1, 28, 28) and prior.learned_sigma is False
    assert all(p.dtype == torch.float32 for p in prior.net.parameters())
    s = prior.score(torch.randn(2, 1, 28, 28), 0.5)
    assert s.shape == (2, 1, 28, 28) and torch.isfinite(s).all()
    clf = load_classifier("mnist")
    assert not clf.training
    assert clf(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="carries its own config"):
        load_prior("mnist", arch="adm-ffhq256")


def test_a_data_folder_named_like_a_shipped_file_does_not_hide_it(tmp_path, monkeypatch):
    """Shipped names are looked up as paths first; a folder ``mnist/`` of training data where the command runs
    used to be taken for the prior and the classifier (``afdps eval`` refused to start). Only a checkpoint of that
    name (a file, or a model folder with a config.json) is the user's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images.gz").write_bytes(b"")
    assert load_prior("mnist").event_shape == (1, 28, 28)
    assert load_classifier("mnist")(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    (tmp_path / "mnist" / "config.json").write_text("{}")  # now a model folder of the user's: it is tried
    with pytest.raises(ValueError, match="'mnist' is a directory, not a checkpoint"):
        load_prior("mnist")


def test_inference_path(tiny_net, files, tmp_path):
    """``inference=True`` loads the network onto ADMUNet.to_inference (bfloat16 torso, channels-last, fused
    norms): its score is the float32 network's within twice bfloat16 autocast's error on the same inputs (the
    bfloat16 rule of tests/test_adm.py); with autocast_dtype, on a diffusers folder or with a non-bool it raises."""
    fast = load_prior(files / "own.pt", inference=True)
    net = fast.net
    assert net.torso_dtype == torch.bfloat16 and net.memory_format == torch.channels_last and net.fused_norm
    g = torch.Generator().manual_seed(0)
    x, tau = torch.randn(4, 1, 8, 8, generator=g), 0.5
    want = _expected_score(tiny_net, x, tau)
    with torch.no_grad():
        got = fast.score(x, tau)
        autocast = load_prior(files / "own.pt", autocast_dtype=torch.bfloat16).score(x, tau)
    assert got.dtype == torch.float32 and got.shape == want.shape
    err, ref_err = float((got - want).norm()), float((autocast - want).norm())
    assert 0 < err <= 2 * ref_err + 1e-6, (err, ref_err)

    # The Tweedie potential's vector-Jacobian product through the bfloat16 torso (`afdps restore --fast-network`
    # with the default potential runs it): finite, float32, and within the same rule against the float32 network's
    # (whose own rounding, ~1e-7 relative, is negligible beside bfloat16's ~1e-2). The network's norms are near 1
    # here: with tiny_net's (near 0.05) the VJP without the attention branches moved by less than the rule's bound;
    # with these it moves by 1.12 against a bound of 0.82 (measured error 0.44, |VJP| 8.6).
    net = copy.deepcopy(tiny_net)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(p.numel()))
        for m in net.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.add_(1.0)
    torch.save({"config": TINY, "state_dict": net.state_dict()}, tmp_path / "normed.pt")

    def vjp(prior, xx):
        xx = xx.clone().requires_grad_(True)
        s = prior.score(xx, tau, grad=True)
        (gx,) = torch.autograd.grad((s * v.to(s.dtype)).sum(), xx)
        return gx

    v = torch.randn(x.shape, generator=g)
    want_vjp = vjp(load_prior(tmp_path / "normed.pt"), x)
    got_vjp = vjp(load_prior(tmp_path / "normed.pt", inference=True), x)
    auto_vjp = vjp(load_prior(tmp_path / "normed.pt", autocast_dtype=torch.bfloat16), x)
    assert got_vjp.dtype == torch.float32 and torch.isfinite(got_vjp).all()
    err, ref_err = float((got_vjp - want_vjp).norm()), float((auto_vjp - want_vjp).norm())
    assert 0 < err <= 2 * ref_err + 1e-6, (err, ref_err)
    with pytest.raises(ValueError, match="inference=True stores the network's torso in bfloat16"):
        load_prior(files / "own.pt", inference=True, autocast_dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="inference must be True or False, got 'yes'"):
        load_prior(files / "own.pt", inference="yes")
    folder = files / "diffusers_like"
    folder.mkdir(exist_ok=True)
    with pytest.raises(ValueError, match="inference=True is ADMUNet.to_inference, for ADM networks"):
        load_prior(folder, arch="diffusers", inference=True)


# ---- a user audit of loading one's own checkpoints (2026-12-07) ------------------------------------------------

def test_training_checkpoints_prefixes_and_class_conditional_hints(tiny_net, files, tmp_path):
    """A training checkpoint with the weights and their EMA loaded the 'state_dict' entry and dropped the EMA in
    silence; one with a single network among other entries, or keys saved from DataParallel ('module.'), was refused
    with a message that did not say why; a class-conditional checkpoint's extra key was not explained."""
    sd = tiny_net.state_dict()
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"state_dict": sd, "ema": ema, "config": TINY}, tmp_path / "both.pt")
    msg = _raises("holds the weights of 2 networks, under 'state_dict', 'ema'", tmp_path / "both.pt")
    assert "afdps does not guess which" in msg and "torch.save(torch.load(path)['ema'], 'weights.pt')" in msg
    torch.save({"ema": ema, "step": 1200, "optimizer": {"state": {0: {"m": torch.zeros(1)}}, "param_groups": []}},
               tmp_path / "ema.pt")
    prior = load_prior(tmp_path / "ema.pt", arch=TINY)
    x = torch.randn(2, 1, 8, 8)
    moved = ADMUNet(**TINY).eval()
    moved.load_state_dict(ema)
    torch.testing.assert_close(prior.score(x, 0.4), _expected_score(moved, x, 0.4))  # the EMA's weights
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ddp.pt")
    torch.testing.assert_close(load_prior(tmp_path / "ddp.pt", arch=TINY).score(x, 0.4),
                               _expected_score(tiny_net, x, 0.4))
    # tensors beside the weights that are not a network's: afdps's own format with a tensor in its meta loads, a raw
    # state_dict with a tensor-valued extra is named as such, and a {"model", "config"} checkpoint keeps its config
    torch.save({"format": "afdps-checkpoint/1", "config": TINY, "state_dict": sd,
                "meta": {"val_loss": torch.tensor(0.03)}}, tmp_path / "own.pt")
    torch.testing.assert_close(load_prior(tmp_path / "own.pt").score(x, 0.4), _expected_score(tiny_net, x, 0.4))
    torch.save({**sd, "meta": {"step": torch.tensor(3)}}, tmp_path / "extra.pt")
    assert "1 entries are not named tensors (e.g. ['meta'])" in _raises("not a state_dict", tmp_path / "extra.pt",
                                                                         arch=TINY)
    torch.save({"model": sd, "config": TINY, "step": 7}, tmp_path / "model.pt")
    assert load_prior(tmp_path / "model.pt").event_shape == (1, 8, 8)
    torch.save({**sd, "label_emb.weight": torch.zeros(10, 128)}, tmp_path / "cc.pt")
    assert "the checkpoint is class-conditional (label_emb)" in _raises("does not match", tmp_path / "cc.pt",
                                                                         arch=TINY)


def test_guided_diffusion_flags_in_a_config(tiny_net, files, tmp_path):
    """A config copied from guided-diffusion's flags (diffusion_steps, noise_schedule, predict_xstart, ...) was
    refused as 'arguments ADMUNet does not take'; deleting them ran a cosine or x0 network on the linear schedule in
    silence. The flags afdps honours are taken (diffusion_steps sets num_train_steps), the others refused by name."""
    flags = {**TINY, "diffusion_steps": 4000, "noise_schedule": "linear", "predict_xstart": False,
             "rescale_timesteps": False, "timestep_respacing": "", "use_kl": False}
    prior = load_prior(files / "raw.pt", arch=flags)
    assert prior.num_train_steps == 4000 and prior.timestep(0.5) == 1999.0
    for key, value, text in (("noise_schedule", "cosine", "noise_schedule='cosine' is not supported"),
                             ("predict_xstart", True, "predict_xstart=True is not supported"),
                             ("rescale_timesteps", True, "rescale_timesteps=True with diffusion_steps=4000")):
        assert text in _raises("", files / "raw.pt", arch={**flags, key: value})
    assert "its config says diffusion_steps=4000, num_train_steps=250" in _raises(
        "", files / "raw.pt", arch=flags, num_train_steps=250)
    assert "its config says diffusion_steps=4000, num_train_steps=1000" in _raises(  # (taken for the default, and
        "", files / "raw.pt", arch=flags, num_train_steps=1000)  # replaced by 4000 without a word)
    assert load_prior(files / "raw.pt", arch=flags, num_train_steps=4000).num_train_steps == 4000


def test_a_cuda_device_without_cuda_and_a_missing_arch_file(files):
    if torch.cuda.is_available():
        pytest.skip("needs a torch without CUDA")
    assert "this torch sees no CUDA device" in _raises("", files / "nowhere.pt", device="cuda")  # before the read
    with pytest.raises(FileNotFoundError) as info:
        load_prior(files / "raw.pt", arch=str(files / "nope.json"))
    assert "no JSON config file" in str(info.value) and "shipped priors" not in str(info.value)


def test_diffusers_pipelines_schedulers_and_fourier_networks(tmp_path):
    """A diffusers pipeline's UNet ran on the linear 1000-step schedule as an epsilon network whatever its scheduler
    said (v-prediction, cosine betas), and a Fourier-embedded (VE, NCSN++) UNet was fed timesteps."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers is an optional extra (pip install diffusers)")
    small = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 32), layers_per_block=1,
                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                 norm_num_groups=8)
    pipe = tmp_path / "pipe"
    diffusers.UNet2DModel(**small).save_pretrained(pipe / "unet")
    (pipe / "model_index.json").write_text("{}")
    assert f"is a diffusers pipeline; give its network's folder, '{pipe / 'unet'}'" in _raises("", pipe)
    sched = pipe / "scheduler" / "scheduler_config.json"
    sched.parent.mkdir()
    sched.write_text(json.dumps({"num_train_timesteps": 2000, "beta_start": 5e-5, "beta_end": 0.01,
                                 "beta_schedule": "linear", "prediction_type": "epsilon"}))
    prior = load_prior(pipe / "unet")  # the scheduler's own numbers: the same continuous limit, 2000 steps
    assert prior.num_train_steps == 2000 and prior.timestep(0.5) == 999.0
    assert float(prior.schedule.beta(0.0)) == pytest.approx(0.1) and float(prior.schedule.beta(1.0)) == pytest.approx(20)
    for key, value in (("prediction_type", "v_prediction"), ("beta_schedule", "squaredcos_cap_v2")):
        sched.write_text(json.dumps({"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, key: value}))
        assert f"says {key}={value!r}" in _raises("", pipe / "unet")
    sched.write_text(json.dumps({"num_train_timesteps": 2000, "beta_min": 0.1, "beta_max": 20}))  # ScoreSdeVp's
    assert "is not a DDPM-type config of linear betas" in _raises("", pipe / "unet")
    diffusers.UNet2DModel(**{**small, "time_embedding_type": "fourier"}).save_pretrained(tmp_path / "ve")
    assert "Fourier time embeddings" in _raises("", tmp_path / "ve")


@pytest.mark.parametrize("call, kind, text", [
    (lambda: load_classifier("mnist", device="gpu0"), ValueError, "device='gpu0' is not a torch device"),
    (lambda: load_classifier(123), TypeError, "path must be a file or folder path (str or Path), got int"),
    (lambda: load_prior("mnist", device="meta"), ValueError, "device='meta' holds no values"),
    (lambda: load_prior("mnist", device="mps"), ValueError, "device='mps': this torch has no mps device available"),
    (lambda: load_prior(""), ValueError, "path is empty"),
])
def test_loaders_refuse_devices_and_paths_by_name(call, kind, text):
    """A user audit (2026-12-07): the classifier's loader passed the device to torch unchecked (raw errors after the
    read; "meta" was taken, and failed inside the first sample), and an empty path was "'.' is a directory"."""
    if "mps" in text and torch.backends.mps.is_available():
        pytest.skip("this torch has MPS")
    with pytest.raises(kind) as info:
        call()
    assert text in str(info.value)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="this torch sees no CUDA device"):
            load_classifier("mnist", device="cuda")
