"""Files and progress (engine/io.py): the atomic writer, the progress helper, markdown tables."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from afdps.engine import io


def test_atomic_write_replaces_whole_files_and_cleans_up(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    io.write_text(path, "first")
    assert path.read_text() == "first" and oct(path.stat().st_mode & 0o777) == "0o644"

    def broken(f):
        f.write(b"half")
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="disk full"):
        io.atomic_write(path, broken)
    assert path.read_text() == "first"  # the old file is intact
    assert os.listdir(path.parent) == ["f.txt"]  # and no temporary is left


def test_json_torch_png_writers(tmp_path):
    io.write_json(tmp_path / "m.json", {"a": 1.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1.5}
    io.save_torch({"w": torch.ones(2)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["w"], torch.ones(2))
    img = (np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20)
    io.save_png(img, tmp_path / "i.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "i.png")), img)


def test_progress_bar_off_is_a_null_bar():
    bar = io.progress_bar(10, "x", False)
    assert isinstance(bar, io.NullBar)
    bar.update(3), bar.set_postfix(ess="1"), bar.set_postfix_str("s"), bar.close()
    shown = io.progress_bar(2, "x", True)
    shown.update(2)
    shown.close()
    assert not isinstance(shown, io.NullBar)


def test_markdown_table():
    assert io.markdown_table(["a", "b"], [["1", "2"], ["3", "4"]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |"


def test_line_bar_logs_progress_without_a_terminal(capsys, monkeypatch):
    """Long jobs (afdps eval) write plain progress lines when stderr is a log file, not a terminal."""
    from afdps.engine import io

    monkeypatch.setattr(io.sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(io.progress_bar(4, "eval", None), io.NullBar)
    assert not isinstance(io.progress_bar(4, "eval", False, lines=True), io.LineBar)
    bar = io.progress_bar(4, "eval", None, lines=True)
    assert isinstance(bar, io.LineBar)
    bar.every = 0.0
    bar.update(1)
    bar.update(3)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("eval: 1/4 (25%), ") and "left" in err[0]
    assert err[1].startswith("eval: 4/4 (100%), ") and "left" not in err[1]
    # a resumed job (train-prior at step 90 of 100): the time left comes from this invocation's steps only, and a
    # postfix (the loss) rides on the line
    bar = io.progress_bar(100, "train-prior", None, lines=True, initial=90)
    bar.every = 0.0
    bar.t0 -= 10.0  # 10 s for its first 5 steps: 5 left take about 10 s (the steps before would have said 1 s)
    bar.set_postfix_str("loss 0.0312")
    bar.update(5)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("train-prior: 95/100 (95%), 10 s elapsed, about 10 s left, loss 0.0312"), line
    # kept work met on the way (afdps eval --resume skips finished batches as it reaches them): counted, not in the
    # rate; it made 8 of 12 batches look done in no time, and the time left a fraction of the truth
    bar = io.progress_bar(12, "eval", None, lines=True)
    bar.every = 0.0
    io.skip(bar, 8)
    bar.t0 -= 10.0  # 10 s for the one batch that ran: 3 left take about 30 s
    bar.update(1)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("eval: 9/12 (75%), 10 s elapsed, about 30 s left"), line
    io.skip(io.NullBar(), 3)  # (no bar: nothing)


def test_a_tqdm_bar_skips_kept_work_outside_its_rate():
    from afdps.engine import io

    bar = io.progress_bar(12, "eval", True)
    io.skip(bar, 8)
    assert bar.n == 8 and bar.initial == 8 and bar.last_print_n == 8  # what tqdm's rate is taken from, past them
    bar.close()


def test_content_digest_follows_a_checkpoint_s_bytes(tmp_path):
    """A file's digest is its sha256 (first 16 hex digits); a model folder's covers config.json and the weight files
    (their names and bytes) but not notes or caches beside them, so a README added to the folder does not refuse a
    resume while retrained weights do."""
    import hashlib
    f = tmp_path / "w.pt"
    f.write_bytes(b"weights")
    assert io.content_digest(f) == hashlib.sha256(b"weights").hexdigest()[:16]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"abc")
    before = io.content_digest(folder)
    (folder / "README.md").write_text("notes")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.lock").write_text("")
    assert io.content_digest(folder) == before
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"abd")
    assert io.content_digest(folder) != before
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"abc")
    (folder / "config.json").write_text('{"a": 1}')
    assert io.content_digest(folder) != before


def test_content_digest_covers_a_pipeline_s_scheduler(tmp_path):
    """A diffusers pipeline's unet/ folder takes its noise schedule from ../scheduler/scheduler_config.json (the
    loader reads it there), so a changed schedule changes the digest a resumed run compares; a folder without one
    keeps the digest of its own files."""
    unet = tmp_path / "pipe" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text("{}")
    (unet / "diffusion_pytorch_model.safetensors").write_bytes(b"abc")
    alone = io.content_digest(unet)
    sched = tmp_path / "pipe" / "scheduler"
    sched.mkdir()
    (sched / "scheduler_config.json").write_text('{"beta_start": 0.0001, "beta_end": 0.02}')
    first = io.content_digest(unet)
    assert first != alone and io.scheduler_config(unet) == (sched / "scheduler_config.json").resolve()
    (sched / "scheduler_config.json").write_text('{"beta_start": 0.00085, "beta_end": 0.012}')
    assert io.content_digest(unet) not in (alone, first)
    (sched / "notes.txt").write_text("x")  # only the config counts
    second = io.content_digest(unet)
    (sched / "notes.txt").write_text("y")
    assert io.content_digest(unet) == second
