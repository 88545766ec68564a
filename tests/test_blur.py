"""Blur, super-resolution, inpainting: agreement with scipy / scikit-image and exact closed forms."""

import numpy as np
import pytest
import scipy.ndimage
import skimage.measure
import torch

from invdiff.operators import GaussianNoise, LinearOperator
from invdiff.operators.blur import (
    Blur, Denoising, Inpainting, SuperResolution, box_mask, gaussian_kernel, motion_blur_kernel, random_mask,
)
from registry_blur import blur_inpainting_box_per_pixel_noise, blur_motion_circular, blur_superresolution


@pytest.mark.parametrize("boundary, mode", [("circular", "wrap"), ("reflect", "mirror"), ("zero", "constant")])
def test_blur_matches_scipy_convolve(boundary, mode, gen):
    """An asymmetric odd kernel, so a flipped kernel, a shifted centre or a wrong boundary all show."""
    k = torch.rand(5, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 13, 11, generator=gen, dtype=torch.float64)
    ref = np.stack([scipy.ndimage.convolve(xi.numpy(), k.numpy(), mode=mode) for xi in x])
    out = Blur(k, (13, 11), boundary=boundary)(x)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def _P(op, rho):
    A = op.to_matrix(torch.float64)
    std = torch.broadcast_to(op.noise.std.to(torch.float64), op.out_shape).reshape(-1)
    return A.T @ torch.diag(1 / std**2) @ A + torch.eye(A.shape[1], dtype=torch.float64) / rho**2


@pytest.mark.parametrize("factory", [blur_motion_circular, blur_superresolution, blur_inpainting_box_per_pixel_noise])
def test_closed_form_likelihood_steps_match_dense_algebra(factory, gen):
    """prox = P^{-1} b exactly, and the draw's noise map M satisfies M M^T = P^{-1} (its exact covariance)."""
    op = factory()
    rho = 0.7
    z = torch.randn(op.in_shape, generator=gen, dtype=torch.float64)
    y = torch.randn(op.out_shape, generator=gen, dtype=torch.float64)
    P = _P(op, rho)
    std = torch.broadcast_to(op.noise.std.to(torch.float64), op.out_shape).reshape(-1)
    b = op.to_matrix(torch.float64).T @ (y.reshape(-1) / std**2) + z.reshape(-1) / rho**2
    mean = torch.linalg.solve(P, b)
    assert torch.allclose(op.prox_likelihood(z, y, rho).reshape(-1), mean, atol=1e-10)
    # the noise part of sample_conditional is P^{-1/2} eps: build its matrix from basis vectors
    n = mean.numel()
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *op.in_shape)
    M = op._apply_P_power(eye, torch.tensor(rho, dtype=torch.float64), op.noise.std.to(torch.float64),
                          -0.5).reshape(n, n)
    assert torch.allclose(M @ M.T, torch.linalg.inv(P), atol=1e-10)
    # and the generic CG route agrees with the closed form
    generic = LinearOperator.prox_likelihood(op, z, y, rho, tol=1e-12, max_iter=1000)
    assert torch.allclose(generic.reshape(-1), mean, atol=1e-7)


def test_sample_conditional_moments(gen):
    """20,000 exact conditional draws from the FFT closed form: mean and variance within 5 standard errors."""
    op = Blur(gaussian_kernel(1.0, 5), (6, 6), noise=GaussianNoise(0.1))
    z = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    y = op.measure(torch.randn(6, 6, generator=gen, dtype=torch.float64), generator=gen)
    P = _P(op, 0.5)
    cov = torch.linalg.inv(P)
    draws = op.sample_conditional(z.expand(20000, 6, 6), y, 0.5, generator=gen).reshape(20000, -1)
    mean = op.prox_likelihood(z, y, 0.5).reshape(-1)
    se = (cov.diagonal() / 20000).sqrt()
    assert ((draws.mean(0) - mean).abs() / se).max() < 5
    var = draws.var(0)
    assert ((var - cov.diagonal()).abs() / (cov.diagonal() * (2 / 20000) ** 0.5)).max() < 5


def test_circular_pinv_is_the_dense_pseudo_inverse(gen):
    op = Blur(gaussian_kernel(0.6, 3), (8, 8))
    y = torch.randn(8, 8, generator=gen, dtype=torch.float64)
    ref = torch.linalg.pinv(op.to_matrix(torch.float64)) @ y.reshape(-1)
    assert torch.allclose(op.pinv(y).reshape(-1), ref, atol=1e-9)


def test_superresolution_matches_block_reduce_and_pinv(gen):
    x = torch.randn(3, 12, 9, generator=gen, dtype=torch.float64)
    op = SuperResolution(3, (3, 12, 9))
    ref = skimage.measure.block_reduce(x.numpy(), (1, 3, 3), np.mean)
    np.testing.assert_allclose(op(x).numpy(), ref, atol=1e-13)
    y = torch.randn(op.out_shape, generator=gen, dtype=torch.float64)
    dense = torch.linalg.pinv(op.to_matrix(torch.float64)) @ y.reshape(-1)
    assert torch.allclose(op.pinv(y).reshape(-1), dense, atol=1e-10)


def test_inpainting_observes_exactly_the_mask(gen):
    mask = random_mask((7, 5), 0.3, generator=gen)
    assert int(mask.sum()) == round(0.3 * 35)
    x = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64)
    op = Inpainting(mask, (2, 7, 5))
    assert torch.equal(op(x), torch.stack([xi[mask] for xi in x]))
    filled = op.fill(op(x), value=float("nan"))
    assert torch.equal(filled[:, mask], x[:, mask]) and torch.isnan(filled[:, ~mask]).all()
    hidden = box_mask((7, 5), (1, 1, 2, 3))
    assert int((~hidden).sum()) == 6 and not hidden[1:3, 1:4].any()


def test_gaussian_kernel_moments():
    k = gaussian_kernel(2.0)
    t = torch.arange(k.shape[0], dtype=torch.float64) - k.shape[0] // 2
    assert abs(float(k.sum()) - 1) < 1e-12
    assert abs(float((k.sum(1) * t**2).sum()) - 4.0) < 0.05  # variance std^2, truncated at 3 std


def test_motion_blur_kernel_is_a_centred_normalised_random_path():
    k1, k2 = motion_blur_kernel(31, 0.5, seed=1), motion_blur_kernel(31, 0.5, seed=2)
    assert torch.equal(k1, motion_blur_kernel(31, 0.5, seed=1)) and not torch.equal(k1, k2)
    for k in (k1, k2):
        assert abs(float(k.sum()) - 1) < 1e-12 and (k >= 0).all()
        t = torch.arange(31, dtype=torch.float64) - 15
        com = (float((k.sum(1) * t).sum()), float((k.sum(0) * t).sum()))
        assert max(abs(c) for c in com) < 1.0
        assert (k > 0).sum() > 15  # a path, not a dot
    # intensity 0 is a straight streak: the second-moment matrix has rank ~1
    k = motion_blur_kernel(31, 0.0, seed=3)
    t = torch.arange(31, dtype=torch.float64) - 15
    ii, jj = torch.meshgrid(t, t, indexing="ij")
    m = torch.stack([torch.stack([(k * a * b).sum() for b in (ii, jj)]) for a in (ii, jj)])
    ev = torch.linalg.eigvalsh(m)
    assert ev[0] / ev[1] < 0.02


def test_denoising_prox_with_per_pixel_noise(gen):
    std = torch.rand(4, 5, generator=gen, dtype=torch.float64) + 0.1
    op = Denoising((4, 5), noise=GaussianNoise(std))
    z, y = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    ref = (y / std**2 + z / 0.3**2) / (1 / std**2 + 1 / 0.3**2)
    assert torch.allclose(op.prox_likelihood(z, y, 0.3), ref, atol=1e-12)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="kernel must be 2-D"):
        Blur(torch.ones(3), (8, 8))
    with pytest.raises(ValueError, match="larger than"):
        Blur(torch.ones(9, 9), (8, 8))
    with pytest.raises(ValueError, match="boundary"):
        Blur(torch.ones(3, 3), (8, 8), boundary="periodic")
    with pytest.raises(ValueError, match="must divide"):
        SuperResolution(3, (8, 8))
    with pytest.raises(TypeError, match="bool"):
        Inpainting(torch.ones(4, 4))
    with pytest.raises(ValueError, match="observes no pixel"):
        Inpainting(torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not fit"):
        box_mask((8, 8), (6, 6, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(1.0, 4)
