"""CT phantom datasets: value range, zero outside the body, seeding, splits, attenuation in physical units."""

import doctest

import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch

import invdiff.datasets.ct as ct_data
from invdiff.datasets.ct import EllipsePhantoms, shepp_logan

MU_WATER = 0.19  # 1/cm at about 70 keV (NIST XCOM), the module's stated reference


@pytest.fixture(scope="module")
def phantoms():
    return EllipsePhantoms(128, seed=3)


def _min_pair_distance(a, b):
    return float(torch.cdist(a.flatten(1).double(), b.flatten(1).double()).min())


def test_value_range_and_zero_outside_the_body(phantoms):
    x = phantoms.images
    assert x.dtype == torch.float32 and x.shape == (128, 1, 64, 64)
    lo, hi = EllipsePhantoms.value_range
    assert (lo, hi) == (0.0, 1.0) and float(x.min()) >= lo and float(x.max()) <= hi
    # the body ellipse stays within |x|, |y| <= 0.94 of the half field of view: the outer pixel ring is empty
    assert float(x[..., [0, -1], :].abs().max()) == 0.0 and float(x[..., :, [0, -1]].abs().max()) == 0.0
    # and the body is never empty: it covers 30-60% of the field of view in every image
    frac = (x > 0).float().mean((1, 2, 3))
    assert float(frac.min()) > 0.3 and float(frac.max()) < 0.6


def test_attenuation_inside_the_body_is_soft_tissue(phantoms):
    x = phantoms.images
    body = x > 0
    mean = (x * body).sum((1, 2, 3)) / body.sum((1, 2, 3))
    # every image's body averages close to water (0.38 normalised, 0.19 /cm): within [0.28, 0.46]
    assert float(mean.min()) > 0.28 and float(mean.max()) < 0.46
    # the ensemble mean is water within +- 0.01 (+-26 HU); measured 0.380 over 10,000 images
    water = MU_WATER / EllipsePhantoms.mu_max
    assert abs(float(mean.mean()) - water) < 0.01
    # the most frequent body value of every image is soft tissue (0.39-0.42), the second tissue class fat
    for img in x[:16, 0]:
        vals, counts = torch.unique(torch.round(img[img > 0] * 200) / 200, return_counts=True)
        assert 0.385 <= float(vals[counts.argmax()]) <= 0.425
    # bone (>= 0.6) and air pockets (< 0.25 inside the body core) both occur in the ensemble
    core = x[..., 16:48, 16:48]
    assert float((x > 0.6).float().mean()) > 1e-3 and float(((core > 0) & (core < 0.25)).float().mean()) > 1e-3


def test_line_integrals_are_those_of_a_human_section(phantoms):
    # units: mu = mu_max * x (1/cm), pixel = field_of_view / size cm; the central row's line integral through an
    # 18-23 cm wide body of about water gives an optical depth of 3-5 (1-5% transmission)
    assert EllipsePhantoms.pixel_size(64) == pytest.approx(0.4)
    row = phantoms.images[:, 0, 31:33, :].mean(1)
    depth = row.sum(-1) * EllipsePhantoms.mu_max * EllipsePhantoms.pixel_size(64)
    assert float(depth.min()) > 2.5 and float(depth.max()) < 5.5


def test_antialiasing_preserves_the_integral():
    # the random draws do not depend on supersample: 2x rendering only redistributes mass at the edges
    hard = EllipsePhantoms(8, size=32, seed=1, supersample=1).images
    soft = EllipsePhantoms(8, size=32, seed=1, supersample=2).images
    assert float((soft.sum((1, 2, 3)) / hard.sum((1, 2, 3)) - 1).abs().max()) < 0.03
    assert len(torch.unique(soft)) > 2 * len(torch.unique(hard))  # partial-volume edge values appear


def test_determinism_prefix_and_seeds():
    a = EllipsePhantoms(70, size=32, seed=5)
    b = EllipsePhantoms(70, size=32, seed=5)
    assert torch.equal(a.images, b.images)
    assert torch.equal(EllipsePhantoms(3, size=32, seed=5).images, a.images[:3])  # image i independent of n
    assert torch.equal(a[69], a.images[69]) and len(a) == 70
    c = EllipsePhantoms(70, size=32, seed=6)
    assert _min_pair_distance(a.images, c.images) > 0.5  # no image shared between seeds
    # within one set all images differ too (blocks have distinct seeds)
    d = torch.cdist(a.images.flatten(1).double(), a.images.flatten(1).double()) + 1e9 * torch.eye(70)
    assert float(d.min()) > 0.5


def test_train_and_test_are_disjoint():
    train = EllipsePhantoms(64, size=32, seed=0, split="train").images
    for seed in (0, 1):
        test = EllipsePhantoms(64, size=32, seed=seed, split="test").images
        assert _min_pair_distance(train, test) > 0.5


def test_shepp_logan_is_skimage_resized():
    ref = skimage.transform.resize(skimage.data.shepp_logan_phantom(), (64, 64), anti_aliasing=True)
    x = shepp_logan(64)
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].numpy(), ref, atol=1e-6)
    assert float(x[0, 0, 0]) == 0.0 and float(x.min()) >= 0.0 and 0.9 < float(x.max()) <= 1.0
    assert torch.equal(shepp_logan(400)[0], torch.from_numpy(skimage.data.shepp_logan_phantom().astype(np.float32)))


@pytest.mark.parametrize(
    "kwargs",
    [dict(n=0), dict(n=2, size=2), dict(n=2, seed=-1), dict(n=2, split="val"), dict(n=2, supersample=0),
     dict(n=2.5), dict(n=2, mean_ellipses=-1.0)],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        EllipsePhantoms(**kwargs)


def test_doctests():
    result = doctest.testmod(ct_data, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
