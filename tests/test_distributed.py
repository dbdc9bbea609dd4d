"""Particle-parallel sampling over torch.distributed (gloo, on the CPU): 2 and 3 processes give exactly
the particles, log-weights, ESS trace and resampling decisions of one process with the same seeds (analytic
priors: bit-identical), with resampling forced often (ESS threshold 0.9) so rows travel between ranks."""
import contextlib
import io
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import afdps

WORKER = str(Path(__file__).with_name("dist_worker.py"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out, world, worker=WORKER):
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, worker, str(out)], env=env, stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errs)


@pytest.mark.slow
def test_particle_parallel_equals_one_process(tmp_path):
    """The cases of tests/dist_worker.py (FK with the Tweedie potential, the ODE with its split corrector, a
    valid blur with implicit guidance and a perturbation-optimisation Stage I, adaptive tempering), each with 2
    and 3 ranks: the same particles, weights, ESS, resampling, lam path and largest Tweedie guidance move."""
    single = tmp_path / "single.pt"
    subprocess.run([sys.executable, WORKER, str(single), "--single"], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    ref = torch.load(single)
    for case, r in ref.items():
        assert bool(r["resampled"].any()), f"{case}: the case must resample for rows to travel"
    assert 0.0 < float(ref["adaptive"]["lam"][:, 1].max()) < 1.0  # the ESS rule holds lam back: it is exercised
    for world in (2, 3):
        out = tmp_path / f"world{world}.pt"
        _launch(out, world)
        for rank in range(world):  # every rank returns the whole ensemble
            got = torch.load(out if rank == 0 else f"{out}.rank{rank}")
            for case in ref:
                for k in ("particles", "log_weights", "ess", "resampled", "lam"):
                    assert torch.equal(got[case][k], ref[case][k]), \
                        f"{case}, {world} ranks, rank {rank}: {k} differs from one process"
                # the Tweedie guidance's largest move, over every rank's particles (None for the other potentials)
                assert got[case]["guidance_jump"] == ref[case]["guidance_jump"], case


def test_ranks_given_different_work_refuse_it_alike(tmp_path):
    """Every rank must be given the same problem: a particle-parallel sample with another number of steps or
    another measurement on one rank exchanged particles of different posteriors, and a sharded restore whose
    ranks listed other images (each node's own files) restored some twice and others never. Each rank now raises
    the same error, naming the field and the ranks, before any work (a single 8-byte digest per field is
    gathered), also where one rank's options alone are invalid, where seed=None drew other seeds, and where a sharded
    restore's --out is each machine's own folder (rank 0's probe file there is not seen by rank 1)."""
    out = tmp_path / "msgs"
    _launch(out, 2, str(Path(__file__).with_name("dist_disagree.py")))
    ranks = [(tmp_path / f"msgs.rank{r}").read_text().splitlines() for r in range(2)]
    assert ranks[0] == ranks[1]
    same, tensor, steps, measurement, invalid, seeds, images, unshared, left, unwritable, journals = ranks[0]
    assert same == "no error"
    assert tensor == ("tensor: rank(s) [1] of 2 were given other b than rank 0; every rank must run the same command "
                      "on the same files")
    assert steps.startswith("afdps.sample(particle_group=...): rank(s) [1] of 2 were given other options than")
    assert measurement.startswith("afdps.sample(particle_group=...): rank(s) [1] of 2 were given other y than")
    assert invalid.startswith("afdps.sample(particle_group=...): rank(s) [1] of 2 were given other options than")
    assert seeds.startswith("afdps.sample(particle_group=...): rank(s) [1] of 2 were given other seeds (seed=None "
                            "draws one on each rank: pass seed=) than rank 0")
    assert images.startswith("afdps restore: rank(s) [1] of 2 were given other images than rank 0")
    assert unshared.startswith("afdps restore --out: rank(s) [1] of 2 do not see the file rank 0 wrote in 'OWN': ")
    assert unshared.endswith("it is not one folder that every rank shares (each machine's own disk?); give a folder "
                             "on a filesystem every machine mounts")
    assert left == "empty"  # rank 0 removed its probe
    assert unwritable == "probe: rank 0 cannot create a file in 'OWN/missing'"
    assert journals.startswith("afdps restore: rank(s) [1] of 2 were given other journaled images (is --out one "
                               "folder that every rank shares?) than rank 0")


def test_particle_group_refuses_uneven_splits_and_needs_a_process_group():
    with pytest.raises(RuntimeError, match="needs torch.distributed to be initialised"):
        afdps.distributed.ParticleGroup()
    assert afdps.distributed.shard(list(range(7)), 1, 3) == [1, 4]
    with pytest.raises(ValueError, match="rank must be in"):
        afdps.distributed.shard([1], 3, 3)


def test_a_torchrun_of_one_process_makes_a_group_of_one(monkeypatch):
    """``torchrun --nproc-per-node 1``: init_from_env started no process group (only for more than one rank), so the
    README's ParticleGroup example failed, its error saying to launch with torchrun. Now a group of one runs it, with
    the results of no group."""
    import torch.distributed as dist
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    assert not dist.is_initialized()
    try:
        assert afdps.distributed.init_from_env() == (0, 1)
        group = afdps.distributed.ParticleGroup()
        prior = afdps.priors.GaussianMixture(torch.tensor([[-1.0, 0.0], [1.5, 1.0]]),
                                             torch.stack([0.3 * torch.eye(2), 0.5 * torch.eye(2)]),
                                             torch.tensor([0.4, 0.6]))
        op = afdps.ops.Dense(torch.tensor([[1.0, 0.5]]))
        y = torch.tensor([[0.7]])
        kw = dict(num_particles=8, num_steps=5, seed=3, eta=1.0, potential="scaled", progress=False)
        a = afdps.sample(prior, op, y, 0.3, particle_group=group, **kw)
        b = afdps.sample(prior, op, y, 0.3, **kw)
        assert torch.equal(a.particles, b.particles) and torch.equal(a.log_weights, b.log_weights)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _digits(root: Path, n: int = 4) -> Path:
    """``n`` box-inpainting measurements of the shipped test digits as PNG files."""
    from PIL import Image

    x, _ = afdps.load_mnist_test(n)
    op = afdps.ops.Inpaint(afdps.ops.box_mask((28, 28), 10), (1, 28, 28))
    y = op.measure(x.double(), 0.05, torch.Generator().manual_seed(0))
    (root / "in").mkdir(parents=True)
    for i in range(n):
        a = ((y[i, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        Image.fromarray(a).save(root / "in" / f"digit{i}.png")
    return root / "in"


def _restore(inputs: Path, out: Path, world: int, *extra, ok: bool = True):
    """``afdps restore`` on ``world`` torchrun ranks; one process runs here, in the test's (a start of the
    interpreter and torch costs 3 s on the 2-core CPU)."""
    args = ["-m", "afdps.cli", "restore", str(inputs), "--task", "box", "--prior", "mnist", "--particles", "4",
            "--steps", "4", "--no-progress", "--threads", "1", "--out", str(out), *extra]
    if world == 1:
        from afdps import cli

        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            assert cli.main(args[2:]) == 0
        return SimpleNamespace(stdout=stdout.getvalue())
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(world), "--master-port", str(_free_port())]
    cmd = [sys.executable, *launcher, *args]
    p = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert (p.returncode == 0) == ok, p.stderr[-3000:]
    return p


def _files(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.suffix in (".npy", ".png")}


@pytest.mark.slow
def test_restore_shards_images_over_torchrun_ranks(tmp_path):
    """``torchrun --nproc-per-node 2 -m afdps.cli restore``: the images are split between the ranks, each
    journals its own, and every output file equals a one-process run's byte for byte (seeds come from image
    names); a resume under one process sees both ranks' journals. Then ``--particle-parallel``: both ranks
    share each image's particles. The shipped network's arithmetic changes in the last bits with its batch
    (measured: 7e-7 in the score between 4 rows at once and 2 + 2), so the runs make one network call per
    particle (``--network-batch 1``); then the particle-parallel outputs are equal byte for byte too."""
    inputs = _digits(tmp_path)
    one, two, parts = tmp_path / "one", tmp_path / "two", tmp_path / "parts"
    _restore(inputs, one, 1, "--network-batch", "1")
    p = _restore(inputs, two, 2, "--network-batch", "1")
    assert "images sharded over 2 ranks" in p.stdout
    assert sorted(f.name for f in two.glob("journal*.jsonl")) == ["journal.rank0.jsonl", "journal.rank1.jsonl"]
    assert not list(two.glob(".afdps-shared-probe-*"))  # rank 0 removed its shared-folder probe
    assert _files(two) == _files(one)
    assert "4 image(s) already restored" in _restore(inputs, two, 1, "--resume").stdout
    p = _restore(inputs, two, 2, "--resume", "--sigma-y", "0.1", ok=False)  # each rank compares its share: alike
    assert p.stderr.count("was restored with other settings (sigma_y 0.05 then, 0.1 now") == 2, p.stderr[-3000:]
    assert "digit3" in (two / "index.html").read_text()
    p = _restore(inputs, parts, 2, "--particle-parallel", "--network-batch", "1")
    assert "2 ranks sharing each image's particles" in p.stdout
    assert _files(parts) == _files(one)


@pytest.mark.slow
def test_sharded_ranks_check_their_share_and_refuse_alike(tmp_path):
    """Each rank reads and checks the images it will restore (every rank read every input, N ranks N times the
    reading before the first image); a bad file in rank 1's share stops both ranks alike, naming it, before any
    image is restored."""
    inputs = _digits(tmp_path)
    (inputs / "digit1.png").write_text("not a PNG")  # image 1 of 4: rank 1's share
    out = tmp_path / "out"
    p = _restore(inputs, out, 2, ok=False)
    assert p.stderr.count("1 of 4 image(s) cannot be restored, so none was run: digit1:") == 2, p.stderr[-3000:]
    assert not list(out.glob("journal*.jsonl"))


def test_each_rank_checks_a_share_of_the_inputs():
    """The shares are the run's: a sharded rank checks the images it will restore, whatever is journaled; a
    particle-parallel rank every world-th unfinished image; together every unfinished image once."""
    from afdps.engine import restore as rs

    jobs = [rs.Job(f"{i}.png", "denoise", str(i), seed=i) for i in range(7)]
    done = {"2": {}, "3": {}}
    for sharded in (True, False):
        shares = [rs.check_share(jobs, done, r, 3, sharded) for r in range(3)]
        assert sorted(j.name for s in shares for j in s) == ["0", "1", "4", "5", "6"]
        if sharded:
            assert [[j.name for j in s] for s in shares] == [["0", "6"], ["1", "4"], ["5"]]
    assert [j.name for j in rs.check_share(jobs, done, 0, 1, True)] == ["0", "1", "4", "5", "6"]
