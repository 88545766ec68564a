"""Registry entries of operators/blur.py (merged into operator_registry.OPERATORS)."""

import torch

from invdiff.operators import GaussianNoise
from invdiff.operators.blur import (
    Blur, Denoising, Inpainting, SuperResolution, box_mask, gaussian_kernel, motion_blur_kernel, random_mask,
)


def blur_motion_circular():
    return Blur(motion_blur_kernel(7, seed=1), (3, 12, 10), noise=GaussianNoise(0.1))


def blur_gaussian_reflect():
    return Blur(gaussian_kernel(0.7), (12, 10), boundary="reflect", noise=GaussianNoise(0.1))


def blur_asymmetric_zero():
    k = 0.1 * torch.rand(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    k[2, 1] = 1.0  # a dominant centre keeps it well conditioned for the generic CG pseudo-inverse
    return Blur(k / k.sum(), (9, 11), boundary="zero", noise=GaussianNoise(0.05))


def blur_superresolution():
    return SuperResolution(2, (2, 8, 6), noise=GaussianNoise(0.1))


def blur_inpainting_random():
    return Inpainting(random_mask((8, 9), 0.4, seed=2), (2, 8, 9), noise=GaussianNoise(0.1))


def blur_inpainting_box_per_pixel_noise():
    std = torch.linspace(0.05, 0.5, 63, dtype=torch.float64)
    return Inpainting(box_mask((8, 9), (2, 2, 3, 3)), noise=GaussianNoise(std))


def blur_denoising():
    return Denoising((5, 6), noise=GaussianNoise(0.2))


OPERATORS = {f.__name__: f for f in (
    blur_motion_circular, blur_gaussian_reflect, blur_asymmetric_zero, blur_superresolution,
    blur_inpainting_random, blur_inpainting_box_per_pixel_noise, blur_denoising,
)}
