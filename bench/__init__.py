"""Microbenchmarks of the fused kernels and end-to-end benchmarks (``python -m bench.run --all``)."""
