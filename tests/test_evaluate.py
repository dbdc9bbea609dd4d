"""The evaluation harness (``afdps eval``): task operators, a smoke run of the command with its files,
results independent of the batch size, and usage errors."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from afdps import cli, ops
from afdps.engine import evaluate as ev

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size", [28, 256])
def test_task_operators(size):
    shape = (1 if size == 28 else 3, size, size)
    want = {"gaussian-blur": (ops.Blur, shape), "motion-blur": (ops.Blur, shape),
            "sr4": (ops.BlockDownsample, (shape[0], size // 4, size // 4)), "box": (ops.Inpaint, shape),
            "random70": (ops.Inpaint, shape)}
    for task, (cls, out) in want.items():
        op = ev.make_operator(task, shape)
        assert isinstance(op, cls) and tuple(op.output_shape) == out
    box = ev.make_operator("box", shape).mask[0]
    assert int((box == 0).sum()) == (size // 2) ** 2  # 14x14 for digits, 128x128 for the paper
    missing = float((ev.make_operator("random70", shape).mask[0] == 0).double().mean())
    assert abs(missing - 0.7) < 1.0 / size**2 + 1e-12
    k = ev.make_operator("gaussian-blur", shape).kernel
    assert tuple(k.shape[-2:]) == ((9, 9) if size == 28 else (61, 61))


def test_task_errors():
    with pytest.raises(ValueError, match="unknown task"):
        ev.make_operator("deblur", (1, 28, 28))
    with pytest.raises(ValueError, match="28x28"):
        ev.make_operator("sr4", (3, 64, 64))


def test_eval_smoke(tmp_path, capsys):
    rc = cli.main(["eval", "--num-images", "2", "--particles", "2", "--steps", "3", "--task", "box,sr4",
                   "--methods", "afdps-sde,afdps-ode,fk,dps", "--batch-size", "2", "--out", str(tmp_path),
                   "--no-progress", "--device", "cpu"])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [(r["task"], r["method"]) for r in rows] == [(t, m) for t in ("box", "sr4")
                                                          for m in ("afdps-sde", "afdps-ode", "fk", "dps")]
    for r in rows:
        assert r["images"] == "2"
        assert 0.0 <= float(r["accuracy_best"]) <= 1.0 and float(r["psnr_best"]) > 0
        assert float(r["wall_s"]) > 0
        assert (r["final_ess"] == "") == (r["method"] == "dps")
    assert {r["nfe"] for r in rows if r["method"] == "afdps-ode"} == {"6"}  # predictor + 1 corrector step
    per_image = list(csv.DictReader(open(tmp_path / "per_image.csv")))
    assert len(per_image) == 2 * 4 * 2
    md = (tmp_path / "results.md").read_text()
    assert "| box | afdps-sde | 2 | 3 |" in md and "acc. best" in md
    assert "afdps-ode: 1 Langevin step(s), rule split" in md and "; dps: zeta = " in md
    assert "results.md" in capsys.readouterr().out


def test_rows_do_not_depend_on_batch_size():
    from afdps import load_mnist_test, load_prior

    prior = load_prior("mnist")
    images, _ = load_mnist_test(3)
    kw = dict(tasks=["gaussian-blur"], methods=["afdps-sde", "dps"], particles=2, steps=3, progress=False)
    _, a = ev.evaluate(prior, images, batch_size=3, **kw)
    _, b = ev.evaluate(prior, images, batch_size=1, **kw)
    for ra, rb in zip(a, b):
        assert ra["image"] == rb["image"]
        assert ra["psnr_best"] == pytest.approx(rb["psnr_best"], abs=1e-4)
        assert ra["psnr_mean"] == pytest.approx(rb["psnr_mean"], abs=1e-4)


def test_ess_threshold_reaches_the_sampler(tmp_path):
    """``--ess-threshold 0`` never resamples, 1 resamples whenever the weights are uneven; the column records it."""
    from afdps import load_prior

    prior = load_prior("mnist")
    op = ev.make_operator("box", (1, 28, 28))
    y = ev.measurements(op, torch.zeros(1, 1, 28, 28), 0.05)
    kw = dict(particles=4, steps=3, seeds=[0])
    assert not ev.run_method("fk", prior, op, y, 0.05, ess_threshold=0.0, **kw).resampled.any()
    assert ev.run_method("fk", prior, op, y, 0.05, ess_threshold=1.0, **kw).resampled.any()
    assert cli.main(["eval", "--num-images", "1", "--particles", "2", "--steps", "2", "--task", "box", "--methods",
                     "fk,dps", "--ess-threshold", "0", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["ess_threshold"] for r in rows] == ["0", ""]
    md = (tmp_path / "results.md").read_text()
    assert "resampling below ESS/N 0" in md and "; dps: zeta = " in md
    assert "Langevin" not in md  # the ODE's settings are not described where it did not run


def test_the_settings_line_describes_the_methods_that_ran():
    from types import SimpleNamespace

    from afdps.cli.eval import method_settings

    args = SimpleNamespace(tempering="adaptive", tempering_ess=0.3, potential="auto", time_power=2.0, ess_threshold=0.5,
                           corrector_steps=1, corrector="split", corrector_snr=0.2, dps_zeta=3.0, dps_time_power=1.0)
    assert method_settings(args, ["dps"]) == ("DPS: zeta = 3, time grid power 1, one sample per image, no weights "
                                              "(best = mean)")
    line = method_settings(args, ["fk"])
    assert line.startswith("Particle methods: tempering adaptive (ESS target 0.3), potential auto")
    assert "Langevin" not in line and "zeta" not in line


def test_eval_usage_errors(tmp_path, capsys):
    assert cli.main(["eval", "--methods", "afdps,dps", "--out", str(tmp_path)]) == 2
    assert "unknown afdps" in capsys.readouterr().err
    assert cli.main(["eval", "--task", "sr8", "--out", str(tmp_path), "--num-images", "1"]) == 2
    assert "available" in capsys.readouterr().err
    assert cli.main(["eval", "--prior", str(tmp_path / "none.pt"), "--arch", "adm-ffhq256",
                     "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as info:  # argparse refuses it: status 2 and the usage
        cli.main(["eval", "--num-images", "0", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--num-images: must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", "--ess-threshold", "1.5", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--ess-threshold: must be a number in [0, 1], got '1.5'" in capsys.readouterr().err


def test_interrupted_run_keeps_finished_rows(tmp_path, monkeypatch):
    """A failure in the second method leaves the first one's rows on disk, marked partial."""
    real = ev.run_method

    def flaky(method, *a, **k):
        if method == "dps":
            raise RuntimeError("simulated failure")
        return real(method, *a, **k)

    monkeypatch.setattr(ev, "run_method", flaky)
    rc = cli.main(["eval", "--num-images", "1", "--particles", "2", "--steps", "2", "--task", "box",
                   "--methods", "fk,dps", "--out", str(tmp_path), "--no-progress"])
    assert rc == 1
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["method"] for r in rows] == ["fk"]
    assert "partial: 1 of 2" in (tmp_path / "results.md").read_text()
    # a re-run refuses to overwrite; --resume keeps the finished row (not run again) and runs the rest
    argv = ["eval", "--num-images", "1", "--particles", "2", "--steps", "2", "--task", "box", "--methods", "fk,dps",
            "--out", str(tmp_path), "--no-progress"]
    monkeypatch.setattr(ev, "run_method", real)
    assert cli.main(argv) == 2
    fk_row = rows[0]
    ran = []
    monkeypatch.setattr(ev, "run_method", lambda method, *a, **k: ran.append(method) or real(method, *a, **k))
    assert cli.main(argv + ["--resume"]) == 0
    assert ran == ["dps"]
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["method"] for r in rows] == ["fk", "dps"] and rows[0]["psnr_mean"] == fk_row["psnr_mean"]
    assert "partial" not in (tmp_path / "results.md").read_text()
    assert cli.main(argv[:-3] + ["--steps", "3", "--out", str(tmp_path), "--no-progress", "--resume"]) == 2


def _rows(path, drop=("seconds", "wall_s", "s_per_image")):
    """A CSV's rows without its timing columns (times differ between runs; nothing else may)."""
    return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(open(path))]


def _same_summary(a, b):
    """Summary rows equal, numbers to the six significant digits they are written with (a resumed pair's means come
    from kept rows read back at nine; a last-digit rounding may differ). Per-image rows are compared exactly."""
    a, b = _rows(a), _rows(b)
    assert [r.keys() for r in a] == [r.keys() for r in b]
    for ra, rb in zip(a, b):
        for k in ra:
            try:
                assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-5, abs=1e-12), k
            except ValueError:
                assert ra[k] == rb[k], k


def _recording(monkeypatch, fail_at=None):
    """Replace ``run_method`` by one that records each call's image seeds (and fails at call ``fail_at``)."""
    real, calls = ev.run_method, []

    def run(method, *a, seeds, **k):
        calls.append(list(seeds))
        if len(calls) == fail_at:
            raise RuntimeError("simulated failure")
        return real(method, *a, seeds=seeds, **k)

    monkeypatch.setattr(ev, "run_method", run)
    return calls


EVAL = ["eval", "--particles", "2", "--steps", "2", "--task", "box", "--batch-size", "1", "--no-progress"]


def test_resume_keeps_the_dps_zeta_the_run_had(tmp_path, capsys):
    """--dps-zeta's default became 3 for the shipped prior on 2026-12-06 (it was 1): a run from before, resumed
    without the option, keeps its 1 rather than being refused as changed; an explicit other value changes nothing
    in a run without DPS, which says so (test_resume_compares_what_runs refuses it where DPS runs)."""
    argv = EVAL + ["--methods", "fk", "--out", str(tmp_path)]
    assert cli.main(argv + ["--num-images", "1"]) == 0
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["dps_zeta"] == 3.0
    (tmp_path / "settings.json").write_text(json.dumps({**settings, "dps_zeta": 1.0}))
    assert cli.main(["--debug"] + argv + ["--num-images", "2", "--resume"]) == 0  # --debug is not a setting
    assert json.loads((tmp_path / "settings.json").read_text())["dps_zeta"] == 1.0
    capsys.readouterr()
    assert cli.main(argv + ["--num-images", "2", "--resume", "--dps-zeta", "3"]) == 0
    assert ("afdps eval: warning: --dps-zeta 3 changes nothing: it applies to dps, and --methods fk runs none of them"
            in capsys.readouterr().err)


def test_resume_reruns_a_finished_pair_whose_image_rows_were_cut(tmp_path, monkeypatch):
    """A per_image.csv cut short outside afdps (a copy, an editor), here in the middle of image 1's row, leaves
    results.csv claiming a finished pair: the resume drops the cut row, runs the images whose rows are missing and
    writes the files of the uninterrupted run, instead of keeping a summary without its rows; the header says the
    seconds are this invocation's."""
    argv = EVAL + ["--num-images", "2", "--methods", "fk", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    whole = _rows(tmp_path / "per_image.csv")
    (tmp_path / "before.csv").write_text((tmp_path / "results.csv").read_text())
    lines = (tmp_path / "per_image.csv").read_text().splitlines()
    (tmp_path / "per_image.csv").write_text("\n".join(lines[:2]) + "\n" + lines[2][:30])  # image 1's row cut
    calls = _recording(monkeypatch)
    assert cli.main(argv + ["--resume"]) == 0
    assert calls == [[1]]
    assert _rows(tmp_path / "per_image.csv") == whole
    _same_summary(tmp_path / "results.csv", tmp_path / "before.csv")
    assert "s in this invocation (resumed)" in (tmp_path / "results.md").read_text().splitlines()[0]


def test_a_path_to_the_shipped_prior_is_the_shipped_prior_and_a_replaced_one_is_refused(tmp_path, capsys,
                                                                                         monkeypatch):
    """--dps-zeta's default for the shipped prior (3) holds for the file under any path, since it follows the
    checkpoint's bytes, not its name (nor a folder named mnist where the command runs); a checkpoint replaced in
    place under the same path is refused on --resume as changed, another --prior as another setting."""
    (tmp_path / "mnist").mkdir()  # shipped names are looked up as paths first: this must not be taken for the prior
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "prior.pt"
    ckpt.write_bytes((ROOT / "bindings" / "data" / "mnist_prior.pt").read_bytes())
    argv = EVAL + ["--num-images", "1", "--methods", "fk", "--prior", str(ckpt), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert settings["dps_zeta"] == 3.0 and len(settings["prior_sha256"]) == 16
    state = torch.load(ckpt, weights_only=False)
    name = next(iter(state["state_dict"]))
    state["state_dict"][name] = state["state_dict"][name] + 1e-3
    torch.save(state, ckpt)
    capsys.readouterr()
    assert cli.main(argv[:-2] + ["--out", str(tmp_path / "fresh")]) == 0  # a retrained prior: the paper's zeta
    assert json.loads((tmp_path / "fresh" / "settings.json").read_text())["dps_zeta"] == 1.0
    assert cli.main(argv + ["--resume"]) == 2
    assert f"the checkpoint {str(ckpt)!r} changed since the run in" in capsys.readouterr().err
    def prior(path):
        at = argv.index("--prior")
        return argv[:at] + ["--prior", str(path)] + argv[at + 2:] + ["--resume", "--num-images", "2"]

    (tmp_path / "retrained.pt").write_bytes(ckpt.read_bytes())
    assert cli.main(prior(tmp_path / "retrained.pt")) == 2  # other bytes under another name: another setting
    assert "the settings differ from those of the run in" in capsys.readouterr().err
    # the run's bytes under another path (moved), or the shipped name for them: the same checkpoint, and the run
    # keeps the name it started with
    (tmp_path / "moved.pt").write_bytes((ROOT / "bindings" / "data" / "mnist_prior.pt").read_bytes())
    assert cli.main(prior(tmp_path / "moved.pt")) == 0
    assert f"has the bytes of {ckpt}, which the run in" in capsys.readouterr().out
    rows = _rows(tmp_path / "out" / "results.csv")
    assert [r["prior"] for r in rows] == [str(ckpt)] and rows[0]["images"] == "2", rows
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["prior"] == str(ckpt)
    assert cli.main(prior("mnist")[:-2] + ["--num-images", "3"]) == 0


def test_resume_runs_only_the_missing_images(tmp_path, monkeypatch):
    """A failure in a pair's second batch keeps the first batch's image row on disk (no summary row yet);
    --resume runs only the missing image and ends with the files of an uninterrupted run."""
    argv = EVAL + ["--num-images", "2", "--methods", "fk"]
    assert cli.main(argv + ["--out", str(tmp_path / "whole")]) == 0
    cut = tmp_path / "cut"
    _recording(monkeypatch, fail_at=2)
    assert cli.main(argv + ["--out", str(cut)]) == 1
    assert [r["image"] for r in csv.DictReader(open(cut / "per_image.csv"))] == ["0"]
    assert list(csv.DictReader(open(cut / "results.csv"))) == []
    calls = _recording(monkeypatch)
    assert cli.main(argv + ["--out", str(cut), "--resume"]) == 0
    assert calls == [[1]]  # image 1's seed only (seed 0 + image)
    assert _rows(cut / "per_image.csv") == _rows(tmp_path / "whole" / "per_image.csv")
    _same_summary(cut / "results.csv", tmp_path / "whole" / "results.csv")
    (row,) = list(csv.DictReader(open(cut / "results.csv")))
    seconds = [float(r["seconds"]) for r in csv.DictReader(open(cut / "per_image.csv"))]
    assert float(row["wall_s"]) == pytest.approx(sum(seconds), rel=1e-5) and min(seconds) > 0


def test_resume_extends_a_run_to_more_images(tmp_path, monkeypatch, capsys):
    """--resume with a larger --num-images keeps the earlier images' rows and runs only the new ones, the files
    then equal a run of all images from the start; rows written before the ``seconds`` column take their old
    summary's time per image, and settings written before --fast-network existed match its default. Fewer images,
    or any other setting changed, are refused."""
    argv = EVAL + ["--methods", "fk,dps"]
    assert cli.main(argv + ["--num-images", "2", "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "grown"
    assert cli.main(argv + ["--num-images", "1", "--out", str(out)]) == 0
    old = {r["method"]: float(r["s_per_image"]) for r in csv.DictReader(open(out / "results.csv"))}
    lines = (out / "per_image.csv").read_text().splitlines()  # as an earlier version wrote it: no seconds column
    assert lines[0].endswith(",seconds,device")  # (nor the device one, written since 2026-12-07)
    (out / "per_image.csv").write_text("\n".join(l.rsplit(",", 2)[0] for l in lines) + "\n")
    settings = json.loads((out / "settings.json").read_text())  # as written before --fast-network existed
    (out / "settings.json").write_text(json.dumps({k: v for k, v in settings.items() if k != "fast_network"}))
    calls = _recording(monkeypatch)
    assert cli.main(argv + ["--num-images", "2", "--out", str(out), "--resume"]) == 0
    assert calls == [[1], [1]]
    assert _rows(out / "per_image.csv") == _rows(tmp_path / "whole" / "per_image.csv")
    _same_summary(out / "results.csv", tmp_path / "whole" / "results.csv")
    new = {(r["method"], r["image"]): float(r["seconds"]) for r in csv.DictReader(open(out / "per_image.csv"))}
    for r in csv.DictReader(open(out / "results.csv")):
        assert new[r["method"], "0"] == pytest.approx(old[r["method"]], rel=1e-5)
        assert float(r["wall_s"]) == pytest.approx(old[r["method"]] + new[r["method"], "1"], rel=1e-5)
    assert "2 images" in (out / "results.md").read_text()
    capsys.readouterr()
    assert cli.main(argv + ["--num-images", "1", "--out", str(out), "--resume"]) == 2
    assert "holds rows of images 0 to 1; --num-images 1 would drop them (pass at least 2)" in capsys.readouterr().err
    assert calls == [[1], [1]]
    assert cli.main(argv + ["--steps", "3", "--num-images", "3", "--out", str(out), "--resume"]) == 2
    assert ("(num_images: 2 there, 3 here; steps: 2 there, 3 here; only --num-images may change)"
            in capsys.readouterr().err)
    # batches of 2: the extended run's first batch (images 0, 1) runs whole, as the from-scratch run's does
    half = EVAL[:-3] + ["--batch-size", "2", "--no-progress", "--methods", "fk"]
    assert cli.main(half + ["--num-images", "3", "--out", str(tmp_path / "whole2")]) == 0
    assert cli.main(half + ["--num-images", "1", "--out", str(tmp_path / "grown2")]) == 0
    calls.clear()
    assert cli.main(half + ["--num-images", "3", "--out", str(tmp_path / "grown2"), "--resume"]) == 0
    assert calls == [[0, 1], [2]]
    assert _rows(tmp_path / "grown2" / "per_image.csv") == _rows(tmp_path / "whole2" / "per_image.csv")


def test_an_interrupted_extension_keeps_the_rows_not_reached(tmp_path, monkeypatch):
    """Extending a two-pair run from 1 to 3 images and failing in the first pair's last batch keeps, on disk, the
    second pair's earlier row with the first pair's new ones; the resume then runs only the missing images."""
    argv = EVAL + ["--methods", "fk,dps"]
    assert cli.main(argv + ["--num-images", "3", "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "grown"
    assert cli.main(argv + ["--num-images", "1", "--out", str(out)]) == 0
    _recording(monkeypatch, fail_at=2)  # fk's image 1 runs and is written, image 2 fails
    assert cli.main(argv + ["--num-images", "3", "--out", str(out), "--resume"]) == 1
    on_disk = [(r["method"], r["image"]) for r in csv.DictReader(open(out / "per_image.csv"))]
    assert sorted(on_disk) == [("dps", "0"), ("fk", "0"), ("fk", "1")]
    calls = _recording(monkeypatch)
    assert cli.main(argv + ["--num-images", "3", "--out", str(out), "--resume"]) == 0
    assert calls == [[2], [1], [2]]
    assert _rows(out / "per_image.csv") == _rows(tmp_path / "whole" / "per_image.csv")
    _same_summary(out / "results.csv", tmp_path / "whole" / "results.csv")


def test_image_folder(tmp_path, capsys):
    """Users' own images: resized/cropped to the prior's shape; no classifier, so no accuracy columns."""
    import numpy as np
    from PIL import Image

    from afdps import load_mnist_test
    from afdps.engine.data import load_image_folder

    digits, _ = load_mnist_test(2)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, d in enumerate(digits):
        a = ((d[0].numpy() + 1) * 127.5).round().astype(np.uint8)
        Image.fromarray(a).resize((56, 70)).save(folder / f"{i}.png")  # other size and aspect: resized + cropped
    (folder / "notes.txt").write_text("not an image")
    (folder / "._0.png").write_bytes(b"macOS metadata, not an image")  # hidden: skipped (it sorted first and failed)
    loaded = load_image_folder(folder, (1, 28, 28), 2)
    assert loaded.shape == (2, 1, 28, 28) and float(loaded.min()) >= -1 and float(loaded.max()) <= 1
    with pytest.raises(ValueError, match="holds 2 images"):
        load_image_folder(folder, (1, 28, 28), 3)
    rc = cli.main(["eval", "--images", str(folder), "--num-images", "2", "--particles", "2", "--steps", "2",
                   "--task", "sr4", "--methods", "afdps-sde", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    row = next(csv.DictReader(open(tmp_path / "o" / "results.csv")))
    assert row["accuracy_best"] == "" and float(row["psnr_best"]) > 0
    # each image's row names its file (rows could not be matched to a user's files)
    assert [r["file"] for r in csv.DictReader(open(tmp_path / "o" / "per_image.csv"))] == ["0.png", "1.png"]
    # read as afdps restore reads them: 16-bit PNGs on 0..65535, float TIFFs on [0, 1], .npy on [-1, 1] (were cut
    # to 8 bits: saturated, or all black); a file PIL cannot read is an error, not a crash
    wide = tmp_path / "wide"
    wide.mkdir()
    u = (digits[0, 0].numpy().astype(np.float64) + 1) / 2
    Image.fromarray((u * 65535).round().astype(np.uint16)).save(wide / "a.png")
    Image.fromarray(u.astype(np.float32)).save(wide / "b.tif")
    np.save(wide / "c.npy", digits[1, 0].numpy())
    loaded = load_image_folder(wide, (1, 28, 28), 3)
    torch.testing.assert_close(loaded, digits[[0, 0, 1]], atol=1e-4, rtol=0)
    (wide / "d.png").write_text("not a PNG")
    with pytest.raises(ValueError, match="is not an image PIL can read"):
        load_image_folder(wide, (1, 28, 28), 4)
    assert "acc. best" not in (tmp_path / "o" / "results.md").read_text()
    assert "classified" not in (tmp_path / "o" / "results.md").read_text()  # (it described accuracy columns)
    # an image added to the folder sorts between 0.png and 1.png: the run's image 1 is no longer image 1, and
    # --resume refuses
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(folder / "00.png")
    rc = cli.main(["eval", "--images", str(folder), "--num-images", "3", "--particles", "2", "--steps", "2",
                   "--task", "sr4", "--methods", "afdps-sde", "--out", str(tmp_path / "o"), "--no-progress",
                   "--resume"])
    assert rc == 2 and "image 1 (1 in all) is not the image the run" in capsys.readouterr().err

def test_eval_runs_in_one_process(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(EVAL + ["--out", str(tmp_path)]) == 2
    assert "runs in one process" in capsys.readouterr().err


# ---- a user audit of afdps eval and demo (2026-12-07) -------------------------------------------------------

def test_option_combinations_are_checked_before_any_pair_runs(tmp_path, capsys):
    """A combination a method refuses (here FK's Tweedie potential with tempering 'none') stopped the run when
    that pair began, after the earlier pairs had run and written their rows; it is now refused first. (With
    --potential auto, FK takes "scaled" under tempering 'none' since 2026-12-07, so the potential is named here.)"""
    out = tmp_path / "o"
    assert cli.main(EVAL + ["--num-images", "1", "--methods", "dps,fk", "--tempering", "none", "--potential",
                            "tweedie", "--out", str(out)]) == 2
    assert "fk on box: potential='tweedie' starts from lam = 0" in capsys.readouterr().err
    assert not (out / "results.csv").exists()
    for bad in ("0", "1"):  # the help said [0, 1]; the sampler takes (0, 1)
        with pytest.raises(SystemExit):
            cli.main(EVAL + ["--tempering", "adaptive", "--tempering-ess", bad, "--out", str(out)])
        assert "a number in (0, 1)" in capsys.readouterr().err


def test_dps_takes_its_own_time_grid(tmp_path, capsys):
    """DPS ran on the uniform grid whatever was asked (--time-power is the particle methods'); --dps-time-power sets
    it, is recorded in its rows and settings, and a run from before the option resumes as the uniform grid it ran."""
    argv = EVAL + ["--num-images", "1", "--methods", "dps", "--steps", "4"]
    assert cli.main(argv + ["--out", str(tmp_path / "p1")]) == 0
    assert cli.main(argv + ["--dps-time-power", "2", "--out", str(tmp_path / "p2")]) == 0
    rows = [next(csv.DictReader(open(tmp_path / f / "results.csv"))) for f in ("p1", "p2")]
    assert [r["dps_time_power"] for r in rows] == ["1", "2"]
    assert rows[0]["psnr_mean"] != rows[1]["psnr_mean"]  # (another grid: another restoration)
    assert "time grid power 2" in (tmp_path / "p2" / "results.md").read_text()
    capsys.readouterr()
    assert cli.main(argv + ["--num-images", "2", "--resume", "--out", str(tmp_path / "p2")]) == 2
    assert "dps_time_power: 2.0 there, 1.0 here" in capsys.readouterr().err
    settings = json.loads((tmp_path / "p1" / "settings.json").read_text())
    assert settings.pop("dps_time_power") == 1.0
    (tmp_path / "p1" / "settings.json").write_text(json.dumps(settings))  # (as written before the option)
    assert cli.main(argv + ["--num-images", "2", "--resume", "--out", str(tmp_path / "p1")]) == 0
    assert cli.main(argv + ["--num-images", "3", "--resume", "--dps-time-power", "2", "--out",
                            str(tmp_path / "p1")]) == 2


def test_rows_record_what_ran_and_where(tmp_path, capsys):
    """DPS rows carried the particle methods' tempering and time grid, which DPS does not use; one image has no
    standard error (it printed 0); a resumed run relabelled the rows it kept with the resuming device."""
    out = tmp_path / "o"
    argv = EVAL + ["--num-images", "1", "--methods", "dps,fk", "--time-power", "3", "--out", str(out)]
    assert cli.main(argv) == 0
    rows = {r["method"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["dps"]["time_power"] == "" and rows["dps"]["tempering"] == "" and rows["dps"]["dps_zeta"] == "3"
    assert rows["fk"]["time_power"] == "3" and rows["fk"]["tempering"] == "linear"
    assert rows["fk"]["psnr_mean_se"] == ""
    assert "±" not in next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| box | fk"))
    text = (out / "results.csv").read_text().replace("cpu (", "elsewhere (")
    (out / "results.csv").write_text(text)
    assert cli.main(argv + ["--resume"]) == 0
    assert {r["device"][:9] for r in csv.DictReader(open(out / "results.csv"))} == {"elsewhere"}


def test_a_resume_on_another_device_names_both(tmp_path, capsys):
    """Each image row names the device that timed it; a run extended on another device warns that the pair's
    s / image averages both, and its summary's device names both (PSNR and the rest are the same computation).
    Rows of per_image.csv files written before the column take their pair's summary's device. A batch run again
    whole replaces its kept rows, and then one device timed them all: no warning."""
    out = tmp_path / "o"
    argv = EVAL + ["--methods", "fk", "--out", str(out)]
    assert cli.main(argv + ["--num-images", "1", "--threads", "1"]) == 0
    (row,) = csv.DictReader(open(out / "per_image.csv"))
    assert row["device"] == "cpu (1 thread)"
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    with open(out / "per_image.csv", "w", newline="") as f:  # as written before 2026-12-07
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "device"])
        w.writeheader()
        w.writerows({k: v for k, v in r.items() if k != "device"} for r in rows)
    (out / "results.csv").write_text((out / "results.csv").read_text().replace("cpu (1 thread)", "GPU X"))
    capsys.readouterr()
    assert cli.main(argv + ["--num-images", "2", "--threads", "1", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "afdps eval: warning: box x fk's rows were timed on GPU X + cpu (1 thread): its s / image averages" in err
    assert [r["device"] for r in csv.DictReader(open(out / "per_image.csv"))] == ["GPU X", "cpu (1 thread)"]
    (summary,) = csv.DictReader(open(out / "results.csv"))
    assert summary["device"] == "GPU X + cpu (1 thread)"
    assert "device cpu (1 thread) (rows timed on GPU X before" in (out / "results.md").read_text()
    capsys.readouterr()
    assert cli.main(argv + ["--num-images", "2", "--threads", "1", "--resume"]) == 0  # nothing runs: no new warning
    assert "rows were timed on" not in capsys.readouterr().err
    whole = tmp_path / "w"  # batches of 2: extending 1 image to 2 runs the batch (images 0 and 1) again
    argv = EVAL[:-3] + ["--batch-size", "2", "--no-progress", "--methods", "fk", "--threads", "1", "--out", str(whole)]
    assert cli.main(argv + ["--num-images", "1"]) == 0
    for f in ("results.csv", "per_image.csv"):
        (whole / f).write_text((whole / f).read_text().replace("cpu (1 thread)", "GPU X"))
    capsys.readouterr()
    assert cli.main(argv + ["--num-images", "2", "--resume"]) == 0
    assert "rows were timed on" not in capsys.readouterr().err
    assert [r["device"] for r in csv.DictReader(open(whole / "per_image.csv"))] == ["cpu (1 thread)"] * 2
    assert next(csv.DictReader(open(whole / "results.csv")))["device"] == "cpu (1 thread)"


def test_the_same_images_under_another_path_resume_and_a_file_out_is_refused(tmp_path, capsys):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((28, 28), 60 * i + 30, np.uint8)).save(folder / f"{i}.png")
    argv = ["eval", "--particles", "2", "--steps", "2", "--task", "sr4", "--methods", "afdps-sde", "--no-progress"]
    assert cli.main(argv + ["--num-images", "2", "--out", str(tmp_path / "o"), "--images", str(folder)]) == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert cli.main(argv + ["--num-images", "2", "--out", str(tmp_path / "o"), "--images", str(copy),
                            "--resume"]) == 0
    assert f"holds the images of {folder}, which the run in" in capsys.readouterr().out
    # more images than the run hashed: the first ones are the run's, the new one is this folder's, which the
    # settings now name (it was refused, though each change alone was taken)
    assert cli.main(argv + ["--num-images", "3", "--out", str(tmp_path / "o"), "--images", str(copy),
                            "--resume"]) == 0
    assert "extending the run" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "settings.json").read_text())["images"] == str(copy)
    # a run whose SSIM was taken on [-1, 1] (settings.json without "ssim") is not continued with today's SSIM
    settings = json.loads((tmp_path / "o" / "settings.json").read_text())
    del settings["ssim"]
    (tmp_path / "o" / "settings.json").write_text(json.dumps(settings))
    assert cli.main(argv + ["--num-images", "3", "--out", str(tmp_path / "o"), "--images", str(folder),
                            "--resume"]) == 2
    assert ("(ssim: '[-1, 1]' there, '[0, 1]' here; only --num-images may change) (SSIM is taken on [0, 1] since "
            "2026-12-07" in capsys.readouterr().err)
    (tmp_path / "afile").write_text("x")
    assert cli.main(argv + ["--num-images", "1", "--out", str(tmp_path / "afile"), "--images", str(folder)]) == 2
    assert f"the output folder '{tmp_path / 'afile'}' is a file" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path / "afile"), "--steps", "1", "--particles", "1"]) == 2


def test_a_16_bit_reference_is_read_within_the_range(tmp_path):
    """Lanczos resizing overshoots at a sharp edge; the 8-bit path is clipped by PIL, the 16-bit one was not
    (min -1.19), so scores depended on the file's bit depth."""
    from PIL import Image

    from afdps.engine.data import load_image_folder
    a = np.zeros((90, 90), np.uint16)
    a[:, 45:] = 65535
    Image.fromarray(a).save(tmp_path / "edge.png")
    x = load_image_folder(tmp_path, (1, 28, 28), 1)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0


# ---- a second user audit of afdps eval (2026-12-07): options that change nothing, --resume as it runs -----------

def test_resume_compares_what_runs(tmp_path, monkeypatch, capsys):
    """--resume compared the settings as typed: the same methods in another order, the default tasks named,
    --dps-steps equal to --steps, or an option of a method that does not run were refused as changed. They are
    the same run now; an option that changes nothing is named in a warning; a setting that does change the run is
    refused with its two values."""
    out = tmp_path / "o"
    base = EVAL[:5] + ["--batch-size", "1", "--no-progress", "--num-images", "1", "--out", str(out)]  # no --task
    assert cli.main(base + ["--methods", "fk,dps", "--task", "box,sr4"]) == 0
    capsys.readouterr()
    calls = _recording(monkeypatch)
    assert cli.main(base + ["--methods", "dps,fk", "--task", "sr4,box", "--dps-steps", "2", "--corrector", "song",
                            "--resume"]) == 0
    assert calls == []  # everything kept
    assert "--corrector song changes nothing: it applies to afdps-ode" in capsys.readouterr().err
    settings = json.loads((out / "settings.json").read_text())  # as written before 2026-12-06: argparse's keys too
    (out / "settings.json").write_text(json.dumps({**settings, "command": "eval", "debug": False}))
    assert cli.main(base + ["--methods", "fk,dps", "--task", "box,sr4", "--resume"]) == 0
    assert cli.main(base + ["--methods", "dps,fk", "--task", "sr4,box", "--dps-zeta", "1", "--resume"]) == 2
    assert "(dps_zeta: 3.0 there, 1.0 here; only --num-images may change)" in capsys.readouterr().err
    # a DPS-only run takes no particle option; the default tasks, named
    dps = tmp_path / "dps"
    only = ["eval", "--steps", "2", "--batch-size", "1", "--no-progress", "--num-images", "1", "--methods", "dps",
            "--out", str(dps)]
    assert cli.main(only) == 0
    calls.clear()
    assert cli.main(only + ["--particles", "4", "--potential", "noisy", "--tempering", "adaptive",
                            "--task", "gaussian-blur,sr4,box,random70", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "--particles 4 changes nothing: it applies to afdps-sde, afdps-ode, fk, and --methods dps runs none" in err
    assert "--potential noisy changes nothing" in err and "--tempering adaptive changes nothing" in err
    assert cli.main(only + ["--steps", "5", "--dps-steps", "2", "--resume"]) == 0  # DPS runs 2 steps either way
    assert calls == []
    assert "--steps 5 changes nothing: --methods dps runs --dps-steps 2" in capsys.readouterr().err
    # --fast-network changes the last digits: the results say it ran
    fast = tmp_path / "fast"
    assert cli.main(base[:-2] + ["--methods", "fk", "--task", "box", "--fast-network", "--out", str(fast)]) == 0
    assert "network: mnist's inference path (--fast-network: bfloat16" in (fast / "results.md").read_text()
    assert "potential auto (fk tweedie)" in (fast / "results.md").read_text()
    # FK's potential, asked of the AFDPS methods, in the command's terms
    assert cli.main(base + ["--potential", "tweedie", "--out", str(tmp_path / "t")]) == 2
    assert ("--potential tweedie is FK's (eta 0.5, one vector-Jacobian product per step): it runs with --methods fk; "
            "afdps-sde and afdps-ode take noisy, scaled or inflated (or auto)") in capsys.readouterr().err


def test_an_extension_stopped_early_keeps_the_table_and_can_be_undone(tmp_path, monkeypatch, capsys):
    """A finished 1-image run extended to 3 images and stopped: the files written on the way dropped the finished
    pairs' summaries (results.csv held only what the extension had finished), and settings.json, written first,
    said 3 images, so the 1-image run could not be resumed as it was. Now the earlier summaries stay, marked, until
    replaced; --num-images may go back to any count that keeps every row on disk."""
    out = tmp_path / "o"
    argv = EVAL + ["--methods", "fk,dps", "--out", str(out)]
    assert cli.main(argv + ["--num-images", "1"]) == 0
    before = _rows(out / "results.csv")
    _recording(monkeypatch, fail_at=2)  # fk's image 1 is written, image 2 fails
    assert cli.main(argv + ["--num-images", "3", "--resume"]) == 1
    assert _rows(out / "results.csv") == before  # the 1-image summaries, both
    text = (out / "results.md").read_text()
    assert "partial: 0 of 2 task x method rows" in text and "| box | fk (1 of 3 images) |" in text
    assert "| box | dps (1 of 3 images) |" in text
    calls = _recording(monkeypatch)
    assert cli.main(argv + ["--num-images", "1", "--resume"]) == 2  # fk holds image 1's row now
    assert "holds rows of images 0 to 1; --num-images 1 would drop them (pass at least 2)" in capsys.readouterr().err
    assert cli.main(argv + ["--num-images", "2", "--resume"]) == 0
    assert calls == [[1], [1]]  # FK's last batch again (rows kept, no summary: for its NFE), DPS's new image
    assert "was set to 3 images and holds rows of images up to 1; continuing it with 2" in capsys.readouterr().out
    assert "partial" not in (out / "results.md").read_text() and "of 2 images" not in (out / "results.md").read_text()
    # results.csv lost (a per_image.csv left): not started over in silence
    (out / "results.csv").unlink()
    assert cli.main(argv + ["--num-images", "2"]) == 2
    assert "holds results of an earlier run; pass --resume" in capsys.readouterr().err
    assert cli.main(argv + ["--num-images", "2", "--steps", "3", "--resume"]) == 2
    assert "steps: 2 there, 3 here" in capsys.readouterr().err
    calls.clear()
    assert cli.main(argv + ["--num-images", "2", "--resume"]) == 0
    assert calls == [[1], [1]]  # each pair's last batch runs again for its NFE and potential


def test_resume_compares_an_arch_config_by_its_contents(tmp_path, capsys):
    """As afdps restore's journal: settings.json kept --arch as typed, so a config edited in place resumed and the
    same config under another path was refused."""
    ckpt = torch.load(Path(__file__).resolve().parents[1] / "bindings" / "data" / "mnist_prior.pt", weights_only=True)
    torch.save(ckpt["state_dict"], tmp_path / "raw.pt")
    cfg, copy = tmp_path / "cfg.json", tmp_path / "copy.json"
    for f in (cfg, copy):
        f.write_text(json.dumps(ckpt["config"]))
    argv = EVAL + ["--methods", "dps", "--num-images", "1", "--prior", str(tmp_path / "raw.pt"),
                   "--out", str(tmp_path / "o")]
    assert cli.main(argv + ["--arch", str(cfg)]) == 0
    assert "(config sha256 " in json.loads((tmp_path / "o" / "settings.json").read_text())["arch"]
    assert cli.main(argv + ["--arch", str(copy), "--resume"]) == 0
    cfg.write_text(json.dumps({**ckpt["config"], "num_head_channels": -1}))
    capsys.readouterr()
    assert cli.main(argv + ["--arch", str(cfg), "--resume"]) == 2
    assert "settings differ" in capsys.readouterr().err


# ---- a third audit (2026-12-07): a failure names the image of the run, a broken settings file is named ----------

def test_a_dead_ensemble_names_the_image_of_the_run_and_what_ran(tmp_path, capsys):
    """With one image per batch, the second image's death was reported as "image 0" (its index in the batch), with
    no task or method, and a hint to try the guidance and tempering the run had already."""
    out = tmp_path / "o"
    rc = cli.main(["eval", "--num-images", "2", "--batch-size", "1", "--particles", "2", "--steps", "3", "--task",
                   "sr4", "--methods", "afdps-sde", "--sigma-y", "1.23e-7", "--seed", "3", "--no-progress",
                   "--threads", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert ("afdps-sde on sr4: every particle of image 1 has died after step 2" in err
            and "try more steps (it had 3), or a larger sigma_y: 1.23e-07" in err), err
    assert "guidance='exact'" not in err and "tempering=" not in err  # the run had both
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["image"] for r in rows] == ["0"]  # image 0 did finish


@pytest.mark.parametrize("text, match", [('{"prior": "mnist",\n', "not JSON"), ("[1, 2]", "a JSON list, not an object")])
def test_resume_names_a_broken_settings_file(tmp_path, capsys, text, match):
    out = tmp_path / "o"
    assert cli.main(EVAL[:5] + ["--num-images", "1", "--methods", "dps", "--out", str(out)]) == 0
    (out / "settings.json").write_text(text)
    capsys.readouterr()
    assert cli.main(EVAL[:5] + ["--num-images", "1", "--methods", "dps", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume: " in err and "settings.json' is not the settings file afdps eval writes" in err and match in err


def test_eval_scores_with_a_classifier_the_user_trained(tmp_path, capsys):
    """A classifier from afdps train-classifier could only be used from Python (eval always took the shipped one):
    --classifier takes its file, names it in results.md and records its bytes; with --images (no labels) it is
    refused."""
    from afdps.shipped import SHIPPED_CLASSIFIERS, data_path
    mine = tmp_path / "mine.pt"
    mine.write_bytes(data_path(SHIPPED_CLASSIFIERS["mnist"]).read_bytes())
    opts = ["--num-images", "1", "--particles", "2", "--steps", "2", "--task", "box", "--methods", "fk",
            "--no-progress"]
    assert cli.main(["eval", *opts, "--classifier", str(mine), "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["eval", *opts, "--out", str(tmp_path / "b")]) == 0
    rows = [next(csv.DictReader(open(tmp_path / o / "results.csv"))) for o in ("a", "b")]
    assert rows[0]["accuracy_best"] == rows[1]["accuracy_best"] != ""  # the same bytes: the same scores
    assert f"by the classifier {mine}" in (tmp_path / "a" / "results.md").read_text()
    # the shipped classifier's bytes under another path are the shipped classifier: a resume of a run made with the
    # default takes them (it was refused as another classifier); other bytes are recorded by path and digest
    assert json.loads((tmp_path / "a" / "settings.json").read_text())["classifier"] == "mnist"
    assert cli.main(["eval", *opts, "--classifier", str(mine), "--out", str(tmp_path / "b"), "--resume"]) == 0
    state = torch.load(mine, weights_only=False)
    first = next(iter(state["state_dict"]))
    state["state_dict"][first] = state["state_dict"][first] * 1.01
    torch.save(state, mine)
    assert cli.main(["eval", *opts, "--classifier", str(mine), "--out", str(tmp_path / "e")]) == 0
    settings = json.loads((tmp_path / "e" / "settings.json").read_text())
    assert settings["classifier"].startswith(str(mine.resolve())) and " sha256 " in settings["classifier"]
    assert cli.main(["eval", *opts, "--out", str(tmp_path / "c"), "--images", str(tmp_path), "--classifier",
                     str(mine)]) == 2
    assert "--images has no labels" in capsys.readouterr().err
    prior_file = data_path("mnist_prior.pt")  # a prior given as the classifier is named as one
    assert cli.main(["eval", *opts, "--out", str(tmp_path / "d"), "--classifier", str(prior_file)]) == 2
    assert "(a diffusion prior's, from train-prior?)" in capsys.readouterr().err


def test_resume_names_settings_as_the_options_take_them_and_a_foreign_row(tmp_path, capsys):
    """A default left out of settings.json was shown as None ("ess_threshold: 0.3 there, None here", where 0.5
    runs), and corrector_snr as a tuple's text; a per_image.csv row that is not afdps eval's gave a bare comparison
    error, a binary file a codec error, neither naming the file."""
    base = EVAL[:5] + ["--num-images", "1", "--no-progress"]
    out = tmp_path / "o"
    assert cli.main(base + ["--methods", "afdps-ode", "--corrector-snr", "0.1,0.3", "--ess-threshold", "0.3",
                            "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(base + ["--methods", "afdps-ode", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "corrector_snr: '0.1,0.3' there, '0.1,0.2' here" in err and "ess_threshold: 0.3 there, 0.5 here" in err
    rows = (out / "per_image.csv").read_text().splitlines()
    (out / "per_image.csv").write_text("\n".join([rows[0], rows[1].replace(",0,", ",x,", 1)]) + "\n")
    common = base + ["--methods", "afdps-ode", "--corrector-snr", "0.1,0.3", "--ess-threshold", "0.3", "--out",
                     str(out), "--resume"]
    assert cli.main(common) == 2
    assert "per_image.csv', line 2: not a row afdps eval writes" in capsys.readouterr().err
    (out / "per_image.csv").write_bytes(bytes(range(128, 256)))
    assert cli.main(common) == 2
    assert "per_image.csv' is not the per-image CSV afdps eval writes ('utf-8' codec" in capsys.readouterr().err
    (out / "per_image.csv").write_text("\n".join(rows) + "\n")
    (out / "results.csv").write_bytes(bytes(range(128, 256)))
    assert cli.main(common) == 2
    assert "results.csv' is not the summary CSV afdps eval writes ('utf-8' codec" in capsys.readouterr().err


def test_read_eval_rows_names_the_first_row_afdps_eval_does_not_write(tmp_path):
    from afdps.engine.evaluate import NotEvalRows, read_eval_rows
    path = tmp_path / "rows.csv"
    path.write_text("task,method,image,psnr\nbox,fk,0,12.5\nbox,fk,1,13\n")
    assert [r["image"] for r in read_eval_rows(path)] == [0, 1]
    for text, line in [("task,method,image\nbox,fk,0\nbox,fk,-1\n", 3), ("task,method,image\nbox,fk,0.5\n", 2),
                       ("task,image\nbox,0\n", 2), ("task,method,image\n7,fk,0\n", 2)]:
        path.write_text(text)
        with pytest.raises(NotEvalRows, match=f"line {line}: not a row afdps eval writes") as info:
            read_eval_rows(path)
        assert info.value.line == line
    path.write_text("task,method\nbox,fk\n")
    assert read_eval_rows(path, per_image=False) == [{"task": "box", "method": "fk"}]
    with pytest.raises(NotEvalRows, match="image index >= 0"):
        read_eval_rows(path)
    path.write_bytes(bytes(range(128, 256)))
    with pytest.raises(NotEvalRows, match="'utf-8' codec") as info:
        read_eval_rows(path, per_image=False)
    assert info.value.line is None


@pytest.mark.parametrize("option, value, says", [
    ("--steps", "1000001", "--steps: must be an integer in [1, 1000000]"),
    ("--sigma-y", "1e-300", "--sigma-y: must be a number >= 1e-18"),
    ("--corrector-snr", "0.1,1e300", "--corrector-snr: must be a positive number r or a pair r_early,r_late of "
                                     "positive numbers, each at most 100"),
])
def test_eval_bounds_what_the_sampler_cannot_run_in_its_own_words(option, value, says, capsys):
    """A billion steps ran out of memory with an empty message, sigma_y 1e-300 divided by zero, r 1e300
    overflowed, each after the prior had loaded and under the API's names; argparse now refuses them."""
    with pytest.raises(SystemExit):
        cli.main(EVAL + [option, value, "--out", "unused"])
    assert says in capsys.readouterr().err


def test_a_memory_refusal_names_the_cli_options(tmp_path, capsys):
    """The sampler's memory refusal says "lower num_particles ... the prior's batch_size" (the API's names); the CLI
    adds its own options' names."""
    assert cli.main(EVAL[:1] + ["--particles", "20000000", "--steps", "2", "--task", "box", "--num-images", "1",
                                "--no-progress", "--methods", "fk", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "lower num_particles" in err and "(in afdps eval: num_particles is --particles, the images per call " \
        "--batch-size)" in err


def test_resume_takes_a_run_that_recorded_the_shipped_classifier_by_path(tmp_path):
    """Before 2026-12-07 --classifier at the shipped file's path was recorded as "PATH sha256 DIGEST"; such a run
    resumes with the default --classifier (now recorded as "mnist")."""
    from afdps.engine.io import content_digest
    from afdps.shipped import SHIPPED_CLASSIFIERS, data_path
    out = tmp_path / "o"
    opts = EVAL[:5] + ["--num-images", "1", "--methods", "dps", "--out", str(out)]
    assert cli.main(opts) == 0
    settings = json.loads((out / "settings.json").read_text())
    shipped = data_path(SHIPPED_CLASSIFIERS["mnist"])
    settings["classifier"] = f"{shipped} sha256 {content_digest(shipped)}"
    (out / "settings.json").write_text(json.dumps(settings))
    assert cli.main(opts + ["--resume"]) == 0
