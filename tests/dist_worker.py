"""One rank of tests/test_distributed.py (launched with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set):
runs a particle-parallel ``afdps.sample`` of every case and saves the results to the given file (rank r > 0
to ``FILE.rank<r>``). ``--single`` runs the same cases in one process without a group."""
import sys

import torch

import afdps
from afdps import ops
from afdps.priors import GaussianMixture

CASES = {
    "fk": dict(method="sde", eta=0.5, ess_threshold=0.9),  # the default Tweedie potential, frequent resampling
    "ode": dict(method="ode", corrector="split", ess_threshold=0.9, potential="scaled"),
    "valid-blur": dict(method="sde", eta=0.5, potential="noisy", tempering="none", ess_threshold=0.9),
    # each image's lam from all its particles' potentials, gathered across ranks
    "adaptive": dict(method="sde", eta=0.5, potential="noisy", tempering="adaptive", tempering_ess=0.99, ess_threshold=0.9),
}


def problem(case):
    torch.manual_seed(0)
    if case == "valid-blur":
        gm = GaussianMixture(torch.zeros(2, 16) + torch.tensor([[0.5], [-0.5]]), 0.3 * torch.eye(16).expand(2, 16, 16),
                             torch.tensor([0.4, 0.6]))

        class Img:
            event_shape, schedule = (1, 4, 4), gm.schedule

            def score(self, x, t):
                return gm.score(x.reshape(*x.shape[:-3], 16), t).reshape(x.shape)

        op = ops.Blur(ops.gaussian_kernel(3, 0.8), (1, 4, 4), boundary="valid")
        y = op.measure(torch.full((2, 1, 4, 4), 0.3, dtype=torch.float64), 0.3, torch.Generator().manual_seed(1))
        return Img(), op, y, 0.3
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])
    covs = torch.stack([0.3 * torch.eye(2), torch.tensor([[0.5, 0.2], [0.2, 0.3]]), 0.2 * torch.eye(2)])
    gm = GaussianMixture(means, covs, torch.tensor([0.3, 0.5, 0.2]))
    return gm, ops.Dense(torch.tensor([[1.0, 0.5]])), torch.tensor([[0.3], [1.2]], dtype=torch.float64), 0.5


def run(case, group=None):
    prior, op, y, sigma_y = problem(case)
    return afdps.sample(prior, op, y, sigma_y, num_particles=12, num_steps=30, seed=[7, 8], dtype=torch.float64,
                        particle_group=group, **CASES[case])


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    single = "--single" in sys.argv
    rank, group = 0, None
    if not single:
        rank, world = afdps.distributed.init_from_env()
        group = afdps.distributed.ParticleGroup()
    results = {}
    for case in CASES:  # one launch runs every case (process start-up is most of a case's time)
        r = run(case, group)
        results[case] = {"particles": r.particles, "log_weights": r.log_weights, "ess": r.ess, "resampled": r.resampled,
                         "lam": r.lam, "guidance_jump": r.guidance_jump}
    torch.save(results, out if rank == 0 else f"{out}.rank{rank}")  # every rank: each returns the whole ensemble
    if not single:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
