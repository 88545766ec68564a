r"""The prior interface, in EDM (variance-exploding) coordinates.

A prior :math:`p(x_0)` is known to the samplers only through its denoiser at every noise level:

.. math::
    x_\sigma = x_0 + \sigma\varepsilon,\quad \varepsilon \sim \mathcal N(0, I), \qquad
    D(x, \sigma) = E[x_0 \mid x_\sigma = x], \qquad
    \nabla_x \log p_\sigma(x) = \frac{D(x, \sigma) - x}{\sigma^2}

(Tweedie's formula). Every prior — analytic, trained network, or adapted outside checkpoint — speaks this one
convention; variance-preserving networks enter through adapters that rescale to it.

References:
    Karras, Aittala, Aila & Laine (2022), "Elucidating the Design Space of Diffusion-Based Generative Models".
    Efron (2011), "Tweedie's formula and selection bias".
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Prior", "expand_sigma"]


def expand_sigma(sigma, x: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Turn ``sigma`` (number, 0-d tensor, or tensor of ``x``'s batch shape) into a tensor broadcasting with ``x``.

    Raises:
        ValueError: for negative or non-finite noise levels, or a shape that does not fit the batch.
    """
    s = torch.as_tensor(sigma, device=x.device)
    if not isinstance(sigma, torch.Tensor) and s.is_floating_point() and s.dtype != torch.float64:
        # Python numbers are doubles, which torch stores as float32: 0.3 would become 0.30000001 for float64 data
        s = torch.as_tensor(sigma, device=x.device, dtype=torch.float64)
    if s.is_complex():
        raise ValueError("sigma must be real")
    s = s.to(x.real.dtype if x.is_complex() else (x.dtype if x.is_floating_point() else torch.float32))
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"sigma must be finite and non-negative, got {sigma!r}")
    if s.ndim == 0:
        return s
    batch = x.shape[: x.ndim - event_ndim]
    if s.ndim > len(batch):
        raise ValueError(f"sigma of shape {tuple(s.shape)} does not fit the batch shape {tuple(batch)} of x")
    return s.reshape(s.shape + (1,) * event_ndim)


class Prior(nn.Module):
    r"""Abstract prior over tensors of ``shape``: implement ``denoise(x, sigma)``.

    Attributes:
        shape: shape of one sample, ``(d,)`` for vectors or ``(C, H, W)`` for images.
        sigma_min, sigma_max: the noise range the prior is valid on (samplers integrate between them).
        sigma_data: the data's typical per-coordinate standard deviation.
        exact_denoiser: ``True`` for priors whose ``denoise`` is exact at every noise level, also above
            ``sigma_max`` (the analytic Gaussian priors); learned priors are only trusted on their noise range.
    """

    exact_denoiser = False

    def __init__(self, shape, *, sigma_min: float, sigma_max: float, sigma_data: float):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ValueError(f"prior shape must be a non-empty tuple of positive sizes, got {shape}")
        if not (0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.shape = shape
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.sigma_data = float(sigma_data)

    @property
    def event_ndim(self) -> int:
        return len(self.shape)

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x, dtype=torch.get_default_dtype())
        n = self.event_ndim
        if x.ndim < n or tuple(x.shape[x.ndim - n :]) != self.shape:
            raise ValueError(
                f"{type(self).__name__}: expected x of shape (*batch, {', '.join(map(str, self.shape))}), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        return x

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:  # pragma: no cover - abstract
        r""":math:`E[x_0 \mid x_0 + \sigma\varepsilon = x]`; ``x`` is ``(*batch, *shape)``, ``sigma`` a number or
        a tensor of the batch shape."""
        raise NotImplementedError(f"{type(self).__name__} must implement denoise(x, sigma)")

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.denoise(x, sigma)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        r""":math:`\nabla_x \log p_\sigma(x) = (D(x,\sigma) - x)/\sigma^2`; needs ``sigma > 0``."""
        x = self._check_x(x)
        s = expand_sigma(sigma, x, self.event_ndim)
        if (s == 0).any():
            raise ValueError("score(x, sigma) is undefined at sigma = 0; use denoise or a sigma > 0")
        return (self.denoise(x, sigma) - x) / s**2

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, sigma_min={self.sigma_min:.3g}, sigma_max={self.sigma_max:.3g}, "
            f"sigma_data={self.sigma_data:.3g}"
        )
