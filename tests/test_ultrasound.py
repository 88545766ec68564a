"""Ultrasound operators and utilities against independent computations (numpy / scipy / dense algebra / physics)."""

import doctest
import math

import numpy as np
import pytest
import scipy.signal
import scipy.special
import scipy.stats
import torch

import invdiff.operators.ultrasound as us
from invdiff.operators import GaussianNoise, LinearOperator
from invdiff.operators.ultrasound import (
    PlaneWaveRF,
    ScanlineSubsampling,
    analytic_signal,
    envelope,
    haze,
    log_compress,
    speckle,
)

C, F0 = 1540.0, 5e6
LAMBDA = C / F0


# ----------------------------------------------------------------------------------------------------------
# ScanlineSubsampling
# ----------------------------------------------------------------------------------------------------------
def test_scanline_is_numpy_column_selection(gen):
    op = ScanlineSubsampling((2, 5, 11), 4)
    idx = np.floor(np.linspace(0, 10, 4) + 0.5).astype(int)  # evenly spaced, first and last line included
    assert op.lines.tolist() == idx.tolist() == [0, 3, 7, 10]
    x = torch.randn(3, 2, 5, 11, generator=gen, dtype=torch.float64)
    assert torch.equal(op(x), torch.from_numpy(x.numpy()[..., idx]))
    y = torch.randn(3, 2, 5, 4, generator=gen, dtype=torch.float64)
    ref = np.zeros((3, 2, 5, 11))
    ref[..., idx] = y.numpy()
    assert torch.equal(op.adjoint(y), torch.from_numpy(ref))
    # S S^T = I and S^T S = diag(mask): the facts behind every closed form
    S = op.to_matrix(torch.float64)
    assert torch.equal(S @ S.T, torch.eye(S.shape[0], dtype=torch.float64))
    mask = op.mask.expand(2, 5, 11).reshape(-1).to(torch.float64)
    assert torch.equal(S.T @ S, torch.diag(mask))
    assert torch.equal(op.pinv(op(x)), op.adjoint(op(x)))


def test_scanline_selection_forms_agree():
    rnd = ScanlineSubsampling((4, 20), 6, selection="random", seed=7)
    again = ScanlineSubsampling((4, 20), 6, selection="random", seed=7)
    other = ScanlineSubsampling((4, 20), 6, selection="random", seed=8)
    assert torch.equal(rnd.lines, again.lines) and not torch.equal(rnd.lines, other.lines)
    assert rnd.lines.unique().numel() == 6 and bool((rnd.lines[1:] > rnd.lines[:-1]).all())
    from_mask = ScanlineSubsampling((4, 20), rnd.mask)
    from_idx = ScanlineSubsampling((4, 20), rnd.lines.flip(0).tolist())  # order given does not matter
    assert torch.equal(from_mask.lines, rnd.lines) and torch.equal(from_idx.lines, rnd.lines)
    assert ScanlineSubsampling((4, 9), 1).lines.tolist() == [4]
    assert ScanlineSubsampling((4, 9), 9).lines.tolist() == list(range(9))


def _dense_conditional(op, z, y, rho):
    A = op.to_matrix(torch.float64)
    std = torch.broadcast_to(op.noise.std.to(torch.float64), op.out_shape).reshape(-1)
    P = A.T @ torch.diag(1 / std**2) @ A + torch.eye(A.shape[1], dtype=torch.float64) / rho**2
    cov = torch.linalg.inv(P)
    return cov @ (A.T @ (y.reshape(-1) / std**2) + z.reshape(-1) / rho**2), cov


@pytest.mark.parametrize("std", [0.3, torch.tensor([0.1, 0.2, 0.4, 0.8, 1.6])])
def test_scanline_closed_forms_match_dense_algebra(std, gen):
    op = ScanlineSubsampling((3, 9), 5, selection="random", seed=1, noise=GaussianNoise(std))
    z = torch.randn(op.in_shape, generator=gen, dtype=torch.float64)
    y = torch.randn(op.out_shape, generator=gen, dtype=torch.float64)
    rho = 0.7
    mean, cov = _dense_conditional(op, z, y, rho)
    closed = op.prox_likelihood(z, y, rho)
    generic = LinearOperator.prox_likelihood(op, z, y, rho, tol=1e-13, max_iter=100)
    assert torch.allclose(closed.reshape(-1), mean, rtol=1e-12, atol=1e-12)
    assert torch.allclose(generic.reshape(-1), mean, rtol=1e-9, atol=1e-9)
    # the exact conditional: diagonal covariance; per-pixel mean within 5 standard errors, variance within 5 SE
    N = 20_000
    xs = op.sample_conditional(z.expand(N, *op.in_shape), y, rho, generator=gen).reshape(N, -1)
    var = cov.diagonal()
    assert torch.allclose(cov, torch.diag(var), atol=1e-14)
    assert ((xs.mean(0) - mean).abs() / (var / N).sqrt()).max() < 5
    assert ((xs.var(0) - var).abs() / (var * math.sqrt(2 / N))).max() < 5


def test_scanline_prox_per_batch_rho(gen):
    op = ScanlineSubsampling((4, 6), 2, noise=GaussianNoise(0.2))
    z = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    rhos = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    batched = op.prox_likelihood(z, y, rhos)
    for i in range(3):
        assert torch.allclose(batched[i], op.prox_likelihood(z[i], y, float(rhos[i])), atol=1e-14)
    # unobserved lines keep z exactly; observed ones move towards y as rho grows
    missing = ~op.mask
    assert torch.allclose(batched[..., missing], z[..., missing], rtol=1e-15, atol=1e-15)
    assert not torch.allclose(batched[..., op.mask], z[..., op.mask], atol=1e-3)


def test_scanline_errors():
    with pytest.raises(ValueError, match=r"line count must be in \[1, 8\]"):
        ScanlineSubsampling((4, 8), 0)
    with pytest.raises(ValueError, match=r"line count must be in \[1, 8\]"):
        ScanlineSubsampling((4, 8), 9)
    with pytest.raises(ValueError, match="W = 8 entries"):
        ScanlineSubsampling((4, 8), torch.ones(7, dtype=torch.bool))
    with pytest.raises(ValueError, match="selects no line"):
        ScanlineSubsampling((4, 8), torch.zeros(8, dtype=torch.bool))
    with pytest.raises(ValueError, match="distinct"):
        ScanlineSubsampling((4, 8), [1, 3, 3])
    with pytest.raises(ValueError, match=r"in \[0, 7\]"):
        ScanlineSubsampling((4, 8), [1, 8])
    with pytest.raises(TypeError, match="integers"):
        ScanlineSubsampling((4, 8), [1.0, 2.0])
    with pytest.raises(ValueError, match="'even' or 'random'"):
        ScanlineSubsampling((4, 8), 3, selection="uniform")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        ScanlineSubsampling((8,), 3)
    op = ScanlineSubsampling((4, 8), 3)
    with pytest.raises(ValueError, match=r"expected shape \(\*batch, 4, 8\)"):
        op(torch.zeros(4, 7))
    with pytest.raises(ValueError, match="no noise model"):
        op.prox_likelihood(torch.zeros(4, 8), torch.zeros(4, 3), 1.0)


# ----------------------------------------------------------------------------------------------------------
# PlaneWaveRF
# ----------------------------------------------------------------------------------------------------------
def _delta(op, i, j, dtype=torch.float64):
    x = torch.zeros(op.in_shape, dtype=dtype)
    x[i, j] = 1.0
    return x


def _reference_echo(op, i, j, *, directivity=False, spreading=False):
    """RF of a unit scatterer at pixel (i, j), written from the physics in numpy with scipy's Gaussian pulse."""
    z = op.depth_start + i * op.pixel_size[0]
    x = (j - (op.in_shape[1] - 1) / 2) * op.pixel_size[1]
    E = op.out_shape[1]
    xe = (np.arange(E) - (E - 1) / 2) * op.pitch
    th = op.angles.numpy()
    tau_tx = (z * np.cos(th) + x * np.sin(th) + (E - 1) / 2 * op.pitch * np.abs(np.sin(th))) / op.c
    r = np.sqrt(z**2 + (x - xe) ** 2)
    gain = np.ones(E)
    if directivity:
        gain = gain * z / r
    if spreading:
        gain = gain * np.sqrt(1e-2 / r)
    t = np.arange(op.n_samples) / op.fs
    arg = t[None, None, :] - tau_tx[:, None, None] - (r / op.c)[None, :, None]
    return gain[None, :, None] * scipy.signal.gausspulse(arg, fc=op.f0, bw=op.bandwidth)


def test_planewave_echo_matches_analytic_pulse_and_converges_with_upsampling():
    """Forward of a point scatterer = the Gaussian pulse (scipy.signal.gausspulse) at the two-way delay, for
    steered angles and every element; the fractional-delay interpolation error falls like 1/upsample^2."""
    errs = {}
    for U in (4, 16):
        op = PlaneWaveRF(
            (20, 15), angles=(-0.2, 0.05, 0.25), n_elements=9, pitch=4e-4, depth_start=3e-3, fs=22e6,
            upsample=U, pulse_cutoff_db=120, directivity=True, spreading=True,
        )
        for i, j in ((3, 2), (17, 11)):
            y = op(_delta(op, i, j)).numpy()
            ref = _reference_echo(op, i, j, directivity=True, spreading=True)
            errs.setdefault(U, []).append(np.abs(y - ref).max() / np.abs(ref).max())
    e4, e16 = max(errs[4]), max(errs[16])
    # linear interpolation on a grid h = 1/(U fs) errs by at most h^2 max|h''| / 8 <= (2 pi f_high h)^2 / 8,
    # f_high = f0 (1 + B/2) the upper -6 dB frequency (measured: 0.0162 at U = 4, 0.00105 at U = 16)
    f_high = F0 * 1.3
    assert e4 < (2 * math.pi * f_high / (4 * 22e6)) ** 2 / 8
    assert e16 < (2 * math.pi * f_high / (16 * 22e6)) ** 2 / 8
    assert 12 < e4 / e16 < 20  # second order: 16x


def test_planewave_echo_arrives_at_two_way_time():
    """Angle 0: the echo of a scatterer peaks at element e at t = (z + sqrt(z^2 + (x - x_e)^2)) / c; directly
    below the scatterer that is 2 z / c. Peak of the Hilbert envelope, refined by a parabola."""
    op = PlaneWaveRF((30, 21), angles=0.0, n_elements=11, pitch=3e-4, pixel_size=1e-4, depth_start=4e-3, fs=40e6)
    for i, j in ((5, 10), (25, 10), (12, 4)):
        env = envelope(op(_delta(op, i, j))[0], dim=-1)
        z = op.depth_start + i * 1e-4
        x = (j - 10) * 1e-4
        for e in range(11):
            k = int(env[e].argmax())
            a, b, c_ = (float(v) for v in env[e, k - 1 : k + 2])
            t_peak = (k + 0.5 * (a - c_) / (a - 2 * b + c_)) / op.fs
            xe = (e - 5) * 3e-4
            expected = (z + math.hypot(z, x - xe)) / C
            assert abs(t_peak - expected) * op.fs < 0.1, (i, j, e, t_peak, expected)
        if j == 10:  # element 5 sits right above the scatterer
            assert abs(float(op.element_positions[5]) - float(op.laterals[j])) < 1e-15


def test_point_scatterer_beamforms_to_its_pixel():
    """argmax of |envelope| of DAS (= adjoint) of a point scatterer's RF is the scatterer's pixel.

    The envelope is taken along depth, so the grid samples the beamformed carrier without aliasing
    (dz < c / (4 f_high)) and the scatterers sit >= 3.5 axial point-response widths (sigma ~ 3 px) from the top
    and bottom: a response cut by the image border cannot be demodulated.
    """
    dz = 0.8 * C / (4 * F0 * 1.3)
    op = PlaneWaveRF((52, 31), angles=(-0.15, 0.0, 0.15), n_elements=32, pitch=3e-4, pixel_size=(dz, 2 * dz),
                     depth_start=5e-3)
    positions = [(11, 4), (20, 15), (40, 27), (26, 22), (40, 0), (13, 30)]
    x = torch.stack([_delta(op, i, j) for i, j in positions])
    env = envelope(op.das(op(x)), dim=-2)
    for b, (i, j) in enumerate(positions):
        peak = divmod(int(env[b].argmax()), op.in_shape[1])
        assert peak == (i, j)


def test_das_is_the_adjoint_and_its_normalisation_the_exact_diagonal():
    op = PlaneWaveRF((10, 9), angles=(-0.1, 0.2), n_elements=7, pitch=4e-4, depth_start=2e-3, directivity=True)
    A = op.to_matrix(torch.float64)
    rf = torch.randn(2, *op.out_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(op.das(rf), (rf.reshape(2, -1) @ A).reshape(2, *op.in_shape), rtol=1e-12, atol=1e-12)
    assert torch.equal(op.beamform(rf), op.das(rf))
    # das(A e_p, normalize=True)[p] = (A^T A)_pp / diag_p = 1 for every pixel
    eye = torch.eye(90, dtype=torch.float64).reshape(90, 10, 9)
    D = op.das(op(eye), normalize=True).reshape(90, 90)
    assert torch.allclose(D.diagonal(), torch.ones(90, dtype=torch.float64), rtol=1e-10, atol=0)


def test_planewave_dot_test_with_clipped_window_and_precisions(gen):
    """Echoes clipped by a short window or at t < 0 keep forward and adjoint exact adjoints; float32 agrees."""
    op = PlaneWaveRF((16, 20), angles=(-0.5, 0.0, 0.4), n_elements=12, pitch=3e-4, depth_start=0.0,
                     n_samples=60, upsample=3)
    assert not all(op._inside)  # the masked path runs
    x = torch.randn(2, 16, 20, generator=gen, dtype=torch.float64)
    y = torch.randn(2, *op.out_shape, generator=gen, dtype=torch.float64)
    lhs, rhs = (op(x) * y).sum(), (x * op.adjoint(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * float(op(x).norm() * y.norm())
    assert torch.allclose(op(x.float()).double(), op(x), rtol=0, atol=1e-4 * float(op(x).abs().max()))
    assert op(x.float()).dtype == torch.float32 and op.adjoint(y.float()).dtype == torch.float32


def test_planewave_errors():
    with pytest.raises(ValueError, match="aliases the pulse"):
        PlaneWaveRF((8, 8), fs=10e6)
    with pytest.raises(ValueError, match=r"angles must be finite radians in \(-pi/2, pi/2\)"):
        PlaneWaveRF((8, 8), angles=(0.0, 1.6))
    with pytest.raises(ValueError, match="n_elements must be a positive int"):
        PlaneWaveRF((8, 8), n_elements=0)
    with pytest.raises(ValueError, match=r"image_shape must be \(H, W\)"):
        PlaneWaveRF((1, 8, 8))
    with pytest.raises(ValueError, match=r"bandwidth is a fractional bandwidth in \(0, 2\)"):
        PlaneWaveRF((8, 8), bandwidth=2.5)
    with pytest.raises(ValueError, match="pixel_size must be a finite positive"):
        PlaneWaveRF((8, 8), pixel_size=(1e-4, -1e-4))
    with pytest.raises(ValueError, match="depth_start"):
        PlaneWaveRF((8, 8), depth_start=-1e-3)
    with pytest.raises(ValueError, match="upsample must be a positive int"):
        PlaneWaveRF((8, 8), upsample=0)
    op = PlaneWaveRF((8, 8), n_elements=4)
    with pytest.raises(ValueError, match="PlaneWaveRF channel data: expected shape"):
        op.das(torch.zeros(1, 4, 3))


# ----------------------------------------------------------------------------------------------------------
# Utilities
# ----------------------------------------------------------------------------------------------------------
def test_envelope_of_gaussian_pulse_is_its_gaussian_amplitude():
    fs, B = 40e6, 0.6
    t = np.arange(-400, 401) / fs
    rf, env_true = scipy.signal.gausspulse(t, fc=F0, bw=B, retenv=True)
    env = envelope(torch.from_numpy(rf)).numpy()
    assert np.abs(env - env_true).max() < 1e-3  # of the unit peak (measured 4.6e-5: the pulse is nearly band-limited)


@pytest.mark.parametrize("n", [64, 65])
def test_envelope_matches_scipy_hilbert(n, gen):
    x = torch.randn(3, n, 5, generator=gen, dtype=torch.float64)
    ref = np.abs(scipy.signal.hilbert(x.numpy(), axis=1))
    assert np.allclose(envelope(x, dim=1).numpy(), ref, rtol=1e-12, atol=1e-12)
    assert np.allclose(envelope(x.float(), dim=-2).numpy(), ref, rtol=1e-4, atol=1e-5)
    z = analytic_signal(x, dim=1)
    assert torch.allclose(z.real, x, atol=1e-13) and z.dtype == torch.complex128
    with pytest.raises(TypeError, match="real tensor"):
        envelope(z)


def test_log_compress_matches_numpy():
    env = torch.tensor([[[2.0, 1.0, 0.2, 2e-3, 0.0], [0.5, 0.5, 0.5, 0.5, 0.02]]], dtype=torch.float64)
    ref = 20 * np.log10(np.maximum(env.numpy(), 1e-300) / env.numpy().max(axis=(-2, -1), keepdims=True))
    ref = np.clip(ref, -40, 0)
    assert np.allclose(log_compress(env, 40, output="db").numpy(), ref, atol=1e-12)
    assert np.allclose(log_compress(env, 40).numpy(), (ref + 40) / 40, atol=1e-12)
    per_row = log_compress(env, 60, image_ndim=1, output="db")
    assert per_row[0, 1, 0] == 0 and abs(float(per_row[0, 1, 4]) + 20 * math.log10(25)) < 1e-12
    fixed = log_compress(env, 60, reference=1.0, output="db")
    assert fixed[0, 0, 0] == 0 and abs(float(fixed[0, 0, 2]) - 20 * math.log10(0.2)) < 1e-12
    with pytest.raises(ValueError, match="non-negative"):
        log_compress(-env)
    with pytest.raises(ValueError, match="'unit' or 'db'"):
        log_compress(env, output="linear")
    with pytest.raises(ValueError, match="dynamic_range_db"):
        log_compress(env, 0)


@pytest.mark.parametrize("looks", [1, 4])
def test_speckle_statistics(looks, gen):
    """Mean preserved; variance ratio 1/c_L^2 - 1 (4/pi - 1 for one look); Rayleigh / Nakagami law (KS tests)."""
    N = 200_000
    x = torch.full((N,), 3.0, dtype=torch.float64)
    s = speckle(x, gen, looks=looks)
    g = (s / 3.0).numpy()
    c_L = scipy.special.gamma(looks + 0.5) / (scipy.special.gamma(looks) * math.sqrt(looks))
    var_true = 1 / c_L**2 - 1
    assert abs(g.mean() - 1) < 5 * math.sqrt(var_true / N)
    # SE of the sample variance, (mu4 - var^2) / N, from the raw moments m1 = 1, m2 = 1/c^2, m3, m4 of g:
    # E g^4 = E I^2 / c^4 = (1 + 1/L) / c^4
    m2, m3, m4 = 1 / c_L**2, _third_moment(looks, c_L), (1 + 1 / looks) / c_L**4
    mu4 = m4 - 4 * m3 + 6 * m2 - 3
    se_var = math.sqrt((mu4 - var_true**2) / N)
    assert abs(g.var() - var_true) < 5 * se_var
    if looks == 1:
        assert abs(var_true - (4 / math.pi - 1)) < 1e-12
        sigma = 1 / math.sqrt(math.pi / 2)  # Rayleigh with mean 1
        assert scipy.stats.kstest(g, scipy.stats.rayleigh(scale=sigma).cdf).pvalue > 1e-3
    # sqrt of a Gamma(L, 1/L) intensity is Nakagami(m = L, Omega = 1); divided by c_L
    assert scipy.stats.kstest(g, scipy.stats.nakagami(looks, scale=1 / c_L).cdf).pvalue > 1e-3
    again = speckle(x, torch.Generator().manual_seed(1234), looks=looks)
    assert torch.equal(again, s)


def _third_moment(L, c_L):
    """E[g^3] for g = sqrt(I_L)/c_L, I_L ~ Gamma(L, 1/L): E I^{3/2} = Gamma(L + 3/2) / (Gamma(L) L^{3/2})."""
    return scipy.special.gamma(L + 1.5) / (scipy.special.gamma(L) * L**1.5) / c_L**3


def test_speckle_errors():
    with pytest.raises(ValueError, match="looks must be a positive int"):
        speckle(torch.ones(3), looks=0)
    with pytest.raises(TypeError, match="real tensor"):
        speckle(torch.ones(3, dtype=torch.complex64))


def test_haze_correlation_length(gen):
    """Unit-variance field (times strength) whose correlation at lag l is exp(-1/2), anisotropic per axis."""
    lh, lw, strength = 3.0, 6.0, 0.5
    x = torch.full((64, 96, 96), 2.0, dtype=torch.float64)
    h = (haze(x, gen, strength=strength, correlation_length=(lh, lw)) - x) / strength
    # Monte Carlo error: the field has about N / (2 pi lh lw) independent values (~5000 here)
    n_eff = h.numel() / (2 * math.pi * lh * lw)
    assert abs(float(h.mean())) < 5 / math.sqrt(n_eff)
    var = float((h * h).mean())
    assert abs(var - 1) < 5 * math.sqrt(2 / n_eff)

    def corr(lag, dim):
        a = h.narrow(dim, 0, h.shape[dim] - lag)
        b = h.narrow(dim, lag, h.shape[dim] - lag)
        return float((a * b).mean()) / var

    se = math.sqrt(2 / n_eff)  # (1 + rho^2) / n_eff bounds the variance of a correlation estimate
    for lag_len, dim in ((lh, 1), (lw, 2)):
        assert abs(corr(int(lag_len), dim) - math.exp(-0.5)) < 4 * se
        assert abs(corr(int(2 * lag_len), dim) - math.exp(-2)) < 4 * se
    assert corr(int(lh), 2) > corr(int(lh), 1) + 10 * se  # longer along the wider axis: exp(-1/8) vs exp(-1/2)
    # the discrete kernel's exact autocorrelation agrees with the stated Gaussian law
    k = us._gauss_kernel(4.0, torch.float64, "cpu")
    r = 4
    assert abs(float((k[:-r] * k[r:]).sum()) - math.exp(-0.5)) < 1e-3
    assert torch.equal(haze(x, torch.Generator().manual_seed(1), strength=0.0), x)


def test_haze_errors():
    with pytest.raises(ValueError, match=r"\(\*batch, H, W\)"):
        haze(torch.zeros(5))
    with pytest.raises(ValueError, match="strength"):
        haze(torch.zeros(4, 4), strength=-1.0)
    with pytest.raises(ValueError, match="correlation_length"):
        haze(torch.zeros(4, 4), correlation_length=(1.0, 0.0))


def test_docstring_examples_run():
    result = doctest.testmod(us, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_planewave_float32_keeps_single_precision_accuracy(gen):
    """Delays of ~1e4 fine samples: the taps are split in float64, so float32 RF data is accurate to ~1e-7
    relative (measured 2.2e-7; splitting in float32 gave 4.5e-5)."""
    op = PlaneWaveRF((128, 128), angles=torch.linspace(-0.2, 0.2, 5), n_elements=64)
    x = torch.randn(128, 128, generator=gen, dtype=torch.float64)
    ref = op(x)
    assert float((op(x.float()).double() - ref).norm() / ref.norm()) < 1e-6


def test_log_compress_blank_image_is_black():
    out = log_compress(torch.stack([torch.zeros(2, 2), torch.ones(2, 2)]))
    assert torch.equal(out[0], torch.zeros(2, 2)) and torch.equal(out[1], torch.ones(2, 2))
