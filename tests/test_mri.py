"""MRI operators: numpy (fastMRI) references, dense algebra for the closed forms, masks, coil maps, NUFFT."""

import importlib.util
import math
import sys

import numpy as np
import pytest
import torch

from invdiff.operators import GaussianNoise, LinearOperator
from invdiff.operators.mri import (
    MRI,
    MaskedGaussianNoise,
    NonCartesianMRI,
    equispaced_mask,
    estimate_coil_maps,
    fft2c,
    gaussian_mask_1d,
    ifft2c,
    poisson_disc_mask,
    radial_trajectory,
    random_mask,
    rss,
    simulate_coil_maps,
    spiral_trajectory,
)

C128 = torch.complex128


def _crandn(*shape, gen):
    return torch.complex(torch.randn(*shape, generator=gen, dtype=torch.float64),
                         torch.randn(*shape, generator=gen, dtype=torch.float64))


def _np_fft2c(x):
    """fastMRI's fft2c written with numpy."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _relerr(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


# ------------------------------------------------------------------------------------------------------------------
# Fourier transform and forward model against numpy
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8), (7, 10), (2, 9, 5)])
def test_fft2c_is_fastmri_centred_orthonormal_dft(shape, gen):
    x = _crandn(*shape, gen=gen)
    k = fft2c(x)
    ref = torch.from_numpy(_np_fft2c(x.numpy()))
    assert _relerr(k, ref) < 1e-14
    assert _relerr(ifft2c(k), x) < 1e-14  # inverse, also for odd sizes where fftshift != ifftshift
    assert abs(float(torch.linalg.vector_norm(k) / torch.linalg.vector_norm(x)) - 1) < 1e-14  # Parseval
    H, W = shape[-2:]
    dc = k[..., H // 2, W // 2]  # DC at the centre: the image sum / sqrt(HW)
    assert torch.allclose(dc, x.sum(dim=(-2, -1)) / math.sqrt(H * W), atol=1e-13)


def test_single_coil_forward_matches_numpy_and_1d_mask_selects_columns(gen):
    H, W = 9, 12
    cols = random_mask(W, 0.25, 3, seed=0)
    x = _crandn(3, H, W, gen=gen)
    op1 = MRI(cols, shape=(H, W))
    op2 = MRI(cols.expand(H, W))
    ref = _np_fft2c(x.numpy()) * cols.numpy()[None, None, :]
    y = op1(x)
    assert _relerr(y, torch.from_numpy(ref)) < 1e-14
    assert torch.equal(y, op2(x))
    assert bool((y[..., ~cols] == 0).all())  # zero-filled off the mask, exactly
    assert y.dtype == C128 and op1(x.to(torch.complex64)).dtype == torch.complex64


def test_sense_forward_and_adjoint_match_numpy(gen):
    H, W, C = 8, 10, 3
    mask = poisson_disc_mask((H, W), 2, seed=1)
    maps = simulate_coil_maps(C, (H, W), dtype=C128)
    op = MRI(mask, maps)
    x = _crandn(H, W, gen=gen)
    y = _crandn(2, C, H, W, gen=gen)
    m, S = mask.numpy(), maps.numpy()
    ref_fwd = _np_fft2c(S * x.numpy()) * m
    ref_adj = np.sum(np.conj(S) * np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(y.numpy() * m, axes=(-2, -1)),
                                                                norm="ortho"), axes=(-2, -1)), axis=-3)
    assert _relerr(op(x), torch.from_numpy(ref_fwd)) < 1e-14
    assert _relerr(op.adjoint(y), torch.from_numpy(ref_adj)) < 1e-14
    A = op.to_matrix(torch.float64)  # (C*H*W, H*W)
    dense_adj = (y.reshape(2, -1) @ A.conj()).reshape(2, H, W)
    assert _relerr(op.adjoint(y), dense_adj) < 1e-13


# ------------------------------------------------------------------------------------------------------------------
# Closed forms (single coil) against dense algebra and the generic CG
# ------------------------------------------------------------------------------------------------------------------
def _dense_posterior(op, z, y, rho):
    A = op.to_matrix(torch.float64)
    std = torch.broadcast_to(op.noise.std.to(torch.float64), op.out_shape).reshape(-1)
    Wt = torch.diag(1 / std**2).to(C128)
    P = A.conj().T @ Wt @ A + torch.eye(A.shape[1], dtype=C128) / rho**2
    cov = torch.linalg.inv(P)
    return cov @ (A.conj().T @ Wt @ y.reshape(-1) + z.reshape(-1) / rho**2), cov


@pytest.mark.parametrize("per_entry_std", [False, True])
def test_single_coil_prox_matches_dense_and_generic_cg(per_entry_std, gen):
    H, W = 5, 6
    std = 0.05 + 0.2 * torch.rand(H, W, generator=gen, dtype=torch.float64) if per_entry_std else 0.1
    op = MRI(poisson_disc_mask((H, W), 2, seed=3), noise=GaussianNoise(std))
    z, y = _crandn(H, W, gen=gen), _crandn(H, W, gen=gen)
    mean, _ = _dense_posterior(op, z, y, 0.7)
    closed = op.prox_likelihood(z, y, 0.7)
    generic = LinearOperator.prox_likelihood(op, z, y, 0.7, tol=1e-13, max_iter=500)
    assert _relerr(closed.reshape(-1), mean) < 1e-13
    assert _relerr(generic.reshape(-1), mean) < 1e-9
    rhos = torch.tensor([0.3, 0.7, 2.0], dtype=torch.float64)  # per-batch rho
    batched = op.prox_likelihood(z.expand(3, H, W), y, rhos)
    assert _relerr(batched[1], closed) < 1e-14 and _relerr(batched[0], op.prox_likelihood(z, y, 0.3)) < 1e-14


def test_single_coil_pinv_is_zero_filled_and_the_dense_pseudoinverse(gen):
    H, W = 6, 5
    op = MRI(random_mask(W, 0.2, 2, seed=0), shape=(H, W))
    y = _crandn(2, H, W, gen=gen)
    ref = (torch.linalg.pinv(op.to_matrix(torch.float64)) @ y.reshape(2, -1).T).T.reshape(2, H, W)
    assert _relerr(op.pinv(y), ref) < 1e-13
    assert torch.equal(op.pinv(y), op.zero_filled(y))


def test_single_coil_sample_conditional_is_the_exact_gaussian(gen):
    """Mean within 5 standard errors per real coordinate, covariance entries within 5 of their standard errors."""
    H, W, N, rho = 3, 4, 40_000, 0.6
    op = MRI(torch.tensor([True, False, True, True]), shape=(H, W), noise=GaussianNoise(0.3))
    z, y = _crandn(H, W, gen=gen), _crandn(H, W, gen=gen)
    mean, cov = _dense_posterior(op, z, y, rho)
    X = op.sample_conditional(z.expand(N, H, W), y, rho, generator=gen).reshape(N, -1)
    X = torch.cat([X.real, X.imag], 1)  # real representation (std per real/imag part)
    mean = torch.cat([mean.real, mean.imag])
    cov = torch.cat([torch.cat([cov.real, -cov.imag], 1), torch.cat([cov.imag, cov.real], 1)], 0)
    se_mean = (cov.diagonal() / N).sqrt()
    assert ((X.mean(0) - mean).abs() / se_mean).max() < 5
    var = cov.diagonal()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    assert ((torch.cov(X.T) - cov).abs() / se_cov).max() < 5
    # non-trivial target: the measurement shrinks the variance below the coupling's rho^2 and correlates pixels
    assert float(var.mean()) < 0.8 * rho**2 and float((cov - torch.diag(var)).abs().max()) > 0.01


def test_sense_cg_and_zero_filled(gen):
    H, W, C = 8, 8, 4
    maps = simulate_coil_maps(C, (H, W), dtype=C128)
    x = _crandn(H, W, gen=gen)
    full = MRI(torch.ones(W, dtype=torch.bool), maps, shape=(H, W))
    y = full(x)
    # fully sampled with sum |S|^2 = 1: A^H A = I, so the zero-filled SENSE combination is exact and RSS = |x|
    assert _relerr(full.zero_filled(y), x) < 1e-14
    assert _relerr(full.zero_filled(y, combine="rss"), x.abs()) < 1e-14
    assert _relerr(rss(full.coil_images(y)), x.abs()) < 1e-14
    # R = 2: CG-SENSE equals the dense least-squares solution (A has full column rank with 4 coils)
    op = MRI(equispaced_mask(W, 0.25, 2, seed=0), maps)
    y = op(x) + 0.01 * _crandn(C, H, W, gen=gen)
    A = op.to_matrix(torch.float64)
    ls = torch.linalg.lstsq(A, y.reshape(-1, 1)).solution.reshape(H, W)
    assert _relerr(op.sense_cg(y, max_iter=100, tol=1e-12), ls) < 1e-9
    lam = 0.5
    tik = torch.linalg.solve(A.conj().T @ A + lam * torch.eye(H * W, dtype=C128), A.conj().T @ y.reshape(-1))
    assert _relerr(op.sense_cg(y, lam=lam, max_iter=100, tol=1e-12).reshape(-1), tik) < 1e-9
    assert _relerr(op.sense_cg(op(x), max_iter=100, tol=1e-12), x) < 1e-8  # noiseless: exact recovery


# ------------------------------------------------------------------------------------------------------------------
# Noise on the sampled entries only
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coils", [None, 3])
def test_masked_noise_measure_and_log_likelihood(coils, gen):
    H, W, std = 8, 10, 0.2
    mask = random_mask((H, W), 0.2, 2, seed=5)
    maps = None if coils is None else simulate_coil_maps(coils, (H, W), dtype=C128)
    op = MRI(mask, maps, noise=GaussianNoise(std))
    assert isinstance(op.noise, MaskedGaussianNoise) and isinstance(op.noise, GaussianNoise)
    x = _crandn(H, W, gen=gen)
    y = op.measure(x, generator=gen)
    m = mask.expand(op.out_shape)
    assert bool((y[~m] == 0).all())
    r = (y - op(x))[m]
    explicit = float(torch.sum(-(r.abs() ** 2) / (2 * std**2) - math.log(2 * math.pi * std**2)))
    ll = op.log_likelihood(x, y)
    assert ll.shape == () and math.isfinite(float(ll))
    assert abs(float(ll) - explicit) < 1e-9 * abs(explicit)
    y_junk = y + (~m) * 5.0  # whatever sits off the mask is ignored
    assert float(op.log_likelihood(x, y_junk)) == pytest.approx(float(ll), rel=1e-13)
    # noise level on the sampled entries: std per real and imaginary part
    ys = op.measure(x.expand(400, H, W), generator=gen) - op(x)
    vals = torch.cat([ys[:, m].real.reshape(-1), ys[:, m].imag.reshape(-1)])
    assert abs(float(vals.std()) / std - 1) < 5 / math.sqrt(2 * vals.numel())


def test_with_noise_keeps_measurements_on_the_mask(gen):
    op = MRI(random_mask(8, 0.25, 2, seed=0), shape=(6, 8))
    noisy = op.with_noise(GaussianNoise(0.1))
    assert isinstance(noisy, MRI) and isinstance(noisy.noise, MaskedGaussianNoise) and op.noise is None
    y = noisy.measure(_crandn(6, 8, gen=gen), generator=gen)
    assert bool((y[:, ~op.mask[0]] == 0).all())


# ------------------------------------------------------------------------------------------------------------------
# Masks
# ------------------------------------------------------------------------------------------------------------------
def _centre_ok(cols, cf):
    W = cols.shape[-1]
    n = round(W * cf)
    return bool(cols[W // 2 - n // 2 : W // 2 - n // 2 + n].all())


def test_random_mask_fraction_centre_and_seeding():
    W, cf, R = 320, 0.08, 4
    masks = torch.stack([random_mask(W, cf, R, seed=s) for s in range(200)])
    assert masks.dtype == torch.bool and all(_centre_ok(m, cf) for m in masks)
    # expected fraction is exactly 1/R: compare the mean over 200 masks with its binomial standard error
    p = (W / R - round(W * cf)) / (W - round(W * cf))
    se = math.sqrt(p * (1 - p) * (W - round(W * cf)) / 200) / W
    assert abs(float(masks.float().mean()) - 1 / R) < 5 * se
    assert torch.equal(random_mask(W, cf, R, seed=7), random_mask(W, cf, R, seed=torch.Generator().manual_seed(7)))
    assert not torch.equal(masks[0], masks[1])
    m2 = random_mask((16, W), cf, R, seed=7)
    assert m2.shape == (16, W) and torch.equal(m2[5], random_mask(W, cf, R, seed=7))


def test_equispaced_mask_fraction_and_spacing():
    for W, cf, R in [(320, 0.08, 4), (368, 0.04, 8), (100, 0.1, 3)]:
        masks = [equispaced_mask(W, cf, R, seed=s) for s in range(10)]
        for m in masks:
            assert _centre_ok(m, cf)
            assert abs(int(m.sum()) - W / R) <= 2  # ~1/R overall, the centre's overlap discounted
            n = round(W * cf)
            idx = torch.nonzero(m).squeeze(1)
            start = W // 2 - n // 2
            for side in (idx[idx < start - 1], idx[idx > start + n]):  # outer columns, left and right of the centre
                spacing = (W - n) / (W / R - n)
                assert float((side.diff() - spacing).abs().max()) <= 1.0  # evenly spaced up to rounding
        assert len({tuple(m.nonzero().squeeze(1).tolist()) for m in masks}) > 1  # the offset depends on the seed
        assert torch.equal(masks[3], equispaced_mask(W, cf, R, seed=3))


def test_gaussian_mask_exact_count_and_variable_density():
    W, cf, R = 128, 0.08, 4
    masks = torch.stack([gaussian_mask_1d(W, cf, R, seed=s) for s in range(50)])
    assert all(int(m.sum()) == round(W / R) and _centre_ok(m, cf) for m in masks)
    freq = masks.float().mean(0)
    n = round(W * cf)
    near = freq[W // 2 + n // 2 + 1 : W // 2 + n // 2 + 9].mean()
    far = torch.cat([freq[:8], freq[-8:]]).mean()
    assert float(near) > 3 * float(far)  # density decays away from the centre
    assert torch.equal(masks[4], gaussian_mask_1d(W, cf, R, seed=4)) and not torch.equal(masks[4], masks[5])


def test_poisson_disc_mask_acceleration_density_and_seeding():
    H, W, R = 48, 40, 5
    m = poisson_disc_mask((H, W), R, seed=0)
    assert m.dtype == torch.bool and m.shape == (H, W)
    assert abs(m.numel() / int(m.sum()) - R) / R < 0.03
    cy, cx = round(H * 0.08), round(W * 0.08)
    assert bool(m[H // 2 - cy // 2 : H // 2 - cy // 2 + cy, W // 2 - cx // 2 : W // 2 - cx // 2 + cx].all())
    yy, xx = torch.meshgrid((torch.arange(H) - H // 2) / (H / 2), (torch.arange(W) - W // 2) / (W / 2),
                            indexing="ij")
    rad = torch.sqrt(yy**2 + xx**2)
    inner, outer = m[(rad > 0.15) & (rad < 0.4)].float().mean(), m[rad > 0.8].float().mean()
    assert float(inner) > 1.5 * float(outer)
    # a Poisson disc: no two points closer than one pixel diagonal outside the calibration box
    pts = torch.nonzero(m & (rad > 0.5)).double()
    d = torch.cdist(pts, pts) + 1e9 * torch.eye(len(pts), dtype=torch.float64)
    assert float(d.min()) > 1.0
    assert torch.equal(m, poisson_disc_mask((H, W), R, seed=0))
    assert not torch.equal(m, poisson_disc_mask((H, W), R, seed=1))
    # slope 0: uniform density (on small grids the reachable accelerations are discrete: not asserted)
    j = (torch.arange(32) - 16) / 16
    rad = torch.sqrt(j[:, None] ** 2 + j[None, :] ** 2)
    uniform = poisson_disc_mask((32, 32), 3, slope=0.0, center_fraction=0.0, seed=2)
    assert abs(float(uniform[rad < 0.5].float().mean() / uniform[rad > 0.8].float().mean()) - 1) < 0.25


# ------------------------------------------------------------------------------------------------------------------
# Coil maps
# ------------------------------------------------------------------------------------------------------------------
def test_simulated_coil_maps_are_normalised_smooth_and_distinct():
    S = simulate_coil_maps(8, (32, 28), dtype=C128)
    assert S.shape == (8, 32, 28) and S.dtype == C128
    assert float(((S.abs() ** 2).sum(0) - 1).abs().max()) < 1e-14
    k = fft2c(S)
    low = k[:, 16 - 4 : 16 + 4, 14 - 4 : 14 + 4]  # 7 % of the grid
    assert float((low.abs() ** 2).sum() / (k.abs() ** 2).sum()) > 0.95  # smooth: energy at low frequencies
    # each coil is most sensitive next to its own wire, at angle 2 pi c / C around the image
    y = (torch.arange(32) - 16) / 16
    x = (torch.arange(28) - 14) / 14
    for c in range(8):
        i, j = divmod(int(S[c].abs().argmax()), 28)
        diff = math.atan2(float(y[i]), float(x[j])) - 2 * math.pi * c / 8
        assert abs(math.remainder(diff, 2 * math.pi)) < math.pi / 8


def _phantom(H, W, detail=False):
    """A smooth ellipse with a smooth phase (and, with ``detail``, two sharp inner ellipses); its inner support."""
    lin = torch.linspace(-1, 1, H, dtype=torch.float64), torch.linspace(-1, 1, W, dtype=torch.float64)
    yy, xx = torch.meshgrid(*lin, indexing="ij")
    r2 = (yy / 0.8) ** 2 + (xx / 0.65) ** 2
    obj = torch.clamp(1 - r2, min=0).sqrt() * (1 + 0.3 * torch.cos(3 * yy))
    if detail:
        obj = obj + 0.6 * (((yy - 0.2) / 0.3) ** 2 + (xx / 0.15) ** 2 < 1) - 0.4 * (((yy + 0.3) / 0.15) ** 2
                                                                                    + ((xx - 0.2) / 0.2) ** 2 < 1)
    return obj * torch.exp(1j * (xx + 0.5 * yy)), r2 < 0.8  # smooth object phase, common to all coils


@pytest.mark.parametrize("calib_from_mask", [False, True])
def test_estimated_coil_maps_recover_simulated_ones(calib_from_mask):
    H, W, C = 48, 48, 6
    S = simulate_coil_maps(C, (H, W), dtype=C128)
    x, support = _phantom(H, W)
    if calib_from_mask:
        mask = random_mask(W, 0.34, 2, seed=0)  # 16 fully sampled centre columns
        k = MRI(mask, S)(x)
        calib = mask
    else:
        k, calib = fft2c(S * x), 16
    Se = estimate_coil_maps(k, calib)
    ph = torch.sum(Se * S.conj(), 0)
    ph = ph / ph.abs()  # one common phase per pixel (the object's phase)
    err = (Se * ph.conj() - S)[:, support]
    assert _relerr(Se[:, support] * ph.conj()[support], S[:, support]) < 0.01
    assert float(err.abs().max()) < 0.015
    assert float(((Se.abs() ** 2).sum(0) - 1).abs().max()) < 1e-12  # normalised like the simulated maps
    # the common phase is the object's phase
    assert float((ph[support] - x[support] / x[support].abs()).abs().max()) < 0.03
    # background threshold zeroes the maps outside the object
    Sb = estimate_coil_maps(k, calib, threshold=0.2)
    assert bool((Sb[:, 0, 0] == 0).all()) and torch.equal(Sb[:, H // 2, W // 2], Se[:, H // 2, W // 2])


def test_sense_with_estimated_maps_reconstructs():
    """Calibrate from the fully sampled centre of an R = 2 scan, then CG-SENSE unfolds what zero filling aliases."""
    H, W, C = 48, 48, 8
    S = simulate_coil_maps(C, (H, W), dtype=C128)
    x, support = _phantom(H, W, detail=True)
    mask = equispaced_mask(W, 0.25, 2, seed=0)
    y = MRI(mask, S)(x)
    op = MRI(mask, estimate_coil_maps(y, mask))
    err_sense = _relerr(op.sense_cg(y, max_iter=20).abs()[support], x.abs()[support])
    err_zf = _relerr(op.zero_filled(y).abs()[support], x.abs()[support])
    assert err_sense < 0.03 and err_sense < 0.5 * err_zf  # measured: 0.020 and 0.055
    # with the true maps the noiseless SENSE system is solved exactly
    assert _relerr(MRI(mask, S).sense_cg(y, max_iter=100, tol=1e-12), x) < 1e-6


# ------------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"shape=\(H, W\)"):
        MRI(torch.ones(8, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        MRI(torch.full((4, 4), 2))
    with pytest.raises(ValueError, match="samples nothing"):
        MRI(torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="disagree"):
        MRI(torch.ones(4, 4, dtype=torch.bool), simulate_coil_maps(2, (4, 5)))
    with pytest.raises(ValueError, match=r"\(coils, H, W\)"):
        MRI(torch.ones(4, 4, dtype=torch.bool), torch.ones(4, 4, dtype=C128))
    with pytest.raises(ValueError, match="1-D mask has 6 columns"):
        MRI(torch.ones(6, dtype=torch.bool), shape=(4, 5))
    op = MRI(torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected shape"):
        op(torch.zeros(4, 5, dtype=C128))
    with pytest.raises(ValueError, match="no noise model"):
        op.prox_likelihood(torch.zeros(4, 4), torch.zeros(4, 4), 1.0)
    with pytest.raises(ValueError, match="center_fraction \\* acceleration"):
        random_mask(100, 0.5, 4)
    with pytest.raises(ValueError, match="acceleration must be >= 1"):
        equispaced_mask(100, 0.1, 0.5)
    with pytest.raises(TypeError, match="seed must be an int"):
        gaussian_mask_1d(64, 0.1, 4, seed=1.5)
    with pytest.raises(ValueError, match="calibration box alone"):
        poisson_disc_mask((16, 16), 8, center_fraction=0.5)
    with pytest.raises(ValueError, match="sqrt\\(2\\)"):
        simulate_coil_maps(4, (8, 8), coil_radius=1.0)
    with pytest.raises(ValueError, match="no fully sampled centre"):
        estimate_coil_maps(torch.zeros(2, 8, 8, dtype=C128), torch.zeros(8, dtype=torch.bool))
    with pytest.raises(TypeError, match="complex"):
        estimate_coil_maps(torch.zeros(2, 8, 8), 4)
    with pytest.raises(ValueError, match="combine"):
        op.zero_filled(torch.zeros(4, 4, dtype=C128), combine="mean")


def test_nufft_missing_backend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "finufft", None)  # makes `import finufft` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "invdiff\[nufft\]"'):
        NonCartesianMRI(radial_trajectory(4, 8), (8, 8))


# ------------------------------------------------------------------------------------------------------------------
# Non-Cartesian (optional finufft)
# ------------------------------------------------------------------------------------------------------------------
def _nudft_matrix(traj, H, W):
    py = (torch.arange(H, dtype=torch.float64) - H // 2)[:, None].expand(H, W).reshape(-1)
    px = (torch.arange(W, dtype=torch.float64) - W // 2)[None, :].expand(H, W).reshape(-1)
    phase = traj[:, :1] * py[None, :] + traj[:, 1:] * px[None, :]
    return torch.exp(-1j * phase) / math.sqrt(H * W)


@pytest.mark.parametrize("traj_kind", ["radial", "spiral"])
@pytest.mark.parametrize("coils", [None, 3])
def test_nufft_matches_explicit_nudft(traj_kind, coils, gen):
    pytest.importorskip("finufft")
    H, W = 10, 12
    traj = radial_trajectory(8, 16) if traj_kind == "radial" else spiral_trajectory(3, 50, 4)
    maps = None if coils is None else simulate_coil_maps(coils, (H, W), dtype=C128)
    op = NonCartesianMRI(traj, (H, W), maps)
    E = _nudft_matrix(traj, H, W)
    x = _crandn(2, H, W, gen=gen)
    coil_x = x.reshape(2, 1, -1) if maps is None else (maps * x[:, None]).reshape(2, coils, -1)
    ref = (coil_x @ E.T).reshape(2, *op.out_shape)
    assert _relerr(op(x), ref) < 1e-10
    y = _crandn(2, *op.out_shape, gen=gen)
    back = (y.reshape(2, -1, traj.shape[0]) @ E.conj()).reshape(2, -1, H, W)
    ref_adj = back[:, 0] if maps is None else torch.sum(maps.conj() * back, 1)
    assert _relerr(op.adjoint(y), ref_adj) < 1e-10
    lhs, rhs = torch.vdot(op(x).reshape(-1), y.reshape(-1)), torch.vdot(x.reshape(-1), op.adjoint(y).reshape(-1))
    assert abs(lhs - rhs) / (torch.linalg.vector_norm(op(x)) * torch.linalg.vector_norm(y)) < 1e-12
    # float32: the NUFFT's own tolerance
    assert _relerr(op(x.to(torch.complex64)).to(C128), ref) < 1e-4


def test_nufft_on_the_cartesian_grid_equals_fft2c_and_autograd_is_the_adjoint(gen):
    pytest.importorskip("finufft")
    H, W = 8, 9
    u, v = torch.meshgrid(torch.arange(H) - H // 2, torch.arange(W) - W // 2, indexing="ij")
    traj = torch.stack([2 * math.pi * u.double() / H, 2 * math.pi * v.double() / W], -1).reshape(-1, 2)
    op = NonCartesianMRI(traj, (H, W))
    x = _crandn(H, W, gen=gen)
    assert _relerr(op(x), fft2c(x).reshape(-1)) < 1e-11
    v_ = _crandn(H * W, gen=gen)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(op(xg), xg, grad_outputs=v_)
    assert _relerr(g, op.adjoint(v_)) < 1e-14
    assert _relerr(op.adjoint(v_), ifft2c(v_.reshape(H, W))) < 1e-11


def test_trajectories_are_in_range_and_golden_angle():
    r = radial_trajectory(5, 32)
    assert float(r.abs().max()) <= math.pi + 1e-12
    spoke0, spoke1 = r[:32], r[32:64]
    ang = math.atan2(float(spoke1[0, 0]), float(spoke1[0, 1])) - math.atan2(float(spoke0[0, 0]), float(spoke0[0, 1]))
    assert abs(math.degrees(ang) % 180 - 111.246) < 1e-2  # 180 degrees / golden ratio
    assert float(radial_trajectory(4, 8)[4].norm()) == 0.0  # every spoke passes through k = 0
    s = spiral_trajectory(2, 100, 5)
    assert float(s.norm(dim=1).max()) < math.pi and torch.allclose(s[100:].norm(dim=1), s[:100].norm(dim=1))
    if importlib.util.find_spec("finufft") is not None:
        with pytest.raises(ValueError, match="radians per pixel"):
            NonCartesianMRI(4 * r, (8, 8))
