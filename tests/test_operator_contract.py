"""The contract suite: every registered operator passes check_operator, and the checker catches broken ones."""

import pytest
import torch

from invdiff.operators import GaussianNoise, LinearOperator, MatrixOperator, Operator
from invdiff.testing import OperatorCheckError, check_operator

from operator_registry import OPERATORS


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_registered_operator_passes_contract(name):
    op = OPERATORS[name]()
    report = check_operator(op)
    if op.is_linear:
        assert report["adjoint"] < 1e-6
        assert {"shapes", "dtype", "batch", "linearity", "adjoint", "autograd", "normal", "pinv"} <= set(report)
    else:
        assert {"shapes", "dtype", "batch", "autograd"} <= set(report)


class _WrongAdjoint(LinearOperator):
    """A^H returned without the conjugate transpose's transpose: the classic bug."""

    def __init__(self, A):
        super().__init__((A.shape[1],), (A.shape[0],), noise=GaussianNoise(0.1))
        self.register_buffer("A", A)

    def forward(self, x):
        return x @ self.A.to(x).T

    def adjoint(self, y):
        B = self.A.to(y)[:, : self.A.shape[0]]  # square block: right shapes, wrong map
        return torch.nn.functional.pad(y @ B, (0, self.A.shape[1] - self.A.shape[0]))


class _ScaledAdjoint(_WrongAdjoint):
    def adjoint(self, y):
        return 1.0001 * (y @ self.A.to(y))


class _MixesBatch(LinearOperator):
    def __init__(self):
        super().__init__((3,), (3,))

    def forward(self, x):
        return x + x.mean(dim=0, keepdim=True) if x.ndim > 1 else 2 * x

    def adjoint(self, y):
        return self.forward(y)


class _NonlinearSquare(Operator):
    def __init__(self, wrong_vjp=False):
        super().__init__((4,), (4,), noise=GaussianNoise(0.1))
        self.wrong_vjp = wrong_vjp

    def forward(self, x):
        return x**2

    def vjp(self, x, v):
        return (1.0 if self.wrong_vjp else 2.0) * x * v


def test_checker_catches_wrong_adjoint():
    A = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(OperatorCheckError, match="'adjoint'"):
        check_operator(_WrongAdjoint(A), checks=("adjoint",))


def test_checker_catches_adjoint_off_by_1e4():
    """The relative tolerance is tight: a 1e-4 relative scale error in A^H is caught."""
    A = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(OperatorCheckError, match="'adjoint'"):
        check_operator(_ScaledAdjoint(A), checks=("adjoint",))


def test_checker_catches_batch_mixing():
    with pytest.raises(OperatorCheckError, match="'batch'"):
        check_operator(_MixesBatch(), checks=("batch",))


def test_checker_checks_nonlinear_vjp():
    report = check_operator(_NonlinearSquare())
    assert "adjoint" not in report and report["autograd"] < 1e-12
    with pytest.raises(OperatorCheckError, match="'autograd'"):
        check_operator(_NonlinearSquare(wrong_vjp=True))


def test_checker_rejects_non_operator():
    with pytest.raises(TypeError, match="invdiff Operator"):
        check_operator(torch.nn.Linear(2, 2))


def test_checker_catches_wrong_prox():
    class BadProx(MatrixOperator):
        def prox_likelihood(self, z, y, rho, **kw):
            return super().prox_likelihood(z, y, 2 * rho)

    A = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(OperatorCheckError, match="'prox'"):
        check_operator(BadProx(A, noise=GaussianNoise(0.1)))


@pytest.mark.parametrize("name", sorted(n for n in OPERATORS if OPERATORS[n]().is_linear))
def test_likelihood_steps_broadcast_one_z_over_batched_y_and_rho(name):
    """One coupling point, three measurements, three rhos: the same as three single calls (closed forms and
    generic CG alike), and sample_conditional accepts the same arguments."""
    op = OPERATORS[name]()
    if not isinstance(op.noise, GaussianNoise):
        pytest.skip("the Gaussian likelihood steps need GaussianNoise")
    g = torch.Generator().manual_seed(0)
    cplx = lambda shape, c: torch.randn(shape, generator=g, dtype=torch.float64).to(torch.complex128 if c else torch.float64)  # noqa: E731
    z = cplx(op.in_shape, op.in_dtype.is_complex)
    y = cplx((3,) + op.out_shape, op.out_dtype.is_complex)
    rho = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    cg = {"tol": 1e-13, "max_iter": 3000}  # for the generic CG steps; closed forms ignore them
    batched = op.prox_likelihood(z, y, rho, **cg)
    single = torch.stack([op.prox_likelihood(z, y[i], float(rho[i]), **cg) for i in range(3)])
    assert torch.allclose(batched, single, rtol=1e-8, atol=1e-10 * float(single.abs().max()))
    assert op.sample_conditional(z, y, rho, generator=g).shape == single.shape
