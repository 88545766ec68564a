"""MRI operators for the contract suite (tests/test_operator_contract.py): small, varied, with noise models."""

import torch

from invdiff.operators import GaussianNoise
from invdiff.operators.mri import (
    MRI,
    NonCartesianMRI,
    equispaced_mask,
    poisson_disc_mask,
    random_mask,
    simulate_coil_maps,
)


def mri_single_coil_2d_mask():
    """Odd-by-even image (fftshift != ifftshift along H) with a variable-density Poisson-disc mask."""
    return MRI(poisson_disc_mask((11, 10), 2.5, seed=0), noise=GaussianNoise(0.1))


def mri_single_coil_1d_mask():
    """fastMRI-style column mask broadcast over the rows; per-entry noise levels."""
    std = 0.05 + 0.05 * torch.rand(9, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return MRI(random_mask(12, 0.25, 3, seed=1), shape=(9, 12), noise=GaussianNoise(std))


def mri_sense_4coil():
    """4-coil SENSE at R = 2 with an equispaced column mask; independent per-coil noise levels."""
    maps = simulate_coil_maps(4, (12, 12), dtype=torch.complex128)
    std = torch.tensor([0.05, 0.1, 0.08, 0.12], dtype=torch.float64).reshape(4, 1, 1)
    return MRI(equispaced_mask(12, 0.25, 2, seed=2), maps, noise=GaussianNoise(std))


def mri_sense_3coil_2d_mask():
    maps = simulate_coil_maps(3, (10, 9))
    return MRI(poisson_disc_mask((10, 9), 2, seed=4), maps, noise=GaussianNoise(0.1))


OPERATORS = {
    "mri_single_coil_2d_mask": mri_single_coil_2d_mask,
    "mri_single_coil_1d_mask": mri_single_coil_1d_mask,
    "mri_sense_4coil": mri_sense_4coil,
    "mri_sense_3coil_2d_mask": mri_sense_3coil_2d_mask,
}

try:  # the NUFFT operator is an optional extra (pip install "invdiff[nufft]")
    import finufft  # noqa: F401  (availability check)
except ImportError:
    pass
else:

    def _random_points(m, seed):
        g = torch.Generator().manual_seed(seed)
        return (2 * torch.rand(m, 2, generator=g, dtype=torch.float64) - 1) * torch.pi

    def mri_nufft_single_coil():
        """Random k-space points (a well-conditioned A, so the CG pseudo-inverse check converges)."""
        return NonCartesianMRI(_random_points(300, 5), (10, 10), noise=GaussianNoise(0.1))

    def mri_nufft_sense_3coil():
        return NonCartesianMRI(_random_points(150, 6), (8, 10), simulate_coil_maps(3, (8, 10)),
                               noise=GaussianNoise(0.05))

    OPERATORS.update({"mri_nufft_single_coil": mri_nufft_single_coil, "mri_nufft_sense_3coil": mri_nufft_sense_3coil})
