r"""Contract checks for operators: run :func:`check_operator` on every operator you write.

The checks, each with a name used in the error message:

``shapes``      ``op(x)`` maps ``(*batch, *in_shape)`` to ``(*batch, *out_shape)`` for 0, 1 and 2 batch dims.
``batch``       a batched call equals the stack of single calls (operators never mix batch entries).
``dtype``       float32 input gives ``out_dtype``; float64 input is computed in float64 (complex128).
``linearity``   :math:`A(a x_1 + b x_2) = a A x_1 + b A x_2` (linear operators; complex scalars if complex).
``adjoint``     the dot test in float64, :math:`|\langle Ax, y\rangle - \langle x, A^H y\rangle|
                \le \mathrm{rtol}\,\|Ax\|\,\|y\|` — relative to the Cauchy-Schwarz scale, so it means the same at
                every problem size (real part only when input or output is real: real-linear maps).
``adjoint_involution``  ``op.H.H`` acts as ``op``.
``autograd``    autograd's vector-Jacobian product of ``forward`` equals ``op.vjp`` (= ``adjoint`` if linear).
``normal``      ``normal(x) == adjoint(forward(x))``.
``pinv``        :math:`A A^+ A x = A x` (the pseudo-inverse solves consistent systems).
``prox``        the proximal likelihood step satisfies its optimality condition
                :math:`A^H(Ax - y)/\sigma^2 + (x - z)/\rho^2 = 0` (only with Gaussian noise).
``measure``     ``measure`` is reproducible from a generator and ``log_likelihood`` is finite.
``device``      the operator runs on CUDA after ``.to("cuda")`` (skipped without a GPU).
"""

from __future__ import annotations

import copy
import math

import torch

from invdiff.linalg import complex_dtype, real_dtype

__all__ = ["check_operator", "OperatorCheckError"]


class OperatorCheckError(AssertionError):
    """Raised by :func:`check_operator`; the message names the failed check and the numbers."""


def _rand(shape, dtype, gen, device="cpu"):
    if dtype.is_complex:
        re = torch.randn(shape, generator=gen, dtype=real_dtype(dtype))
        im = torch.randn(shape, generator=gen, dtype=real_dtype(dtype))
        return torch.complex(re, im).to(device)
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)


def _vdot(a, b):
    return torch.sum(a.conj() * b) if a.is_complex() or b.is_complex() else torch.sum(a * b)


def _relerr(a, b) -> float:
    scale = max(float(torch.linalg.vector_norm(b)), float(torch.linalg.vector_norm(a)), 1e-300)
    return float(torch.linalg.vector_norm(a - b)) / scale


def check_operator(
    op, *, rtol: float = 1e-6, seed: int = 0, checks: tuple[str, ...] | None = None, verbose: bool = False
) -> dict[str, float]:
    """Check an operator against the contract of :mod:`invdiff.operators` (module docstring lists the checks).

    Args:
        op: an :class:`~invdiff.operators.Operator` (linear checks run when it is a ``LinearOperator``).
        rtol: relative tolerance of the float64 checks (the dot test, linearity, batch, autograd).
        seed: seeds the random test vectors.
        checks: run only these named checks (default all that apply).
        verbose: print each check's error.

    Returns:
        ``{check name: measured relative error}`` for the checks that ran.

    Raises:
        OperatorCheckError: naming the first failed check, with the measured and allowed errors.

    Examples:
        >>> import torch
        >>> from invdiff.operators import MatrixOperator
        >>> report = check_operator(MatrixOperator(torch.randn(3, 4)))
        >>> report["adjoint"] < 1e-12
        True
    """
    from invdiff.operators import GaussianNoise, LinearOperator, Operator

    if not isinstance(op, Operator):
        raise TypeError(f"check_operator takes an invdiff Operator, got {type(op).__name__}")
    gen = torch.Generator().manual_seed(seed)
    linear = isinstance(op, LinearOperator)
    in64 = complex_dtype(torch.float64) if op.in_dtype.is_complex else torch.float64
    out64 = complex_dtype(torch.float64) if op.out_dtype.is_complex else torch.float64
    wanted = None if checks is None else set(checks)
    report: dict[str, float] = {}

    def want(name):
        return wanted is None or name in wanted

    def record(name, err, tol):
        report[name] = err
        if verbose:
            print(f"  {name:20s} {err:.3e} (tol {tol:.1e})")
        if not (err <= tol):  # also catches NaN
            raise OperatorCheckError(
                f"{type(op).__name__} failed check '{name}': relative error {err:.3e} > {tol:.1e}"
            )

    def fail(name, msg):
        raise OperatorCheckError(f"{type(op).__name__} failed check '{name}': {msg}")

    x = _rand(op.in_shape, in64, gen)
    y = _rand(op.out_shape, out64, gen)
    Ax = op(x)

    if want("shapes"):
        for batch in ((), (3,), (2, 3)):
            out = op(_rand(batch + op.in_shape, in64, gen))
            if tuple(out.shape) != batch + op.out_shape:
                fail("shapes", f"input {batch + op.in_shape} gave {tuple(out.shape)}, expected {batch + op.out_shape}")
            if linear:
                back = op.adjoint(_rand(batch + op.out_shape, out64, gen))
                if tuple(back.shape) != batch + op.in_shape:
                    fail("shapes", f"adjoint of {batch + op.out_shape} gave {tuple(back.shape)}")
        report["shapes"] = 0.0

    if want("dtype"):
        out32 = op(_rand(op.in_shape, op.in_dtype, gen).to(op.in_dtype))
        if out32.dtype != op.out_dtype:
            fail("dtype", f"float32-precision input gave {out32.dtype}, out_dtype is {op.out_dtype}")
        if Ax.dtype != out64:
            fail("dtype", f"float64-precision input gave {Ax.dtype}, expected {out64}")
        if linear and op.adjoint(y).dtype != in64:
            fail("dtype", f"adjoint of a float64-precision measurement gave {op.adjoint(y).dtype}, expected {in64}")
        report["dtype"] = 0.0

    if want("batch"):
        xb = _rand((2, 3) + op.in_shape, in64, gen)
        stacked = torch.stack([torch.stack([op(xb[i, j]) for j in range(3)]) for i in range(2)])
        err = _relerr(op(xb), stacked)
        if linear:
            yb = _rand((2, 3) + op.out_shape, out64, gen)
            st = torch.stack([torch.stack([op.adjoint(yb[i, j]) for j in range(3)]) for i in range(2)])
            err = max(err, _relerr(op.adjoint(yb), st))
        record("batch", err, rtol)

    if linear and want("linearity"):
        x2 = _rand(op.in_shape, in64, gen)
        a, b = (complex(0.7, -1.3), complex(-2.1, 0.4)) if op.in_dtype.is_complex else (0.7, -2.1)
        record("linearity", _relerr(op(a * x + b * x2), a * Ax + b * op(x2)), rtol)

    if linear and want("adjoint"):
        AHy = op.adjoint(y)
        lhs, rhs = _vdot(Ax, y), _vdot(x, AHy)
        if not (op.in_dtype.is_complex and op.out_dtype.is_complex):
            lhs, rhs = lhs.real, rhs.real
        scale = float(torch.linalg.vector_norm(Ax) * torch.linalg.vector_norm(y))
        record("adjoint", float(abs(lhs - rhs)) / max(scale, 1e-300), rtol)

    if linear and want("adjoint_involution"):
        HH = op.H.H
        record("adjoint_involution", _relerr(HH(x), Ax), rtol)

    if want("autograd"):
        v = _rand(op.out_shape, out64, gen)
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            out = op.forward(xg)
            (g,) = torch.autograd.grad(out, xg, grad_outputs=v)
        record("autograd", _relerr(op.vjp(x, v), g), max(rtol, 1e-10) * 10)

    if linear and want("normal"):
        record("normal", _relerr(op.normal(x), op.adjoint(Ax)), rtol)

    if linear and want("pinv"):
        # A A^+ (A x) = A x: generic CG solves the normal equations to ~tol, so compare at that accuracy
        record("pinv", _relerr(op(op.pinv(Ax)), Ax), 1e-4)

    has_gauss = isinstance(getattr(op, "noise", None), GaussianNoise) and bool((op.noise.std > 0).all())
    if linear and has_gauss and want("prox"):
        z = _rand(op.in_shape, in64, gen)
        rho = 0.7
        xp = op.prox_likelihood(z, y, rho)
        std2 = op.noise.std.to(torch.float64) ** 2
        grad = op.adjoint((op(xp) - y) / std2) + (xp - z) / rho**2
        scale = float(torch.linalg.vector_norm(op.adjoint(y / std2)) + torch.linalg.vector_norm(z / rho**2))
        record("prox", float(torch.linalg.vector_norm(grad)) / max(scale, 1e-300), 1e-4)

    if op.noise is not None and want("measure"):
        x32 = _rand(op.in_shape, op.in_dtype, gen).to(op.in_dtype)
        m1 = op.measure(x32, generator=torch.Generator().manual_seed(1))
        m2 = op.measure(x32, generator=torch.Generator().manual_seed(1))
        if tuple(m1.shape) != op.out_shape or not torch.equal(m1, m2):
            fail("measure", "measure(x, generator) is not reproducible or has the wrong shape")
        ll = op.log_likelihood(x32, m1)
        if ll.shape != () or not torch.isfinite(ll):
            fail("measure", f"log_likelihood(x, measure(x)) should be one finite number, got {ll}")
        report["measure"] = 0.0

    if torch.cuda.is_available() and want("device"):
        gpu = copy.deepcopy(op).to("cuda")
        out = gpu(x.to("cuda"))
        if out.device.type != "cuda":
            fail("device", f"output on {out.device} for CUDA input")
        record("device", _relerr(out.cpu(), Ax), 1e-5)

    if not math.isfinite(sum(report.values())):
        fail("finite", f"non-finite errors {report}")
    return report
