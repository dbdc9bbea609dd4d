"""The evaluation harness (``afdps eval``): task operators, a smoke run of the command with its files,
results independent of the batch size, and usage errors."""
import csv

import pytest
import torch

from afdps import cli, ops
from afdps.engine import evaluate as ev


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
    assert "resampling below ESS/N 0" in (tmp_path / "results.md").read_text()


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


def test_image_folder(tmp_path):
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
    loaded = load_image_folder(folder, (1, 28, 28), 2)
    assert loaded.shape == (2, 1, 28, 28) and float(loaded.min()) >= -1 and float(loaded.max()) <= 1
    with pytest.raises(ValueError, match="holds 2 images"):
        load_image_folder(folder, (1, 28, 28), 3)
    rc = cli.main(["eval", "--images", str(folder), "--num-images", "2", "--particles", "2", "--steps", "2",
                   "--task", "sr4", "--methods", "afdps-sde", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    row = next(csv.DictReader(open(tmp_path / "o" / "results.csv")))
    assert row["accuracy_best"] == "" and float(row["psnr_best"]) > 0
    assert "acc. best" not in (tmp_path / "o" / "results.md").read_text()
