"""One rank of tests/test_distributed.py's disagreement test (launched with RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT set): each rank is given something of its own, and every rank must refuse alike, naming what differs;
the messages go to ``FILE.rank<r>`` (one line each)."""
import shutil
import sys
import tempfile

import torch

import afdps
from afdps.engine import restore as rs
from dist_worker import problem


def refusal(call):
    try:
        call()
    except ValueError as exc:
        return str(exc)
    return "no error"


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    rank, world = afdps.distributed.init_from_env()
    group = afdps.distributed.ParticleGroup()
    lines = []
    # the same fields pass; another value on one rank is named, with the rank
    lines.append(refusal(lambda: afdps.distributed.check_agree({"a": 1, "b": torch.ones(3)}, "same")))
    lines.append(refusal(lambda: afdps.distributed.check_agree({"a": 1, "b": torch.ones(3) * (1 + rank)}, "tensor")))
    # a particle-parallel sample with another number of steps on rank 1 (it exchanged particles of other steps)
    prior, op, y, sigma_y = problem("fk")
    lines.append(refusal(lambda: afdps.sample(prior, op, y, sigma_y, num_particles=4, num_steps=3 + rank, seed=1,
                                              dtype=torch.float64, particle_group=group)))
    # ... and another measurement
    lines.append(refusal(lambda: afdps.sample(prior, op, y + rank, sigma_y, num_particles=4, num_steps=3, seed=1,
                                              dtype=torch.float64, particle_group=group)))
    # an option that rank 1 alone would refuse: the same error on both (rank 0 saw gloo's "Connection closed by peer")
    lines.append(refusal(lambda: afdps.sample(prior, op, y, sigma_y, num_particles=4, num_steps=3, seed=1,
                                              tempering="adaptive" if rank else "linear", weights=rank == 0,
                                              dtype=torch.float64, particle_group=group)))
    # seed=None draws a seed on each rank
    torch.manual_seed(rank)
    lines.append(refusal(lambda: afdps.sample(prior, op, y, sigma_y, num_particles=4, num_steps=3,
                                              dtype=torch.float64, particle_group=group)))
    # a sharded restore whose ranks hold other image lists (a node's own files): refused before any file is read
    folder = tempfile.mkdtemp()
    jobs = [rs.Job("a.png", "denoise", "a", seed=1), rs.Job(f"b{rank}.png", "denoise", f"b{rank}", seed=2)]
    lines.append(refusal(lambda: rs.restore(prior, jobs, folder, sample_options={}, rank=rank, world=world,
                                            handle_sigterm=False, log=lambda *a: None)))
    # a first sharded run whose --out is each machine's own folder (the same jobs, nothing journaled yet)
    own = tempfile.mkdtemp()
    lines.append(refusal(lambda: rs.restore(prior, [rs.Job("a.png", "denoise", "a", seed=1)], own, sample_options={},
                                            rank=rank, world=world, handle_sigterm=False,
                                            log=lambda *a: None)).replace(own, "OWN"))  # (each rank's own path)
    lines.append(" ".join(sorted(p.name for p in __import__("pathlib").Path(own).iterdir())) or "empty")
    # a folder where rank 0 cannot create its probe: every rank hears of it (it raised on rank 0 alone)
    lines.append(refusal(lambda: afdps.distributed.check_shared_folder(f"{own}/missing", "probe")).replace(own, "OWN"))
    # a resumed sharded run whose --out is each machine's own folder: each rank sees only its own journal
    jobs = [rs.Job("a.png", "denoise", "a", seed=1)]
    if rank == 1:
        with open(f"{folder}/journal.rank1.jsonl", "w") as f:
            f.write('{"name": "a"}\n')
    lines.append(refusal(lambda: rs.restore(prior, jobs, folder, sample_options={}, rank=rank, world=world,
                                            resume=True, handle_sigterm=False, log=lambda *a: None)))
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(own, ignore_errors=True)
    with open(f"{out}.rank{rank}", "w") as f:
        f.write("\n".join(line.replace("\n", " ") for line in lines) + "\n")


if __name__ == "__main__":
    main()
