"""Every benchmark (bench/bench_*.py) runs in smoke mode (tiny shapes, CPU) so that none of them rots,
and the runner's table and CSV helpers behave."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))


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


def test_gpu_check_dry_run():
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for needle in ("pip install --no-deps --no-build-isolation", "pytest -q -m gpu or interpreter",
                   "bench.bench_particle_step", "bench.bench_resample", "bench.bench_fourier"):
        assert needle in out.stdout


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
