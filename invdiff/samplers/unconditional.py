r"""Unconditional samples from a prior: the EDM probability-flow ODE, Heun's method.

:math:`\frac{dx}{d\sigma} = \frac{x - D(x, \sigma)}{\sigma}` integrated from :math:`x \sim \mathcal N(0,
\sigma_\max^2 I)` down the EDM grid :func:`~invdiff.schedules.karras_sigmas` with Heun's second-order
correction on every step but the last (Karras et al. 2022, Algorithm 1). Deterministic given the starting
noise; for an exact denoiser it transports the noised prior to the prior.

References:
    Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative Models",
    NeurIPS 2022.
"""

from __future__ import annotations

import torch

from invdiff.schedules import karras_sigmas

__all__ = ["unconditional", "heun_ode"]


def heun_ode(denoise, x: torch.Tensor, sigmas) -> torch.Tensor:
    """Integrate the probability-flow ODE from ``x`` at ``sigmas[0]`` down the decreasing grid ``sigmas`` (a list
    of floats) by Heun's method, with the correction on every step but one that ends at sigma = 0."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = torch.sub(x, denoise(x, s)).div_(s)
        x_next = torch.add(x, d, alpha=s_next - s)
        if s_next > 0:
            d.add_(torch.sub(x_next, denoise(x_next, s_next)).div_(s_next))  # d + d_next
            x_next = torch.add(x, d, alpha=0.5 * (s_next - s))
        x = x_next
    return x


@torch.no_grad()
def unconditional(prior, n: int, *, steps: int = 32, seed: int = 0, batch_size: int = 64,
                  dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``n`` samples from ``prior`` (shape ``(n, *prior.shape)``) by the Heun ODE sampler.

    Args:
        prior: any :class:`~invdiff.priors.Prior`.
        n: number of samples. steps: ODE steps (2 * steps - 1 denoiser calls per sample).
        seed: seeds the starting noise; sample ``k`` does not depend on ``n`` or ``batch_size``.
        batch_size: samples per denoiser call.
    """
    if n < 1 or steps < 1:
        raise ValueError(f"unconditional: n and steps must be >= 1, got {n}, {steps}")
    sigmas = karras_sigmas(steps, prior.sigma_min, prior.sigma_max).tolist()
    out = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        x = torch.stack([torch.randn(prior.shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + start + k),
                                     dtype=torch.float64) for k in range(count)]).to(device=device, dtype=dtype)
        out.append(heun_ode(prior.denoise, x * sigmas[0], sigmas))
    return torch.cat(out)
