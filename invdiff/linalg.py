r"""Small linear-algebra helpers shared by operators, priors and samplers.

Everything here works on tensors with leading batch dimensions followed by ``event_ndim`` event dimensions;
inner products and norms reduce over the event dimensions only, so one call solves a whole batch of systems.

The conjugate-gradient solver treats each batch entry as its own system :math:`M x_b = b_b` with a Hermitian
positive-definite :math:`M` given as a function. It is the generic fallback behind
:meth:`invdiff.operators.LinearOperator.pinv` and the exact Gaussian likelihood step; closed forms override it.

References:
    Hestenes & Stiefel (1952), "Methods of conjugate gradients for solving linear systems".
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["conjugate_gradient", "batch_scalar", "real_dtype", "complex_dtype", "inner"]


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype of the same precision (``complex64 -> float32``); real dtypes are returned unchanged."""
    return {torch.complex64: torch.float32, torch.complex128: torch.float64, torch.complex32: torch.float16}.get(
        dtype, dtype
    )


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype of the same precision (``float64 -> complex128``); complex dtypes are unchanged."""
    if dtype.is_complex:
        return dtype
    return {torch.float64: torch.complex128, torch.float16: torch.complex32}.get(dtype, torch.complex64)


def inner(a: torch.Tensor, b: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Real part of :math:`\\langle a, b \\rangle = \\sum \\bar a b` over the last ``event_ndim`` dims.

    Returns:
        Tensor of the broadcast batch shape of ``a`` and ``b``, real.
    """
    prod = a.conj() * b if a.is_complex() else a * b
    dims = tuple(range(-event_ndim, 0))
    return prod.real.sum(dim=dims) if prod.is_complex() else prod.sum(dim=dims)


def batch_scalar(value, like: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Broadcast a scalar or a per-batch tensor against ``like`` whose last ``event_ndim`` dims are the event.

    Args:
        value: a Python number, a 0-d tensor, or a tensor of ``like``'s batch shape (or broadcastable to it).
        like: tensor of shape ``(*batch, *event)``.
        event_ndim: number of event dimensions in ``like``.

    Returns:
        A real tensor on ``like``'s device with trailing singleton dims, ready to multiply ``like``.
    """
    t = torch.as_tensor(value, device=like.device, dtype=real_dtype(like.dtype))
    if t.ndim == 0:
        return t
    batch_ndim = like.ndim - event_ndim
    if t.ndim > batch_ndim:
        raise ValueError(
            f"expected a scalar or a tensor of batch shape {tuple(like.shape[:batch_ndim])}, "
            f"got shape {tuple(t.shape)}"
        )
    return t.reshape(t.shape + (1,) * event_ndim)


def conjugate_gradient(
    apply_M: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    event_ndim: int,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> torch.Tensor:
    r"""Solve :math:`M x = b` for Hermitian positive (semi-)definite :math:`M`, batched.

    Iterates until :math:`\|r_b\| \le \mathrm{tol}\,\|b_b\|` for every batch entry or ``max_iter`` steps.
    Started from zero on a consistent singular system, the iterates stay in the range of :math:`M`, so the
    result is the minimum-norm solution (this is what makes ``pinv`` a pseudo-inverse).

    Args:
        apply_M: function mapping a tensor of ``b``'s shape to :math:`M x` of the same shape.
        b: right-hand side, shape ``(*batch, *event)``.
        x0: optional starting point of ``b``'s shape (default zero).
        event_ndim: number of trailing event dims of ``b``.
        max_iter: iteration cap.
        tol: relative residual tolerance.

    Returns:
        The solution, shape of ``b``.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_M(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = inner(r, r, event_ndim)
    b_norm2 = inner(b, b, event_ndim)
    stop = (tol**2) * b_norm2
    tiny = torch.finfo(rs.dtype).tiny
    for _ in range(max_iter):
        active = rs > stop
        if not bool(active.any()):
            break
        Mp = apply_M(p)
        pMp = inner(p, Mp, event_ndim)
        alpha = torch.where(active, rs / pMp.clamp_min(tiny), torch.zeros_like(rs))
        a = alpha.reshape(alpha.shape + (1,) * event_ndim)
        x = x + a * p
        r = r - a * Mp
        rs_new = inner(r, r, event_ndim)
        beta = torch.where(active, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs))
        p = r + beta.reshape(beta.shape + (1,) * event_ndim) * p
        rs = rs_new
    return x
