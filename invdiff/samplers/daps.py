r"""Decoupled Annealing Posterior Sampling (DAPS).

For each noise level :math:`\sigma_t` of an annealing grid (Zhang et al. 2024, Algorithm 1):

1. :math:`\hat x_0(x_t)` by a few Euler steps of the probability-flow ODE from :math:`\sigma_t` to 0;
2. :math:`x_0 \sim p(x_0 \mid x_t, y) \approx \mathcal N(x_0; \hat x_0, r_t^2 I)\,p(y \mid x_0)` with
   :math:`r_t = \sigma_t` — exact for linear operators with Gaussian noise
   (:meth:`~invdiff.operators.LinearOperator.sample_conditional`), Langevin dynamics otherwise;
3. :math:`x_{t-1} = x_0 + \sigma_{t-1}\varepsilon`: the next level is re-noised from the sample, decoupling
   consecutive levels.

The Gaussian approximation of :math:`p(x_0 \mid x_t)` makes DAPS approximate, not asymptotically exact.

References:
    Zhang, Chu, Berner, Zheng, Feng, Sun & Yue (2025), "Improving Diffusion Inverse Problem Solving with
    Decoupled Noise Annealing" (CVPR; arXiv 2024).
"""

from __future__ import annotations

from invdiff.schedules import karras_sigmas

from .base import Sampler, gaussian_conditional

__all__ = ["DAPS"]


class DAPS(Sampler):
    """DAPS (module docstring).

    Args:
        ode_steps: denoiser evaluations of the inner probability-flow ODE per annealing level (paper: 5).
        r_scale: :math:`r_t = r_{scale}\\,\\sigma_t`.
        langevin_steps, langevin_lr: the x0 step for nonlinear operators / non-Gaussian noise (step size
            ``langevin_lr * r_t**2``).

    A step is one annealing level (``ode_steps`` denoiser evaluations); ``steps`` defaults to 100.
    """

    name = "daps"
    default_steps = 100

    def __init__(self, ode_steps: int = 5, *, r_scale: float = 1.0, langevin_steps: int = 50, langevin_lr: float = 0.05):
        if ode_steps < 1 or r_scale <= 0 or langevin_steps < 1 or langevin_lr <= 0:
            raise ValueError("need ode_steps >= 1, r_scale > 0, langevin_steps >= 1 and langevin_lr > 0")
        self.ode_steps, self.r_scale = int(ode_steps), float(r_scale)
        self.langevin_steps, self.langevin_lr = int(langevin_steps), float(langevin_lr)

    def _x0_hat(self, ctx, x, sigma):
        grid = karras_sigmas(self.ode_steps, min(ctx.prior.sigma_min, sigma / 2), sigma, append_zero=False).tolist() \
            if self.ode_steps > 1 else [sigma]
        for s, s_next in zip(grid[:-1], grid[1:]):
            x = x + (s_next - s) * (x - ctx.denoise(x, s)) / s
        return ctx.denoise(x, grid[-1])

    def _run(self, ctx):
        sig = ctx.sigmas.tolist()
        if sig[-1] == 0:
            sig = sig[:-1]
        x = sig[0] * ctx.randn()
        x0 = x
        for i in ctx.bar(range(len(sig)), total=len(sig)):
            s = sig[i]
            x0_hat = self._x0_hat(ctx, x, s)
            x0 = gaussian_conditional(ctx, x0_hat, self.r_scale * s, langevin_steps=self.langevin_steps,
                                      langevin_lr=self.langevin_lr)
            ctx.check(x0, i, s, "x0")
            if i + 1 < len(sig):
                x = x0 + sig[i + 1] * ctx.randn()
        return x0, {}
