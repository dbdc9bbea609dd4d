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

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir():
    return DATA
