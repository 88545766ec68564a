r"""Dense matrices, adjoints and composition.

* :class:`MatrixOperator` — :math:`A` given as a dense ``(m, n)`` matrix acting on the flattened input. Its
  pseudo-inverse and exact Gaussian likelihood step use the SVD of :math:`A`, computed once in float64.
* ``A.H`` — :class:`AdjointOperator`, with ``A.H.H is A``.
* ``A @ B`` — :func:`compose`: apply ``B`` then ``A``. When every factor is linear the composite is a
  :class:`LinearOperator` whose adjoint is :math:`B^H A^H` (factors' adjoints in reverse order), so composed
  physics gets an exact adjoint for free. The composite measures with the outermost factor's noise model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from invdiff.linalg import batch_scalar, complex_dtype, real_dtype

from .base import LinearOperator, Operator, _standard_normal_like, cast_like
from .noise import NoiseModel

__all__ = ["MatrixOperator", "AdjointOperator", "ComposedOperator", "ComposedLinearOperator", "compose", "Reshape",
           "RealToComplex"]


class AdjointOperator(LinearOperator):
    """The adjoint :math:`A^H` of a linear operator, as an operator (no noise model)."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.out_shape, op.in_shape, in_dtype=op.out_dtype, out_dtype=op.in_dtype)
        self.op = op

    def forward(self, y):
        return self.op.adjoint(y)

    def adjoint(self, x):
        return self.op(x)

    @property
    def H(self) -> LinearOperator:
        return self.op


def compose(*ops: Operator, noise: NoiseModel | None = None) -> Operator:
    """Compose operators right to left: ``compose(A, B, C)(x) == A(B(C(x)))`` (also written ``A @ B @ C``).

    Args:
        ops: the factors; each factor's ``in_shape`` must equal the next-applied factor's ``out_shape``.
        noise: noise model of the composite (default: the outermost factor's).
    """
    flat: list[Operator] = []
    for op in ops:
        if not isinstance(op, Operator):
            raise TypeError(f"compose takes Operators, got {type(op).__name__}")
        flat.extend(op.ops if isinstance(op, (ComposedOperator, ComposedLinearOperator)) else [op])
    for outer, inner in zip(flat[:-1], flat[1:]):
        if outer.in_shape != inner.out_shape:
            raise ValueError(
                f"cannot compose {type(outer).__name__} (in_shape {outer.in_shape}) after "
                f"{type(inner).__name__} (out_shape {inner.out_shape}): the shapes must match"
            )
        if outer.in_dtype.is_complex != inner.out_dtype.is_complex:
            raise TypeError(
                f"cannot compose {type(outer).__name__} (input {outer.in_dtype}) after "
                f"{type(inner).__name__} (output {inner.out_dtype})"
            )
    noise = flat[0].noise if noise is None else noise
    cls = ComposedLinearOperator if all(op.is_linear for op in flat) else ComposedOperator
    return cls(flat, noise=noise)


class _Chain:
    """Shared machinery of composites (a mixin before Operator in the bases): factors stored outermost first."""

    def __init__(self, ops, *, noise=None):
        super().__init__(
            ops[-1].in_shape, ops[0].out_shape, noise=noise, in_dtype=ops[-1].in_dtype, out_dtype=ops[0].out_dtype
        )
        self.ops = nn.ModuleList(ops)

    def forward(self, x):
        for op in reversed(self.ops):
            x = op(x)
        return x


class ComposedOperator(_Chain, Operator):
    """A composite with at least one nonlinear factor; build it with ``A @ B`` or :func:`compose`."""


class ComposedLinearOperator(_Chain, LinearOperator):
    r"""A composite of linear factors; its adjoint applies the factors' adjoints in reverse order."""

    def adjoint(self, y):
        for op in self.ops:
            y = op.adjoint(y)
        return y


class MatrixOperator(LinearOperator):
    r"""A dense matrix :math:`A \in \mathbb{R}^{m \times n}` (or complex) acting on the flattened input.

    Args:
        A: the ``(m, n)`` matrix.
        noise: measurement noise model, e.g. ``GaussianNoise(0.1)``.
        in_shape: shape of ``x`` with ``prod(in_shape) == n`` (default ``(n,)``), e.g. ``(1, 16, 16)``.
        out_shape: shape of ``y`` with ``prod(out_shape) == m`` (default ``(m,)``).

    Units are whatever ``A`` carries. The pseudo-inverse and the exact likelihood steps use the SVD of
    :math:`A` (computed once, in float64); per-measurement noise levels whiten :math:`A` first.

    Examples:
        >>> import torch
        >>> from invdiff.operators import MatrixOperator, GaussianNoise
        >>> A = MatrixOperator(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), noise=GaussianNoise(0.1))
        >>> A(torch.ones(5, 2)).shape
        torch.Size([5, 3])
        >>> A.H(torch.ones(3))
        tensor([2., 3.])
    """

    def __init__(self, A: torch.Tensor, noise: NoiseModel | None = None, *, in_shape=None, out_shape=None):
        A = torch.as_tensor(A)
        if A.ndim != 2:
            raise ValueError(f"MatrixOperator: A must be a 2-D (m, n) matrix, got shape {tuple(A.shape)}")
        if not (A.is_floating_point() or A.is_complex()):
            A = A.to(torch.get_default_dtype())
        if not torch.isfinite(A).all():
            raise ValueError("MatrixOperator: A contains NaN or Inf")
        m, n = A.shape
        in_shape = (n,) if in_shape is None else in_shape
        out_shape = (m,) if out_shape is None else out_shape
        for name, shape, size in (("in_shape", in_shape, n), ("out_shape", out_shape, m)):
            shape = (shape,) if isinstance(shape, int) else tuple(shape)
            if math.prod(shape) != size:
                raise ValueError(f"MatrixOperator: {name} {shape} has {math.prod(shape)} entries, A needs {size}")
        dtype = torch.complex64 if A.is_complex() else torch.float32
        super().__init__(in_shape, out_shape, noise=noise, in_dtype=dtype, out_dtype=dtype)
        self.register_buffer("A", A)
        self._svd: dict = {}

    def forward(self, x):
        A = cast_like(self.A, x)
        flat = x.reshape(*self._batch_shape(x), -1)
        return (flat @ A.transpose(0, 1)).reshape(*flat.shape[:-1], *self.out_shape)

    def adjoint(self, y):
        A = cast_like(self.A, y)
        flat = y.reshape(*y.shape[: y.ndim - len(self.out_shape)], -1)
        return (flat @ A.conj()).reshape(*flat.shape[:-1], *self.in_shape)

    def to_matrix(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        if dtype is None:
            return self.A
        return self.A.to(complex_dtype(dtype) if self.A.is_complex() else dtype)

    # -- closed forms through the SVD ----------------------------------------------------------------------
    def _whitened_svd(self, like: torch.Tensor):
        """SVD of :math:`\\Sigma^{-1/2} A` (``A`` itself for scalar noise, cached), cast to ``like``'s precision."""
        std = self._gaussian_std()
        key = (like.dtype, like.device)
        if std.ndim == 0:
            if key not in self._svd:
                U, S, Vh = torch.linalg.svd(self.A.to(torch.complex128 if self.A.is_complex() else torch.float64),
                                            full_matrices=False)
                self._svd[key] = tuple(cast_like(t, like).to(like.device) for t in (U, S, Vh))
            U, S, Vh = self._svd[key]
            return U, S / std.to(S), Vh
        w = torch.broadcast_to(std, self.out_shape).reshape(-1, 1).to(torch.float64)
        A = self.A.to(torch.complex128 if self.A.is_complex() else torch.float64)
        U, S, Vh = torch.linalg.svd(A / w, full_matrices=False)
        return tuple(cast_like(t, like).to(like.device) for t in (U, S, Vh))

    def _flat(self, t, shape):
        return t.reshape(*t.shape[: t.ndim - len(shape)], -1)

    def pinv(self, y, *, rcond: float = 1e-10, **_ignored):
        r"""Minimum-norm least squares :math:`A^+ y` from the SVD, singular values below ``rcond * max`` dropped."""
        y = self._prepare(y, self.out_shape, self.out_dtype, "MatrixOperator measurement")
        key = (y.dtype, y.device, "plain")
        if key not in self._svd:
            U, S, Vh = torch.linalg.svd(self.A.to(torch.complex128 if self.A.is_complex() else torch.float64),
                                        full_matrices=False)
            self._svd[key] = tuple(cast_like(t, y).to(y.device) for t in (U, S, Vh))
        U, S, Vh = self._svd[key]
        s_inv = torch.where(S > rcond * S.max(), 1.0 / S, torch.zeros_like(S))
        coef = (self._flat(y, self.out_shape) @ U.conj()) * s_inv
        return (coef @ Vh.conj()).reshape(*coef.shape[:-1], *self.in_shape)

    def _posterior_parts(self, z, y, rho):
        r"""Whitened SVD, right-hand side :math:`b = A^H y/\sigma^2 + z/\rho^2` (flat) and :math:`\rho` (flat)."""
        z, y = self._coupling(z, y)
        U, S, Vh = self._whitened_svd(z)
        n = len(self.in_shape)
        rho_t = batch_scalar(rho, z, n)
        rho_f = rho_t if rho_t.ndim == 0 else rho_t.reshape(rho_t.shape[: rho_t.ndim - n] + (1,))
        std = self._gaussian_std().to(device=z.device, dtype=real_dtype(z.dtype))
        b = self._flat(self.adjoint(y / std**2), self.in_shape) + self._flat(z, self.in_shape) / rho_f**2
        return b, S, Vh, rho_f

    @staticmethod
    def _apply_P_power(v, S, Vh, rho_f, power):
        r""":math:`P^{power} v` for :math:`P = V S^2 V^H + I/\rho^2` on flat ``v``: power -1 or -1/2."""
        lam = S**2 + 1.0 / rho_f**2
        base = rho_f ** (-2 * power)
        return base * v + ((v @ Vh.transpose(0, 1)) * (lam**power - base)) @ Vh.conj()

    def prox_likelihood(self, z, y, rho, **_ignored):
        r"""Closed form :math:`P^{-1} b` with :math:`P = A^H A/\sigma^2 + I/\rho^2` from the whitened SVD."""
        b, S, Vh, rho_f = self._posterior_parts(z, y, rho)
        x = self._apply_P_power(b, S, Vh, rho_f, -1.0)
        return x.reshape(*x.shape[:-1], *self.in_shape)

    def sample_conditional(self, z, y, rho, *, generator=None, **_ignored):
        r"""Closed form: the proximal mean :math:`P^{-1}b` plus :math:`P^{-1/2}\varepsilon`."""
        b, S, Vh, rho_f = self._posterior_parts(z, y, rho)
        mean = self._apply_P_power(b, S, Vh, rho_f, -1.0)
        x = mean + self._apply_P_power(_standard_normal_like(mean, generator), S, Vh, rho_f, -0.5)
        return x.reshape(*x.shape[:-1], *self.in_shape)


class Reshape(LinearOperator):
    """Reshape ``(*batch, *in_shape)`` to ``(*batch, *out_shape)`` (same number of entries); adjoint reshapes back.

    Glue for composing operators with priors of another layout, e.g. a ``(1, H, W)`` image prior with a
    ``(H, W)`` MRI operator.

    Args:
        in_shape, out_shape: shapes with equal products.
        complex: whether the data are complex.
    """

    def __init__(self, in_shape, out_shape, *, complex: bool = False, noise: NoiseModel | None = None):
        in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
        if math.prod(in_shape) != math.prod(out_shape):
            raise ValueError(f"Reshape: {in_shape} and {out_shape} have different numbers of entries")
        dtype = torch.complex64 if complex else torch.float32
        super().__init__(in_shape, out_shape, noise=noise, in_dtype=dtype, out_dtype=dtype)

    def forward(self, x):
        return x.reshape(*self._batch_shape(x), *self.out_shape)

    def adjoint(self, y):
        return y.reshape(*y.shape[: y.ndim - len(self.out_shape)], *self.in_shape)


class RealToComplex(LinearOperator):
    r"""Embed real data as complex (:math:`x \mapsto x + 0i`); the adjoint for the real inner product is the
    real part. Glue between real image priors and complex-valued physics (MRI k-space).

    Args:
        shape: the data shape (in and out).
    """

    def __init__(self, shape, *, noise: NoiseModel | None = None):
        super().__init__(shape, shape, noise=noise, in_dtype=torch.float32, out_dtype=torch.complex64)

    def forward(self, x):
        return x.to(complex_dtype(x.dtype))

    def adjoint(self, y):
        return y.real.clone() if y.is_complex() else y.clone()
