"""Ultrasound datasets: B-mode range, dark cysts, Rayleigh speckle statistics, seeding, splits, haze correlation."""

import doctest
import math

import pytest
import scipy.stats
import torch
import torch.nn.functional as F

import invdiff.datasets.ultrasound as us_data
from invdiff.datasets.ultrasound import (
    LABELS,
    BModeImages,
    HazeFields,
    bmode_display,
    random_echogenicity,
    speckle_envelope,
)

RAYLEIGH_SNR = math.sqrt(math.pi / (4 - math.pi))  # mean / std of a Rayleigh variable, 1.913


@pytest.fixture(scope="module")
def bmode():
    return BModeImages(64, seed=0)


def _min_pair_distance(a, b):
    return float(torch.cdist(a.flatten(1).double(), b.flatten(1).double()).min())


def _correlation(f, dz, dx):
    """Correlation coefficient of ``f`` (n, H, W) with itself shifted by dz rows and dx columns."""
    H, W = f.shape[-2:]
    a, b = f[:, : H - dz, : W - dx], f[:, dz:, dx:]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / (a.std() * b.std()))


def test_value_range_and_ground_truth_maps(bmode):
    x = bmode.images
    assert x.dtype == torch.float32 and x.shape == (64, 1, 64, 64) and BModeImages.value_range == (0.0, 1.0)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # the 50 dB window is used: black cysts, bright peaks
    lab, E = bmode.labels, bmode.echogenicity
    assert set(torch.unique(lab).tolist()) == set(LABELS)  # layers, cysts, hyper- and hypoechoic inclusions
    assert bool((E[lab == 1] == 0).all()) and bool((E[lab != 1] > 0).all())
    assert float(E.max()) <= 10 ** (12 / 20) + 1e-6  # 0 dB layers at most, +12 dB inclusions
    # echogenicity orders the mean display values: hyperechoic > tissue > hypoechoic > cyst
    means = [float(x[lab == k].mean()) for k in (2, 0, 3, 1)]
    assert means == sorted(means, reverse=True)


def test_cysts_are_dark(bmode):
    x, cyst = bmode.images, (bmode.labels == 1).float()
    interior = -F.max_pool2d(-cyst, 5, 1, 2) > 0  # 2 pixels in from the rim (the PSF's reach)
    assert int(interior.sum()) > 500
    # measured: interior 0.010, tissue 0.54; echoes below -40 dB re 0 dB tissue are black
    assert float(x[interior].mean()) < 0.05 and float(x[bmode.labels == 0].mean()) > 0.45


def test_speckle_is_rayleigh_in_a_homogeneous_region():
    g = torch.Generator().manual_seed(0)
    E = 0.3
    A = speckle_envelope(torch.full((16, 64, 64), E, dtype=torch.float64), g)
    # 65,536 pixels, about 2,000 independent speckle cells: the moments are known to about 2%
    assert float(A.square().mean()) == pytest.approx(E**2, rel=0.04)  # RMS = echogenicity
    assert float(A.mean() / A.std()) == pytest.approx(RAYLEIGH_SNR, rel=0.03)  # measured 1.918
    assert float(A.mean() ** 2 / A.var()) == pytest.approx(4 / (4 - math.pi) - 1, rel=0.06)  # 3.66; got 3.68
    # the distribution, on a sub-grid sparse enough for nearly independent samples
    sub = A[:, ::6, ::4].flatten().numpy()
    assert scipy.stats.kstest(sub, scipy.stats.rayleigh(scale=E / math.sqrt(2)).cdf).pvalue > 0.01


def test_speckle_grain_is_the_psf_axially_longer():
    # the intensity autocorrelation is |h * h|^2 (Siegert): exp(-d^2 / (2 sigma^2)) for a Gaussian PSF
    g = torch.Generator().manual_seed(1)
    I = speckle_envelope(torch.ones(16, 64, 64, dtype=torch.float64), g, psf_sigma=(1.5, 0.75)).square()
    for d in (1, 2):
        assert _correlation(I, d, 0) == pytest.approx(math.exp(-(d**2) / (2 * 1.5**2)), abs=0.04)
        assert _correlation(I, 0, d) == pytest.approx(math.exp(-(d**2) / (2 * 0.75**2)), abs=0.04)
    assert _correlation(I, 2, 0) > 0.35 > 0.05 > _correlation(I, 0, 2)


def test_log_compression_of_speckle():
    # 20 log10 of a Rayleigh amplitude of RMS 1 has mean -2.51 dB (10 log10(e) * Euler's gamma) and std 5.57 dB
    g = torch.Generator().manual_seed(2)
    b = bmode_display(speckle_envelope(torch.full((16, 64, 64), 0.1), g), dynamic_range_db=50.0, headroom_db=10.0)
    gamma_db = 10 * math.log10(math.e) * 0.5772156649
    assert float(b.mean()) == pytest.approx(1 + (-20 - gamma_db - 10) / 50, abs=0.01)
    assert float(b.std()) == pytest.approx(10 * math.log10(math.e) * math.pi / math.sqrt(6) / 50, abs=0.01)
    assert bmode_display(torch.tensor([1.0]), dynamic_range_db=50.0, headroom_db=10.0).item() == pytest.approx(0.8)


def test_determinism_prefix_seeds_and_splits():
    a = BModeImages(70, size=32, seed=4)
    b = BModeImages(70, size=32, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    small = BModeImages(3, size=32, seed=4)
    assert torch.equal(small.images, a.images[:3]) and torch.equal(small.echogenicity, a.echogenicity[:3])
    assert len(a) == 70 and torch.equal(a[69], a.images[69])
    assert _min_pair_distance(a.images, BModeImages(70, size=32, seed=5).images) > 1.0
    for seed in (4, 5):
        test = BModeImages(70, size=32, seed=seed, split="test")
        assert _min_pair_distance(a.images, test.images) > 1.0
        assert _min_pair_distance(a.echogenicity, test.echogenicity) > 0.1  # different scenes, not only speckle


def test_random_echogenicity_is_seeded():
    E1, L1 = random_echogenicity(4, 32, generator=torch.Generator().manual_seed(0))
    E2, L2 = random_echogenicity(4, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(E1, E2) and torch.equal(L1, L2) and E1.shape == L1.shape == (4, 1, 32, 32)


def test_haze_fields_statistics():
    ds = HazeFields(64, size=64, seed=0, strength=0.2, correlation_length=4.0)
    h = ds.images
    assert h.shape == (64, 1, 64, 64) and HazeFields.value_range == (-math.inf, math.inf)
    assert abs(float(h.mean())) < 0.02 and float(h.std()) == pytest.approx(0.2, rel=0.06)
    f = h[:, 0].double()
    for d, rho in ((4, math.exp(-0.5)), (8, math.exp(-2.0))):  # exp(-d^2 / (2 l^2)) at lag d
        assert _correlation(f, d, 0) == pytest.approx(rho, abs=0.06)
        assert _correlation(f, 0, d) == pytest.approx(rho, abs=0.06)
    longer = HazeFields(64, size=64, seed=0, correlation_length=(8.0, 2.0)).images[:, 0].double()
    assert _correlation(longer, 4, 0) == pytest.approx(math.exp(-1 / 8), abs=0.06)
    assert _correlation(longer, 0, 4) == pytest.approx(math.exp(-2.0), abs=0.06)


def test_haze_fields_seeding_and_splits():
    a = HazeFields(70, size=32, seed=1).images
    assert torch.equal(a, HazeFields(70, size=32, seed=1).images)
    assert torch.equal(HazeFields(2, size=32, seed=1).images, a[:2])
    assert _min_pair_distance(a, HazeFields(70, size=32, seed=2).images) > 0.5
    assert _min_pair_distance(a, HazeFields(70, size=32, seed=1, split="test").images) > 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda: BModeImages(0),
        lambda: BModeImages(2, seed=-1),
        lambda: BModeImages(2, split="validation"),
        lambda: BModeImages(2, psf_sigma=(1.0, 0.0)),
        lambda: BModeImages(2, dynamic_range_db=0.0),
        lambda: HazeFields(2, strength=0.0),
        lambda: HazeFields(2, correlation_length=-1.0),
        lambda: HazeFields(2, split="val"),
        lambda: speckle_envelope(-torch.ones(4, 4)),
    ],
)
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


def test_doctests():
    result = doctest.testmod(us_data, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
