"""Every benchmark (bench/bench_*.py) runs in smoke mode (tiny shapes, CPU) so that none of them rots,
and the runner's table and CSV helpers behave."""
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# bench_adm's smoke run (all seven of its variants, each checked against float64) is
# tests/test_adm.py::test_bench_smoke; running its three default variants here too cost 13 s on the 2-core CPU.
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py") if p.stem != "bench_adm")


@pytest.mark.parametrize("name", BENCHES)
def test_benchmark_smoke(name, tmp_path):
    env = dict(os.environ, AFDPS_BENCH_RESULTS=str(tmp_path), TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", f"bench.{name}", "--smoke"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "|" in out.stdout  # printed a table
    for path in tmp_path.glob("*.csv"):  # runner-based benchmarks: stamped rows, no failed variant
        rows = list(csv.DictReader(path.open()))
        assert rows and all(r["device"] and r["torch"] and r["git"] for r in rows)
        assert not [r for r in rows if r["note"].startswith("failed")], [r["note"] for r in rows]
        # rel err against float64 (a step's x_new and dlogw both): a few roundings of the storage dtype (unit
        # roundoff 6e-8 float32, 3.9e-3 bfloat16) with room for the Philox noise's and the FFT's sums; a wrong
        # formula is O(1)
        limit = {"float32": 1e-4, "bfloat16": 2e-2, "float64": 1e-10}
        wrong = [(r["variant"], r["dtype"], r["rel err"]) for r in rows if r.get("rel err")
                 and not float(r["rel err"]) <= limit.get(r["dtype"], 1e-4)]
        assert not wrong, wrong


def test_run_all_lists_and_rejects(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "bench.run", "no_such_bench"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown benchmark" in out.stderr


def test_runner_table_and_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("AFDPS_BENCH_RESULTS", str(tmp_path))
    sys.path.insert(0, str(ROOT))
    from bench import runner

    rows = runner.run_case("demo", "c", "4", "float32", 1 << 20,
                           {"torch_unfused": lambda: sum(range(1000)), "triton_fused": lambda: sum(range(100)),
                            "broken": runner.Variant(None, note="failed: demo")}, "cpu", rep_ms=5,
                           env={"device": "cpu", "torch": "t", "triton": "x", "git": "g", "time": "now"})
    assert {r["variant"] for r in rows} == {"torch_unfused", "triton_fused", "broken"}
    fused = next(r for r in rows if r["variant"] == "triton_fused")
    assert fused["x unfused"] > 0 and fused["GB/s"] > 0 and fused["ms_q20"] <= fused["ms"] <= fused["ms_q80"]
    table = runner.markdown_table(rows)
    assert table.count("\n") == 4 and "| broken |" in table.replace("| c | 4 | float32 ", "")
    path = runner.append_csv("demo", rows)
    runner.append_csv("demo", rows)
    assert len(list(csv.DictReader(path.open()))) == 6
    assert runner.git_revision()


def _dry_run(script: str, *extra: str) -> tuple[str, list]:
    """A device script's plan (``--dry-run``): its whole output and the stage lines (``+ timeout LIMIT CMD``)."""
    out = subprocess.run(["bash", str(ROOT / "bench" / script), "--dry-run", *extra], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout, [ln for ln in out.stdout.splitlines() if ln.startswith("+ timeout ")]


def test_gpu_check_dry_run():
    stdout, _ = _dry_run("gpu_check.sh")
    for needle in ("pip install --no-deps --no-build-isolation", "pytest -q -m gpu or interpreter",
                   "bench.bench_particle_step", "bench.bench_resample", "bench.bench_fourier"):
        assert needle in stdout


def test_gpu_adm_dry_run():
    """make gpu-adm's plan (issue 12): the install, the ADM variants with the profile, the ImageNet configuration,
    whole restorations, other batches and torch.compile last; its stages are cut to a deadline in one device call."""
    _, lines = _dry_run("gpu_adm.sh")
    assert "pip install --no-deps --no-build-isolation" in lines[0]
    assert "bench.bench_adm" in lines[1] and "fast-cl" in lines[1] and "cudnn" not in lines[1]
    # the autotuned variants in processes of their own (cuDNN's plan cache ignores the flag), never beside plain ones
    adm = [ln.split("--variants ")[1].split()[0] for ln in lines if "bench.bench_adm" in ln]
    assert all(all("cudnn" in v for v in vs.split(",")) or not any("cudnn" in v for v in vs.split(",")) for vs in adm)
    assert "--profile fast-cl+cudnn" in lines[2]
    assert any("adm-imagenet256" in ln for ln in lines) and "compile" in lines[-1]
    assert sum("bench.bench_restoration" in ln and "--particles 256" in ln for ln in lines) == 4
    assert "DEADLINE" in (ROOT / "bench" / "gpu_adm.sh").read_text()
    tests = next(i for i, ln in enumerate(lines) if "pytest" in ln)  # the kernels' GPU tests before the restorations
    assert "adm-imagenet256" in lines[tests - 1] and "bench.bench_restoration" in lines[tests + 1]


def test_gpu_session_dry_run():
    """make gpu-session, the one call of a 15-minute lease: gpu-adm without its GroupNorm sweep, then the grid's
    remaining cells, both cut to deadlines that end the call inside 10 minutes."""
    _, lines = _dry_run("gpu_session.sh")
    adm = [ln for ln in lines if "bench.bench_adm" in ln]
    assert adm and not any("--gn-sweep" in ln for ln in adm)
    sweeps = [ln for ln in lines if "bench.sweep_mnist" in ln]
    assert sweeps and lines.index(sweeps[0]) > lines.index(adm[-1]) and not any("afdps.cli eval" in ln for ln in lines)
    text = (ROOT / "bench" / "gpu_session.sh").read_text()
    assert "GPU_ADM_SECONDS:-400" in text and "GPU_SESSION_SECONDS:-560" in text


def test_device_results_come_back_in_one_tarball(tmp_path):
    """What a device call writes under bench/results (new files, and CSVs appended to) is packed into
    $OUT/bench_results.tgz after each stage; files older than the script's start are not (the tool returns at most
    8 files, 2 folders deep: the grid writes dozens, 3 deep, and nothing used to come back from gpu_eval.sh)."""
    import tarfile
    import time

    (tmp_path / "bench" / "results" / "old").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "old" / "kept.csv").write_text("a\n")
    time.sleep(0.05)
    out = tmp_path / "out"
    out.mkdir()
    script = (f". {ROOT / 'bench' / 'gpu_common.sh'}; MODE=full; sleep 0.05; mkdir -p bench/results/sweep/a/b; "
              "echo x > bench/results/sweep/a/b/sweep.md; echo b >> bench/results/old/kept.csv; "
              "run 5 true; ls bench/results/sweep/a/b")
    p = subprocess.run(["bash", "-c", script], cwd=tmp_path, env={**os.environ, "OUT": str(out)}, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    with tarfile.open(out / "bench_results.tgz") as tar:
        assert sorted(tar.getnames()) == ["bench/results/old/kept.csv", "bench/results/sweep/a/b/sweep.md"]
    assert sorted(f.name for f in out.iterdir()) == ["bench_results.tgz"]


def test_gpu_eval_dry_run():
    """make gpu-eval's plan: the install, the one-run table of all methods x five tasks on the 100 development
    digits, then the grid stages on the same digits, cut to a deadline inside one 600 s device call; with
    --remaining, the grid's stages without the table and without the configurations measured on 2026-12-04."""
    _, lines = _dry_run("gpu_eval.sh")
    assert "pip install --no-deps --no-build-isolation" in lines[0]
    assert "afdps.cli eval" in lines[1] and "--num-images 100" in lines[1] and "--device cuda" in lines[1]
    assert "--methods" not in lines[1]  # all four methods
    assert all("bench.sweep_mnist" in ln and "--num-images 100" in ln for ln in lines[2:]) and len(lines) > 3
    for ln in lines[1:]:
        assert "--task gaussian-blur,motion-blur,sr4,box,random70" in ln or \
            "--tasks gaussian-blur,motion-blur,sr4,box,random70" in ln
    assert any("--methods fk" in ln and "--ess-threshold 0" in ln for ln in lines[2:])  # the diversity lead
    text = (ROOT / "bench" / "gpu_eval.sh").read_text()
    assert "DEADLINE=$((T0 + ${GPU_EVAL_SECONDS:-560}))" in text  # every stage cut to fit one device call
    _, rest = _dry_run("gpu_eval.sh", "--remaining")
    assert not any("afdps.cli eval" in ln for ln in rest) and len(rest) == len(lines) - 3  # (no table, no potentials:
    assert not any("--potentials noisy" in ln for ln in rest)  # the rest of them ran on the CPU)
    assert all("--out bench/results/sweep_mnist_gpu-" in ln for ln in rest[1:])


def test_sweep_mnist_rows_per_schedule(tmp_path):
    """bench/sweep_mnist.py writes one row per task x configuration, in the coordinates asked for: the VE
    (EDM grid) run is another run than the VP one on the same digit and seeds."""
    sys.path.insert(0, str(ROOT))
    from bench import sweep_mnist

    psnr = {}
    for schedule in sweep_mnist.SCHEDULES:
        out = tmp_path / schedule
        assert sweep_mnist.main(["--num-images", "1", "--tasks", "box", "--methods", "afdps-sde", "--potentials",
                                 "scaled", "--temperings", "ve-linear", "--steps", "2", "--batch-size", "1",
                                 "--schedule", schedule, "--out", str(out)]) == 0
        rows = list(csv.DictReader((out / "sweep.csv").open()))
        assert [(r["task"], r["schedule"], r["method"], r["tempering"]) for r in rows] == \
            [("box", schedule, "afdps-sde", "ve-linear")]
        assert "| ve-linear |" in (out / "sweep.md").read_text()
        psnr[schedule] = float(rows[0]["psnr_mean"])
    assert psnr["vp"] != psnr["ve-edm"]


def test_sweep_mnist_ess_threshold_column(tmp_path):
    """``--ess-threshold`` reaches the particle methods and its column; DPS has no resampling (blank)."""
    sys.path.insert(0, str(ROOT))
    from bench import sweep_mnist

    assert sweep_mnist.main(["--num-images", "1", "--tasks", "box", "--methods", "fk", "--potentials", "tweedie",
                             "--steps", "2", "--particles", "2", "--batch-size", "1", "--dps", "--ess-threshold", "0",
                             "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [(r["method"], r["ess_threshold"]) for r in rows] == [("dps", ""), ("fk", "0")]


def _eval_folder(path, rows, per_image=()):
    from afdps.engine.evaluate import csv_text
    path.mkdir()
    (path / "results.csv").write_text(csv_text(rows))
    if per_image:
        (path / "per_image.csv").write_text(csv_text(list(per_image)))
    return str(path)


def _summary_row(task, method, psnr):
    row = {"task": task, "method": method, "images": 2, "particles": 16, "steps": 100, "nfe": 100}
    for k in ("psnr_best", "psnr_mean", "ssim_best", "ssim_mean", "accuracy_best", "accuracy_mean", "accuracy_any",
              "labels_distinct", "final_ess"):
        row[k], row[k + "_se"] = (psnr if k.startswith("psnr") else 0.5), 0.1
    row["wall_s"], row["s_per_image"] = 2.0, 1.0
    return row


def test_compare_eval_summary_merges_orders_and_refuses_conflicts(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    from bench import compare_eval
    a = _eval_folder(tmp_path / "a", [_summary_row("box", "dps", 16.0), _summary_row("box", "fk", 17.0)])
    b = _eval_folder(tmp_path / "b", [_summary_row("box", "afdps-sde", 14.0), _summary_row("sr4", "fk", 18.0)])
    lines = [ln for ln in compare_eval.summary_table([a, b]).splitlines() if ln.startswith("| box") or
             ln.startswith("| sr4")]
    # tasks in first-seen order, methods in afdps eval's order within a task
    assert [ln.split("|")[1:3] for ln in lines] == [[" box ", " afdps-sde "], [" box ", " fk "], [" box ", " dps "],
                                                    [" sr4 ", " fk "]]
    assert "17.00 ± 0.10" in lines[1]
    same = _eval_folder(tmp_path / "same", [dict(_summary_row("box", "fk", 17.0), wall_s=9.0)])
    assert len(compare_eval.summary_table([a, same]).splitlines()) == 4  # the repeat shown once, named on stderr
    assert "repeats" in capsys.readouterr().err
    other = _eval_folder(tmp_path / "other", [_summary_row("box", "fk", 15.0)])
    with pytest.raises(ValueError, match="box x fk.*psnr_best"):
        compare_eval.summary_table([a, other])


def test_compare_eval_paired_differences(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    from bench import compare_eval
    per = [{"task": "box", "method": m, "image": i, "psnr_mean": p, "correct_best": c, "labels_distinct": 1,
            "correct_any": c} for m, vals in (("fk", [(20.0, 1), (18.0, 1), (16.0, 0)]),
                                              ("dps", [(19.0, 1), (18.0, 0), (14.0, 0)])) for i, (p, c) in
           enumerate(vals)]
    folder = _eval_folder(tmp_path / "r", [_summary_row("box", "fk", 0.0)], per)
    assert compare_eval.main([folder, "--a", "fk", "--b", "dps"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| box")][0]
    # paired differences 1, 0, 2: mean 1, standard error sqrt(1 / 3) = 0.58; accuracy 2/3 against 1/3
    assert "| 18.00 ± 1.15 | 17.00 ± 1.53 | +1.00 ± 0.58 | 0.67 | 0.33 | +0.33 ± 0.33 |" in row
    with pytest.raises(SystemExit, match="nosuch: no such method in these folders; they ran dps, fk"):
        compare_eval.main([folder, "--b", "nosuch"])  # (it printed an empty table and exited 0)


def test_sweep_mnist_and_bench_fourier_refuse_bad_options_in_one_line(capsys):
    sys.path.insert(0, str(ROOT))
    from bench import bench_fourier, sweep_mnist
    for argv, msg in ((["--methods", "bogus"], "--methods 'bogus': choose from afdps-sde, afdps-ode, fk"),
                      (["--tasks", "box,blurr"], "--tasks 'blurr': choose from")):
        with pytest.raises(SystemExit):
            sweep_mnist.parse_args(argv)
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_fourier.main(["--kernel-size", "4"])
    assert "must be an odd integer >= 3, got '4'" in capsys.readouterr().err


def test_compare_eval_two_runs_of_one_method(tmp_path, capsys):
    """Two folders with the same method (two settings of it): the paired comparison takes METHOD@FOLDER, and a bare
    method name whose rows differ between the folders is refused (it used to keep the last folder's rows silently,
    reporting a difference of 0)."""
    sys.path.insert(0, str(ROOT))
    from bench import compare_eval

    def run(name, psnrs):
        per = [{"task": "box", "method": "afdps-ode", "image": i, "psnr_mean": p, "correct_best": 1,
                "labels_distinct": 1, "correct_any": 1} for i, p in enumerate(psnrs)]
        return _eval_folder(tmp_path / name, [_summary_row("box", "afdps-ode", 0.0)], per)
    r1, r3 = run("r0.1", [15.0, 14.0]), run("r0.3", [14.0, 12.0])
    assert compare_eval.main([r1, r3, "--a", f"afdps-ode@{r1}", "--b", f"afdps-ode@{r3}"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| box")][0]
    assert "| 14.50 ± 0.50 | 13.00 ± 1.00 | +1.50 ± 0.50 |" in row
    with pytest.raises(SystemExit, match="differs between .*r0.1 and .*r0.3; name the run as afdps-ode@"):
        compare_eval.main([r1, r3, "--a", "afdps-ode", "--b", f"afdps-ode@{r3}"])
    with pytest.raises(SystemExit, match="elsewhere is not one of the folders given"):
        compare_eval.main([r1, r3, "--a", "afdps-ode@elsewhere"])


def test_compare_eval_names_a_folder_without_results(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench import compare_eval
    (tmp_path / "running").mkdir()
    with pytest.raises(SystemExit, match="running has no per_image.csv"):
        compare_eval.main([str(tmp_path / "running")])
    with pytest.raises(SystemExit, match="running has no results.csv"):
        compare_eval.main(["--summary", str(tmp_path / "running")])


def test_diversity_stats_count_labels_and_spread():
    """bench/diversity_mnist.ensemble_stats on ensembles made of test digits: four different digits give four
    labels and a positive spread; four copies of one give one label and spread 0; a dead particle (log-weight
    -inf) is left out of the labels and the spread, and the best particle is the highest-weight one."""
    sys.path.insert(0, str(ROOT))
    from bench.diversity_mnist import ensemble_stats

    from afdps import load_classifier, load_mnist_test
    images, labels = load_mnist_test(4)
    assert len(set(labels.tolist())) == 4
    clf = load_classifier("mnist")
    ens = torch.stack([images, images[:1].expand(4, -1, -1, -1), images])  # (3, 4, 1, 28, 28)
    logw = torch.zeros(3, 4)
    logw[2, 1:] = float("-inf")  # image 2: only particle 0 lives
    logw[0, 2] = 1.0             # image 0: particle 2 is the best
    truth = torch.stack([labels[2], labels[0], labels[1]])
    rows = ensemble_stats(ens, logw, truth, clf)
    assert [r["labels_per_image"] for r in rows] == [4, 1, 1]
    assert rows[0]["pixel_std"] > 0.1 and rows[1]["pixel_std"] == 0.0 and rows[2]["pixel_std"] == 0.0
    assert [r["any_right"] for r in rows] == [1, 1, 0]   # image 2's true label is held by a dead particle only
    assert [r["best_right"] for r in rows] == [1, 1, 0]
    assert rows[1]["majority_right"] == 1 and rows[2]["majority_right"] == 0
    assert rows[1]["final_ess"] == pytest.approx(1.0) and rows[2]["final_ess"] == pytest.approx(0.25)
    tie = torch.stack([images[:2].repeat(2, 1, 1, 1)])  # two labels, two particles each: no majority
    assert ensemble_stats(tie, torch.zeros(1, 4), labels[:1], clf)[0]["majority_right"] == 0
    assert ensemble_stats(tie, torch.zeros(1, 4), labels[:1], clf, weighted=False)[0]["final_ess"] == ""


def test_diversity_mnist_writes_a_row_per_variant(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench import diversity_mnist
    assert diversity_mnist.main(["--num-images", "1", "--steps", "2", "--particles", "2", "--variants", "dps,fk",
                                 "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "diversity.csv").open()))
    assert [r["variant"] for r in rows] == ["dps", "fk"] and rows[0]["final_ess"] == "" and rows[1]["final_ess"] != ""
    assert "| dps | 1 |" in (tmp_path / "diversity.md").read_text() and float(rows[1]["psnr_mean"]) > 0
    with pytest.raises(SystemExit, match="unknown variant 'fk x2'"):
        diversity_mnist.main(["--variants", "fk x2", "--out", str(tmp_path)])


def test_smoke_rows_stay_out_of_the_results_and_unknown_variants_are_named(monkeypatch):
    """A smoke run (CPU, interpreter timings) appends CSV rows only into an AFDPS_BENCH_RESULTS folder, never into
    the committed bench/results/; --variants with a name the benchmark lacks is refused by its parser (before any
    work), not silently empty."""
    import argparse
    sys.path.insert(0, str(ROOT))
    from bench import runner

    monkeypatch.delenv("AFDPS_BENCH_RESULTS", raising=False)
    args = argparse.Namespace(smoke=True, no_csv=False)
    assert not runner.writes_csv(args) and runner.writes_csv(argparse.Namespace(smoke=False, no_csv=False))
    monkeypatch.setenv("AFDPS_BENCH_RESULTS", "/tmp/x")
    assert runner.writes_csv(args) and not runner.writes_csv(argparse.Namespace(smoke=True, no_csv=True))
    p = runner.add_common_args(argparse.ArgumentParser(), variants=("torch_unfused", "copy_moved"))
    assert p.parse_args(["--variants", "copy_moved"]).variants == ["copy_moved"]
    with pytest.raises(SystemExit):
        p.parse_args(["--variants", "nope"])
    # a named variant that a case does not build (copy_moved where no row moves, a graph on the CPU) is left out
    rows = runner.run_case("demo", "c", "4", "float32", 1, {"torch_unfused": lambda: 0}, "cpu", rep_ms=1,
                           env={"device": "cpu"}, only=["torch_unfused", "copy_moved"])
    assert [r["variant"] for r in rows] == ["torch_unfused"]


def test_throughput_names_the_failure_of_its_child(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), AFDPS_BENCH_RESULTS=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "bench.bench_throughput", "--particles", "20000000", "--steps", "2",
                          "--potentials", "scaled", "--device", "cpu"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "potential scaled, N = 20000000 failed: MemoryError: " in out.stderr, out.stderr
    # what argparse can tell is refused before any child runs (a bogus potential failed in the child before)
    out = subprocess.run([sys.executable, "-m", "bench.bench_throughput", "--potentials", "bogus", "--steps", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "argument --potentials: invalid choice: 'bogus'" in out.stderr, out.stderr


def test_compare_eval_names_what_it_leaves_out_and_refuses_other_measurements(tmp_path, capsys):
    """compare_eval paired by image index only: a task or images that one side lacked vanished without a word, two
    runs of other seeds or images were paired as if measured alike, and runs without the classifier's columns
    (a user's own images) crashed with a KeyError."""
    sys.path.insert(0, str(ROOT))
    from bench import compare_eval

    def run(name, task, psnrs, settings=None, files=None, acc=True):
        per = [{"task": task, "method": "fk", "image": i, **({"file": files[i]} if files else {}), "psnr_mean": p,
                **({"correct_best": 1, "labels_distinct": 1, "correct_any": 1} if acc else {})}
               for i, p in enumerate(psnrs)]
        folder = _eval_folder(tmp_path / name, [_summary_row(task, "fk", 0.0)], per)
        if settings is not None:
            (tmp_path / name / "settings.json").write_text(json.dumps(settings))
        return folder
    same = {"sigma_y": 0.05, "seed": 0, "prior_sha256": "ab", "image_sha256": ["h0", "h1", "h2"]}
    a = run("a", "box", [15.0, 14.0, 13.0], same)
    b = run("b", "box", [14.0, 12.0], {**same, "image_sha256": ["h0", "h1"]})
    assert compare_eval.main([a, b, "--a", f"fk@{a}", "--b", f"fk@{b}"]) == 0
    out = capsys.readouterr()
    assert "| box | 2 | 14.50 ± 0.50 | 13.00 ± 1.00 | +1.50 ± 0.50 |" in out.out
    assert "box: fk@" in out.err and "has 3 images" in out.err and "compared on the 2 both have" in out.err
    for name, changed in (("seed", {"seed": 1}), ("img", {"image_sha256": ["h0", "hX"]})):
        c = run(name, "box", [14.0, 12.0], {**same, **changed})
        with pytest.raises(SystemExit, match="did not measure the same images"):
            compare_eval.main([a, c, "--a", f"fk@{a}", "--b", f"fk@{c}"])
    d, e = run("d", "sr4", [1.0, 2.0], files=["x.png", "y.png"], acc=False), run("e", "sr4", [1.0, 3.0],
                                                                                 files=["x.png", "z.png"], acc=False)
    with pytest.raises(SystemExit, match="image 1 is y.png in .* and z.png in"):
        compare_eval.main([d, e, "--a", f"fk@{d}", "--b", f"fk@{e}"])
    f = run("f", "sr4", [2.0, 2.0], files=["x.png", "y.png"], acc=False)
    assert compare_eval.main([d, f, a, "--a", f"fk@{d}", "--b", f"fk@{f}"]) == 0  # no accuracy columns: dashes
    out = capsys.readouterr()
    assert "| sr4 | 2 | 1.50 ± 0.50 | 2.00 ± 0.00 | -0.50 ± 0.50 | - | - | - | - | - |" in out.out
    assert "box: neither fk@" in out.err and "ran it; left out" in out.err  # (box: folder a's only)
    assert compare_eval.main([a, f, "--a", f"fk@{a}", "--b", f"fk@{f}"]) == 0
    assert "box: only fk@" in capsys.readouterr().err


@pytest.mark.parametrize("module, argv, text", [
    ("bench_particle_step", ["--smoke", "--rows", "20"], "B*N must be at most 16 (one image) or a multiple of 16"),
    ("bench_particle_step", ["--smoke", "--rows", "0"], "must be an integer >= 1"),
    ("bench_particle_step", ["--smoke", "--dtypes", "foo"], "invalid choice: 'foo'"),
    ("bench_langevin", ["--smoke", "--rows", "20"], "B*N must be at most 16"),
    ("bench_resample", ["--smoke", "--particles", "0"], "must be an integer >= 1"),
    ("bench_resample", ["--smoke", "--weights", "balanced", "bogus"], "invalid choice: 'bogus'"),
    ("bench_sampler", ["--size", "8"], "--size must be at least 16"),
    ("bench_sampler", ["--smoke", "--cuda-graph"], "--cuda-graph needs --device cuda and --backend triton or auto"),
    ("bench_sampler", ["--threads", "-1"], "must be an integer >= 1"),
    ("bench_restoration", ["--smoke", "--network-batch", "x"], "must be a positive integer or auto, got 'x'"),
    ("bench_restoration", ["--smoke", "--device", "cuda", "--cuda-graph"], "--smoke runs a tiny network on the CPU"),
    ("border_error", ["--skip-exact"], "--skip-exact leaves only the sampler's run"),
    ("run", ["--timeout", "0", "sampler"], "--timeout must be a number of seconds > 0"),
])
def test_bad_benchmark_options_are_refused_before_any_work(module, argv, text, capsys):
    """A user audit (2026-12-07): these ran and then failed with a traceback (a zero division, a shape error in the
    kernels' references, the sampler's CUDA-graph refusal after the profiled run), or wrote an empty report."""
    import importlib

    sys.path.insert(0, str(ROOT))
    try:
        mod = importlib.import_module(f"bench.{module}")
    finally:
        sys.path.remove(str(ROOT))
    entry = getattr(mod, "parse_args", None) or mod.main
    with pytest.raises(SystemExit) as info:
        entry(argv)
    assert info.value.code == 2 and text in capsys.readouterr().err


def test_the_runner_forwards_markdown_made_absolute(tmp_path, monkeypatch):
    """bench.run passed --markdown only to the kernel benchmarks (bench_sampler's tables were dropped), relative to the
    repository (where the benchmarks run), not to the folder the user ran it from."""
    sys.path.insert(0, str(ROOT))
    try:
        from bench import run
    finally:
        sys.path.remove(str(ROOT))
    calls = []
    monkeypatch.setattr(run, "_run", lambda cmd, **kw: calls.append(cmd) or 0)
    monkeypatch.chdir(tmp_path)
    assert run.main(["sampler", "resample", "--smoke", "--markdown", "out.md"]) == 0
    for cmd in calls:
        assert cmd[cmd.index("--markdown") + 1] == str(tmp_path / "out.md"), cmd


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to see the worker gone")
def test_the_runner_kills_a_benchmark_s_workers_at_its_timeout(tmp_path):
    """--timeout killed only the benchmark's own process: a worker it had started (bench_throughput runs each case in
    a child) went on running."""
    sys.path.insert(0, str(ROOT))
    try:
        from bench import run
    finally:
        sys.path.remove(str(ROOT))
    pid_file = tmp_path / "worker.pid"
    parent = ("import subprocess, sys, time; w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(w.pid)); time.sleep(60)")
    t0 = time.perf_counter()
    assert run._run([sys.executable, "-c", parent], cwd=tmp_path, env=dict(os.environ), timeout=3) == "timeout"
    assert time.perf_counter() - t0 < 30
    worker = int(pid_file.read_text())
    for _ in range(50):  # (killed: gone, or a zombie until init reaps it)
        try:
            state = Path(f"/proc/{worker}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(worker, 9)
        raise AssertionError(f"the worker {worker} outlived the timeout")
    assert run._run([sys.executable, "-c", "raise SystemExit(3)"], cwd=tmp_path, env=dict(os.environ), timeout=30) == 3


def test_run_all_leaves_out_the_network_benchmarks_without_cuda(monkeypatch, capsys):
    sys.path.insert(0, str(ROOT))
    try:
        from bench import run
    finally:
        sys.path.remove(str(ROOT))
    calls = []
    monkeypatch.setattr(run, "_run", lambda cmd, **kw: calls.append(cmd[2]) or 0)
    monkeypatch.setattr(run, "_cuda", lambda: False)
    assert run.main(["--all"]) == 0
    assert calls and not {"bench.bench_adm", "bench.bench_restoration"} & set(calls)
    assert "leaving out bench_adm, bench_restoration" in capsys.readouterr().out
    calls.clear()
    assert run.main(["adm"]) == 0 and calls == ["bench.bench_adm"]  # (named: run)
    calls.clear()
    assert run.main(["--all", "--smoke"]) == 0 and "bench.bench_adm" in calls
    monkeypatch.setattr(run, "_cuda", lambda: True)
    calls.clear()
    assert run.main(["--all"]) == 0 and "bench.bench_adm" in calls


def test_compare_eval_takes_a_timed_rerun_marks_fewer_images_and_names_what_it_cannot_write(tmp_path, capsys):
    """A rerun whose rows differ only in their timings is the same run (it was refused as differing); the summary
    marks a row over fewer images than the others ("(1 of 2 images)"; rows of different counts sat side by side
    unmarked) and refuses a task's rows measured with another seed; --out that is a folder, or under a file, is
    one line (a traceback after the report before); a per_image.csv row that is not afdps eval's is named."""
    sys.path.insert(0, str(ROOT))
    from bench import compare_eval
    per = [{"task": "box", "method": m, "image": i, "psnr_mean": 15.0 + i, "seconds": 1.0, "device": "cpu"}
           for m in ("fk", "dps") for i in range(2)]
    a = _eval_folder(tmp_path / "a", [_summary_row("box", "fk", 0.0)], per)
    b = _eval_folder(tmp_path / "b", [_summary_row("box", "fk", 0.0)],
                     [dict(r, seconds=9.0, device="cuda") for r in per])
    assert compare_eval.main([a, b, "--a", "fk", "--b", "dps"]) == 0
    capsys.readouterr()
    fewer = _eval_folder(tmp_path / "fewer", [dict(_summary_row("box", "dps", 1.0), images=1)])
    table = compare_eval.summary_table([a, fewer])
    assert "| box | dps (1 of 2 images) |" in table and "| box | fk |" in table
    assert "cover different numbers of images" in capsys.readouterr().err
    seeded = _eval_folder(tmp_path / "seeded", [dict(_summary_row("box", "fk", 0.0), seed=0)])
    other = _eval_folder(tmp_path / "other", [dict(_summary_row("box", "dps", 0.0), seed=1)])
    with pytest.raises(ValueError, match="box: .*seeded and .*other measured its images otherwise \\(seed 0 against 1"):
        compare_eval.summary_table([seeded, other])
    with pytest.raises(SystemExit, match="was not written to .*: .* is a folder"):
        compare_eval.main([a, "--a", "fk", "--b", "dps", "--out", str(tmp_path)])
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="was not written to .*file/x.md"):
        compare_eval.main([a, "--a", "fk", "--b", "dps", "--out", str(tmp_path / "file" / "x.md")])
    text = (tmp_path / "a" / "per_image.csv").read_text().splitlines()
    (tmp_path / "a" / "per_image.csv").write_text("\n".join([text[0], text[1].replace(",0,", ",zero,", 1)]) + "\n")
    with pytest.raises(SystemExit, match="per_image.csv, line 2: not a row afdps eval writes"):
        compare_eval.main([a, "--a", "fk", "--b", "dps"])


@pytest.mark.parametrize("module, argv, says", [
    ("bench_particle_step", ["--device", "bogus"], "argument --device: must be a torch device (cpu, cuda, cuda:1)"),
    ("bench_particle_step", ["--smoke", "--block", "100"], "argument --block: must be a power of two >= 4"),
    ("bench_particle_step", ["--smoke", "--rep", "0"], "argument --rep: must be a positive number"),
    ("bench_langevin", ["--smoke", "--markdown", "."], "--markdown: . is a folder"),
    ("bench_adm", ["--device", "bogus"], "argument --device: must be a torch device"),
    ("bench_adm", ["--batches", "2,,4"], "--batches must be comma-separated integers >= 1"),
    ("bench_sampler", ["--device", "cpu", "--backend", "triton"], "--backend triton runs on CUDA devices"),
    ("bench_fourier", ["--smoke", "--kernel-size", "61", "--no-csv"], "--kernel-size 61 is larger than the 16x16"),
])
def test_bench_scripts_refuse_bad_options_in_one_line(module, argv, says, capsys, monkeypatch):
    """Each of these was a traceback, most after the measurements had run (audit, 2026-12-07)."""
    sys.path.insert(0, str(ROOT))
    import importlib
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    mod = importlib.import_module(f"bench.{module}")
    with pytest.raises(SystemExit) as exc:
        mod.main(argv)
    assert says in capsys.readouterr().err + str(exc.value)


def test_bench_adm_peaks_tell_the_h100_parts_apart():
    """Any name with "H100" took the SXM part's 989 TFLOP/s; the PCIe and NVL parts are slower."""
    sys.path.insert(0, str(ROOT))
    from bench.bench_adm import peak_tflops
    assert peak_tflops("NVIDIA H100 80GB HBM3", True) == 989.0
    assert peak_tflops("NVIDIA H100 PCIe", True) == 756.0 and peak_tflops("NVIDIA H100 PCIe", False) == 378.0
    assert peak_tflops("NVIDIA H100 NVL", True) == 835.0
    assert peak_tflops("NVIDIA H200", True) == 989.0 and peak_tflops("NVIDIA H200 NVL", True) == 835.0
    assert peak_tflops("NVIDIA L4", True) is None
