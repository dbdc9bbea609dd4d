"""Tolerances of the kernel-versus-reference tests, keyed by storage dtype, and the device they run on.

Kernel tests (``@pytest.mark.interpreter``) run on CUDA when there is one (real kernels; ``make
gpu-check`` unsets ``TRITON_INTERPRET``) and on the CPU under ``TRITON_INTERPRET=1`` otherwise
(tests/conftest.py sets it).

==========  =====================================  ==============================================
storage     elementwise outputs (``x_new``, R)     per-row reductions (``dlogw``, norms)
==========  =====================================  ==============================================
float32     ``|k - ref| <= 1e-5 + 1e-5 |ref|``     ``|k - ref| <= 1e-5 * scale``
float64     ``|k - ref| <= 1e-12 + 1e-12 |ref|``   ``|k - ref| <= 1e-10 * scale``
            ``+ 1e-5 * noise_scale``
bfloat16    ``err(k) <= 2 err(torch) + 1e-6``      as float32 (the arithmetic is float32)
==========  =====================================  ==============================================

- float32: kernel and reference round differently (FMA contraction, float32 block sums against the
  reference's float64 sums, the GPU's ``log``/``sin``/``cos`` in the Box-Muller noise). Measured under
  the interpreter: ``x_new`` within 5e-7, ``dlogw`` within 3e-7 of ``scale``.
- float64: the noise is drawn in float32 on both sides (the stream's definition), so its rounding,
  times the noise scale ``sqrt(v2 h)``, bounds the difference; the rest is float64.
- ``scale`` of a row is the sum of the absolute values of the terms the reduction adds (computed by
  the test in float64), so the bound is relative to what float32 summation can resolve.
- bfloat16 (storage; arithmetic in float32): both errors are measured against the float64 reference
  evaluated on the same bfloat16 inputs; ``err(torch)`` is the error of :func:`particle_step_ref` on
  bfloat16 tensors (PyTorch computing in float32 and rounding once to bfloat16). Rule: the kernel's max
  error at most twice PyTorch's. Measured (7 x 11163, |x| up to ~12): kernel 0.0312, PyTorch 0.0312
  (half a bfloat16 ulp at 8..16); PyTorch with every op in bfloat16 makes 0.0659.
"""
import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

TOL = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5, "reduce": 1e-5},
    torch.float64: {"rtol": 1e-12, "atol": 1e-12, "reduce": 1e-10, "noise": 1e-5},
    torch.bfloat16: {"factor": 2.0, "floor": 1e-6, "reduce": 1e-5},
}


def assert_close_elementwise(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, noise_scale: float = 0.0):
    """float32 / float64 rule of the table (``out`` and ``ref`` in the storage dtype)."""
    t = TOL[dtype]
    atol = t["atol"] + t.get("noise", 0.0) * noise_scale
    diff = (out.double() - ref.double()).abs()
    bound = atol + t["rtol"] * ref.double().abs()
    worst = (diff - bound).max().item() if diff.numel() else -1.0
    assert worst <= 0.0, f"max |out - ref| = {diff.max().item():.3e} exceeds the {dtype} tolerance"


def assert_bf16_rule(out: torch.Tensor, torch_out: torch.Tensor, oracle: torch.Tensor):
    """bfloat16 rule: ``max|out - oracle| <= 2 max|torch_out - oracle| + 1e-6``."""
    t = TOL[torch.bfloat16]
    err_k = (out.double() - oracle.double()).abs().max().item()
    err_t = (torch_out.double() - oracle.double()).abs().max().item()
    assert err_k <= t["factor"] * err_t + t["floor"], f"bfloat16 error {err_k:.3e} > 2 x PyTorch's {err_t:.3e}"


def assert_close_reduction(out: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype):
    """Per-row reductions: ``|out - ref| <= TOL[dtype]['reduce'] * scale`` (plus a 1e-300 floor)."""
    diff = (out.double() - ref.double()).abs()
    bound = TOL[dtype]["reduce"] * scale.double().abs() + 1e-300
    assert bool((diff <= bound).all()), (
        f"reduction off by {(diff / bound).max().item():.2f} x the {dtype} tolerance")


def nan_filled_allocations(monkeypatch):
    """Make ``torch.empty`` / ``torch.empty_like`` return NaN-filled floating tensors for the rest of a test: an
    element a kernel should have written and did not is then NaN, not a stale value that may pass."""
    real_empty, real_like = torch.empty, torch.empty_like

    def fill(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(real_like(*a, **k)))
