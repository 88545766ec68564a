"""Magnitude measurements: agreement with numpy, the invariances that make phase retrieval hard, the VJP."""

import numpy as np
import pytest
import torch

from invdiff.operators import GaussianNoise, MatrixOperator
from invdiff.operators.nonlinear import Magnitude, PaddedFFT, PhaseRetrieval


def test_phase_retrieval_matches_numpy(gen):
    x = torch.rand(2, 7, 6, generator=gen, dtype=torch.float64)
    op = PhaseRetrieval((7, 6), oversampling=2.0)
    ref = np.abs(np.fft.fft2(np.pad(x.numpy(), ((0, 0), (3, 4), (3, 3))), norm="ortho"))
    np.testing.assert_allclose(op(x).numpy(), ref, atol=1e-12)


def test_phase_retrieval_invariances(gen):
    """Sign flips, translations inside the pad and the conjugate flip leave |F x| unchanged; a generic change
    does not."""
    op = PhaseRetrieval((8, 8))
    x = torch.rand(8, 8, generator=gen, dtype=torch.float64)
    y = op(x)
    assert torch.allclose(op(-x), y, atol=1e-12)
    assert torch.allclose(op(torch.flip(x, (0, 1))), y, atol=1e-12)
    shifted = PaddedFFT((8, 8), (16, 16))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    assert torch.allclose(torch.fft.fft2(torch.roll(padded, (3, -2), (0, 1)), norm="ortho").abs(),
                          shifted(x).abs(), atol=1e-12)
    assert (op(x + 0.1 * torch.rand(8, 8, generator=gen, dtype=torch.float64)) - y).abs().max() > 1e-3


def test_magnitude_vjp_is_the_gradient_of_the_gaussian_log_likelihood(gen):
    """d/dx log p(y|x) = vjp(x, (y - |Ax|)/sigma^2), checked against autograd of the noise model's formula."""
    A = torch.randn(9, 5, generator=gen, dtype=torch.complex128)
    op = Magnitude(MatrixOperator(A), noise=GaussianNoise(0.3))
    x = torch.randn(5, generator=gen, dtype=torch.complex128)
    y = op.measure(torch.randn(5, generator=gen, dtype=torch.complex128), generator=gen)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(op.log_likelihood(xg, y), xg)
    ours = op.vjp(x, (y - op(x)) / 0.3**2)
    # torch's gradient of a real loss in a complex input is dL/dRe + i dL/dIm: the same convention as vjp
    assert torch.allclose(ours, g, atol=1e-10)


def test_magnitude_vjp_at_zero_is_finite():
    op = PhaseRetrieval((4, 4))
    g = op.vjp(torch.zeros(4, 4, dtype=torch.float64), torch.ones(op.out_shape, dtype=torch.float64))
    assert torch.isfinite(g).all() and float(g.abs().max()) == 0.0


def test_bad_input_errors():
    with pytest.raises(ValueError, match="oversampling"):
        PhaseRetrieval((8, 8), oversampling=0.5)
    with pytest.raises(TypeError, match="LinearOperator"):
        Magnitude(PhaseRetrieval((4, 4)))
    with pytest.raises(ValueError, match="padded_shape"):
        PaddedFFT((8, 8), (6, 8))
