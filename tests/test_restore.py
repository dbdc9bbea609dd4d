"""`afdps restore` (engine/restore.py, bindings/cli/restore.py): the user's own measurements, every output
file, manifests, kernel and mask files, the size policy, noise estimation, and resuming after SIGKILL and
SIGTERM with outputs equal to an uninterrupted run."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import afdps
from afdps import cli
from afdps.engine import restore as rs
from afdps.engine.evaluate import make_operator

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--prior", "mnist", "--particles", "2", "--steps", "3", "--no-progress", "--threads", "1"]


def _png(a, path):
    Image.fromarray(((torch.as_tensor(a).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()).save(path)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Four box-inpainting measurements of the shipped test digits, and their clean references."""
    root = tmp_path_factory.mktemp("digits")
    (root / "in").mkdir()
    (root / "ref").mkdir()
    x, _ = afdps.load_mnist_test(4)
    op = make_operator("box", (1, 28, 28))
    for i in range(4):
        y = op.measure(x[i:i + 1].double(), 0.05, torch.Generator().manual_seed(i))[0]
        _png(y[0], root / "in" / f"d{i}.png")
        _png(x[i, 0], root / "ref" / f"d{i}.png")
    return root


def test_restore_writes_every_output_and_the_index(digits, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["restore", str(digits / "in"), "--task", "box", "--out", str(out), "--reference",
                   str(digits / "ref"), "--save-particles", *FAST])
    assert rc == 0
    text = capsys.readouterr()
    assert "4/4 images (100%)" in text.out + text.err and "mean PSNR of the weighted mean" in text.out
    for i in range(4):
        folder = out / f"d{i}"
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["best.png", "mean.png", "std.png", "measurement.png", "ess.png", "mean.npy", "std.npy", "metrics.json",
             "particles.npz"])
        m = json.loads((folder / "metrics.json").read_text())
        # the defaults: eta 0.5 with the Tweedie potential, 3 steps = 5 score calls (+ 3 VJPs)
        assert m["task"] == "box" and m["nfe"] == 5 and np.isfinite(m["psnr_mean"]) and 0 < m["ssim_best"] <= 1
        assert m["seed"] == rs.seed_of(f"d{i}") and m["settings"]["num_particles"] == 2
        assert np.load(folder / "std.npy").shape == (1, 28, 28)
        with np.load(folder / "particles.npz") as z:
            assert z["particles"].shape == (2, 1, 28, 28) and z["particles"].dtype == np.float16
        assert np.asarray(Image.open(folder / "std.png")).shape == (28, 28, 3)
    page = (out / "index.html").read_text()
    assert page.count("<tr><th>d") == 4 and 'src="d3/std.png"' in page and "psnr mean" in page
    assert len((out / "journal.jsonl").read_text().splitlines()) == 4
    assert not [p for p in out.rglob("*.tmp")]


def test_seed_comes_from_the_name_not_the_position(digits, tmp_path):
    a = rs.jobs_from_inputs([digits / "in"], task="box")
    b = rs.jobs_from_inputs([digits / "in" / "d2.png", digits / "in" / "d0.png"], task="box")
    assert {j.name: j.seed for j in b} == {j.name: j.seed for j in a if j.name in ("d0", "d2")}
    assert len({j.seed for j in a}) == 4 and rs.seed_of("d0", 1) != rs.seed_of("d0", 0)


def _run_cli(args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "afdps.cli", "restore", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _outputs(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.npy"))}


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_outputs(digits, tmp_path):
    """SIGKILL at three random moments, each followed by --resume: nothing half-written is taken for finished (a
    kill inside an atomic write can leave its temporary file, never in a journaled image's folder, and the resumed
    run removes it), and the final outputs equal, byte for byte, those of one uninterrupted run. Then SIGTERM:
    exit 143 after the current image, and --resume finishes."""
    # "scaled" needs no VJP and 2 particles do: 8 s for the uninterrupted run instead of 17 (2-core CPU), 3 of them
    # starting Python and torch
    args = [str(digits / "in"), "--task", "box", "--particles", "2", "--steps", "12", "--potential", "scaled",
            "--no-progress", "--threads", "1"]
    whole = tmp_path / "whole"
    p = _run_cli(args + ["--out", str(whole)])
    assert p.wait(timeout=300) == 0, p.stderr.read()
    rng = random.Random(11)
    out = tmp_path / "killed"
    journal = out / "journal.jsonl"
    for k in range(3):
        p = _run_cli(args + ["--out", str(out)] + (["--resume"] if k else []))
        # kill k waits until k images are journaled (by this run or the ones before), then up to about one image's
        # time more, so the kills land in the start, inside later images and inside their writes (a fixed 1.5-4 s
        # after the start, as until 2026-12-06, never outlasted the first image: no journal to check)
        deadline = time.time() + 120
        while (journal.read_text().count("\n") if journal.exists() else 0) < k and p.poll() is None \
                and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        journaled = set()
        for line in (out / "journal.jsonl").read_text().splitlines() if (out / "journal.jsonl").exists() else []:
            name = json.loads(line)["name"]
            assert (out / name / "metrics.json").is_file()  # journaled only after its files
            journaled.add(name)
        assert len(journaled) >= k, (k, journaled)  # the checks below meet journaled images from the second kill on
        # atomic writes: a temporary can only be an unfinished image's (the kill landed inside its write)
        assert not [f for f in out.rglob(".*.tmp") if f.parent.name in journaled
                    or (f.parent == out and not f.name.startswith(".index.html."))]
    p = _run_cli(args + ["--out", str(out), "--resume"])
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert _outputs(out) == _outputs(whole) and len(_outputs(whole)) == 8
    assert not list(out.rglob(".*.tmp"))  # the resumed run removed what the kills left
    term = tmp_path / "term"
    p = _run_cli(args + ["--out", str(term)])
    for line in p.stdout:  # SIGTERM once the run is under way (the first image done)
        if "1/4 images" in line:
            break
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 143
    err = p.stderr.read()
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    p = _run_cli(args + ["--out", str(term), "--resume"])
    assert p.wait(timeout=300) == 0
    assert _outputs(term) == _outputs(whole)


def test_manifest_kernels_masks_and_sizes(tmp_path):
    x, _ = afdps.load_mnist_test(2)
    k = np.zeros((5, 5))
    k[2, 1:4] = [1.0, 2.0, 1.0]
    np.save(tmp_path / "k.npy", k)
    _png(torch.from_numpy(k / k.max() * 2 - 1), tmp_path / "k.png")
    # a real blur: the 24x24 part of the 28x28 scene's blur that the 5x5 kernel saw whole
    op = afdps.ops.Blur(torch.from_numpy(k / k.sum()), (1, 28, 28), boundary="valid")
    _png(op.measure(x[:1].double(), 0.05, torch.Generator().manual_seed(0))[0, 0], tmp_path / "blurred.png")
    (tmp_path / "ref").mkdir()
    _png(x[0, 0, 2:26, 2:26], tmp_path / "ref" / "blurred.png")  # a reference of the measured window
    mask = np.ones((20, 20), dtype=np.uint8) * 255
    mask[5:10, 5:10] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    _png(x[1, 0, 4:24, 4:24] + 0.1 * torch.randn(20, 20, generator=torch.Generator().manual_seed(2)),
         tmp_path / "small.png")
    (tmp_path / "jobs.jsonl").write_text(
        json.dumps({"path": "blurred.png", "task": "blur", "kernel": "k.npy", "sigma_y": 0.05}) + "\n"
        + json.dumps({"path": "small.png", "task": "box", "mask": "mask.png", "sigma_y": "auto", "seed": 5}) + "\n")
    jobs = rs.jobs_from_manifest(tmp_path / "jobs.jsonl", defaults={})
    assert [j.task for j in jobs] == ["blur", "box"] and jobs[1].seed == 5 and jobs[1].sigma_y == "auto"
    out = tmp_path / "out"
    assert cli.main(["restore", "--manifest", str(tmp_path / "jobs.jsonl"), "--out", str(out), "--reference",
                     str(tmp_path / "ref"), *FAST]) == 0
    assert np.load(out / "blurred" / "mean.npy").shape == (1, 28, 28)  # the whole scene, border included
    blurred = json.loads((out / "blurred" / "metrics.json").read_text())
    assert blurred["reference_region"] == "measured window" and np.isfinite(blurred["psnr_mean"])
    small = json.loads((out / "small" / "metrics.json").read_text())
    assert small["sigma_y_estimated"] and small["sigma_y"] > 0
    assert np.load(out / "small" / "mean.npy").shape == (1, 20, 20)  # cropped back to the measurement
    # the kernel from an image equals the .npy one; flipped for a convolution convention
    torch.testing.assert_close(rs.read_kernel(tmp_path / "k.png"), rs.read_kernel(tmp_path / "k.npy"), atol=2e-3, rtol=0)
    torch.testing.assert_close(rs.read_kernel(tmp_path / "k.npy", flip=True), rs.read_kernel(tmp_path / "k.npy").flip(0, 1))
    # CSV manifests give the same jobs
    (tmp_path / "jobs.csv").write_text("path,task,kernel,mask,factor,sigma_y,seed\nblurred.png,blur,k.npy,,,0.05,\n")
    assert rs.jobs_from_manifest(tmp_path / "jobs.csv", defaults={})[0].kernel == str(tmp_path / "k.npy")


@pytest.mark.parametrize("setup, match", [
    (lambda d: (["--task", "gaussian-blur", "--boundary", "circular", str(d / "small.png")]),
     "must have the prior's size 28x28"),
    (lambda d: (["--task", "box", str(d / "big.png")]), "needs the mask of the whole measurement"),
    (lambda d: (["--task", "gaussian-blur", "--boundary", "circular", str(d / "big.png")]),
     "cannot be split into tiles"),
    (lambda d: (["--task", "blur", str(d / "small28.png")]), "needs a kernel file"),
    (lambda d: (["--task", "sr4", str(d / "tiny.png")]), "must be 7x7, got 5x5"),
    (lambda d: ([str(d / "small28.png")]), "--task is required"),
    (lambda d: (["--task", "box", str(d / "nothing*.png")]), "matches no measurement file"),
    (lambda d: (["--task", "box", str(d / "small28.png"), "--manifest", str(d / "m.jsonl")]), "not both"),
    (lambda d: (["--manifest", str(d / "bad.jsonl")]), "line 1 is not JSON"),
    (lambda d: (["--task", "denoise", "--boundary", "circular", str(d / "small28.png")]),
     "--boundary circular is the boundary of the blur tasks"),  # (it was ignored)
    (lambda d: (["--task", "sr4", "--factor", "3", str(d / "tiny.png")]),
     "factor 3 does not divide the prior's size 28x28 (allowed: 1, 2, 4, 7, 14, 28)"),  # (it named the image)
    (lambda d: (["--task", "box", "--mask", str(d / "black.png"), str(d / "small28.png")]),
     "observes no pixel (all zero)"),
])
def test_usage_errors(tmp_path, capsys, setup, match):
    _png(torch.zeros(20, 20), tmp_path / "small.png")
    _png(torch.zeros(40, 40), tmp_path / "big.png")
    _png(torch.zeros(5, 5), tmp_path / "tiny.png")
    _png(torch.zeros(28, 28), tmp_path / "small28.png")
    _png(-torch.ones(28, 28), tmp_path / "black.png")
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    (tmp_path / "m.jsonl").write_text("")
    rc = cli.main(["restore", *setup(tmp_path), "--out", str(tmp_path / "out"), *FAST])
    assert rc == 2 and match in capsys.readouterr().err


def test_unwritable_output_folder_is_refused_before_work(tmp_path, capsys):
    _png(torch.zeros(28, 28), tmp_path / "a.png")
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a folder")
    rc = cli.main(["restore", str(tmp_path / "a.png"), "--task", "denoise", "--out", str(blocked / "sub"), *FAST])
    assert rc == 2 and "afdps restore: error" in capsys.readouterr().err


def test_resume_refuses_other_settings_and_reports_missing_references(digits, tmp_path, capsys):
    """--resume continues a run only with that run's settings (the journaled images and the new ones must be one run's);
    metrics.json records the operator's files and the potential that ran; an image without a reference is reported."""
    out = tmp_path / "out"
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "d0.png").write_bytes((digits / "ref" / "d0.png").read_bytes())
    opts = ["--task", "box", "--out", str(out), *FAST]
    assert cli.main(["restore", str(digits / "in" / "d1.png"), *opts, "--reference", str(tmp_path / "ref")]) == 0
    err = capsys.readouterr().out
    assert "d1: no image named d1.* in the reference folder" in err and "not scored" in err
    m = json.loads((out / "d1" / "metrics.json").read_text())
    assert m["potential"] == "tweedie" and m["kernel"] is None and m["mask"] is None and "factor" not in m
    assert m["settings"]["corrector_snr"] == [0.1, 0.2] and "psnr_mean" not in m
    (tmp_path / "other").mkdir()  # another image under the same name
    (tmp_path / "other" / "d1.png").write_bytes((digits / "in" / "d2.png").read_bytes())
    handler = signal.getsignal(signal.SIGTERM)
    for inputs, change, what in (
            ([digits / "in"], ["--particles", "3"], "num_particles 2 then, 3 now"),
            ([digits / "in"], ["--sigma-y", "0.1"], "sigma_y 0.05 then"),
            ([digits / "in"], ["--seed", "1"], "seed "), ([digits / "in"], ["--eta", "1"], "eta 0.5 then, 1.0 now"),
            ([tmp_path / "other"], [], "input "),
            ([digits / "in"], ["--fast-network"], "network_dtype 'float32' then")):
        assert cli.main(["restore", *map(str, inputs), *opts, "--resume", *change]) == 2
        err = capsys.readouterr().err
        assert "--resume: d1 in" in err and what in err, (change, err)
        assert signal.getsignal(signal.SIGTERM) is handler  # refused before the run installs its own
    # a journal written before 2026-12-06 kept the corrector's pair as text and lacked the files' keys: the same
    # settings resume it
    rec = json.loads((out / "journal.jsonl").read_text())
    rec["settings"]["corrector_snr"] = "(0.1, 0.2)"
    for key in ("input", "kernel", "mask", "prior", "prior_sha256", "network_dtype"):
        rec.pop(key)
    (out / "journal.jsonl").write_text(json.dumps(rec) + "\n")
    assert cli.main(["restore", str(digits / "in"), *opts, "--resume"]) == 0  # the same settings: the other three run
    assert len((out / "journal.jsonl").read_text().splitlines()) == 4


def test_resume_refuses_a_checkpoint_replaced_in_place(digits, tmp_path, capsys):
    """The journal keeps the checkpoint's content digest beside its path: a file retrained or edited under the same
    name is refused on --resume (names and paths alone did not notice it)."""
    ckpt = tmp_path / "prior.pt"
    ckpt.write_bytes((ROOT / "bindings" / "data" / "mnist_prior.pt").read_bytes())
    opts = ["--task", "box", "--out", str(tmp_path / "out"), *FAST, "--prior", str(ckpt)]
    assert cli.main(["restore", str(digits / "in" / "d1.png"), *opts]) == 0
    rec = json.loads((tmp_path / "out" / "journal.jsonl").read_text())
    assert rec["prior"] == str(ckpt.resolve()) and len(rec["prior_sha256"]) == 16
    state = torch.load(ckpt, weights_only=False)
    name = next(iter(state["state_dict"]))
    state["state_dict"][name] = state["state_dict"][name] + 1e-3
    torch.save(state, ckpt)
    capsys.readouterr()
    assert cli.main(["restore", str(digits / "in"), *opts, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"the checkpoint {str(ckpt.resolve())!r} changed since d1 in" in err and rec["prior_sha256"] in err, err
    # the journaled bytes under another path (moved), or the shipped name for them: the same checkpoint
    moved = tmp_path / "moved.pt"
    moved.write_bytes((ROOT / "bindings" / "data" / "mnist_prior.pt").read_bytes())
    assert cli.main(["restore", str(digits / "in" / "d1.png"), str(digits / "in" / "d2.png"), *opts[:-1], str(moved),
                     "--resume"]) == 0
    assert cli.main(["restore", str(digits / "in"), *opts[:-2], "--prior", "mnist", "--resume"]) == 0
    recs = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    assert len({r["prior_sha256"] for r in recs}) == 1 and len(recs) == len(list((digits / "in").iterdir())), recs


def test_image_modes_are_read_on_their_range(tmp_path):
    """16-bit images on 0..65535 and float images on [0, 1] map to [-1, 1] (a float TIFF used to be cut to 8 bits)."""
    a = np.linspace(0.0, 1.0, 28 * 28).reshape(28, 28)
    Image.fromarray(a.astype(np.float32)).save(tmp_path / "f.tif")
    Image.fromarray((a * 65535).round().astype(np.uint16)).save(tmp_path / "s.png")
    for name, tol in (("f.tif", 1e-6), ("s.png", 1e-4)):
        x = rs.read_image(tmp_path / name, 1)
        np.testing.assert_allclose(x[0].numpy(), 2 * a - 1, atol=tol, err_msg=name)
    noisy = a + 0.05 * np.random.default_rng(0).standard_normal(a.shape)  # a noisy measurement leaves [0, 1] a little
    Image.fromarray(noisy.astype(np.float32)).save(tmp_path / "n.tif")
    np.testing.assert_allclose(rs.read_image(tmp_path / "n.tif", 1)[0].numpy(), 2 * noisy - 1, atol=1e-6)


def test_sigma_estimate_on_bundled_photos():
    """The wavelet noise estimator on the bundled photos at 256x256 with known noise on [-1, 1]. It
    over-estimates, since fine image detail leaks into the finest wavelet band: measured ratios (estimate /
    truth) 1.06-1.23 at sigma_y 0.05 and 1.03-1.10 at 0.1 over the four photos (docs/restore.md); the
    bounds below sit just outside them (1.3 and 1.15), and under-estimation is not allowed."""
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        x = afdps.load_photo(name, 256).float()
        for s, high in ((0.05, 1.3), (0.1, 1.15)):
            y = x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
            ratio = rs.estimate_sigma(y) / s
            assert 1.0 <= ratio < high, (name, s, ratio)


def test_names_are_unique_and_do_not_depend_on_order(tmp_path):
    """Inputs sharing a stem are named <folder>_<stem>, whatever their order; names that would still
    collide, or manifest names with path separators, are refused."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _png(torch.zeros(28, 28), tmp_path / d / "x.png")
    one = rs.jobs_from_inputs([tmp_path / "a", tmp_path / "b"], task="denoise")
    two = rs.jobs_from_inputs([tmp_path / "b", tmp_path / "a"], task="denoise")
    assert sorted(j.name for j in one) == ["a_x", "b_x"] and {j.name: j.seed for j in one} == {j.name: j.seed for j in two}
    # an image's seed is its stem's, as in a run without the other image: restored the same whatever else is in the run
    alone = rs.jobs_from_inputs([tmp_path / "a" / "x.png"], task="denoise")
    assert {j.seed for j in one} == {rs.seed_of("x")} == {j.seed for j in alone}
    _png(torch.zeros(28, 28), tmp_path / "a" / "x.npy.png")
    np.save(tmp_path / "a" / "x.npy", np.zeros((28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="would be named"):
        rs.jobs_from_inputs([tmp_path / "a"], task="denoise")
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "a/x.png", "task": "denoise", "name": "../evil"}) + "\n")
    with pytest.raises(ValueError, match="must be a plain file name"):
        rs.jobs_from_manifest(tmp_path / "m.jsonl", defaults={})


def test_tiles_cover_large_measurements_and_blend_them(tmp_path, capsys):
    """A measurement larger than the prior's frame is restored in overlapping tiles: tile offsets cover the
    image with the requested overlap; a 40x40 denoising measurement gives a 40x40 restoration from 2x2 tiles
    (their seeds recorded); a 30x30 valid blur of a 38x38 scene (9x9 kernel, 20x20 per frame) gives the
    38x38 scene; inside a tile the blend is that tile's own result."""
    with pytest.raises(SystemExit):  # argparse's usage error
        cli.main(["restore", "x.png", "--task", "denoise", "--tile-overlap", "1", "--out", str(tmp_path / "o")])
    assert rs.tile_offsets(40, 28, 7) == [0, 12]
    assert rs.tile_offsets(28, 28, 7) == [0]
    offs = rs.tile_offsets(100, 28, 7)
    assert offs[0] == 0 and offs[-1] == 72 and all(b - a <= 21 for a, b in zip(offs, offs[1:]))
    ramp = rs._ramp(10, 3)
    assert float(ramp.min()) > 0 and float(ramp[4]) == 1.0
    x, _ = afdps.load_mnist_test(3)
    big = torch.zeros(40, 40, dtype=torch.float64)
    big[:28, :28] = x[0, 0].double()
    big[12:, 12:] = torch.maximum(big[12:, 12:], x[1, 0].double())
    noisy = (big + 0.1 * torch.randn(40, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    _png(noisy, tmp_path / "big.png")
    scene = torch.full((38, 38), -1.0, dtype=torch.float64)
    scene[5:33, 5:33] = x[2, 0].double()
    op = afdps.ops.Blur(afdps.ops.gaussian_kernel(9, 1.5), (1, 38, 38), boundary="valid")
    _png(op.measure(scene[None, None], 0.05, torch.Generator().manual_seed(1))[0, 0], tmp_path / "blurred.png")
    out = tmp_path / "out"
    assert cli.main(["restore", str(tmp_path / "big.png"), "--task", "denoise", "--sigma-y", "0.1", "--out", str(out),
                     *FAST]) == 0
    assert cli.main(["restore", str(tmp_path / "blurred.png"), "--task", "gaussian-blur", "--out", str(out), "--resume",
                     *FAST]) == 0
    said = capsys.readouterr().out  # each tiled image says so, with the sizes that made it tiled
    assert ("afdps restore: big: the 40x40 restoration of its 40x40 measurement is larger than the prior's 28x28: "
            "restored in 4 overlapping tiles\n") in said
    assert ("blurred: the 38x38 restoration of its 30x30 valid blur (its 9x9 kernel sees past the edges) is larger "
            "than the prior's 28x28: restored in 4 overlapping tiles") in said
    assert "afdps restore: 4 tiles in all, each a restoration of one 28x28 frame of the prior, for the images one " \
        "frame cannot hold" in said  # before the first image, per run
    rec = json.loads((out / "big" / "metrics.json").read_text())
    assert rec["final_ess"] == pytest.approx(sum(t["final_ess"] for t in rec["tiles"]) / 4)  # the tiles' mean ...
    assert rec["final_ess_min_tile"] == min(t["final_ess"] for t in rec["tiles"])  # ... and the lowest, beside it
    assert "lowest tile" in (out / "index.html").read_text()
    assert [(t["top"], t["left"]) for t in rec["tiles"]] == [(0, 0), (0, 12), (12, 0), (12, 12)]
    assert len({t["seed"] for t in rec["tiles"]}) == 4
    assert np.load(out / "big" / "mean.npy").shape == (1, 40, 40)
    # where only the first tile covers the image (rows and columns 0..11), the blend is that tile's own result
    opts = dict(num_particles=2, num_steps=3, method="sde", eta=0.5, potential=None, tempering="linear",
                time_power=2.0, corrector_steps=1, backend=None, progress=False)
    y = rs.read_image(tmp_path / "big.png", 1)
    res = afdps.sample(afdps.load_prior("mnist"), afdps.ops.Identity((1, 28, 28)), y[None, :, :28, :28], 0.1,
                       seed=rec["tiles"][0]["seed"], **opts)
    own = res.mean[0]
    torch.testing.assert_close(torch.from_numpy(np.load(out / "big" / "mean.npy"))[:, :12, :12], own[:, :12, :12],
                               rtol=0, atol=1e-6)
    # the Tweedie guidance's largest move is kept per tile, and the image's is the largest of its tiles'
    assert rec["tiles"][0]["guidance_jump"] == pytest.approx(res.guidance_jump, rel=1e-5)
    assert rec["guidance_jump"] == max(t["guidance_jump"] for t in rec["tiles"])
    rec = json.loads((out / "blurred" / "metrics.json").read_text())
    assert [(t["top"], t["left"]) for t in rec["tiles"]] == [(0, 0), (0, 10), (10, 0), (10, 10)]
    assert np.load(out / "blurred" / "mean.npy").shape == (1, 38, 38)


def test_read_kernel_reads_a_file_once_while_it_is_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "k.npy"
    np.save(path, np.ones((3, 3)))
    calls = []
    real = np.load
    monkeypatch.setattr(rs.np, "load", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = rs.read_kernel(path)
    first += 1.0  # the caller's copy: the cached kernel is not changed
    assert torch.allclose(rs.read_kernel(path), torch.full((3, 3), 1 / 9, dtype=torch.float64)) and len(calls) == 1
    np.save(path, np.pad(np.ones((1, 1)), 1))  # a new file (size or mtime changes): read again
    os.utime(path, ns=(1, 10 ** 18))
    assert float(rs.read_kernel(path)[1, 1]) == 1.0 and len(calls) == 2


def test_ode_corrector_schedule_is_taken_and_recorded(digits, tmp_path):
    out = tmp_path / "out"
    rc = cli.main(["restore", str(digits / "in" / "d0.png"), "--task", "box", "--out", str(out), "--method", "ode",
                   "--corrector-snr", "0.1,0.3", *FAST])
    assert rc == 0
    m = json.loads((out / "d0" / "metrics.json").read_text())
    assert m["settings"]["method"] == "ode" and m["settings"]["corrector_snr"] == [0.1, 0.3] and m["nfe"] == 6


@pytest.mark.slow
def test_fast_network_flag(digits, tmp_path):
    """``--fast-network`` restores through load_prior(..., inference=True): the run finishes, its journal records
    the network's bfloat16 torso (float32 without the flag), and the restoration stays close to the float32
    network's with the same seeds: bfloat16 changes the trajectories a little, the weighted mean's PSNR stays within
    0.5 dB, where a broken network loses many (measured 19.08 against 19.09 dB, 2026-12-06). One particle, 60 steps
    and the "scaled" potential keep it to 12 s on a 2-core CPU, where bfloat16 runs ~5x slower than float32 (the
    default Tweedie potential took 68 s for two particles); its VJP through the bfloat16 torso is checked in
    tests/test_loading.py::test_inference_path."""
    runs = {}
    for name, extra in (("fast", ["--fast-network"]), ("plain", [])):
        out = tmp_path / name
        assert cli.main(["restore", str(digits / "in" / "d0.png"), "--task", "box", "--out", str(out), *FAST,
                         "--steps", "60", "--particles", "1", "--potential", "scaled", *extra]) == 0
        record = json.loads((out / "journal.jsonl").read_text().splitlines()[0])
        runs[name] = (record, np.load(out / "d0" / "mean.npy"))
    assert runs["fast"][0]["network_dtype"] == "bfloat16" and runs["plain"][0]["network_dtype"] == "float32"
    ref = np.asarray(Image.open(digits / "ref" / "d0.png"), dtype=np.float64) / 127.5 - 1

    def psnr(a):
        return 10 * np.log10(4.0 / np.mean((np.asarray(a, dtype=np.float64).reshape(ref.shape) - ref) ** 2))

    assert psnr(runs["plain"][1]) > 15 and abs(psnr(runs["fast"][1]) - psnr(runs["plain"][1])) < 0.5


def test_resume_compares_an_arch_config_by_its_contents(digits, tmp_path, capsys):
    """--arch CONFIG.json was journaled as its path only: the file edited in place (attention heads: no weight
    changes shape, the network computes otherwise) resumed as the same run, and the same contents under another
    path were refused. The journal now keeps the config's digest and compares that."""
    ckpt = torch.load(ROOT / "bindings" / "data" / "mnist_prior.pt", weights_only=True)
    torch.save(ckpt["state_dict"], tmp_path / "raw.pt")
    cfg, copy = tmp_path / "cfg.json", tmp_path / "elsewhere" / "cfg.json"
    cfg.write_text(json.dumps(ckpt["config"]))
    copy.parent.mkdir()
    copy.write_text(cfg.read_text())
    fast = [a for a in FAST if a not in ("--prior", "mnist")]
    opts = ["--task", "box", "--out", str(tmp_path / "out"), *fast, "--prior", str(tmp_path / "raw.pt")]
    assert cli.main(["restore", str(digits / "in" / "d1.png"), *opts, "--arch", str(cfg)]) == 0
    rec = json.loads((tmp_path / "out" / "journal.jsonl").read_text())
    assert rec["prior"].endswith(f"--arch {cfg.resolve()} (config sha256 {rec['prior'][-17:-1]})")
    assert cli.main(["restore", str(digits / "in" / "d1.png"), str(digits / "in" / "d2.png"), *opts,
                     "--arch", str(copy), "--resume"]) == 0  # the same contents elsewhere: the same run
    cfg.write_text(json.dumps({**ckpt["config"], "num_head_channels": -1}))  # 4 heads of 16 channels, not 2 of 32
    capsys.readouterr()
    assert cli.main(["restore", str(digits / "in"), *opts, "--arch", str(cfg), "--resume"]) == 2
    assert "--resume: d1 in" in capsys.readouterr().err
    # a journal from before the digest (and before prior_sha256) kept the --arch path as typed: the same command
    # resumes it
    lines = (tmp_path / "out" / "journal.jsonl").read_text().splitlines()
    old = [{**json.loads(line), "prior": f"{(tmp_path / 'raw.pt').resolve()} --arch {copy}"} for line in lines]
    for rec in old:
        rec.pop("prior_sha256")
    (tmp_path / "out" / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    assert cli.main(["restore", str(digits / "in" / "d1.png"), *opts, "--arch", str(copy), "--resume"]) == 0


def test_a_tiled_image_says_each_warning_once(tmp_path, monkeypatch):
    """Each tile's sample() warned on its own (six near-identical lines for one 40x60 image): the image says each
    warning once, with the number of tiles that gave it."""
    calls = []
    real = rs.sample

    def warning_sample(*args, **kw):
        calls.append(1)
        warnings.warn(f"a move of {len(calls)}.5 times the RMS", UserWarning)
        if fail_at == len(calls):
            raise FloatingPointError("every particle died")
        return real(*args, **kw)

    monkeypatch.setattr(rs, "sample", warning_sample)
    job = rs.Job(name="big", path=str(tmp_path / "big.png"), task="denoise", seed=1)
    y = torch.zeros(1, 40, 40)
    for fail_at, expect in ((None, "4 of its 4"), (3, "3 of its 4")):  # a tile that fails: what was said is said
        calls.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                rs.restore_tiled(afdps.load_prior("mnist"), job, y, 0.1, overlap=0.25, device="cpu",
                                 sample_options=dict(num_particles=2, num_steps=2, progress=False))
            except FloatingPointError:
                assert fail_at == 3
        said = [str(w.message) for w in caught if "times the RMS" in str(w.message)]
        assert said == [f"big, {expect} tiles (the first said): a move of 1.5 times the RMS"]


def test_resume_follows_the_files_bytes_not_their_paths(digits, tmp_path, capsys):
    """The journal keeps each input's sha256: an input edited in place was taken as the one restored (its old
    outputs kept, rc 0), while the same bytes in a moved folder were refused. A seed change names --seed (its
    derived number told nothing); --save-particles on a resume names the images that keep none."""
    first, moved = tmp_path / "first", tmp_path / "moved"
    first.mkdir()
    for i in (0, 1):
        (first / f"d{i}.png").write_bytes((digits / "in" / f"d{i}.png").read_bytes())
    out = tmp_path / "out"
    opts = ["--task", "box", "--out", str(out), *FAST]
    assert cli.main(["restore", str(first), *opts]) == 0
    rec = json.loads((out / "d0" / "metrics.json").read_text())
    assert len(rec["input_sha256"]) == 16 and "mask_sha256" not in rec
    shutil.copytree(first, moved)
    assert cli.main(["restore", str(moved), *opts, "--resume", "--save-particles"]) == 0  # the same bytes, moved
    said = capsys.readouterr().out
    assert "--save-particles: 2 image(s) restored earlier without it keep no particles.npz (d0, d1)" in said
    (first / "d0.png").write_bytes((digits / "in" / "d2.png").read_bytes())
    assert cli.main(["restore", str(first), *opts, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"d0's input file {str((first / 'd0.png').resolve())!r} changed since the run in" in err
    assert cli.main(["restore", str(moved), *opts, "--resume", "--seed", "5"]) == 2
    assert "was restored with another seed (--seed, or its manifest row's seed" in capsys.readouterr().err


def test_options_that_do_not_fit_an_operator_are_refused_before_any_image(tmp_path, capsys):
    """potential='inflated' cannot run on a valid blur: a manifest of three tasks restored the first two, then
    stopped (and a resume with another potential was refused). Now nothing runs and no folder is left; an option
    every operator refuses is named once."""
    x, _ = afdps.load_mnist_test(1)
    _png(x[0, 0], tmp_path / "d.png")
    _png(x[0, 0, 2:-2, 2:-2], tmp_path / "v.png")  # 24x24: a valid 5x5-kernel blur of the 28x28 frame
    (tmp_path / "m.jsonl").write_text('{"path": "d.png", "task": "denoise"}\n{"path": "d.png", "task": "box", "name": "b"}\n'
                                      '{"path": "v.png", "task": "gaussian-blur"}\n')
    out = tmp_path / "out"
    assert cli.main(["restore", "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--potential",
                     "inflated", *FAST]) == 2
    err = capsys.readouterr().err
    assert "1 of 3 image(s) cannot be restored, so none was run: v: the sampler's options do not fit its operator " \
           "(ValidBlur): potential='inflated'" in err and not out.exists()
    assert cli.main(["restore", str(tmp_path / "d.png"), "--task", "box", "--out", str(out), "--eta", "nan",
                     *FAST]) == 2
    assert "the sampler refuses these options, so no image was run: eta must be" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "ref").mkdir()  # a bad reference too: the blurred image is counted once, for its file
    _png(torch.zeros(10, 10), tmp_path / "ref" / "v.png")
    assert cli.main(["restore", "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--potential",
                     "inflated", "--reference", str(tmp_path / "ref"), *FAST]) == 2
    assert "1 of 3 image(s) cannot be restored, so none was run: v: its reference is (1, 10, 10)" in \
        capsys.readouterr().err


def test_a_black_mask_with_noise_in_it_is_refused(tmp_path):
    """A mask's observed pixels are those at least half its brightest: a black mask with a JPEG's noise in it (0..2
    of 255) observed about two thirds of the pixels at random. It is refused, as an all-zero one is; a 0/1 image
    (two values) stays a 0/1 mask."""
    noise = np.random.default_rng(0).integers(0, 3, (28, 28)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "dark.png")
    with pytest.raises(ValueError, match=r"has no white pixel \(its brightest is 2 of 255, and it holds more"):
        rs.read_mask(tmp_path / "dark.png", (28, 28))
    np.save(tmp_path / "dim.npy", noise / 10)  # 0, 0.1, 0.2
    with pytest.raises(ValueError, match=r"its brightest is 0.2 of 1"):
        rs.read_mask(tmp_path / "dim.npy", (28, 28))
    Image.fromarray((noise > 1).astype(np.uint8)).save(tmp_path / "01.png")  # a 0/1 image: two values, a mask
    assert float(rs.read_mask(tmp_path / "01.png", (28, 28)).sum()) == float((noise > 1).sum())
    wide = (noise.astype(np.int32) * 30000)  # 0 / 30000 / 60000 in a 32-bit image: white on 16 bits, as read_image
    Image.fromarray(wide, mode="I").save(tmp_path / "wide.tif")  # reads it (it was taken as 60000 of 2**31 - 1)
    assert float(rs.read_mask(tmp_path / "wide.tif", (28, 28)).sum()) == float((noise >= 1).sum())
    Image.fromarray((noise / 2).astype(np.float32), mode="F").save(tmp_path / "float.tif")  # 0 / 0.5 / 1: white
    assert float(rs.read_mask(tmp_path / "float.tif", (28, 28)).sum()) == float((noise >= 1).sum())
    Image.fromarray((noise > 1).astype(np.uint8) * 255).save(tmp_path / "ok.png")
    assert float(rs.read_mask(tmp_path / "ok.png", (28, 28)).sum()) == float((noise > 1).sum())


def test_deaths_and_warnings_name_their_image(digits, tmp_path, capsys):
    """A death said 'image 0' (the index in sample()'s batch of one) and warnings named no image; notes on the
    options were said again for every image or tile. Now the death names the image, and a note is said once per run.
    An option refused even for plain denoising is the options' fault, said beside the files' errors."""
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": str(digits / "in" / "d0.png"), "task": "box"}) + "\n"
        + json.dumps({"path": str(digits / "in" / "d1.png"), "task": "box", "sigma_y": 1e-12}) + "\n")
    out = tmp_path / "out"
    assert cli.main(["restore", "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--potential", "scaled",
                     "--corrector-snr", "0.3", *FAST]) == 1
    err = capsys.readouterr().err
    assert "EnsembleDied: every particle of image 'd1' has died" in err, err
    assert err.count("corrector_snr=0.3 changes nothing") == 1, err  # two images ran, one note
    (tmp_path / "n.jsonl").write_text(
        json.dumps({"path": str(digits / "in" / "d0.png"), "task": "box"}) + "\n"
        + json.dumps({"path": str(tmp_path / "nothing.png"), "task": "box"}) + "\n")
    assert cli.main(["restore", "--manifest", str(tmp_path / "n.jsonl"), "--out", str(tmp_path / "o2"), "--eta", "nan",
                     *FAST]) == 2
    assert "the sampler refuses these options, so no image was run: eta must be a finite number >= 0, got nan; and " \
           "1 of 2 image(s) cannot be restored: nothing: no measurement file" in capsys.readouterr().err


def test_a_refusal_without_text_is_still_a_refusal():
    """A ValueError with no text read as a pass ("" is falsy): the check went on, and with two ranks one could wait
    in the next gather for a rank that had left. Its type's name stands in for the text."""
    from afdps.engine.restore import _alike

    def refuse():
        raise ValueError()
    assert _alike(refuse, False, 1, None, None) == "ValueError"
    assert _alike(lambda: None, False, 1, None, None) is None
