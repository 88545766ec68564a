r"""Noise models: one object simulates measurements AND scores them.

A :class:`NoiseModel` maps the noiseless measurement :math:`A(x)` to a random measurement :math:`y` with
``sample`` and gives :math:`\log p(y \mid A(x))` with ``log_likelihood``. Because both come from the same
object, simulation and inference cannot drift apart.

Conventions:
    For complex data (MRI k-space) :class:`GaussianNoise` adds independent Gaussian noise of standard deviation
    ``std`` to the real AND to the imaginary part of every entry (so :math:`E|n|^2 = 2\,\mathrm{std}^2`). With
    that convention the Gaussian log-likelihood is :math:`-\|y - Ax\|^2 / (2\,\mathrm{std}^2)` + const for real
    and complex data alike, and every closed form in the package uses that one formula.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["NoiseModel", "GaussianNoise"]


class NoiseModel(nn.Module):
    """Abstract noise model: ``sample(Ax, generator)`` and ``log_likelihood(y, Ax, event_ndim=...)``."""

    def sample(self, Ax: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw a noisy measurement ``y`` given the noiseless one ``Ax`` (any shape)."""
        raise NotImplementedError

    def log_likelihood(self, y: torch.Tensor, Ax: torch.Tensor, *, event_ndim: int) -> torch.Tensor:
        r""":math:`\log p(y \mid Ax)` summed over the last ``event_ndim`` dims; one value per batch entry."""
        raise NotImplementedError


class GaussianNoise(NoiseModel):
    r"""Additive white Gaussian noise, :math:`y = Ax + \mathrm{std}\cdot\varepsilon`.

    Args:
        std: standard deviation, a non-negative number or a tensor broadcastable to the measurement's shape
            (per-measurement standard deviations). For complex data it is the standard deviation of the real and
            of the imaginary part (module docstring).

    Examples:
        >>> import torch
        >>> noise = GaussianNoise(0.1)
        >>> y = noise.sample(torch.zeros(3), generator=torch.Generator().manual_seed(0))
        >>> noise.log_likelihood(y, torch.zeros(3), event_ndim=1).shape
        torch.Size([])
    """

    def __init__(self, std: float | torch.Tensor):
        super().__init__()
        std_t = torch.as_tensor(std, dtype=torch.float64).detach().clone()  # cast to the data on use
        if std_t.is_complex() or not torch.isfinite(std_t).all() or (std_t < 0).any():
            raise ValueError(f"GaussianNoise: std must be finite, real and non-negative, got {std!r}")
        self.register_buffer("std", std_t)

    def extra_repr(self) -> str:
        return f"std={self.std.item():.4g}" if self.std.ndim == 0 else f"std=tensor{tuple(self.std.shape)}"

    def _std_like(self, t: torch.Tensor) -> torch.Tensor:
        from invdiff.linalg import real_dtype

        return self.std.to(device=t.device, dtype=real_dtype(t.dtype))

    def sample(self, Ax: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        rdtype = Ax.real.dtype if Ax.is_complex() else Ax.dtype
        if Ax.is_complex():
            eps = torch.randn(Ax.shape + (2,), generator=generator, device=Ax.device, dtype=rdtype)
            eps = torch.view_as_complex(eps)
        else:
            eps = torch.randn(Ax.shape, generator=generator, device=Ax.device, dtype=rdtype)
        return Ax + self._std_like(Ax) * eps

    def log_likelihood(self, y: torch.Tensor, Ax: torch.Tensor, *, event_ndim: int) -> torch.Tensor:
        std = self._std_like(Ax)
        if (std == 0).any():
            raise ValueError("GaussianNoise.log_likelihood: std is 0, the likelihood is degenerate; use std > 0")
        r = y - Ax
        sq = (r.real**2 + r.imag**2) if r.is_complex() else r**2
        parts = 2 if r.is_complex() else 1  # real components per entry
        logp = -0.5 * sq / std**2 - parts * (torch.log(std) + 0.5 * math.log(2 * math.pi))
        logp = logp.expand(torch.broadcast_shapes(logp.shape, r.shape))
        return logp.sum(dim=tuple(range(-event_ndim, 0))) if event_ndim > 0 else logp
