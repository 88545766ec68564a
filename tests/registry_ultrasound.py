"""Ultrasound operators for the contract suite (tests/operator_registry.py merges ``OPERATORS``)."""

import torch

from invdiff.operators import GaussianNoise
from invdiff.operators.ultrasound import PlaneWaveRF, ScanlineSubsampling


def us_scanline_even():
    return ScanlineSubsampling((12, 16), 5, noise=GaussianNoise(0.1))


def us_scanline_random_channels():
    return ScanlineSubsampling((2, 8, 12), 4, selection="random", seed=3, noise=GaussianNoise(0.2))


def us_scanline_mask_per_line_noise():
    mask = torch.tensor([True, False, False, True, True, False, True, False, False, True])
    std = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])  # one std per acquired line, broadcast over depth
    return ScanlineSubsampling((6, 10), mask, noise=GaussianNoise(std))


def us_scanline_indices_noiseless():
    return ScanlineSubsampling((8, 8), [6, 1, 3])


LAMBDA = 1540.0 / 5e6  # wavelength at the default f0 and c (m)


def us_planewave_small():
    # a grid the 8-element array resolves (dz = lambda/2, dx = lambda): A is well conditioned, so the generic
    # conjugate-gradient pinv of the contract converges (finer grids are band-limited, see PlaneWaveRF)
    return PlaneWaveRF(
        (12, 12), angles=(-0.15, 0.1), n_elements=8, pitch=5e-4, pixel_size=(LAMBDA / 2, LAMBDA),
        depth_start=2e-3, noise=GaussianNoise(0.05),
    )


def us_planewave_attenuated():
    return PlaneWaveRF(
        (10, 12), angles=0.2, n_elements=6, pitch=5e-4, pixel_size=(LAMBDA / 2, 1.2 * LAMBDA), depth_start=2e-3,
        fs=25e6, upsample=4, directivity=True, spreading=True,
    )


OPERATORS = {
    "us_scanline_even": us_scanline_even,
    "us_scanline_random_channels": us_scanline_random_channels,
    "us_scanline_mask_per_line_noise": us_scanline_mask_per_line_noise,
    "us_scanline_indices_noiseless": us_scanline_indices_noiseless,
    "us_planewave_small": us_planewave_small,
    "us_planewave_attenuated": us_planewave_attenuated,
}
