r"""Split Gibbs sampling (PnP-DM / DPnP): alternate an exact likelihood step with a diffusion denoising step.

Augment with a coupling variable :math:`z` and sample
:math:`\pi_\rho(x, z) \propto p(x)\,\exp(-\|x - z\|^2/2\rho^2)\,p(y \mid z)` by Gibbs (Wu et al. 2024, Alg. 1):

1. likelihood step :math:`z \sim \pi(z \mid x) \propto p(y \mid z)\,\mathcal N(z; x, \rho^2 I)` — exact for linear
   operators with Gaussian noise (:meth:`~invdiff.operators.LinearOperator.sample_conditional`), unadjusted
   Langevin otherwise;
2. prior step :math:`x \sim p(x \mid x_\rho = z)` — the denoising posterior, drawn by running the diffusion's
   ancestral sampler from noise level :math:`\rho` (started at :math:`z`) down to 0.

The :math:`x`-marginal of :math:`\pi_\rho` is :math:`p(x)\,(p(y \mid \cdot) * \mathcal N(0, \rho^2 I))(x)`,
the posterior with a likelihood blurred by :math:`\rho`; it tends to :math:`p(x \mid y)` as :math:`\rho \to 0`.
:math:`\rho` is annealed geometrically from ``rho_max`` to ``rho_min`` (large couplings let chains cross
between modes), then held for the remaining iterations. Each of the ``n`` samples is one chain's final state.

References:
    Wu, Sun, Chen, Zhang, Yue & Bouman (2024), "Principled Probabilistic Imaging using Diffusion Models as
    Plug-and-Play Priors" (PnP-DM).
    Xu & Chi (2024), "Provably Robust Score-Based Diffusion Posterior Sampling for Plug-and-Play Image
    Reconstruction" (DPnP).
    Vono, Dobigeon & Chainais (2019), "Split-and-augmented Gibbs sampler".
"""

from __future__ import annotations

import math

import torch

from invdiff.schedules import karras_sigmas

from .base import Sampler, ancestral_coefficients, posterior_variance

__all__ = ["SplitGibbs"]


class SplitGibbs(Sampler):
    """Split Gibbs / PnP-DM (module docstring).

    Args:
        rho_max: initial coupling (default ``20 * prior.sigma_data``).
        rho_min: final coupling (default ``0.02 * prior.sigma_data``); smaller is more exact, mixes slower.
        anneal: fraction of the iterations spent annealing rho; the rest run at ``rho_min``.
        inner_steps: ancestral steps of each prior step (two denoiser evaluations each).
        langevin_steps, langevin_lr: the likelihood step for nonlinear operators / non-Gaussian noise (unadjusted
            Langevin with step ``langevin_lr * rho**2``).

    A step is one Gibbs iteration (``2 * inner_steps`` denoiser evaluations); ``steps`` defaults to 100.
    ``diagnostics["rho"]`` holds the coupling schedule.
    """

    name = "split-gibbs"
    default_steps = 100

    def __init__(self, rho_max: float | None = None, rho_min: float | None = None, *, anneal: float = 0.8,
                 inner_steps: int = 3, langevin_steps: int = 20, langevin_lr: float = 0.1):
        if not 0 < anneal <= 1:
            raise ValueError(f"anneal must be in (0, 1], got {anneal}")
        if inner_steps < 1 or langevin_steps < 1 or langevin_lr <= 0:
            raise ValueError("inner_steps and langevin_steps must be >= 1 and langevin_lr > 0")
        self.rho_max, self.rho_min, self.anneal = rho_max, rho_min, float(anneal)
        self.inner_steps, self.langevin_steps, self.langevin_lr = int(inner_steps), int(langevin_steps), float(langevin_lr)

    def rho_schedule(self, prior, steps: int) -> torch.Tensor:
        """The coupling of each iteration: geometric from ``rho_max`` to ``rho_min``, then constant."""
        hi = 20 * prior.sigma_data if self.rho_max is None else float(self.rho_max)
        lo = 0.02 * prior.sigma_data if self.rho_min is None else float(self.rho_min)
        if not 0 < lo <= hi:
            raise ValueError(f"need 0 < rho_min <= rho_max, got {lo}, {hi}")
        n_anneal = max(1, round(self.anneal * steps))
        ramp = torch.logspace(math.log10(hi), math.log10(lo), n_anneal, dtype=torch.float64)
        return torch.cat([ramp, torch.full((steps - n_anneal,), lo, dtype=torch.float64)])

    def _likelihood_step(self, ctx, x, rho):
        from invdiff.operators import GaussianNoise, LinearOperator

        op, y = ctx.operator, ctx.y
        if isinstance(op, LinearOperator) and isinstance(op.noise, GaussianNoise):
            return op.sample_conditional(x, y, rho, generator=ctx.generator).real.to(x.dtype)
        z, gamma = x.clone(), self.langevin_lr * rho**2
        for _ in range(self.langevin_steps):
            with torch.enable_grad():
                zg = z.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(op.log_likelihood(zg, y).sum(), zg)
            z = z + gamma * (g - (z - x) / rho**2) + math.sqrt(2 * gamma) * ctx.randn()
        return z

    def _prior_step(self, ctx, z, rho):
        r"""x ~ p(x0 | x_rho = z): ancestral steps from sigma = rho to 0 whose variance includes the uncertainty
        of x0, :math:`s_{up}^2 + (1 - c)^2\,\mathrm{Var}[x_0 \mid x]` (Tweedie, one probe): exact for Gaussian
        priors at any step size, so few steps suffice."""
        lo = min(ctx.prior.sigma_min, rho * 1e-2)
        grid = karras_sigmas(self.inner_steps, lo, rho).tolist() if self.inner_steps > 1 else [rho, 0.0]
        x = z
        for s, s_next in zip(grid[:-1], grid[1:]):
            x0 = ctx.denoise(x, s)
            c, s_up = ancestral_coefficients(s, s_next)
            probe = torch.randint(0, 2, x.shape, generator=ctx.generator, device=x.device).to(x.dtype) * 2 - 1
            r2 = posterior_variance(ctx.denoise, x, x0, s, len(ctx.shape), probe)
            x = x0 + c * (x - x0) + (s_up**2 + (1 - c) ** 2 * r2).sqrt() * ctx.randn()
        return x

    def _run(self, ctx):
        from invdiff.operators import LinearOperator

        rhos = self.rho_schedule(ctx.prior, ctx.steps)
        op = ctx.operator
        if isinstance(op, LinearOperator):
            x = op.pinv(ctx.y).real.to(ctx.dtype).expand(ctx.n, *ctx.shape) + float(rhos[0]) * ctx.randn()
        else:
            x = float(rhos[0]) * ctx.randn()
        for i in ctx.bar(range(ctx.steps), total=ctx.steps):
            rho = float(rhos[i])
            z = self._likelihood_step(ctx, x, rho)
            ctx.check(z, i, rho, "z (likelihood step)")
            x = self._prior_step(ctx, z, rho)
            ctx.check(x, i, rho, "x (prior step)")
        return x, {"rho": rhos}
