r"""Posterior samplers: one entry point, one class per method, one result type.

``invdiff.sample(prior, operator, y, method="smc", n=100, steps=100, seed=0, **options)`` returns a
:class:`~invdiff.Posterior`; ``options`` are the method class's hyperparameters (see each class), plus
``progress=True`` for a progress bar and ``sigmas=`` to override the noise grid.

=============== ========================================== ======================== ================
method          class                                      operators                exact as cost grows
=============== ========================================== ======================== ================
``"smc"``       :class:`~invdiff.samplers.SMC`             any differentiable       yes (particles)
``"split-gibbs"`` :class:`~invdiff.samplers.SplitGibbs`    any (exact step: linear) yes (rho -> 0)
``"dps"``       :class:`~invdiff.samplers.DPS`             any differentiable       no
``"red-diff"``  :class:`~invdiff.samplers.REDDiff`         any differentiable       no (mode seeking)
``"daps"``      :class:`~invdiff.samplers.DAPS`            any (exact step: linear) no
``"ddrm"``      :class:`~invdiff.samplers.DDRM`            linear, Gaussian noise   no
=============== ========================================== ======================== ================
"""

from __future__ import annotations

import inspect

from invdiff.posterior import Posterior

from .base import Sampler
from .daps import DAPS
from .ddrm import DDRM
from .dps import DPS
from .red_diff import REDDiff
from .smc import SMC
from .split_gibbs import SplitGibbs
from .unconditional import unconditional

__all__ = ["sample", "unconditional", "METHODS", "Sampler", "DPS", "REDDiff", "SMC", "SplitGibbs", "DAPS", "DDRM"]

#: method name -> sampler class
METHODS: dict[str, type[Sampler]] = {
    "dps": DPS,
    "red-diff": REDDiff,
    "smc": SMC,
    "split-gibbs": SplitGibbs,
    "daps": DAPS,
    "ddrm": DDRM,
}


def sample(prior, operator, y, method: str = "smc", *, n: int = 1, steps: int | None = None, seed: int | None = None,
           progress: bool = False, sigmas=None, **options) -> Posterior:
    """Draw ``n`` posterior samples of ``x`` given ONE measurement ``y`` of ``operator.out_shape``.

    Args:
        prior: an :class:`invdiff.priors.Prior` whose ``shape`` is ``operator.in_shape``.
        operator: an :class:`invdiff.operators.Operator` with a noise model.
        y: the measurement, shape ``operator.out_shape``.
        method: one of :data:`METHODS`.
        n: number of posterior samples. steps: the method's steps (default per method).
        seed: seeds all randomness. progress: show a progress bar. sigmas: a custom decreasing noise grid.
        **options: hyperparameters of the method's class, e.g. ``particles=2000`` for ``"smc"``.

    Returns:
        A :class:`~invdiff.Posterior` with ``samples (n, *shape)``, ``mean``, ``std``, ``nfe``, ``seconds`` and
        method ``diagnostics``.

    Examples:
        >>> import torch, invdiff
        >>> from invdiff.priors import Gaussian
        >>> from invdiff.operators import MatrixOperator, GaussianNoise
        >>> prior = Gaussian(torch.zeros(2), torch.eye(2))
        >>> A = MatrixOperator(torch.eye(2), noise=GaussianNoise(0.5))
        >>> post = invdiff.sample(prior, A, torch.tensor([1.0, -1.0]), "smc", n=4, steps=20, seed=0)
        >>> post.samples.shape
        torch.Size([4, 2])
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cls = METHODS[method]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{method} has no option(s) {', '.join(unknown)}; its options are: {', '.join(allowed)}")
    return cls(**options).sample(prior, operator, y, n=n, steps=steps, seed=seed, progress=progress, sigmas=sigmas)
