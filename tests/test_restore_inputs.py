"""`afdps restore` on the files users hold (a fourth audit, 2026-12-07): names with glob characters, hidden and
stray files, the same file twice, names that are the run's own files, manifests from spreadsheets and with a
command-line kernel, unreadable arrays and images, masks with JPEG noise, EXIF orientation, colour to gray, exact
reference lookup, links in index.html, and every bad input refused before any image is restored."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from afdps import cli
from afdps.engine import data
from afdps.engine import restore as rs

FAST = ["--prior", "mnist", "--particles", "2", "--steps", "3", "--no-progress", "--threads", "1"]


def _png(a, path):
    Image.fromarray(np.asarray(a, dtype=np.uint8)).save(path)


def _digit(path, value=128):
    _png(np.full((28, 28), value), path)


# ---- which files a run takes ---------------------------------------------------------------------------------

def test_files_are_taken_by_name_folders_skip_hidden_and_stray_files(tmp_path, monkeypatch):
    """A file named on the command line is taken whatever its name holds ('[' was read as a glob and refused); a
    folder or a pattern takes measurement files only, never hidden ones (macOS's '._a.png' metadata was read
    first and stopped the run; a pattern took .DS_Store and notes.txt)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    for name in ("scan [1].png", "a.png", "._a.png", ".hidden.png"):
        _digit(tmp_path / "in" / name)
    (tmp_path / "in" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "in" / "notes.txt").write_text("x")
    assert rs._expand(["in/scan [1].png"]) == [Path("in/scan [1].png")]
    assert [p.name for p in rs._expand(["in"])] == ["a.png", "scan [1].png"]
    assert [p.name for p in rs._expand(["in/*"])] == ["a.png", "scan [1].png"]
    with pytest.raises(FileNotFoundError, match="the pattern 'in/\\*.txt' matches no measurement file"):
        rs._expand(["in/*.txt"])


def test_the_same_file_twice_is_named_as_such(tmp_path):
    (tmp_path / "in").mkdir()
    _digit(tmp_path / "in" / "gray.png")
    with pytest.raises(ValueError, match="the measurement .*gray.png' is given twice"):
        rs._expand([str(tmp_path / "in"), str(tmp_path / "in" / "gray.png")])


def test_a_symbolic_link_is_an_image_of_its_own(tmp_path):
    (tmp_path / "in").mkdir()
    _digit(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").symlink_to(tmp_path / "in" / "a.png")
    assert [p.name for p in rs._expand([str(tmp_path / "in")])] == ["a.png", "b.png"]


def test_names_of_the_runs_own_files_are_refused(tmp_path):
    """An image named index.html or journal*.jsonl would write its folder over the run's index or be read as a
    journal (it failed with IsADirectoryError after its folder and journal line were written)."""
    _digit(tmp_path / "index.html.png")
    with pytest.raises(ValueError, match="the name 'index.html' is taken by the run's own files"):
        rs.jobs_from_inputs([str(tmp_path / "index.html.png")], task="denoise")
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "index.html.png", "name": "journal.x.jsonl"}) + "\n")
    with pytest.raises(ValueError, match="row 1: the name 'journal.x.jsonl' is taken"):
        rs.jobs_from_manifest(tmp_path / "m.jsonl", defaults={"task": "denoise"})
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "...png", format="PNG")  # stem '..': outputs
    # were written beside --out
    with pytest.raises(ValueError, match="the name '..' must be a plain file name"):
        rs.jobs_from_inputs([str(tmp_path / "...png")], task="denoise")


def test_names_that_differ_only_in_case_are_one_name(tmp_path):
    """On macOS and Windows the folders out/A and out/a are one: d1/A.png and d2/a.png wrote their outputs into one
    folder, the second over the first, and the journal kept both. They are named as stems that collide now
    (<folder>_<stem>); manifest names and the run's own file names are compared without case too."""
    for d, stem in (("d1", "A"), ("d2", "a")):
        (tmp_path / d).mkdir()
        _digit(tmp_path / d / f"{stem}.png")
    jobs = rs.jobs_from_inputs([tmp_path / "d1", tmp_path / "d2"], task="denoise")
    assert [j.name for j in jobs] == ["d1_A", "d2_a"]
    assert [j.seed for j in jobs] == [rs.seed_of("A"), rs.seed_of("a")]  # a seed is its stem's, as before
    rows = [{"path": "d1/A.png", "name": "Digit"}, {"path": "d2/a.png", "name": "digit"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"names images more than once: \['Digit', 'digit'\] \(names that differ "
                                         "only in case"):
        rs.jobs_from_manifest(tmp_path / "m.jsonl", defaults={"task": "denoise"})
    # a resume that brings an image whose name differs from a journaled one only in case (its folder is that one's)
    out = tmp_path / "out"
    assert cli.main(["restore", str(tmp_path / "d1" / "A.png"), "--task", "denoise", "--out", str(out), *FAST]) == 0
    with pytest.raises(ValueError, match=r"--resume: 'a' differs only in case from 'A', which the run in"):
        rs.restore(None, [rs.Job(str(tmp_path / "d2" / "a.png"), "denoise", "a", seed=1)], out, sample_options={},
                   resume=True, handle_sigterm=False)
    (tmp_path / "dup").mkdir()  # one folder, one stem: <folder>_<stem> cannot part them; the error names the files
    _digit(tmp_path / "dup" / "a.png")
    np.save(tmp_path / "dup" / "a.npy", np.zeros((28, 28), np.float32))
    with pytest.raises(ValueError, match=r"several inputs would be named \['dup_a'\] \(.*dup/a.npy, .*dup/a.png; names"):
        rs.jobs_from_inputs([tmp_path / "dup"], task="denoise")
    _digit(tmp_path / "INDEX.html.png")
    with pytest.raises(ValueError, match="the name 'INDEX.html' is taken by the run's own files"):
        rs.jobs_from_inputs([str(tmp_path / "INDEX.html.png")], task="denoise")


# ---- manifests ----------------------------------------------------------------------------------------------

def test_manifest_paths_a_command_line_kernel_a_byte_order_mark_and_cell_types(tmp_path, monkeypatch):
    """A row's files are relative to the manifest; --kernel and --mask from the command line to the working
    folder (they were joined to the manifest's folder: 'no kernel file at man/k/ok.npy'). A spreadsheet's CSV
    with a byte-order mark reads; a number where a path belongs is named with its row."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "man").mkdir()
    _digit(tmp_path / "man" / "a.png")
    (tmp_path / "man" / "blur.jsonl").write_text(
        json.dumps({"path": "a.png"}) + "\n" + json.dumps({"path": "a.png", "name": "b", "kernel": "own.npy"}) + "\n")
    jobs = rs.jobs_from_manifest(tmp_path / "man" / "blur.jsonl", defaults={"task": "blur", "kernel": "k/ok.npy"})
    assert [j.kernel for j in jobs] == ["k/ok.npy", str(tmp_path / "man" / "own.npy")]
    (tmp_path / "man" / "sheet.csv").write_bytes("\ufeffpath,task\na.png,denoise\n".encode("utf-8"))
    assert [j.task for j in rs.jobs_from_manifest(tmp_path / "man" / "sheet.csv", defaults={})] == ["denoise"]
    for key in ("path", "kernel", "name"):
        (tmp_path / "man" / "num.jsonl").write_text(json.dumps({"path": "a.png", "task": "blur", key: 5}) + "\n")
        with pytest.raises(ValueError, match=f"row 1: {key} must be text .*got 5"):
            rs.jobs_from_manifest(tmp_path / "man" / "num.jsonl", defaults={})


# ---- reading files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,why", [
    (b"", "is empty; a .npy file of one array \\(numpy.save\\) is needed"),
    (b"0.5 0.5\n", "is not in NumPy's .npy format"),
    ("npz", "is an .npz archive; a .npy file of one array"),
    ("objects", "is not a .npy array numpy can read \\(it holds Python objects, not numbers\\)"),
    ("cut", "is not a .npy array numpy can read"),
])
def test_unreadable_arrays_are_bad_input_naming_the_file(tmp_path, content, why):
    """An empty, pickled, cut or foreign .npy was numpy's EOFError (exit 1, no file named) or its advice to pass
    allow_pickle, an option no user of the CLI has; an .npz under a .npy name was an AttributeError (exit 1)."""
    path = tmp_path / "m.npy"
    if content == "objects":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "npz":
        with open(path, "wb") as f:
            np.savez(f, a=np.zeros((28, 28)))
    elif content == "cut":
        np.save(path, np.zeros((28, 28), np.float32))
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    for read in (lambda: data.read_image(path, 1), lambda: rs.read_mask(path, (28, 28)),
                 lambda: rs.read_kernel(path)):
        with pytest.raises(ValueError, match=f"'{path}' {why}"):
            read()


def test_an_image_past_pils_bomb_limit_is_named(tmp_path, monkeypatch):
    from PIL import Image as PILImage
    _digit(tmp_path / "big.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # 784 pixels: more than twice the limit
    with pytest.raises(ValueError, match="measurement '.*big.png' is larger than PIL's limit against decompression "
                                         "bombs .*raise PIL.Image.MAX_IMAGE_PIXELS"):
        data.read_image(tmp_path / "big.png", 1)


def test_exif_orientation_is_applied(tmp_path):
    """A camera's JPEG stored 20 wide and 28 high with orientation 6 (rotate 90 degrees) is shown 28 wide and 20
    high; it was read as stored, so outputs came out turned against what the user saw and masks did not fit."""
    a = np.zeros((28, 20), np.uint8)
    a[0, :] = 255  # the stored top row: the displayed right column
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "cam.jpg", exif=exif, quality=100)
    x = data.read_image(tmp_path / "cam.jpg", 1)
    assert tuple(x.shape) == (1, 20, 28)
    assert x[0, :, -1].mean() > 0.8 and x[0, :, 0].mean() < -0.8  # the bright stored top is now the right edge


def test_colour_becomes_gray_the_same_way_for_images_and_arrays(tmp_path):
    """RGB to one channel is PIL's luma for image files and was the plain mean for .npy arrays."""
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50]] * 4, np.uint8).reshape(4, 4, 3)
    tmp = tmp_path
    Image.fromarray(rgb).save(tmp / "c.png")
    np.save(tmp / "c.npy", rgb.astype(np.float32) / 127.5 - 1)
    png, npy = data.read_image(tmp / "c.png", 1), data.read_image(tmp / "c.npy", 1)
    assert (png - npy).abs().max() <= 1 / 127.5 + 1e-6, (png, npy)  # PIL rounds L to 8 bits


def _png16(path, a16: np.ndarray) -> None:
    """A 16-bit PNG of ``a16 (H, W, C)`` uint16, C = 3 (truecolour) or 2 (gray and alpha), written by hand (PIL
    cannot write either)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    h, w, c = a16.shape
    raw = b"".join(b"\0" + a16[i].astype(">u2").tobytes() for i in range(h))
    kind = {3: 2, 2: 4}[c]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, kind, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_inputs_that_would_be_misread_are_refused_or_named(tmp_path):
    """A transparent pixel is refused (read as colour only, a digit drawn on a transparent page became one flat
    value), in measurements, masks and kernels alike, while an opaque alpha channel is dropped as before; a 16-bit
    colour PNG, which PIL reads at 8 bits, a .npy on what looks like [0, 1] and 8-bit values in a 32-bit integer
    image are read as before, with a warning that says why the result may not be what the user meant."""
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[8:20, 12:16, :3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    x = data.read_image(tmp_path / "opaque.png", 1)
    assert x.shape == (1, 28, 28) and float(x.max()) == 1.0 and float(x.min()) == -1.0
    rgba[..., 3] = np.where(rgba[..., 0] > 0, 255, 0)  # strokes on a transparent page
    Image.fromarray(rgba, "RGBA").save(tmp_path / "page.png")
    Image.fromarray(rgba[..., 3], "L").save(tmp_path / "plain.png")
    pal = Image.fromarray(rgba[..., 0], "L").convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    for name in ("page.png", "pal.png"):
        with pytest.raises(ValueError, match=r"measurement '.*%s' has 736 transparent pixel\(s\) \(alpha below 255\); "
                                             "afdps reads colour only" % name):
            data.read_image(tmp_path / name, 1)
    with pytest.raises(ValueError, match="mask '.*page.png' has 736 transparent pixel"):
        rs.read_mask(tmp_path / "page.png", (28, 28))
    assert int(rs.read_mask(tmp_path / "plain.png", (28, 28)).sum()) == 48
    k = np.zeros((5, 5, 4), np.uint8)
    k[2, 2] = (255, 255, 255, 255)  # the kernel's other pixels transparent
    Image.fromarray(k, "RGBA").save(tmp_path / "k.png")
    with pytest.raises(ValueError, match="kernel '.*k.png' has 24 transparent pixel"):
        rs._read_kernel(str(tmp_path / "k.png"), False, 0, 0)
    levels = np.arange(64 * 3, dtype=np.uint16).reshape(8, 8, 3) * 300 + 7  # not multiples of 257: 8 bits lose them
    _png16(tmp_path / "rgb16.png", levels)
    with pytest.warns(UserWarning, match="has 16-bit colour channels, which PIL \\(and so afdps\\) reads at 8 bits"):
        x = data.read_image(tmp_path / "rgb16.png", 3)
    exact = torch.from_numpy(levels.transpose(2, 0, 1) / 65535.0 * 2 - 1).float()
    assert 1e-4 < float((x - exact).abs().max()) <= 2 / 255 + 1e-6  # what the warning says: 8-bit steps (of 2 / 255 on [-1, 1])
    _png16(tmp_path / "la16.png", np.stack([levels[..., 0], np.full((8, 8), 65535, np.uint16)], -1))  # gray, alpha
    with pytest.warns(UserWarning, match="la16.png' has 16-bit colour channels"):
        data.read_image(tmp_path / "la16.png", 1)
    g16 = Image.fromarray(rgba[..., 0].astype(np.uint16) * 257)
    g16.save(tmp_path / "g16t.png", transparency=0)  # 16-bit gray whose black is transparent
    with pytest.raises(ValueError, match="g16t.png' has 736 transparent pixel"):
        data.read_image(tmp_path / "g16t.png", 1)
    np.save(tmp_path / "zero_one.npy", rgba[..., 0].astype(np.float32) / 255)
    with pytest.warns(UserWarning, match="holds no values below 0 .*if it is on \\[0, 1\\], save 2 \\* x - 1"):
        assert float(data.read_image(tmp_path / "zero_one.npy", 1).min()) == 0.0  # read as it is, not rescaled
    Image.fromarray(rgba[..., 0].astype(np.int32), "I").save(tmp_path / "i32.tif")
    with pytest.warns(UserWarning, match="is a 32-bit integer image with values up to 255: read on 0..65535"):
        data.read_image(tmp_path / "i32.tif", 1)
    import warnings
    with warnings.catch_warnings():  # an ordinary image, array and 16-bit gray file warn of nothing
        warnings.simplefilter("error")
        np.save(tmp_path / "ok.npy", rgba[..., 0].astype(np.float32) / 127.5 - 1)
        data.read_image(tmp_path / "ok.npy", 1)
        data.read_image(tmp_path / "plain.png", 1)
        Image.fromarray(rgba[..., 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")
        data.read_image(tmp_path / "g16.png", 1)


def test_a_file_warns_once_though_it_is_read_twice(tmp_path, capsys):
    """Every input is read when checked and again when restored: each of two arrays on [0, 1] is named once (the
    second was named twice when Python's warning registry decided, torch's code having reset it in between)."""
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.random.default_rng(0).random((28, 28)).astype(np.float32))
    argv = ["restore", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--task", "denoise", "--out",
            str(tmp_path / "out"), *FAST]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert [err.count(f"{name}.npy' holds no values below") for name in ("a", "b")] == [1, 1], err


def test_masks_are_observed_from_half_their_largest_value(tmp_path):
    """0/1 and 0/255 masks alike; a JPEG's noise in the black hole stays unobserved (any non-zero value counted
    as observed: 748 observed pixels where 720 were drawn); NaN and negative values are refused."""
    m = np.zeros((28, 28), np.uint8)
    m[:, :] = 1
    m[10:18, 10:18] = 0
    for scale, name in ((1, "m01.png"), (255, "m255.png")):
        _png(m * scale, tmp_path / name)
        assert int(rs.read_mask(tmp_path / name, (28, 28)).sum()) == 720
    noisy = (m * 240 + np.random.default_rng(0).integers(0, 16, m.shape)).astype(np.uint8)  # 0..15 in the hole
    _png(noisy, tmp_path / "noisy.png")
    assert int(rs.read_mask(tmp_path / "noisy.png", (28, 28)).sum()) == 720
    Image.fromarray(m * 255).save(tmp_path / "m.jpg", quality=75)
    assert abs(int(rs.read_mask(tmp_path / "m.jpg", (28, 28)).sum()) - 720) <= 8  # the hole's edge may blur
    for bad in (np.where(m > 0, 1.0, np.nan), m - 1.0):
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(ValueError, match="has negative or non-finite values"):
            rs.read_mask(tmp_path / "bad.npy", (28, 28))
    np.save(tmp_path / "bool.npy", m > 0)
    assert int(rs.read_mask(tmp_path / "bool.npy", (28, 28)).sum()) == 720


# ---- the reference folder and the index ------------------------------------------------------------------

def test_the_reference_is_the_file_with_the_exact_stem(tmp_path):
    """'a.*' matched a.bak.png, which sorts first: the image was scored against the wrong reference (4.23 dB
    against 12.32); a file name with '[' was read as a pattern and never found."""
    ref = tmp_path / "ref"
    ref.mkdir()
    _digit(ref / "a.bak.png", 0)
    _digit(ref / "a.png", 255)
    _digit(ref / "scan [1].png", 255)
    for stem in ("a", "scan [1]"):
        got = rs._reference(ref, rs.Job(str(tmp_path / f"{stem}.png"), "denoise", stem), 1)
        assert got is not None and float(got.min()) == 1.0, stem
    assert rs._reference(ref, rs.Job(str(tmp_path / "b.png"), "denoise", "b"), 1) is None
    _digit(ref / "a.jpg", 255)
    with pytest.raises(ValueError, match="holds several images named 'a' \\(a.jpg, a.png\\)"):
        rs._reference(ref, rs.Job(str(tmp_path / "a.png"), "denoise", "a"), 1)


def test_index_links_quote_the_image_names(tmp_path):
    rec = {"name": "scan#2 50%", "task": "denoise", "sigma_y": 0.05, "nfe": 3, "final_ess": 1.0, "wall_s": 0.1}
    rs._index_html(tmp_path, [rec])
    page = (tmp_path / "index.html").read_text()
    assert 'src="scan%232%2050%25/best.png"' in page and "<th>scan#2 50%<br>" in page


# ---- every input checked before any work --------------------------------------------------------------------

def test_bad_inputs_are_refused_together_before_any_image_is_restored(tmp_path, capsys):
    """A corrupt file, a size the policy refuses and a mask of another size were each found only when their
    turn came, after the images before them (hours of work on a large run), one per attempt, and a resume hit
    the same file again. Now every one is named in one error and nothing is written."""
    (tmp_path / "in").mkdir()
    _digit(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_bytes(b"not a png")
    _png(np.zeros((10, 30), np.uint8), tmp_path / "in" / "c.png")  # wider than the frame, lower than a tile
    _digit(tmp_path / "in" / "d.png")
    out = tmp_path / "out"
    assert cli.main(["restore", str(tmp_path / "in"), "--task", "denoise", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "2 of 4 image(s) cannot be restored, so none was run: b: measurement '" in err, err
    assert "is not an image PIL can read" in err and "c: 10x30 is larger than the prior's frame along one axis" in err
    assert not out.exists()  # the folder it made for them is removed again: no empty run left behind
    ref = tmp_path / "ref"
    ref.mkdir()
    _digit(ref / "a.png")
    _png(np.zeros((20, 20), np.uint8), ref / "d.png")
    mask = np.ones((28, 28), np.uint8)
    np.save(tmp_path / "mask.npy", mask[:20])
    argv = ["restore", str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "d.png"), "--out", str(out), *FAST]
    assert cli.main(argv + ["--task", "denoise", "--reference", str(ref)]) == 2
    assert ("1 of 2 image(s) cannot be restored, so none was run: d: its reference is (1, 20, 20), the restoration "
            "will be (1, 28, 28)") in capsys.readouterr().err
    assert cli.main(argv + ["--task", "box", "--mask", str(tmp_path / "mask.npy")]) == 2
    assert "2 of 2 image(s) cannot be restored" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()  # a folder the user made stays, empty or not
    (out / "d").write_text("a file where d's outputs go")
    assert cli.main(argv + ["--task", "denoise"]) == 2
    assert f"1 of 2 image(s) cannot be restored, so none was run: d: its output folder '{out / 'd'}' is a file" \
        in capsys.readouterr().err
    (out / "d").unlink()
    assert cli.main(argv + ["--task", "box", "--mask", str(tmp_path / "mask.npy")]) == 2
    assert out.is_dir() and not list(out.iterdir())


def test_a_moved_checkpoint_resumes_but_another_arch_for_its_bytes_does_not(tmp_path):
    """The same bytes under another path are the same prior; under another --arch they are not (the same weights
    with other attention heads compute otherwise): the journal keeps the arch inside its prior entry."""
    job = rs.Job(str(tmp_path / "a.png"), "denoise", "a", seed=1)
    opts = {"boundary": "valid", "kernel_flip": False, "tile_overlap": 0.25, "network_dtype": None,
            "prior_sha256": "0123456789abcdef"}
    rec = {"name": "a", **rs._job_spec(job, {**opts, "prior": "/old/w.pt --arch a.json"}, False),
           "sigma_y": 0.05, "sigma_y_estimated": False, "settings": {}}
    done = {"a": rec}
    rs._check_resumed(tmp_path, [job], done, {}, {**opts, "prior": "/new/w.pt --arch a.json"})  # moved: resumes
    with pytest.raises(ValueError, match="prior '/old/w.pt --arch a.json' then, '/new/w.pt --arch b.json' now"):
        rs._check_resumed(tmp_path, [job], done, {}, {**opts, "prior": "/new/w.pt --arch b.json"})
    with pytest.raises(ValueError, match="the checkpoint '/old/w.pt --arch a.json' changed since a in"):
        rs._check_resumed(tmp_path, [job], done, {}, {**opts, "prior": "/old/w.pt --arch a.json",
                                                        "prior_sha256": "fedcba9876543210"})


# ---- under torchrun (a multi-process read, 2026-12-07) ------------------------------------------------------

def test_each_rank_gets_its_own_gpu_for_a_bare_cuda(monkeypatch):
    """--device cuda put every rank on GPU 0 (only the default was mapped to the local rank); an explicit cuda:k
    stays as given; more ranks than GPUs are named in one sentence (it was a raw 'invalid device ordinal')."""
    from afdps.cli._common import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", 1) == torch.device("cuda:1") and resolve_device(None, 1) == torch.device("cuda:1")
    assert resolve_device("cuda:0", 1) == torch.device("cuda:0")
    with pytest.raises(ValueError, match="the default device \\(cuda:3 for this process\\): torch sees 2 CUDA device"):
        resolve_device(None, 3)


def test_the_default_threads_are_shared_by_the_ranks_on_a_machine(tmp_path, monkeypatch):
    """Each of R ranks took the one-process default (half the cores, at most 8): R times the cores' threads."""
    from afdps.cli._common import DEFAULT_THREADS
    _digit(tmp_path / "a.png")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    before = torch.get_num_threads()
    try:
        assert cli.main(["restore", str(tmp_path / "a.png"), "--task", "denoise", "--out", str(tmp_path / "o"),
                         *[a for a in FAST if a not in ("--threads", "1")]]) == 0
        assert torch.get_num_threads() == max(1, DEFAULT_THREADS // 2)
    finally:
        torch.set_num_threads(before)


def test_other_ranks_check_inputs_without_repeating_rank_0s_warnings(tmp_path):
    """Under torchrun every rank reads every input before the first image; only rank 0 (``quiet=False``) prints the
    reading warnings, and a rank that checked quietly does not print them later when it restores its share (each
    file warns once per process), so a launch of R ranks prints each warning once, not R times."""
    import warnings
    page = np.zeros((28, 28), np.float32)
    page[8:20, 12:16] = 1.0
    for name in ("rank0", "rank1"):  # two files, so that one process's quiet check cannot hide the other's warning
        np.save(tmp_path / f"{name}.npy", page)  # on [0, 1]: read as it is, with a warning
    jobs = {name: rs.jobs_from_inputs([str(tmp_path / f"{name}.npy")], task="denoise", kernel=None, mask=None,
                                      factor=None, sigma_y=0.05, seed=0) for name in ("rank0", "rank1")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rs.check_inputs(jobs["rank1"], (1, 28, 28), quiet=True)
        data.read_image(tmp_path / "rank1.npy", 1)  # the restoration's own read, on the quiet rank
    assert [str(w.message) for w in caught] == []
    with pytest.warns(UserWarning, match="rank0.npy' holds no values below 0"):
        rs.check_inputs(jobs["rank0"], (1, 28, 28))


def test_readers_refuse_what_they_would_misread(tmp_path):
    """A user audit (2026-12-07): a .npy with one pixel at 1e30 passed the quantile rule; a float TIFF holding NaN
    was reported as "values from nan to nan"; channels=2 said a gray file "has 3 channels"; to_unit rescaled a
    float image by 127.5 as if it were 8-bit; load_image_folder took num_images=-1 as "all but the last"."""
    a = np.zeros((28, 28), np.float32)
    a[3, 4] = 1e30
    np.save(tmp_path / "wild.npy", a)
    with pytest.raises(ValueError, match=r"wild.npy' has 1 value\(s\) beyond \+-20 \(up to 1e\+30\)"):
        data.read_image(tmp_path / "wild.npy", 1)
    f = np.full((8, 8), 0.5, np.float32)
    f[0, 0] = np.nan
    Image.fromarray(f, "F").save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match=r"nan.tif' is a float image with 1 non-finite value\(s\)"):
        data.read_image(tmp_path / "nan.tif", 1)
    f[0, 0] = 1e6
    Image.fromarray(f, "F").save(tmp_path / "hot.tif")
    with pytest.raises(ValueError, match=r"hot.tif' is a float image with 1 value\(s\) far outside \[0, 1\]"):
        data.read_image(tmp_path / "hot.tif", 1)
    _png(torch.zeros(8, 8), tmp_path / "gray.png")
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        data.read_image(tmp_path / "gray.png", 2)
    with pytest.raises(ValueError, match="to_unit takes an \\(H, W, 3\\) uint8 image on 0..255, got float32"):
        data.to_unit(np.zeros((4, 4, 3), np.float32))
    assert float(data.to_unit(np.full((4, 4, 3), 255, np.uint8)).min()) == 1.0
    for bad in (-1, 0):
        with pytest.raises(ValueError, match=f"num_images must be an integer >= 1, got {bad}"):
            data.load_image_folder(tmp_path, (1, 8, 8), bad)
