"""Metrics against scikit-image, scipy, POT and properscoring, and calibration against known truths."""

import math

import numpy as np
import ot
import properscoring
import pytest
import scipy.stats
import skimage.data
import skimage.metrics
import torch

from invdiff import metrics

F64 = torch.float64


def _noisy(im, seed, scale):
    rng = np.random.default_rng(seed)
    return im + scale * rng.standard_normal(im.shape)


@pytest.fixture(scope="module")
def camera_pair():
    cam = skimage.data.camera().astype(np.float64) / 255.0
    return cam, np.clip(_noisy(cam, 0, 0.05), 0, 1)


def test_psnr_matches_skimage_float_and_uint8(camera_pair):
    cam, noisy = camera_pair
    ref = skimage.metrics.peak_signal_noise_ratio(cam, noisy)
    assert abs(float(metrics.psnr(torch.from_numpy(noisy), torch.from_numpy(cam))) - ref) < 1e-4
    cam8, noisy8 = (cam * 255).round().astype(np.uint8), (noisy * 255).round().astype(np.uint8)
    ref8 = skimage.metrics.peak_signal_noise_ratio(cam8, noisy8)
    assert abs(float(metrics.psnr(torch.from_numpy(noisy8), torch.from_numpy(cam8))) - ref8) < 1e-4
    # negative floats: skimage takes data_range 2
    shifted, nshift = cam - 0.5, noisy - 0.5
    ref_neg = skimage.metrics.peak_signal_noise_ratio(shifted, nshift)
    assert abs(float(metrics.psnr(torch.from_numpy(nshift), torch.from_numpy(shifted))) - ref_neg) < 1e-4
    ref_dr = skimage.metrics.peak_signal_noise_ratio(cam * 1000, noisy * 1000, data_range=1000)
    assert abs(float(metrics.psnr(torch.from_numpy(noisy * 1000), torch.from_numpy(cam * 1000), 1000)) - ref_dr) < 1e-4


def test_psnr_refuses_guessing_the_range_of_hounsfield_like_data():
    x = torch.tensor([[-1000.0, 500.0]])
    with pytest.raises(ValueError, match="pass data_range explicitly"):
        metrics.psnr(x, x + 1)


def test_psnr_per_image_in_a_batch(camera_pair):
    cam, noisy = camera_pair
    batch = torch.from_numpy(np.stack([noisy[:256], noisy[256:]]))[:, None]
    refb = torch.from_numpy(np.stack([cam[:256], cam[256:]]))[:, None]
    per = metrics.psnr(batch, refb, 1.0, dim=(-3, -2, -1))
    for i, sl in enumerate((slice(0, 256), slice(256, 512))):
        assert abs(float(per[i]) - skimage.metrics.peak_signal_noise_ratio(cam[sl], noisy[sl], data_range=1.0)) < 1e-4


@pytest.mark.parametrize("name", ["camera", "coins", "moon"])
@pytest.mark.parametrize("gaussian", [False, True])
def test_ssim_matches_skimage_on_its_images(name, gaussian):
    im = getattr(skimage.data, name)().astype(np.float64) / 255.0
    noisy = np.clip(_noisy(im, 1, 0.1), 0, 1)
    ref = skimage.metrics.structural_similarity(im, noisy, data_range=1.0, gaussian_weights=gaussian)
    ours = metrics.ssim(torch.from_numpy(noisy), torch.from_numpy(im), data_range=1.0, gaussian_weights=gaussian)
    assert abs(float(ours) - ref) < 1e-4


def test_ssim_uint8_default_range_color_channels_and_odd_windows():
    ast = skimage.data.astronaut()[:200, :200]  # uint8, (H, W, 3)
    noisy = np.clip(_noisy(ast.astype(np.float64), 2, 20), 0, 255).astype(np.uint8)
    ref = skimage.metrics.structural_similarity(ast, noisy, channel_axis=2)
    ours = metrics.ssim(torch.from_numpy(noisy).permute(2, 0, 1), torch.from_numpy(ast).permute(2, 0, 1))
    assert abs(float(ours) - ref) < 1e-4
    cam = skimage.data.camera()[:100, :120].astype(np.float64) / 255
    n2 = _noisy(cam, 3, 0.2)
    for win in (3, 11):
        ref = skimage.metrics.structural_similarity(cam, n2, data_range=1.0, win_size=win)
        assert abs(float(metrics.ssim(torch.from_numpy(n2), torch.from_numpy(cam), 1.0, win_size=win)) - ref) < 1e-4
    # 3-D volume
    vol = np.random.default_rng(0).random((12, 14, 16))
    vol2 = vol + 0.1 * np.random.default_rng(1).random(vol.shape)
    ref = skimage.metrics.structural_similarity(vol, vol2, data_range=1.0)
    assert abs(float(metrics.ssim(torch.from_numpy(vol2), torch.from_numpy(vol), 1.0, spatial_ndim=3)) - ref) < 1e-4


def test_ssim_errors_like_skimage():
    x = torch.rand(16, 16)
    with pytest.raises(ValueError, match="need data_range"):
        metrics.ssim(x, x)
    with pytest.raises(ValueError, match="larger than the image"):
        metrics.ssim(torch.rand(3, 5), torch.rand(3, 5), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(torch.rand(8, 8), torch.rand(8, 9), 1.0)


def test_relative_l2():
    ref = torch.tensor([3.0, 4.0])
    assert float(metrics.relative_l2(ref + torch.tensor([0.3, 0.4]), ref)) == pytest.approx(0.1)


def test_sliced_wasserstein_in_1d_is_scipys_wasserstein(gen):
    a = torch.randn(300, 1, generator=gen, dtype=F64)
    b = 0.5 + 2 * torch.randn(170, 1, generator=gen, dtype=F64)  # unequal sizes: exact quantile integral
    ours = metrics.sliced_wasserstein(a, b, n_projections=3, generator=gen, p=1)
    assert float(ours) == pytest.approx(scipy.stats.wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy()), rel=1e-10)
    ours2 = metrics.sliced_wasserstein(a, b, n_projections=3, generator=gen, p=2)
    ref2 = ot.wasserstein_1d(a[:, 0].numpy(), b[:, 0].numpy(), p=2) ** 0.5
    assert float(ours2) == pytest.approx(float(ref2), rel=1e-8)


def test_sliced_wasserstein_of_a_shift_is_known():
    """SW_2 between a cloud and its shift by m: each projection moves by theta.m, so SW_2^2 = |m|^2 / d
    up to the Monte Carlo error of the directions (std of (theta.m)^2 over 4000 directions: under 2%)."""
    g = torch.Generator().manual_seed(0)
    d, n = 5, 2_000
    m = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=F64)
    eps = torch.randn(n, d, generator=g, dtype=F64)
    sw = metrics.sliced_wasserstein(eps, eps + m, n_projections=4000, generator=g)
    assert float(sw) ** 2 == pytest.approx(float(m @ m) / d, rel=0.05)
    more = torch.randn(20_000, d, generator=g, dtype=F64)  # two independent halves: SW_2 ~ 1/sqrt(n) ~ 0.02
    same = metrics.sliced_wasserstein(more[:10_000], more[10_000:], n_projections=200, generator=g)
    assert float(same) < 0.05


def test_sliced_wasserstein_agrees_with_pot_on_the_same_directions(gen):
    a = torch.randn(200, 3, generator=gen, dtype=F64)
    b = torch.randn(200, 3, generator=gen, dtype=F64) * 1.5 + 1
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    theta = torch.randn(3, 64, generator=g1, dtype=F64)
    theta = (theta / theta.norm(dim=0)).T.numpy()
    ref = ot.sliced_wasserstein_distance(a.numpy(), b.numpy(), projections=theta.T)
    assert float(metrics.sliced_wasserstein(a, b, 64, g2)) == pytest.approx(float(ref), rel=1e-10)


def test_coverage_is_nominal_for_calibrated_samples_and_not_otherwise():
    """Truth and 200 samples from N(0,1) in 20,000 independent entries: coverage within 4 binomial SEs of 0.9
    (the finite-sample quantile interval holds (n*level - 1)/(n+1) of the mass: 0.8955)."""
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(20_000, generator=g, dtype=F64)
    samples = torch.randn(200, 20_000, generator=g, dtype=F64)
    expected = (200 * 0.9 - 1) / 201
    se = math.sqrt(expected * (1 - expected) / 20_000)
    assert abs(float(metrics.coverage(samples, truth, 0.9)) - expected) < 4 * se
    assert float(metrics.coverage(0.5 * samples, truth, 0.9)) < 0.65  # over-confident
    levels, obs = metrics.calibration_curve(samples, truth)
    assert (obs - (200 * levels - 1) / 201).abs().max() < 0.02
    _, obs_wide = metrics.calibration_curve(2 * samples, truth)
    assert (obs_wide > levels).all()


def test_crps_matches_properscoring_and_the_gaussian_closed_form(gen):
    ens = torch.randn(30, 4, 5, generator=gen, dtype=F64)
    truth = torch.randn(4, 5, generator=gen, dtype=F64)
    ref = properscoring.crps_ensemble(truth.numpy(), np.moveaxis(ens.numpy(), 0, -1))
    assert np.allclose(metrics.crps_ensemble(ens, truth).numpy(), ref, rtol=1e-10, atol=1e-12)
    big = torch.randn(4000, 1, generator=gen, dtype=F64)
    y = torch.tensor([0.7], dtype=F64)
    closed = properscoring.crps_gaussian(0.7, 0.0, 1.0)
    fair = metrics.crps_ensemble(big, y, fair=True)
    assert float(fair) == pytest.approx(closed, abs=0.02)


def test_spread_skill_ratio_is_one_for_exchangeable_truth():
    g = torch.Generator().manual_seed(0)
    n, entries = 10, 50_000
    truth = torch.randn(entries, generator=g, dtype=F64)
    ens = torch.randn(n, entries, generator=g, dtype=F64)
    ss = metrics.spread_skill(ens, truth)
    assert float(ss.ratio) == pytest.approx(1.0, abs=0.02)
    assert float(metrics.spread_skill(0.5 * ens, truth).ratio) < 0.6


def test_zscore_is_standard_for_calibrated_samples():
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(10_000, generator=g, dtype=F64)
    z = metrics.zscore(torch.randn(500, 10_000, generator=g, dtype=F64), truth)
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05


def test_sample_set_validation():
    with pytest.raises(ValueError, match="shape equal to truth"):
        metrics.coverage(torch.zeros(10, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="level must be in"):
        metrics.coverage(torch.zeros(10, 3), torch.zeros(3), 1.5)
    with pytest.raises(ValueError, match="same sample shape"):
        metrics.sliced_wasserstein(torch.zeros(10, 3), torch.zeros(10, 4))
