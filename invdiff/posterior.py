"""The one result type of every sampler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Posterior"]


@dataclass
class Posterior:
    r"""Samples from :math:`p(x \mid y)` and their summaries.

    Attributes:
        samples: ``(n, *shape)`` posterior draws.
        mean: ``(*shape)`` sample mean.
        std: ``(*shape)`` per-entry sample standard deviation (unbiased; zeros when ``n == 1``).
        nfe: number of prior (network) evaluations spent, per sample.
        seconds: wall-clock time of the sampling.
        diagnostics: method-specific traces, e.g. ``{"ess": ...}`` for SMC or ``{"loss": ...}`` for RED-Diff.

    Build one with :meth:`from_samples`, which computes ``mean`` and ``std``.

    Examples:
        >>> import torch
        >>> post = Posterior.from_samples(torch.tensor([[0.0, 1.0], [2.0, 3.0]]), nfe=10, seconds=0.1)
        >>> post.mean, post.std
        (tensor([1., 2.]), tensor([1.4142, 1.4142]))
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    nfe: int = 0
    seconds: float = 0.0
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.samples.ndim < 1 or self.samples.shape[0] < 1:
            raise ValueError(f"samples must be (n, *shape) with n >= 1, got shape {tuple(self.samples.shape)}")
        shape = tuple(self.samples.shape[1:])
        for name in ("mean", "std"):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(getattr(self, name).shape)}")

    @classmethod
    def from_samples(
        cls, samples: torch.Tensor, *, nfe: int = 0, seconds: float = 0.0, diagnostics: dict | None = None
    ) -> "Posterior":
        """Summarise ``(n, *shape)`` samples; raises if any sample is NaN or Inf."""
        samples = samples.detach()
        if not torch.isfinite(samples).all():
            bad = int((~torch.isfinite(samples.reshape(samples.shape[0], -1))).any(-1).sum())
            raise FloatingPointError(f"{bad} of {samples.shape[0]} posterior samples contain NaN or Inf")
        n = samples.shape[0]
        mean = samples.mean(0)
        std = samples.std(0, correction=1) if n > 1 else torch.zeros_like(mean)
        return cls(samples, mean, std, int(nfe), float(seconds), dict(diagnostics or {}))

    @property
    def n(self) -> int:
        return self.samples.shape[0]

    def quantile(self, q) -> torch.Tensor:
        """Per-entry sample quantiles; ``q`` a number or a 1-D tensor (then a leading dim of ``len(q)``)."""
        s = self.samples if self.samples.is_floating_point() else self.samples.float()
        return torch.quantile(s, torch.as_tensor(q, dtype=s.dtype, device=s.device), dim=0)

    def interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """The central per-entry credible interval ``(lower, upper)`` of probability ``level``."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        lo, hi = self.quantile([(1 - level) / 2, (1 + level) / 2])
        return lo, hi

    def __repr__(self) -> str:
        return (
            f"Posterior(n={self.n}, shape={tuple(self.samples.shape[1:])}, nfe={self.nfe}, "
            f"seconds={self.seconds:.3g}, diagnostics={sorted(self.diagnostics)})"
        )
