"""Operator core: closed forms against generic solvers and exact Gaussian conditionals, noise models, errors."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from invdiff.linalg import conjugate_gradient
from invdiff.operators import GaussianNoise, LinearOperator, MatrixOperator, compose
from operator_registry import matrix_complex, matrix_per_measurement_noise, matrix_rank_deficient, matrix_wide


def _exact_conditional(op, z, y, rho):
    """Mean and covariance of p(x|y,z) from dense float64 algebra (information form)."""
    A = op.to_matrix(torch.complex128 if op.A.is_complex() else torch.float64)
    std = torch.broadcast_to(op.noise.std.to(torch.float64), op.out_shape).reshape(-1)
    W = torch.diag(1 / std**2).to(A.dtype)
    P = A.conj().T @ W @ A + torch.eye(A.shape[1], dtype=A.dtype) / rho**2
    cov = torch.linalg.inv(P)
    mean = cov @ (A.conj().T @ W @ y.reshape(-1) + z.reshape(-1) / rho**2)
    return mean, cov


@pytest.mark.parametrize("factory", [matrix_wide, matrix_complex, matrix_per_measurement_noise, matrix_rank_deficient])
def test_prox_closed_form_matches_dense_and_generic_cg(factory, gen):
    op = factory()
    dt = torch.complex128 if op.in_dtype.is_complex else torch.float64
    z = torch.randn(op.in_shape, generator=gen, dtype=torch.float64).to(dt)
    y = torch.randn(op.out_shape, generator=gen, dtype=torch.float64).to(torch.complex128 if op.out_dtype.is_complex else torch.float64)
    mean, _ = _exact_conditional(op, z, y, 0.8)
    closed = op.prox_likelihood(z, y, 0.8)
    generic = LinearOperator.prox_likelihood(op, z, y, 0.8, tol=1e-12, max_iter=500)
    assert torch.allclose(closed.reshape(-1), mean, atol=1e-10, rtol=1e-9)
    assert torch.allclose(generic.reshape(-1), mean, atol=1e-8, rtol=1e-7)


def test_prox_per_batch_rho(gen):
    op = matrix_wide()
    z = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(3, generator=gen, dtype=torch.float64)
    rhos = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    batched = op.prox_likelihood(z, y, rhos)
    for i in range(3):
        assert torch.allclose(batched[i], op.prox_likelihood(z[i], y, float(rhos[i])), atol=1e-12)


@pytest.mark.parametrize("generic", [False, True])
@pytest.mark.parametrize("factory", [matrix_wide, matrix_complex, matrix_per_measurement_noise])
def test_sample_conditional_is_the_exact_gaussian(factory, generic, gen):
    """Mean within 5 standard errors per coordinate; covariance entries within 5 of their standard errors."""
    op = factory()
    dt = torch.complex128 if op.in_dtype.is_complex else torch.float64
    z = torch.randn(op.in_shape, generator=gen, dtype=torch.float64).to(dt)
    y = torch.randn(op.out_shape, generator=gen, dtype=torch.float64).to(torch.complex128 if op.out_dtype.is_complex else torch.float64)
    rho, N = 0.6, 20_000
    mean, cov = _exact_conditional(op, z, y, rho)
    zs = z.expand(N, *op.in_shape)
    sampler = LinearOperator.sample_conditional if generic else type(op).sample_conditional
    xs = sampler(op, zs, y, rho, generator=gen, **({"tol": 1e-12, "max_iter": 500} if generic else {}))
    X = xs.reshape(N, -1)
    if X.is_complex():  # real representation: per-component covariance of (Re, Im) is [[Re C, -Im C],[Im C, Re C]]
        X = torch.cat([X.real, X.imag], 1)
        mean = torch.cat([mean.real, mean.imag])
        cov = torch.cat([torch.cat([cov.real, -cov.imag], 1), torch.cat([cov.imag, cov.real], 1)], 0)
    se_mean = (cov.diagonal() / N).sqrt()
    assert ((X.mean(0) - mean).abs() / se_mean).max() < 5
    emp = torch.cov(X.T)
    var = cov.diagonal()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    assert ((emp - cov).abs() / se_cov).max() < 5


def test_sample_conditional_ignores_nothing():
    """A sampler that drops the likelihood (returns z + rho*eps) must fail the test above: check its statistic."""
    op = matrix_wide()
    g = torch.Generator().manual_seed(0)
    z = torch.zeros(5, dtype=torch.float64)
    y = torch.full((3,), 3.0, dtype=torch.float64)
    mean, _ = _exact_conditional(op, z, y, 0.6)
    xs = op.sample_conditional(z.expand(4000, 5), y, 0.6, generator=g)
    assert torch.allclose(xs.mean(0), mean, atol=0.05)
    assert (mean.abs() > 0.2).any()  # the likelihood really moves the mean away from z


@pytest.mark.parametrize("factory", [matrix_wide, matrix_rank_deficient, matrix_complex])
def test_pinv_matches_numpy_pinv(factory, gen):
    op = factory()
    A = op.to_matrix().to(torch.complex128 if op.A.is_complex() else torch.float64)
    y = torch.randn(op.out_shape, generator=gen, dtype=torch.float64).to(A.dtype)
    ref = torch.from_numpy(np.linalg.pinv(A.numpy()) @ y.numpy())
    assert torch.allclose(op.pinv(y), ref, atol=1e-9)
    generic = LinearOperator.pinv(op, y, tol=1e-13, max_iter=500)
    assert torch.allclose(generic, ref, atol=1e-6)


def test_composition_builds_the_adjoint_of_the_product(gen):
    A = MatrixOperator(torch.randn(4, 3, generator=gen, dtype=torch.float64), noise=GaussianNoise(0.5))
    B = MatrixOperator(torch.randn(3, 6, generator=gen, dtype=torch.float64))
    C = MatrixOperator(torch.randn(6, 2, generator=gen, dtype=torch.float64))
    ABC = A @ B @ C
    assert isinstance(ABC, LinearOperator) and len(ABC.ops) == 3  # flattened
    ref = A.A @ B.A @ C.A
    assert torch.allclose(ABC.to_matrix(torch.float64), ref, atol=1e-12)
    assert torch.allclose(ABC.H.to_matrix(torch.float64), ref.T, atol=1e-12)
    assert ABC.noise is A.noise
    assert ABC.H.H is ABC
    with pytest.raises(ValueError, match="shapes must match"):
        B @ A
    with pytest.raises(TypeError, match="call it: A\\(x\\)"):
        A @ torch.ones(3)
    assert compose(A, B, noise=GaussianNoise(2.0)).noise.std == 2.0


def test_input_validation_messages():
    op = MatrixOperator(torch.randn(3, 4), in_shape=(2, 2))
    with pytest.raises(ValueError, match=r"expected shape \(\*batch, 2, 2\), got \(4,\)"):
        op(torch.ones(4))
    with pytest.raises(TypeError, match="real input"):
        op(torch.ones(2, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="in_shape .* has 3 entries, A needs 4"):
        MatrixOperator(torch.randn(3, 4), in_shape=(3,))
    with pytest.raises(ValueError, match="NaN or Inf"):
        MatrixOperator(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="no noise model"):
        op.measure(torch.ones(2, 2))
    with pytest.raises(TypeError, match="NoiseModel"):
        MatrixOperator(torch.randn(3, 4), noise=0.1)
    # real input to a complex operator is promoted, integer input converted
    cop = matrix_complex()
    assert cop(torch.ones(6)).dtype == torch.complex64
    assert op(torch.ones(2, 2, dtype=torch.int64)).dtype == torch.float32


def test_with_noise_leaves_the_operator_alone():
    op = matrix_wide()
    quiet = op.with_noise(GaussianNoise(1e-3))
    assert float(op.noise.std) == pytest.approx(0.1) and float(quiet.noise.std) == pytest.approx(1e-3)
    assert quiet.A is op.A


def test_gaussian_noise_log_likelihood_matches_scipy(gen):
    std = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    noise = GaussianNoise(std)
    Ax = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    y = noise.sample(Ax, generator=gen)
    ref = scipy.stats.norm.logpdf(y.numpy(), loc=Ax.numpy(), scale=std.numpy()).sum(-1)
    assert np.allclose(noise.log_likelihood(y, Ax, event_ndim=1).numpy(), ref, rtol=1e-12)
    # complex: independent real and imaginary parts, each of standard deviation std
    Az = torch.complex(Ax, -Ax)
    yz = noise.sample(Az, generator=gen)
    refz = (scipy.stats.norm.logpdf(yz.real.numpy(), Az.real.numpy(), std.numpy())
            + scipy.stats.norm.logpdf(yz.imag.numpy(), Az.imag.numpy(), std.numpy())).sum(-1)
    assert np.allclose(noise.log_likelihood(yz, Az, event_ndim=1).numpy(), refz, rtol=1e-12)


def test_gaussian_noise_sample_has_its_std(gen):
    """Empirical std of 200k draws within 1% (its standard error is 0.16%), real and imaginary parts alike."""
    noise = GaussianNoise(0.3)
    r = noise.sample(torch.zeros(200_000, dtype=torch.float64), generator=gen)
    c = noise.sample(torch.zeros(200_000, dtype=torch.complex128), generator=gen)
    for part in (r, c.real, c.imag):
        assert abs(float(part.std()) / 0.3 - 1) < 0.01
    assert abs(float((c.real * c.imag).mean())) < 4 * 0.09 / math.sqrt(200_000)
    with pytest.raises(ValueError, match="non-negative"):
        GaussianNoise(-1.0)
    with pytest.raises(ValueError, match="degenerate"):
        GaussianNoise(0.0).log_likelihood(torch.zeros(2), torch.zeros(2), event_ndim=1)


def test_operator_log_likelihood_is_the_noise_models(gen):
    op = matrix_wide()
    x = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    y = op.measure(x, generator=gen)
    ll = op.log_likelihood(x, y)
    ref = scipy.stats.norm.logpdf(y.numpy(), (x @ op.A.T).numpy(), 0.1).sum(-1)
    assert ll.shape == (2,) and np.allclose(ll.numpy(), ref)


def test_conjugate_gradient_solves_batched_spd_systems(gen):
    M = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64)
    M = M @ M.transpose(-1, -2) + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    x = conjugate_gradient(lambda v: (M @ v.unsqueeze(-1)).squeeze(-1), b, event_ndim=1, tol=1e-12, max_iter=100)
    assert torch.allclose(x, torch.linalg.solve(M, b), atol=1e-9)


def test_generic_to_matrix_matches_dense(gen):
    op = matrix_per_measurement_noise()
    assert torch.allclose(LinearOperator.to_matrix(op, torch.float64), op.A)
