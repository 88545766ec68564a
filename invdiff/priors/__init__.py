"""Priors in EDM (variance-exploding) coordinates: ``denoise(x, sigma) = E[x0 | x0 + sigma * eps = x]``.

The analytic :class:`Gaussian` and :class:`GaussianMixture` have exact denoisers and exact posteriors under
linear Gaussian measurements; every sampler is tested against them.
"""

from .base import Prior, expand_sigma
from .gaussian import Gaussian, GaussianMixture

__all__ = ["Prior", "Gaussian", "GaussianMixture", "expand_sigma"]
