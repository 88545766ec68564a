r"""Forward-operator interfaces.

An inverse problem is :math:`y = A(x) + n`, with :math:`A` the physics (the forward operator) and :math:`n`
drawn from a :class:`~invdiff.operators.NoiseModel`. An :class:`Operator` carries both:

* ``op(x)`` / ``op.forward(x)`` — the noiseless :math:`A(x)`;
* ``op.measure(x, generator=None)`` — a simulated noisy measurement, ``op.noise.sample(A(x))``;
* ``op.log_likelihood(x, y)`` — :math:`\log p(y \mid x)`, one value per batch entry;
* ``op.vjp(x, v)`` — :math:`J_A(x)^H v`, by autograd unless overridden.

A :class:`LinearOperator` adds the adjoint :math:`A^H` (``adjoint``, ``.H``), the normal operator
:math:`A^H A`, the pseudo-inverse, and the two exact Gaussian steps that split Gibbs needs,

.. math::
    \operatorname{prox}(z) = \arg\min_x \frac{\|y - Ax\|^2}{2\sigma_y^2} + \frac{\|x - z\|^2}{2\rho^2},
    \qquad x \sim p(x \mid y, z) \propto \exp\Big(-\frac{\|y - Ax\|^2}{2\sigma_y^2}
    - \frac{\|x - z\|^2}{2\rho^2}\Big),

whose generic versions solve with conjugate gradients; closed forms (SVD, FFT, masks) override them.

Shapes: every operator is built with the shape it acts on: ``in_shape`` and ``out_shape`` (no batch dim).
Inputs are ``(*batch, *in_shape)`` with any number of leading batch dims, outputs ``(*batch, *out_shape)``.
``in_dtype`` / ``out_dtype`` are the working dtypes at single precision; a float64 input is computed in float64
(complex128 for complex operators), so the same operator serves fast float32 work and float64 dot tests.

Writing an operator: subclass :class:`LinearOperator` (or :class:`Operator` for nonlinear physics), call
``super().__init__(in_shape, out_shape, noise=..., in_dtype=..., out_dtype=...)``, implement ``forward`` (and
``adjoint``), then run :func:`invdiff.testing.check_operator` on it.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from invdiff.linalg import batch_scalar, complex_dtype, conjugate_gradient, real_dtype

from .noise import GaussianNoise, NoiseModel

__all__ = ["Operator", "LinearOperator"]


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0 or any(s <= 0 for s in shape):
        raise ValueError(f"shapes must be non-empty tuples of positive sizes, got {shape}")
    return shape


def cast_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cast a stored tensor ``t`` to the precision of input ``x``, keeping ``t`` real or complex."""
    rdtype = real_dtype(x.dtype)
    target = complex_dtype(rdtype) if t.is_complex() else rdtype
    return t if t.dtype == target else t.to(target)


class Operator(nn.Module):
    """A forward model :math:`A` with its noise model. Abstract: implement ``forward``.

    Args:
        in_shape: shape of one input ``x`` (no batch dim).
        out_shape: shape of one measurement ``y`` (no batch dim).
        noise: the :class:`NoiseModel` of the measurements, or ``None`` for a noiseless operator (then
            ``measure`` and ``log_likelihood`` raise).
        in_dtype: working dtype of inputs (``torch.float32`` or ``torch.complex64``).
        out_dtype: working dtype of outputs (default ``in_dtype``).
    """

    def __init__(
        self,
        in_shape,
        out_shape,
        *,
        noise: NoiseModel | None = None,
        in_dtype: torch.dtype = torch.float32,
        out_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.in_shape = _shape(in_shape)
        self.out_shape = _shape(out_shape)
        self.in_dtype = in_dtype
        self.out_dtype = in_dtype if out_dtype is None else out_dtype
        if noise is not None and not isinstance(noise, NoiseModel):
            raise TypeError(f"noise must be a NoiseModel such as GaussianNoise(std), got {type(noise).__name__}")
        self.noise = noise

    # -- validation -----------------------------------------------------------------------------------------
    @staticmethod
    def _prepare(x, shape: tuple[int, ...], dtype: torch.dtype, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        n = len(shape)
        if x.ndim < n or tuple(x.shape[x.ndim - n :]) != shape:
            raise ValueError(f"{what}: expected shape (*batch, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        if x.is_complex() and not dtype.is_complex:
            raise TypeError(f"{what}: this operator takes real input, got dtype {x.dtype}")
        if not (x.is_floating_point() or x.is_complex()):
            x = x.to(real_dtype(dtype))
        if dtype.is_complex and not x.is_complex():
            x = x.to(complex_dtype(x.dtype))
        return x

    def __call__(self, x, *args, **kwargs):
        x = self._prepare(x, self.in_shape, self.in_dtype, f"{type(self).__name__} input")
        return super().__call__(x, *args, **kwargs)

    def _batch_shape(self, x: torch.Tensor) -> torch.Size:
        return x.shape[: x.ndim - len(self.in_shape)]

    # -- the interface --------------------------------------------------------------------------------------
    @property
    def is_linear(self) -> bool:
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The noiseless measurement :math:`A(x)`, shape ``(*batch, *out_shape)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x)")

    def _require_noise(self) -> NoiseModel:
        if self.noise is None:
            raise ValueError(
                f"{type(self).__name__} has no noise model; build it with noise=GaussianNoise(std) "
                "or use op.with_noise(...)"
            )
        return self.noise

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A simulated noisy measurement ``noise.sample(A(x))``, shape ``(*batch, *out_shape)``."""
        return self._require_noise().sample(self(x), generator=generator)

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(y \mid x)`, one value per broadcast batch entry of ``x`` and ``y``."""
        y = self._prepare(y, self.out_shape, self.out_dtype, f"{type(self).__name__} measurement")
        return self._require_noise().log_likelihood(y, self(x), event_ndim=len(self.out_shape))

    def vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r"""Vector-Jacobian product :math:`J_A(x)^H v` by autograd; shape of ``x``."""
        x = self._prepare(x, self.in_shape, self.in_dtype, f"{type(self).__name__} input")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = self(xg)
            (g,) = torch.autograd.grad(out, xg, grad_outputs=v.to(out.dtype))
        return g

    def with_noise(self, noise: NoiseModel | None) -> "Operator":
        """A shallow copy sharing the physics with another noise model; ``self`` is unchanged."""
        if noise is not None and not isinstance(noise, NoiseModel):
            raise TypeError(f"noise must be a NoiseModel such as GaussianNoise(std), got {type(noise).__name__}")
        new = copy.copy(self)
        new._modules = dict(self._modules)
        new._buffers = dict(self._buffers)
        new._parameters = dict(self._parameters)
        new.noise = noise
        return new

    def __matmul__(self, other: "Operator") -> "Operator":
        if not isinstance(other, Operator):
            raise TypeError(
                "`@` composes operators (A @ B applies B first); to apply an operator to a tensor call it: A(x)"
            )
        from .linear import compose

        return compose(self, other)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


class LinearOperator(Operator):
    r"""A linear :math:`A` with adjoint :math:`A^H`. Abstract: implement ``forward`` and ``adjoint``.

    For an operator with real input and complex output (a real-linear map), ``adjoint`` must return the real
    part of :math:`A^H y`, the adjoint for the real inner product.
    """

    @property
    def is_linear(self) -> bool:
        return True

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        r""":math:`A^H y`, shape ``(*batch, *in_shape)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement adjoint(y)")

    @property
    def H(self) -> "LinearOperator":
        """The adjoint as an operator (``A.H.H`` is ``A``)."""
        from .linear import AdjointOperator

        return AdjointOperator(self)

    def vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`A^H v` (the Jacobian of a linear map is the map itself)."""
        v = self._prepare(v, self.out_shape, self.out_dtype, f"{type(self).__name__} vjp vector")
        return self.adjoint(v)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`A^H A x`, shape of ``x``."""
        return self.adjoint(self(x))

    def to_matrix(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        r"""The dense matrix of :math:`A`, shape ``(prod(out_shape), prod(in_shape))``, built column by column.

        Meant for small problems and exact references (it costs ``prod(in_shape)`` forward calls, batched).
        """
        n = math.prod(self.in_shape)
        dtype = dtype or self.in_dtype
        if self.in_dtype.is_complex:
            dtype = complex_dtype(dtype)
        eye = torch.eye(n, dtype=dtype, device=_device_of(self)).reshape(n, *self.in_shape)
        cols = self(eye).reshape(n, -1)
        return cols.transpose(0, 1).contiguous()

    def _gaussian_std(self) -> torch.Tensor:
        noise = self._require_noise()
        if not isinstance(noise, GaussianNoise):
            raise TypeError(
                f"the exact likelihood step needs GaussianNoise, this operator has {type(noise).__name__}; "
                "use a Langevin/MALA likelihood step instead"
            )
        if (noise.std == 0).any():
            raise ValueError("the exact likelihood step needs noise std > 0")
        return noise.std

    def pinv(self, y: torch.Tensor, *, max_iter: int = 200, tol: float = 1e-6) -> torch.Tensor:
        r"""Minimum-norm least-squares solution :math:`A^+ y`, by conjugate gradients on :math:`A^H A x = A^H y`.

        Args:
            y: measurement, shape ``(*batch, *out_shape)``.
            max_iter: CG iteration cap. tol: relative residual tolerance of the normal equations.
        """
        y = self._prepare(y, self.out_shape, self.out_dtype, f"{type(self).__name__} measurement")
        b = self.adjoint(y)
        return conjugate_gradient(self.normal, b, event_ndim=len(self.in_shape), max_iter=max_iter, tol=tol)

    def _coupling(self, z, y) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated ``z`` and ``y``, ``z`` expanded to their joint batch shape (so a per-batch ``rho`` fits)."""
        name = type(self).__name__
        z = self._prepare(z, self.in_shape, self.in_dtype, f"{name} coupling point")
        y = self._prepare(y, self.out_shape, self.out_dtype, f"{name} measurement")
        batch = torch.broadcast_shapes(self._batch_shape(z), y.shape[: y.ndim - len(self.out_shape)])
        return z.expand(*batch, *self.in_shape), y

    def prox_likelihood(
        self, z: torch.Tensor, y: torch.Tensor, rho, *, max_iter: int = 200, tol: float = 1e-7
    ) -> torch.Tensor:
        r"""The mean of :math:`p(x \mid y, z)`: :math:`(A^H A/\sigma_y^2 + I/\rho^2)^{-1}(A^H y/\sigma_y^2 + z/\rho^2)`.

        Args:
            z: coupling point, shape ``(*batch, *in_shape)``.
            y: measurement, shape ``(*batch, *out_shape)`` or ``out_shape`` (broadcast).
            rho: coupling standard deviation, a number or a tensor of ``z``'s batch shape.
            max_iter, tol: conjugate-gradient settings of this call (the operator is not changed).
        """
        z, y = self._coupling(z, y)
        std = self._gaussian_std()
        n = len(self.in_shape)
        inv_rho2 = 1.0 / batch_scalar(rho, z, n) ** 2
        std = std.to(device=z.device, dtype=real_dtype(z.dtype))

        def apply_P(x):
            return self.adjoint(self(x) / std**2) + inv_rho2 * x

        b = self.adjoint(y / std**2) + inv_rho2 * z
        return conjugate_gradient(apply_P, b, x0=z, event_ndim=n, max_iter=max_iter, tol=tol)

    def sample_conditional(
        self,
        z: torch.Tensor,
        y: torch.Tensor,
        rho,
        *,
        generator: torch.Generator | None = None,
        max_iter: int = 200,
        tol: float = 1e-7,
    ) -> torch.Tensor:
        r"""An exact draw from :math:`p(x \mid y, z) \propto \exp(-\|y-Ax\|^2/2\sigma_y^2 - \|x-z\|^2/2\rho^2)`.

        Perturb-and-MAP: perturb :math:`y` with the measurement noise and :math:`z` with
        :math:`\mathcal N(0, \rho^2 I)`, then take the proximal mean; the result is exactly Gaussian with the
        conditional mean and covariance (Papandreou & Yuille 2010). Arguments as in :meth:`prox_likelihood`.
        """
        z, y = self._coupling(z, y)
        y_pert = self._require_noise().sample(y.expand(*self._batch_shape(z), *self.out_shape), generator=generator)
        rho_t = batch_scalar(rho, z, len(self.in_shape))
        z_pert = z + rho_t * _standard_normal_like(z, generator)
        return self.prox_likelihood(z_pert, y_pert, rho, max_iter=max_iter, tol=tol)


class _LinearFunction(torch.autograd.Function):
    """``apply(v, transpose)`` as one autograd node whose backward is ``apply(g, not transpose)``: for a real
    linear map the gradient is the adjoint, so autograd keeps none of the map's intermediate tensors (index
    and weight tables, fine grids), and the backward is itself differentiable."""

    @staticmethod
    def forward(ctx, v, fn, transpose):
        ctx.fn, ctx.transpose = fn, transpose  # not ctx.apply: that name is the node's own method
        return fn(v, transpose)

    @staticmethod
    def backward(ctx, g):
        return _LinearFunction.apply(g, ctx.fn, not ctx.transpose), None, None


def linear_autograd(apply, v: torch.Tensor, transpose: bool) -> torch.Tensor:
    """Run ``apply(v, transpose)`` (a real linear map or its transpose) so that autograd stores nothing of it.

    Args:
        apply: ``apply(v, transpose)`` computes :math:`Av` (``transpose=False``) or :math:`A^T v`.
        v: the input; only when it requires grad is the custom node used.
        transpose: which of the two to compute.
    """
    if torch.is_grad_enabled() and v.requires_grad:
        return _LinearFunction.apply(v, apply, transpose)
    return apply(v, transpose)


def _standard_normal_like(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``t``; for complex ``t`` each real component has variance 1."""
    return GaussianNoise(1.0).sample(torch.zeros_like(t), generator=generator)


def _device_of(module: nn.Module) -> torch.device:
    for t in module.buffers():
        return t.device
    for t in module.parameters():
        return t.device
    return torch.device("cpu")
