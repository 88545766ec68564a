r"""Noise schedules as plain functions returning tensors — no scheduler objects, no hidden state.

invdiff works in variance-exploding (EDM) coordinates :math:`x_\sigma = x_0 + \sigma\varepsilon`. A sampler takes
a decreasing ``sigmas`` tensor and steps from ``sigmas[i]`` to ``sigmas[i + 1]``; the grid functions append a
final 0 by default so the last step lands on the clean estimate.

Variance-preserving (DDPM) processes :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon`
map onto it exactly by :math:`x_t/\sqrt{\bar\alpha_t} = x_0 + \sigma_t\varepsilon` with
:math:`\sigma_t = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}`.

References:
    Karras, Aittala, Aila & Laine (2022), "Elucidating the Design Space of Diffusion-Based Generative Models",
    eq. (5) (the :math:`\rho`-spaced grid).
    Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models" (linear betas).
    Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", eq. (17) (cosine schedule).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "karras_sigmas",
    "loglinear_sigmas",
    "vp_linear_betas",
    "vp_cosine_alphas_cumprod",
    "alphas_cumprod_from_betas",
    "vp_sigmas",
    "sigma_to_alpha_cumprod",
    "sigma_to_timestep",
]


def _check_range(steps: int, sigma_min: float, sigma_max: float) -> int:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return int(steps)


def _finish(s: torch.Tensor, append_zero: bool, dtype) -> torch.Tensor:
    if append_zero:
        s = torch.cat([s, s.new_zeros(1)])
    return s.to(dtype)


def karras_sigmas(
    steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *, append_zero: bool = True,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""The EDM grid :math:`\sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{N-1}(\sigma_{min}^{1/\rho} -
    \sigma_{max}^{1/\rho}))^\rho`, :math:`i = 0..N-1` (Karras et al. 2022, eq. 5).

    Args:
        steps: number of noise levels :math:`N` (``steps`` sampler steps when a zero is appended).
        sigma_min, sigma_max: the end points. rho: the spacing exponent (7 in EDM; 1 is uniform).
        append_zero: append :math:`\sigma_N = 0`.

    Returns:
        Decreasing tensor of length ``steps`` (+1 with the zero).

    Examples:
        >>> karras_sigmas(3, 0.002, 80.0, append_zero=False)
        tensor([8.0000e+01, 2.5152e+00, 2.0000e-03], dtype=torch.float64)
    """
    steps = _check_range(steps, sigma_min, sigma_max)
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    if steps == 1:
        return _finish(torch.tensor([float(sigma_max)], dtype=torch.float64), append_zero, dtype)
    t = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _finish((hi + t * (lo - hi)) ** rho, append_zero, dtype)


def loglinear_sigmas(
    steps: int, sigma_min: float, sigma_max: float, *, append_zero: bool = True, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    r"""Geometric grid from ``sigma_max`` down to ``sigma_min`` (equal steps in :math:`\log\sigma`)."""
    steps = _check_range(steps, sigma_min, sigma_max)
    s = torch.logspace(math.log10(sigma_max), math.log10(sigma_min), steps, dtype=torch.float64)
    return _finish(s, append_zero, dtype)


def vp_linear_betas(
    timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, *, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    r"""DDPM's linear :math:`\beta_t`, :math:`t = 1..T` (Ho et al. 2020): ``linspace(beta_start, beta_end, T)``."""
    if int(timesteps) < 1 or not (0 < beta_start <= beta_end < 1):
        raise ValueError(f"need timesteps >= 1 and 0 < beta_start <= beta_end < 1, got {timesteps}, {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, int(timesteps), dtype=torch.float64).to(dtype)


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    r""":math:`\bar\alpha_t = \prod_{s \le t}(1 - \beta_s)`."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if ((betas <= 0) | (betas >= 1)).any():
        raise ValueError("betas must lie in (0, 1)")
    return torch.cumprod(1 - betas, dim=0)


def vp_cosine_alphas_cumprod(
    timesteps: int = 1000, s: float = 0.008, *, max_beta: float = 0.999, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    r"""The cosine schedule (Nichol & Dhariwal 2021, eq. 17), :math:`t = 1..T`:
    :math:`\bar\alpha_t = f(t)/f(0)`, :math:`f(t) = \cos^2\big(\frac{t/T + s}{1 + s}\frac{\pi}{2}\big)`,
    with each :math:`\beta_t = 1 - \bar\alpha_t/\bar\alpha_{t-1}` clipped at ``max_beta`` as in the paper."""
    T = int(timesteps)
    if T < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0).to(dtype)


def vp_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    r""":math:`\sigma_t = \sqrt{(1 - \bar\alpha_t)/\bar\alpha_t}`: the VE noise level of each VP timestep."""
    a = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if ((a <= 0) | (a > 1)).any():
        raise ValueError("alphas_cumprod must lie in (0, 1]")
    return torch.sqrt((1 - a) / a)


def sigma_to_alpha_cumprod(sigma) -> torch.Tensor:
    r""":math:`\bar\alpha = 1/(1+\sigma^2)`; a VP network sees :math:`x_t = x_\sigma/\sqrt{1+\sigma^2}`."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    if (s < 0).any():
        raise ValueError("sigma must be non-negative")
    return 1 / (1 + s**2)


def sigma_to_timestep(sigma, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    r"""The fractional VP timestep index whose :math:`\sigma_t` equals ``sigma``, by linear interpolation in
    :math:`\log\sigma` between the discrete timesteps (0-based indices into ``alphas_cumprod``).

    Values outside the schedule's range are clamped to its ends.
    """
    table = torch.log(vp_sigmas(alphas_cumprod))
    if not (table[1:] > table[:-1]).all():
        raise ValueError("alphas_cumprod must be strictly decreasing")
    ls = torch.log(torch.as_tensor(sigma, dtype=torch.float64).clamp_min(1e-300))
    ls = ls.clamp(table[0], table[-1])
    hi = torch.searchsorted(table, ls).clamp(1, len(table) - 1)
    lo = hi - 1
    w = (ls - table[lo]) / (table[hi] - table[lo])
    return lo + w
