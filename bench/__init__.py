"""Microbenchmarks of the fused kernels and end-to-end benchmarks (``python -m bench.run --all``).

``--smoke`` runs on a machine without CUDA interpret the Triton kernels on the CPU: the variable is set
here, when the package is first imported, before any kernel module is.
"""
import os
import sys

import torch

if "--smoke" in sys.argv and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
