"""Inputs shared by the per-particle kernel tests (test_particle_step.py, test_langevin.py)."""
import torch
from tolerances import DEVICE


def particle_rows(B, N, D, dtypes, seed=0):
    """x, score, grad_mu (dtypes: one dtype or a triple) and keys on DEVICE."""
    if isinstance(dtypes, torch.dtype):
        dtypes = (dtypes,) * 3
    gen = torch.Generator().manual_seed(seed)
    R = B * N
    x = 3.0 * torch.randn(R, D, generator=gen, dtype=torch.float64)
    s = torch.randn(R, D, generator=gen, dtype=torch.float64)
    g = 2.0 * torch.randn(R, D, generator=gen, dtype=torch.float64)
    keys = torch.randint(-2**63, 2**63 - 1, (B,), generator=gen, dtype=torch.int64)
    return (x.to(DEVICE, dtypes[0]), s.to(DEVICE, dtypes[1]), g.to(DEVICE, dtypes[2]), keys.to(DEVICE))
