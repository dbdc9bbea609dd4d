"""Shared test set-up.

Triton kernels run under the interpreter on machines without CUDA. The variable must be set before
anything imports triton, which is why it lives here.
"""
import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# One intra-op thread: most tensors in the tests are small, and OpenMP's spinning barriers made them up
# to 30x slower whenever another process shared the 2 cores (measured: 14.7 s vs 0.48 s for 40 steps of
# the 2-D exact-posterior test with 20000 particles). AFDPS_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("AFDPS_TEST_THREADS", "1")))
# The same for the processes tests start (benchmarks' smoke runs, the CLI, torchrun): without it each took both
# cores' threads beside the other test worker (bench_adm's smoke: 12.6 s alone, 32 s in the suite).
os.environ["OMP_NUM_THREADS"] = os.environ.get("AFDPS_TEST_THREADS", "1")

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir():
    return DATA
