"""The command line (bindings/cli/): every command's help, usage errors, and a tiny `afdps demo` run (the
README's first command)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from afdps import cli


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help_with_defaults(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: afdps " + command) and cli.COMMANDS[command].HELP.split()[0] in text


def test_no_command_is_usage_error(capsys):
    assert cli.main([]) == 2
    assert "command" in capsys.readouterr().err


def test_tiny_demo_run(tmp_path, capsys):
    """`afdps demo` at 64x64 with 4 particles and 3 steps: exit 0, every file written, finite metrics."""
    out = tmp_path / "demo"
    rc = cli.main(["demo", "--size", "64", "--particles", "4", "--steps", "3", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "afdps demo: astronaut 64x64" in text and "best" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.png", "ess.png", "mean.png", "measurement.png", "metrics.json", "std.png", "truth.png"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["particles"] == 4 and m["steps"] == 3
    assert (m["method"], m["eta"], m["tempering"], m["size"], m["sigma_y"], m["seed"]) == ("sde", 1.0, "linear", 64,
                                                                                        0.05, 0)
    for k in ("measurement", "best", "mean", "exact_posterior_mean"):
        assert np.isfinite(m[k]["psnr"]) and 0 < m[k]["ssim"] <= 1
    assert Image.open(out / "best.png").size == (64, 64)


def test_demo_bad_input_exits_2(tmp_path, capsys):
    assert cli.main(["demo", "--size", "32", "--out", str(tmp_path)]) == 2
    assert "--size must be from 64" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # refused by the parser, not after the prior's fit
        cli.main(["demo", "--eta", "-1", "--out", str(tmp_path)])
    assert "a number >= 0" in capsys.readouterr().err


def test_the_ode_demo_has_no_eta_and_the_demo_names_only_its_files(tmp_path, capsys):
    """`afdps demo --method ode` warned that eta=1.0 (the SDE's default, never given) changed nothing, and recorded
    it; the closing line listed every PNG in the folder, a user's own included."""
    import warnings
    out = tmp_path / "demo"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"not the demo's")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert cli.main(["demo", "--size", "64", "--particles", "2", "--steps", "2", "--method", "ode", "--out",
                         str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "AFDPS-ODE tempering=linear" in text and "eta" not in text.splitlines()[0]
    assert "holiday.png" not in text and "wrote best.png, ess.png, mean.png, measurement.png, std.png" in text
    assert json.loads((out / "metrics.json").read_text())["eta"] is None
    assert (out / "holiday.png").read_bytes() == b"not the demo's"


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "afdps.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "demo" in out.stdout and "eval" in out.stdout
