"""Linear measurement operators ``y = A x + sigma_y n`` on images ``(..., C, H, W)`` (or vectors).

Every operator can diagonalise ``A^T A`` cheaply (Fourier basis for circular blur, pixels for masks,
block mean / in-block residual for block averaging, an eigendecomposition for dense matrices). That
one capability, :meth:`LinearOperator.spectral_apply` (``fn(A^T A) v``), gives both the exact Stage-I
sampler of ``N(0, rho^2 I) exp(-lam mu)`` and the exact guidance step of the spec (section 4).

Shapes: ``x`` is ``(*batch, *input_shape)``, ``y`` is ``(*batch, *output_shape)`` with batch dims
that broadcast against ``x``'s (the sampler passes ``x`` as ``(B, N, ...)`` and ``y`` as ``(B, 1, ...)``).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels import fourier
from .motion import motion_kernel
from .validation import check_int, check_real, check_seed

__all__ = [
    "LinearOperator",
    "check_operator",
    "adjoint_gap",
    "ADJOINT_RTOL",
    "Blur",
    "ValidBlur",
    "valid_size",
    "BlockDownsample",
    "Inpaint",
    "Identity",
    "Dense",
    "gaussian_kernel",
    "motion_kernel",
    "box_mask",
    "random_mask",
    "phi",
    "solve_cg",
    "CGError",
]

phi = fourier.phi


def _shape(shape, what: str, length: int | None = None) -> tuple:
    """``shape`` as a tuple of ints (``8.0`` and 0-d tensors too; ``8.7``, ``"8"`` and ``True`` are refused rather
    than truncated or read), every size positive, ``length`` of them if given."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{what} must be a sequence of ints, got {shape!r}")
    shape = tuple(shape)
    try:
        shape = tuple(check_int(what, v, 1) for v in shape)
    except ValueError:
        raise ValueError(f"{what} must be a sequence of positive integers, got {shape!r}") from None
    if length is not None and len(shape) != length:
        raise ValueError(f"{what} must have {length} sizes, got {shape!r}")
    return shape


def _hw(image_size) -> tuple:
    """``(H, W)``: the last two sizes of ``image_size`` (``(H, W)`` or ``(C, H, W)``)."""
    shape = _shape(image_size, "image_size")
    if len(shape) < 2:
        raise ValueError(f"image_size must be (H, W) or (C, H, W), got {shape!r}")
    return shape[-2:]


def _values(value, what: str) -> torch.Tensor:
    """A kernel, mask or matrix (array, tensor on any device, nested list) as a float64 CPU tensor; complex and
    non-numeric data are refused (a complex kernel lost its imaginary part with only a cast warning)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()  # (a CUDA tensor, or one with a graph: the operator keeps plain values)
        if value.is_complex():
            raise ValueError(f"{what} must be real, got a {value.dtype} tensor")
        # a copy: the operator's spectra are computed once, so a caller's later in-place change of the tensor must
        # not reach A alone (a float64 CPU tensor was kept by reference: A changed, the eigenvalues did not)
        return value.to(torch.float64, copy=True)
    a = np.asarray(value)
    if a.dtype.kind == "c":
        raise ValueError(f"{what} must be real, got {a.dtype} values")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold numbers, got {a.dtype} data ({value!r:.60})")
    return torch.as_tensor(a.astype(np.float64))


class CGError(RuntimeError):
    """A conjugate-gradient solve did not reach its tolerance within its iterations."""


def _dot(a: torch.Tensor, b: torch.Tensor, dims) -> torch.Tensor:
    return (a.to(torch.float64) * b.to(torch.float64)).sum(dim=dims)


def solve_cg(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, event_dims: int, *,
             precondition: Callable[[torch.Tensor], torch.Tensor] | None = None, tol: float = 1e-10,
             maxiter: int = 500, what: str = "a linear system") -> torch.Tensor:
    """Solve ``M x = b`` for a symmetric positive definite ``M`` (``apply(v) = M v``) by preconditioned
    conjugate gradients, one system per row: ``b`` is ``(*batch, *event)`` with ``event_dims`` trailing
    event dims, and every row has its own step sizes. Stops when every finite row has ``||b - M x|| <=
    tol ||b||`` (inner products in float64); a row that is not finite is left as it comes out (the
    sampler's non-finite rule kills its particle). Raises :class:`CGError` after ``maxiter`` iterations.
    Each iteration costs one ``apply`` and one ``precondition``, and one device-to-host read of the
    convergence test (so a solve cannot be captured in a CUDA graph)."""
    dims = tuple(range(-event_dims, 0))
    shape = (*b.shape[:b.dim() - event_dims], *([1] * event_dims))
    pre = precondition or (lambda v: v)
    x = torch.zeros_like(b)
    r = b.clone()
    z = pre(r)
    p = z.clone()
    rz = _dot(r, z, dims)
    goal = tol * _dot(b, b, dims).sqrt()
    for it in range(int(maxiter) + 1):
        rn = _dot(r, r, dims).sqrt()
        active = (rn > goal) & torch.isfinite(rn)
        if not bool(active.any()):
            return x
        if it == maxiter:
            worst = float((rn / goal.clamp_min(1e-300) * tol)[active].max())
            raise CGError(f"{what}: conjugate gradients reached a relative residual of {worst:.3g} after {maxiter} "
                          f"iterations, not {tol:g} (raise the operator's cg_maxiter"
                          + (", or run in float64, dtype=torch.float64 from Python: a float32 solve can stall above "
                             "1e-5 on a very stiff system, as at h * kappa = 1e6 on a valid blur)"
                             if b.dtype == torch.float32 else ")"))
        Mp = apply(p)
        pMp = _dot(p, Mp, dims)
        alpha = torch.where(active & (pMp > 0), rz / torch.where(pMp > 0, pMp, 1.0), 0.0)
        a = alpha.reshape(shape).to(b.dtype)
        x = x + a * p
        r = r - a * Mp
        z = pre(r)
        rz_new = _dot(r, z, dims)
        beta = torch.where(active & (rz > 0), rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta.reshape(shape).to(b.dtype) * p
        rz = rz_new
    return x


class LinearOperator:
    """Base class of every operator the sampler takes. A subclass sets ``input_shape`` and ``output_shape`` (the
    prior's ``(C, H, W)`` and the measurement's, without batch dims) and implements

    - ``A(x)`` and ``A_adjoint(y)`` on batches ``(*batch, *input_shape)`` / ``(*batch, *output_shape)`` (always);
    - ``frobenius_sq()`` = ``trace(A^T A)`` (the potentials "noisy" and "scaled"; by default from
      ``spectral_trace``);
    - optionally ``spectral_apply(v, fn)`` = ``fn(A^T A) v``: the exact guidance step and Stage I; without it the
      sampler solves with conjugate gradients (``guidance="implicit"``);
    - ``spectral_trace(fn)`` and ``output_spectral_apply(u, fn)`` as well for the potential "inflated".

    :func:`check_operator` checks these, the shapes, and that ``A_adjoint`` is ``A``'s adjoint, before a run."""

    input_shape: tuple
    output_shape: tuple

    def __init__(self):
        self._cache: dict = {}

    # -- buffers, moved lazily to the device and dtype of the data ---------------------------
    def _buf(self, name: str, like: torch.Tensor, complex_: bool = False) -> torch.Tensor:
        dtype = like.dtype
        if complex_ and not dtype.is_complex:
            dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return self._on(name, like.device, dtype)

    def _on(self, name: str, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Buffer ``name`` on ``device`` (in ``dtype``, default its own), copied once (no host-to-device
        copy per call: the sampler's steps can then be captured in a CUDA graph)."""
        key = (name, device, dtype)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(device=device, dtype=dtype)
        return self._cache[key]

    # -- the operator -------------------------------------------------------------------------
    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement A(x), the forward operator")

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement A_adjoint(y), the adjoint of A")

    def __call__(self, x):
        return self.A(x)

    def AtA(self, x: torch.Tensor) -> torch.Tensor:
        return self.A_adjoint(self.A(x))

    def frobenius_sq(self) -> float:
        """``||A||_F^2 = trace(A^T A)`` (by default ``spectral_trace`` of the identity; for a small operator
        ``float(op.to_matrix().square().sum())``)."""
        if _implements(self, DERIVED["frobenius_sq"]):
            return float(self.spectral_trace(lambda e: e))
        raise NotImplementedError(f"{type(self).__name__} implements neither frobenius_sq() (trace(A^T A)) nor "
                                  "spectral_trace(fn)")

    def spectral_apply(self, v: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn(A^T A) v``: ``fn`` maps a tensor of eigenvalues of ``A^T A`` to multipliers."""
        raise NotImplementedError(f"{type(self).__name__} cannot diagonalise A^T A (no spectral_apply(v, fn))")

    def spectral_trace(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """``trace(fn(A^T A))``: the sum of ``fn`` over the eigenvalues of ``A^T A`` with multiplicity."""
        raise NotImplementedError(f"{type(self).__name__} does not implement spectral_trace(fn) (trace(fn(A^T A)))")

    def output_spectral_apply(self, u: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn(A A^T) u`` for ``u`` in the measurement space (the potentials of spec section 9 weight the
        residual with a function of ``A A^T``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement output_spectral_apply(u, fn) "
                                  "(fn(A A^T) u)")

    @property
    def supports_exact(self) -> bool:
        return type(self).spectral_apply is not LinearOperator.spectral_apply

    @property
    def stage1_noise_numel(self) -> int:
        """White noise per particle that :meth:`stage1_sample` takes: the input's size, and the output's too
        where Stage I is sampled by perturbation-optimisation (no spectral decomposition)."""
        D = math.prod(self.input_shape)
        return D if self.supports_exact else D + math.prod(self.output_shape)

    def to_matrix(self, dtype=torch.float64) -> torch.Tensor:
        """Dense matrix ``(prod(output_shape), prod(input_shape))`` (for small problems and tests)."""
        d = math.prod(self.input_shape)
        eye = torch.eye(d, dtype=dtype).reshape(d, *self.input_shape)
        return self.A(eye).reshape(d, -1).T.contiguous()

    # -- what the sampler needs ------------------------------------------------------------
    keeps_spectrum: bool = False
    """Whether :meth:`exact_guidance_step` can also return its result's transform (``keep_spectrum=True``) and
    :meth:`normal_residual` take it back (``spectrum=``): the sampler then carries each particle's spectrum from one
    step's guidance to the next step's gradient, one transform fewer per step (the circular :class:`Blur`)."""

    def _no_spectrum(self, spectrum=None, keep_spectrum: bool = False):
        if spectrum is not None or keep_spectrum:
            raise ValueError(f"{type(self).__name__} keeps no spectrum (keeps_spectrum is False): call it without "
                             "spectrum= or keep_spectrum=True")

    def normal_residual(self, x: torch.Tensor, y: torch.Tensor, with_norm: bool = False, use_triton=None, *,
                        scale: float = 1.0, second: float | None = None, spectrum=None):
        """``scale A^T (A x - y)`` (shape of ``x``) and, if ``with_norm``, ``||A x - y||^2`` (unscaled) over
        the event dims (float64, shape of the batch dims); with ``second`` as well, the norm is ``(2, *batch)``:
        ``||A x - y||^2`` and ``||A x - second y||^2``. ``use_triton`` selects fused kernels where the
        operator has them (``None``: the backend rule of :mod:`afdps.kernels.backend`); ``spectrum``: ``x``'s
        transform from ``exact_guidance_step(..., keep_spectrum=True)``, where :attr:`keeps_spectrum`."""
        self._no_spectrum(spectrum)
        if second is not None and not with_norm:
            raise ValueError("second scales a norm: it needs with_norm=True")
        r = self.A(x) - y
        out = self.A_adjoint(r)
        if float(scale) != 1.0:
            out = out * float(scale)
        if not with_norm:
            return out, None
        dims = tuple(range(-len(self.output_shape), 0))
        norm = r.square().sum(dim=dims, dtype=torch.float64)
        if second is None:
            return out, norm
        return out, torch.stack([norm, (r + (1.0 - float(second)) * y).square().sum(dim=dims, dtype=torch.float64)])

    def exact_guidance_step(self, x: torch.Tensor, y: torch.Tensor, h: float, kappa: float, use_triton=None, *,
                            keep_spectrum: bool = False):
        """``x - h phi(h kappa A^T A) kappa (A^T A x - A^T y)``: the guidance flow ``dx/dt = -kappa
        A^T (A x - y)`` integrated exactly over a step of length ``h``. With ``keep_spectrum`` (where
        :attr:`keeps_spectrum`): ``(x_new, its transform)``, which :meth:`normal_residual` takes back."""
        self._no_spectrum(keep_spectrum=keep_spectrum)
        r, _ = self.normal_residual(x, y)
        c = float(h) * float(kappa)
        return x - self.spectral_apply(r, lambda e: c * phi(c * e))

    def implicit_guidance_step(self, x: torch.Tensor, y: torch.Tensor, h: float, kappa: float) -> torch.Tensor:
        """The backward-Euler step of the guidance flow ``dx/dt = -kappa A^T (A x - y)``: ``x' = (I + h kappa
        A^T A)^-1 (x + h kappa A^T y)``, solved by conjugate gradients (:func:`solve_cg`, each iteration one
        ``A^T A`` product). Stable for every ``h`` and equal to the Euler step to first order: the guidance
        of operators that cannot diagonalise ``A^T A`` (``guidance="implicit"``)."""
        r, _ = self.normal_residual(x, y)
        return x - self.implicit_damped_step(r, float(h) * float(kappa))

    def implicit_damped_step(self, g: torch.Tensor, c: float) -> torch.Tensor:
        """``(I + c A^T A)^-1 c g`` by preconditioned conjugate gradients."""
        c = float(c)
        return solve_cg(lambda v: v + c * self.AtA(v), c * g, len(self.input_shape),
                        precondition=lambda v: self.approx_spectral_apply(v, lambda e: 1.0 / (1.0 + c * e)),
                        tol=self.cg_tol(g.dtype), maxiter=self.cg_maxiter, what=f"{type(self).__name__} guidance")

    def approx_spectral_apply(self, v: torch.Tensor, fn) -> torch.Tensor:
        """``fn(M) v`` for a cheap approximation ``M`` of ``A^T A`` (the preconditioner of the CG solves):
        ``A^T A`` itself where the operator diagonalises it (CG then converges in one iteration)."""
        return self.spectral_apply(v, fn) if self.supports_exact else v

    cg_maxiter: int = 500
    """Most conjugate-gradient iterations of one solve; more raises :class:`CGError`."""

    def cg_tol(self, dtype) -> float:
        """Relative residual ``||b - M x|| / ||b||`` at which the CG solves stop: 1e-5 in float32 (about 100
        times the unit round-off of the products), 1e-10 in float64."""
        return 1e-10 if dtype == torch.float64 else 1e-5

    def stage1_sample(self, y: torch.Tensor, sigma_y: float, lam: float, rho: float, noise: torch.Tensor) -> torch.Tensor:
        """Exact sample of ``N(0, rho^2 I) exp(-lam ||y - A x||^2 / (2 sigma_y^2))``.

        The Gaussian has precision ``I / rho^2 + lam A^T A / sigma_y^2`` and mean ``Cov lam A^T y /
        sigma_y^2``; ``noise`` is white, of the output's shape (e.g. ``(B, N, *input_shape)``), and ``y``
        broadcasts against it (``(B, 1, *output_shape)``).
        """
        if not self.supports_exact:
            return self._stage1_perturbation_optimisation(y, sigma_y, lam, rho, noise)
        a, b = 1.0 / float(rho) ** 2, float(lam) / float(sigma_y) ** 2
        out = self.spectral_apply(noise, lambda e: torch.rsqrt(a + b * e))
        if b > 0:
            out = out + self.spectral_apply(self.A_adjoint(y), lambda e: b / (a + b * e))
        return out

    def _stage1_perturbation_optimisation(self, y, sigma_y, lam, rho, noise):
        """Stage I without a spectral decomposition, exact by perturbation-optimisation: with precision ``P =
        I / rho^2 + b A^T A`` (``b = lam / sigma_y^2``), solve ``P x = z1 / rho + sqrt(b) A^T z2 + b A^T y`` (``z1``,
        ``z2`` white, of the input's and the output's shape) by conjugate gradients: the right-hand side has
        covariance ``P``, so ``x`` has mean ``P^-1 b A^T y`` and covariance ``P^-1``. ``noise (*batch,
        stage1_noise_numel)`` holds ``z1`` then ``z2``."""
        D = math.prod(self.input_shape)
        batch = noise.shape[:-1]
        z1 = noise[..., :D].reshape(*batch, *self.input_shape)
        a, b = 1.0 / float(rho) ** 2, float(lam) / float(sigma_y) ** 2
        if b == 0.0:
            return z1 * float(rho)
        z2 = noise[..., D:].reshape(*batch, *self.output_shape)
        rhs = z1 * math.sqrt(a) + self.A_adjoint(z2 * math.sqrt(b) + b * y)
        return solve_cg(lambda v: a * v + b * self.AtA(v), rhs, len(self.input_shape),
                        precondition=lambda v: self.approx_spectral_apply(v, lambda e: 1.0 / (a + b * e)),
                        tol=self.cg_tol(rhs.dtype), maxiter=self.cg_maxiter, what=f"{type(self).__name__} Stage I")

    def measure(self, x: torch.Tensor, sigma_y: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """``A x + sigma_y n`` with ``n ~ N(0, I)`` drawn from ``generator`` on ``x``'s device; ``sigma_y`` is a
        finite number >= 0 (0: no noise)."""
        check_real("sigma_y", sigma_y, low=0.0)
        ax = self.A(x)
        return ax + float(sigma_y) * torch.randn(ax.shape, generator=generator, device=ax.device, dtype=ax.dtype)

    def _check_input(self, x: torch.Tensor, shape=None):
        shape = self.input_shape if shape is None else shape
        if not x.dtype.is_floating_point:  # (integers were computed in integers: Dense truncated its matrix)
            raise TypeError(f"{type(self).__name__} takes floating-point tensors, got {x.dtype} (convert with "
                            ".double() or .float())")
        if tuple(x.shape[x.dim() - len(shape):]) != tuple(shape) or x.dim() < len(shape):
            raise ValueError(f"{type(self).__name__} expects trailing shape {tuple(shape)}, got {tuple(x.shape)}")


def _image_shape(image_shape) -> tuple:
    shape = _shape(image_shape, "image_shape")
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {shape}")
    return shape


def _implements(op, name: str) -> bool:
    """Whether ``op``'s class (or a class between it and :class:`LinearOperator`) defines ``name`` itself."""
    return getattr(type(op), name, None) is not getattr(LinearOperator, name, None)


# methods the base class derives from another one an operator implements: trace(A^T A) = spectral_trace(identity)
DERIVED = {"frobenius_sq": "spectral_trace"}


def _provides(op, name: str) -> bool:
    """Whether ``op`` can run ``name``: it implements it, or what :class:`LinearOperator` derives it from."""
    return _implements(op, name) or (name in DERIVED and _implements(op, DERIVED[name]))


# The adjoint test: for PROBES independent Gaussian pairs (x_k, y_k), the same for every image, in the run's dtype,
#   gap = sqrt(sum_k (<A x_k, y_k> - <x_k, A_adjoint(y_k)>)^2 / sum_k <A x_k, y_k>^2),
# the largest over the images. For Gaussian probes E <B x, y>^2 = ||B||_F^2, so gap^2 estimates
# ||A_adjoint^T - A||_F^2 / ||A||_F^2: the adjoint's error relative to A, in proportion to its size (an adjoint scaled
# by 1.01 gives 0.01 exactly). The test it replaced, ||A x||^2 against <x, A_adjoint(A x)>, saw an error antisymmetric
# to A (a kernel not flipped) only squared: an unflipped 5x5 kernel 6% off passed it at 1.4e-3.
# Measured 2026-12-07 (this CPU; tests/test_ops.py::test_adjoint_gap_*): the shipped operators (every eval
# task at 1x28x28 and 3x256x256, a valid blur, a dense 5x3, the identity) give at most 4.6e-7 in float32 and 1e-15 in
# float64; TF32 (inputs of A's and A^T's products rounded to 10 mantissa bits, emulated on a dense 5x3) at most 5.6e-4
# over 20 matrices; an adjoint scaled by 1.001 1e-3; a kernel not flipped 0.048 (a 5x5 Gaussian with one tap 0.012
# higher), 0.21 (a 9x9 motion kernel), 0.60 (61x61). An operator computing in float32 inside a float64 run passes.
ADJOINT_RTOL = 5e-3
ADJOINT_PROBES = 8


def check_operator(op, dtype=torch.float32, device=None, needs: dict | None = None, batch: int = 1) -> None:
    """Refuse an operator the sampler cannot use, before any work, in one sentence: not a
    :class:`LinearOperator`; a method it lacks (``A``, ``A_adjoint``, and ``needs``: ``{method: what needs it}``);
    ``A`` or ``A_adjoint`` returning another shape than ``(batch, 1, *output_shape)`` / ``(batch, 1,
    *input_shape)`` for particles of ``batch`` images, or another dtype or device than their input's; or an
    ``A_adjoint`` that is not ``A``'s adjoint (``<A x, y> = <x, A_adjoint(y)>`` to ``ADJOINT_RTOL``, root mean square
    over ``ADJOINT_PROBES`` random pairs per image in ``dtype``, relative to ``<A x, y>``'s)."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be an afdps.ops.LinearOperator: subclass it, set input_shape and output_shape and "
                        f"implement A and A_adjoint (README, 'Your own operator'); got {type(op).__name__}")
    name = type(op).__name__
    for method, why in {"A": "every run", "A_adjoint": "every run", **(needs or {})}.items():
        if not _provides(op, method):
            raise TypeError(f"{name} does not implement {method}, which {why} needs (afdps.ops.LinearOperator "
                            "lists what an operator provides)")
    # batch dims (images, particles) as the sampler passes them: (B, N, *input_shape); in the caller's grad mode
    # (an adjoint may be computed by autograd)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, 1, *op.input_shape), generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    Ax = _call(name, "A", op.A, x)
    _check_output(name, "A", Ax, (batch, 1, *op.output_shape), "output_shape", x)
    _check_output(name, "A_adjoint", _call(name, "A_adjoint", op.A_adjoint, Ax.detach()), (batch, 1, *op.input_shape),
                  "input_shape", x)
    gap = adjoint_gap(op, dtype, device, batch, gen)
    if not gap <= ADJOINT_RTOL:
        raise ValueError(f"{name}.A_adjoint is not the adjoint of {name}.A: for random x and y, <A x, y> and "
                         f"<x, A_adjoint(y)> differ by {gap:.3g} of the first (root mean square over "
                         f"{ADJOINT_PROBES} pairs; at most {ADJOINT_RTOL:g} is allowed)")


def adjoint_gap(op, dtype=torch.float64, device=None, batch: int = 1, generator=None) -> float:
    """The adjoint test's ``gap`` (see ``ADJOINT_RTOL``) for ``op``: ``ADJOINT_PROBES`` pairs per image as particles;
    0 where ``A`` observes nothing and ``A_adjoint`` returns 0 too, infinite where only ``A`` does."""
    name, gen = type(op).__name__, generator or torch.Generator().manual_seed(0)
    if batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    # the same pairs for every image: an operator alike for all images gets the same gap at any batch (the largest of
    # independent draws grew with the batch: a 2e-3 error passed alone and was refused among 256 images)
    def probes(shape):  # (in the run's dtype and device: 8 particles' worth per image, no float64 copies)
        v = torch.randn((1, ADJOINT_PROBES, *shape), generator=gen, dtype=torch.float64)
        return v.to(device=device, dtype=dtype).expand(batch, *v.shape[1:]).contiguous()
    xs, ys = probes(op.input_shape), probes(op.output_shape)
    Ax, Aty = _call(name, "A", op.A, xs), _call(name, "A_adjoint", op.A_adjoint, ys)
    _check_output(name, "A", Ax, (batch, ADJOINT_PROBES, *op.output_shape), "output_shape", xs)
    _check_output(name, "A_adjoint", Aty, (batch, ADJOINT_PROBES, *op.input_shape), "input_shape", ys)
    # each product in the run's dtype (its rounding, 6e-8 relative in float32, is far below the tolerance), each sum in
    # float64
    lhs = (Ax.detach() * ys).flatten(2).sum(-1, dtype=torch.float64).cpu()  # (batch, probes)
    rhs = (xs * Aty.detach()).flatten(2).sum(-1, dtype=torch.float64).cpu()
    num, den = (lhs - rhs).square().sum(1), lhs.square().sum(1)
    gaps = torch.where(den > 0, (num / den.clamp_min(torch.finfo(torch.float64).tiny)).sqrt(),
                       torch.where(num > 0, torch.inf, 0.0))
    return float(gaps.max())


def _call(name, what, fn, v):
    try:
        return fn(v)
    except Exception as exc:  # the user's operator: say which call, on what, failed
        raise ValueError(f"{name}.{what} failed on a {str(v.dtype)[6:]} batch of shape {tuple(v.shape)} on {v.device} "
                         f"({type(exc).__name__}: {exc})") from exc


def _check_output(name, what, got, want, attr, like):
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != want:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        each = "one particle" if want[1] == 1 else f"{want[1]} particles"
        raise ValueError(f"{name}.{what} returned {shape} for {each} of each image; (B, {want[1]}, *{attr}) = {want} "
                         "is needed (batch dims: images, particles)")
    # another dtype would silently change the run's precision (float32 values in a float64 run) or promote the
    # particles (a float64 result in a float32 run); another device fails later, deep in a step
    if got.dtype != like.dtype or got.device != like.device:
        raise ValueError(f"{name}.{what} returned {str(got.dtype)[6:]} on {got.device} for {str(like.dtype)[6:]} "
                         f"particles on {like.device}; an operator returns its input's dtype and device (cast inside "
                         f"{what}, or run with the dtype it computes in)")


class Blur(LinearOperator):
    """Circular blur: ``A x = conv2d(circular_pad(x), kernel)`` per channel (cross-correlation, as
    ``torch.nn.functional.conv2d`` computes it), applied as a product in the Fourier domain.

    ``A^T A`` is diagonal in the 2-D Fourier basis with eigenvalues ``|H|^2``, so ``A``, ``A^T``,
    ``A^T A``, the exact guidance step and the Stage-I sampler each cost one ``rfft2``/``irfft2`` pair.

    Parameters
    ----------
    kernel : (kh, kw) real array or tensor, odd sizes, at most the image size, finite and not all zero (any
        signs and sum: a difference filter is a blur here too; a blur kernel file of afdps restore must be
        non-negative with a positive sum).
    image_shape : (C, H, W).
    boundary : ``"circular"`` (wrap-around, the default) or ``"valid"``: a real photo's blur, where the
        measurement is the part of the blurred scene that the kernel saw whole and the unknown is the larger
        scene (``Blur(kernel, scene_shape, boundary="valid")`` is a :class:`ValidBlur`).
    output_size : ``(h, w)`` of a ``"valid"`` measurement (default: ``(H - kh + 1, W - kw + 1)``).
    """

    boundary = "circular"

    def __new__(cls, kernel=None, image_shape=None, boundary: str = "circular", output_size=None):
        if boundary not in ("circular", "valid"):
            raise ValueError(f"Blur boundary must be 'circular' or 'valid', got {boundary!r}")
        if cls is Blur and boundary == "valid":
            cls = ValidBlur
        return super().__new__(cls)

    def __init__(self, kernel, image_shape, boundary: str = "circular", output_size=None):
        super().__init__()
        if output_size is not None:
            raise ValueError("output_size is for boundary='valid' (a circular blur's output has the image's size)")
        self._setup(kernel, image_shape)
        self.output_shape = self.input_shape

    def _setup(self, kernel, image_shape):
        k = _values(kernel, "Blur kernel")
        if k.dim() != 2:
            raise ValueError(f"Blur kernel must be 2-D (kh, kw), got shape {tuple(k.shape)}")
        C, Hh, Ww = _image_shape(image_shape)
        kh, kw = k.shape
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"Blur kernel sizes must be odd, got {tuple(k.shape)}")
        if kh > Hh or kw > Ww:
            raise ValueError(f"Blur kernel {tuple(k.shape)} is larger than the image {(Hh, Ww)}")
        if not torch.isfinite(k).all():
            raise ValueError("Blur kernel has non-finite entries")
        if not bool(k.any()):
            raise ValueError("Blur kernel is all zeros: A = 0 measures nothing")
        self.kernel = k
        self.input_shape = (C, Hh, Ww)
        # Correlation with k equals multiplication by conj(fft2(k placed with its centre at (0, 0))).
        full = torch.zeros(Hh, Ww, dtype=torch.float64)
        full[:kh, :kw] = k
        full = torch.roll(full, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
        self.transfer = torch.conj(torch.fft.rfft2(full))
        self.eigenvalues = self.transfer.real.square() + self.transfer.imag.square()

    def _fft(self, x):
        if x.numel() == 0:  # (an empty batch: MKL's FFT refuses it with a configuration error)
            return x.new_zeros(x.shape[:-1] + (x.shape[-1] // 2 + 1,), dtype=torch.promote_types(x.dtype,
                                                                                               torch.complex64))
        return torch.fft.rfft2(x, norm="ortho")

    def _ifft(self, X):
        if X.numel() == 0:
            return torch.zeros(X.shape[:-2] + tuple(self.input_shape[-2:]), dtype=X.real.dtype, device=X.device)
        return torch.fft.irfft2(X, s=self.input_shape[-2:], norm="ortho")

    def _circ(self, x):
        return self._ifft(self._buf("transfer", x, True) * self._fft(x))

    def _circ_adjoint(self, x):
        return self._ifft(torch.conj(self._buf("transfer", x, True)) * self._fft(x))

    def A(self, x):
        self._check_input(x)
        return self._circ(x)

    def A_adjoint(self, y):
        self._check_input(y)
        return self._circ_adjoint(y)

    def AtA(self, x):
        self._check_input(x)
        return self._ifft(self._buf("eigenvalues", x) * self._fft(x))

    def frobenius_sq(self):
        C, Hh, Ww = self.input_shape
        return float(C * Hh * Ww * self.kernel.square().sum())

    def spectral_apply(self, v, fn):
        e = self._on("eigenvalues", v.device)
        return self._ifft(fn(e).to(v.dtype) * self._fft(v))

    def spectral_trace(self, fn):
        C, Hh, Ww = self.input_shape
        w = fourier.rfft_weights(Ww, dtype=torch.float64)  # each rfft column stands for 1 or 2 frequencies
        return float(C * (fn(self.eigenvalues).to(torch.float64) * w).sum())

    def output_spectral_apply(self, u, fn):
        # square and circulant: A A^T = A^T A, the same Fourier eigenbasis
        return self.spectral_apply(u, fn)

    keeps_spectrum = True

    def _spectrum_of(self, x, spectrum):
        """``rfft2(x)``, or ``spectrum`` (``x``'s, kept by :meth:`exact_guidance_step`) after checking its shape."""
        if spectrum is None:
            return self._fft(x)
        C, Hh, Ww = self.input_shape
        want = (*x.shape[:-2], Hh, Ww // 2 + 1)
        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        if tuple(spectrum.shape) != want or spectrum.dtype != cdtype or spectrum.device != x.device:
            raise ValueError(f"spectrum must be rfft2 of x: {cdtype} {want} on {x.device}, got {spectrum.dtype} "
                             f"{tuple(spectrum.shape)} on {spectrum.device}")
        return spectrum

    def normal_residual(self, x, y, with_norm=False, use_triton=None, *, scale=1.0, second=None, spectrum=None):
        self._check_input(x)
        R, norm = fourier.blur_residual(self._spectrum_of(x, spectrum), self._buf("transfer", x, True), self._fft(y),
                                        self.input_shape[-1], with_norm, use_triton=use_triton, scale=float(scale),
                                        second=None if second is None else float(second))
        return self._ifft(R), norm

    def exact_guidance_step(self, x, y, h, kappa, use_triton=None, *, keep_spectrum=False):
        self._check_input(x)
        X = fourier.blur_guidance(self._fft(x), self._buf("transfer", x, True), self._fft(y), float(h) * float(kappa),
                                  use_triton=use_triton)
        out = self._ifft(X)
        return (out, X) if keep_spectrum else out

    def __repr__(self):
        return f"Blur(kernel={tuple(self.kernel.shape)}, image_shape={self.input_shape})"


def valid_size(kernel_shape, scene_hw) -> tuple[int, int]:
    """``(H - kh + 1, W - kw + 1)``: the most a valid blur by a ``kernel_shape`` kernel measures of a scene (0 or
    less where the kernel is larger than the scene: callers compare a window against it; ``Blur`` refuses such a
    kernel)."""
    (kh, kw), (Hh, Ww) = tuple(kernel_shape), tuple(scene_hw)
    return Hh - kh + 1, Ww - kw + 1


class ValidBlur(Blur):
    """Blur with a real boundary: ``A x = crop(circular blur of x)``, the measured ``(h, w)`` window centred
    in the scene ``x (C, H, W)`` and at least half a kernel from its edges, so that no measured pixel sees
    the wrap-around (the window is the ``"valid"`` part of a linear convolution; the default window is the
    whole valid part, ``(H - kh + 1, W - kw + 1)``). Made by ``Blur(kernel, scene_shape, boundary="valid")``.

    ``A^T A = K^T S^T S K`` (``K`` circular, ``S`` the crop) is not diagonal in any cheap basis, so the
    exact guidance step and the spectral functions are not available: the sampler uses the implicit
    guidance step (:meth:`implicit_guidance_step`, conjugate gradients preconditioned by the circular
    blur's ``(I + c K^T K)^-1``, one FFT pair per iteration) and Stage I by perturbation-optimisation
    (:meth:`~LinearOperator.stage1_sample`, the fallback of every operator without a spectral decomposition).
    Tolerances: :meth:`~LinearOperator.cg_tol`, at most ``cg_maxiter`` iterations.
    """

    boundary = "valid"

    def __init__(self, kernel, image_shape, boundary: str = "valid", output_size=None):
        LinearOperator.__init__(self)
        if boundary != "valid":
            raise ValueError(f"ValidBlur has boundary 'valid', got {boundary!r}")
        self._setup(kernel, image_shape)
        C, Hh, Ww = self.input_shape
        kh, kw = self.kernel.shape
        most = valid_size(self.kernel.shape, (Hh, Ww))
        h, w = most if output_size is None else _shape(output_size, "output_size", 2)
        if h > most[0] or w > most[1]:
            raise ValueError(f"a valid blur of a {Hh}x{Ww} scene by a {kh}x{kw} kernel measures at most {most[0]}x{most[1]} "
                             f"pixels, got output_size {(h, w)}")
        self.output_shape = (C, h, w)
        self.top, self.left = (Hh - h) // 2, (Ww - w) // 2
        mask = torch.zeros(Hh, Ww, dtype=torch.float64)
        mask[self.top:self.top + h, self.left:self.left + w] = 1.0
        self.window = mask

    @property
    def supports_exact(self) -> bool:
        return False

    def _crop(self, x):
        h, w = self.output_shape[-2:]
        return x[..., self.top:self.top + h, self.left:self.left + w]

    def _pad(self, y):
        C, Hh, Ww = self.input_shape
        h, w = self.output_shape[-2:]
        return F.pad(y, (self.left, Ww - w - self.left, self.top, Hh - h - self.top))

    def A(self, x):
        self._check_input(x)
        return self._crop(self._circ(x))

    def A_adjoint(self, y):
        self._check_input(y, self.output_shape)
        return self._circ_adjoint(self._pad(y))

    def AtA(self, x):
        self._check_input(x)
        return self._circ_adjoint(self._buf("window", x) * self._circ(x))

    def frobenius_sq(self):
        C, h, w = self.output_shape
        return float(C * h * w * self.kernel.square().sum())

    def spectral_apply(self, v, fn):
        raise NotImplementedError("a valid blur cannot diagonalise A^T A (the sampler uses guidance='implicit')")

    def spectral_trace(self, fn):
        raise NotImplementedError("a valid blur cannot diagonalise A^T A")

    def output_spectral_apply(self, u, fn):
        raise NotImplementedError("a valid blur cannot diagonalise A A^T")

    def approx_spectral_apply(self, v, fn):
        """``fn(K^T K) v``: the circular blur's ``A^T A``, which a valid blur's equals away from the edges."""
        return Blur.spectral_apply(self, v, fn)

    keeps_spectrum = False

    def normal_residual(self, x, y, with_norm=False, use_triton=None, *, scale=1.0, second=None, spectrum=None):
        return LinearOperator.normal_residual(self, x, y, with_norm, scale=scale, second=second, spectrum=spectrum)

    def exact_guidance_step(self, x, y, h, kappa, use_triton=None, *, keep_spectrum=False):
        raise NotImplementedError("a valid blur has no exact guidance step (use guidance='implicit')")

    def implicit_guidance_step(self, x, y, h, kappa):
        """The backward-Euler guidance step solved in the measurement space: ``x' = x - A^T (I + c A A^T)^-1 c
        (A x - y)`` with ``c = h kappa`` (equal to the scene-space form by the push-through identity; ``A A^T``
        is the blur restricted to the window, whose circular blur on the window's own grid preconditions it:
        measured on 3x316x316 scenes, 61x61 std-3 kernel, float32, tol 1e-5: 18 iterations at c = 40, 81 at
        c = 1000, against 31 and 152 in the scene space)."""
        c = float(h) * float(kappa)
        circ = self._window_blur()
        pre = None if circ is None else (lambda v: circ.spectral_apply(v, lambda e: 1.0 / (1.0 + c * e)))
        u = solve_cg(lambda v: v + c * self.A(self.A_adjoint(v)), c * (self.A(x) - y), len(self.output_shape),
                     precondition=pre, tol=self.cg_tol(x.dtype), maxiter=self.cg_maxiter,
                     what="ValidBlur guidance")
        return x - self.A_adjoint(u)

    def _window_blur(self):
        """The circular blur on the measurement's grid (``None`` where the kernel is larger than the window)."""
        if "window_blur" not in self._cache:
            C, h, w = self.output_shape
            kh, kw = self.kernel.shape
            self._cache["window_blur"] = Blur(self.kernel, (C, h, w)) if kh <= h and kw <= w else None
        return self._cache["window_blur"]

    def __repr__(self):
        return (f"Blur(kernel={tuple(self.kernel.shape)}, image_shape={self.input_shape}, boundary='valid', "
                f"output_size={self.output_shape[1:]})")


class BlockDownsample(LinearOperator):
    """Super-resolution operator: average over non-overlapping ``factor x factor`` blocks.

    ``A^T A = P / factor^2`` with ``P`` the projection onto block-constant images, so its eigenvalues
    are ``1 / factor^2`` (block means) and ``0`` (in-block residuals).
    """

    def __init__(self, factor: int, image_shape):
        super().__init__()
        f = check_int("BlockDownsample factor", factor, 1)
        C, Hh, Ww = _image_shape(image_shape)
        self.factor = f
        if Hh % f or Ww % f:
            raise ValueError(f"image size {(Hh, Ww)} is not divisible by the factor {f}")
        self.input_shape = (C, Hh, Ww)
        self.output_shape = (C, Hh // f, Ww // f)

    def _pool(self, x):
        lead = x.shape[:-3]
        out = F.avg_pool2d(x.reshape(-1, *x.shape[-3:]), self.factor)
        return out.reshape(*lead, *out.shape[-3:])

    def _up(self, y):
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)

    def A(self, x):
        self._check_input(x)
        return self._pool(x)

    def A_adjoint(self, y):
        self._check_input(y, self.output_shape)
        return self._up(y) / self.factor**2

    def frobenius_sq(self):
        C, Hh, Ww = self.input_shape
        return C * Hh * Ww / self.factor**4

    def _multipliers(self, fn) -> tuple[float, float]:
        """``fn`` at the two eigenvalues of ``A^T A``: ``1 / factor^2`` (block means) and 0 (residuals)."""
        one = torch.tensor(1.0 / self.factor**2, dtype=torch.float64)
        return float(fn(one)), float(fn(torch.zeros_like(one)))

    def spectral_apply(self, v, fn):
        f1, f0 = self._multipliers(fn)
        mean = self._up(self._pool(v))
        return f1 * mean + f0 * (v - mean)

    def spectral_trace(self, fn):
        f1, f0 = self._multipliers(fn)
        d = math.prod(self.input_shape)
        means = d // self.factor**2
        return f1 * means + f0 * (d - means)

    def output_spectral_apply(self, u, fn):
        # A A^T = I / factor^2 on the low-resolution images
        return self._multipliers(fn)[0] * u

    def __repr__(self):
        return f"BlockDownsample(factor={self.factor}, image_shape={self.input_shape})"


class Inpaint(LinearOperator):
    """Masking: ``A x = mask * x`` with a 0/1 mask of shape ``(H, W)`` or ``(C, H, W)``.

    The measurement keeps the image's shape; missing pixels of ``y`` are zero and carry no noise
    (:meth:`measure`), so ``||y - A x||^2`` counts observed pixels only.
    """

    def __init__(self, mask, image_shape=None):
        super().__init__()
        m = _values(mask, "Inpaint mask")
        if m.dim() not in (2, 3):
            raise ValueError(f"Inpaint mask must be (H, W) or (C, H, W), got shape {tuple(m.shape)}")
        odd = m[(m != 0) & (m != 1)]
        if odd.numel():
            found = ", ".join(f"{v:g}" for v in odd.unique()[:3].tolist()) + (" ..." if odd.unique().numel() > 3 else "")
            raise ValueError(f"Inpaint mask must contain only 0 (missing) and 1 (observed); it holds {found}"
                             + (" (an 8-bit mask image on 0..255: divide it by 255)" if bool((odd == 255).all())
                                else ""))
        if image_shape is None:
            if m.dim() == 2:
                raise ValueError("Inpaint needs image_shape=(C, H, W) when the mask is 2-D")
            image_shape = tuple(m.shape)
        shape = _image_shape(image_shape)
        try:
            self.mask = torch.broadcast_to(m, shape).clone()
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(m.shape)} does not fit image_shape {shape}") from None
        self.input_shape = self.output_shape = shape

    def A(self, x):
        self._check_input(x)
        return self._buf("mask", x) * x

    A_adjoint = A

    def AtA(self, x):
        return self.A(x)

    def frobenius_sq(self):
        return float(self.mask.sum())

    def spectral_apply(self, v, fn):
        m = self._on("mask", v.device)
        return fn(m).to(v.dtype) * v

    def spectral_trace(self, fn):
        return float(fn(self.mask).to(torch.float64).sum())

    # the measurement keeps the image's shape and A A^T = A^T A = diag(mask)
    output_spectral_apply = spectral_apply

    def measure(self, x, sigma_y, generator=None):
        check_real("sigma_y", sigma_y, low=0.0)
        return self.A(x + float(sigma_y) * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))

    def __repr__(self):
        return f"Inpaint(observed={int(self.mask.sum())}/{self.mask.numel()}, image_shape={self.input_shape})"


class Identity(LinearOperator):
    """Denoising: ``A = I`` on events of shape ``shape``."""

    def __init__(self, shape):
        super().__init__()
        self.input_shape = self.output_shape = _shape(shape, "shape")

    def A(self, x):
        self._check_input(x)
        return x

    A_adjoint = A

    def AtA(self, x):
        return x

    def frobenius_sq(self):
        return float(math.prod(self.input_shape))

    def spectral_apply(self, v, fn):
        return fn(torch.tensor(1.0, dtype=torch.float64)).to(v.dtype) * v

    def spectral_trace(self, fn):
        return float(fn(torch.tensor(1.0, dtype=torch.float64))) * math.prod(self.input_shape)

    output_spectral_apply = spectral_apply

    def __repr__(self):
        return f"Identity(shape={self.input_shape})"


class Dense(LinearOperator):
    """A dense matrix ``(m, d)`` acting on vectors ``(..., d)``; ``A^T A`` is diagonalised once (float64)."""

    def __init__(self, matrix):
        super().__init__()
        M = _values(matrix, "Dense matrix")
        if M.dim() != 2:
            raise ValueError(f"Dense matrix must be 2-D, got shape {tuple(M.shape)}")
        if not torch.isfinite(M).all():
            raise ValueError("Dense matrix has non-finite entries")
        self.matrix = M
        self.output_shape, self.input_shape = (M.shape[0],), (M.shape[1],)
        evals, self.eigenvectors = torch.linalg.eigh(M.T @ M)
        self.eigenvalues = evals.clamp_min(0.0)
        out_evals, self.output_eigenvectors = torch.linalg.eigh(M @ M.T)
        self.output_eigenvalues = out_evals.clamp_min(0.0)

    def A(self, x):
        self._check_input(x)
        return x @ self._buf("matrix", x).T

    def A_adjoint(self, y):
        self._check_input(y, self.output_shape)
        return y @ self._buf("matrix", y)

    def frobenius_sq(self):
        return float(self.matrix.square().sum())

    def spectral_apply(self, v, fn):
        V = self._on("eigenvectors", v.device)
        mult = fn(self._on("eigenvalues", v.device))
        return (((v.to(torch.float64) @ V) * mult) @ V.T).to(v.dtype)

    def spectral_trace(self, fn):
        return float(fn(self.eigenvalues).to(torch.float64).sum())

    def output_spectral_apply(self, u, fn):
        V = self._on("output_eigenvectors", u.device)
        mult = fn(self._on("output_eigenvalues", u.device))
        return (((u.to(torch.float64) @ V) * mult) @ V.T).to(u.dtype)

    def to_matrix(self, dtype=torch.float64):
        return self.matrix.to(dtype)

    def __repr__(self):
        return f"Dense({self.output_shape[0]}x{self.input_shape[0]})"


# -- kernels and masks --------------------------------------------------------------------------

def gaussian_kernel(size: int, std: float) -> torch.Tensor:
    """``(size, size)`` isotropic Gaussian sampled on the integer grid centred on the middle pixel,
    normalised to sum 1 (the paper's deblurring kernel is ``gaussian_kernel(61, 3.0)``)."""
    try:
        odd = check_int("kernel size", size, 1) % 2 == 1
    except ValueError:
        odd = False
    if not odd:
        raise ValueError(f"kernel size must be a positive odd integer, got {size!r}")
    size = int(size)
    std = check_real("kernel std", std, positive=True)
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / std) ** 2)
    k = g[:, None] * g[None, :]
    return k / k.sum()


def box_mask(image_size: Sequence[int], box_size: int | Sequence[int], top_left: Sequence[int] | None = None,
             seed: int | None = None) -> torch.Tensor:
    """``(H, W)`` mask, 0 inside a box (missing), 1 elsewhere. The box is centred unless ``top_left``
    is given, or drawn uniformly inside the image when ``seed`` is given."""
    Hh, Ww = _hw(image_size)
    bh, bw = (check_int("box_size", box_size, 1),) * 2 if np.isscalar(box_size) else _shape(box_size, "box_size", 2)
    if not (0 < bh <= Hh and 0 < bw <= Ww):
        raise ValueError(f"box {(bh, bw)} does not fit in the image {(Hh, Ww)}")
    if top_left is not None and seed is not None:
        raise ValueError("give top_left or seed, not both")
    if top_left is None:
        if seed is None:
            top_left = ((Hh - bh) // 2, (Ww - bw) // 2)
        else:
            rng = np.random.default_rng(check_seed(seed))
            top_left = (int(rng.integers(0, Hh - bh + 1)), int(rng.integers(0, Ww - bw + 1)))
    if isinstance(top_left, (str, bytes)) or not hasattr(top_left, "__iter__") or len(tuple(top_left)) != 2:
        raise ValueError(f"top_left must be (row, column), got {top_left!r}")
    r, c = (check_int("top_left", v, 0) for v in top_left)
    if not (0 <= r <= Hh - bh and 0 <= c <= Ww - bw):
        raise ValueError(f"box at {tuple(top_left)} of size {(bh, bw)} leaves the image {(Hh, Ww)}")
    m = torch.ones(Hh, Ww, dtype=torch.float64)
    m[r:r + bh, c:c + bw] = 0.0
    return m


def random_mask(image_size: Sequence[int], fraction_missing: float, seed: int | None = 0) -> torch.Tensor:
    """``(H, W)`` mask with exactly ``round(fraction_missing * H * W)`` missing pixels (0), seeded."""
    Hh, Ww = _hw(image_size)
    fraction_missing = check_real("fraction_missing", fraction_missing, low=0.0, allowed="a number in [0, 1)")
    if not fraction_missing < 1.0:
        raise ValueError(f"fraction_missing must be a number in [0, 1), got {fraction_missing!r}")
    rng = np.random.default_rng(check_seed(seed))
    n_missing = int(round(fraction_missing * Hh * Ww))
    m = np.ones(Hh * Ww)
    m[rng.permutation(Hh * Ww)[:n_missing]] = 0.0
    return torch.from_numpy(m.reshape(Hh, Ww))
