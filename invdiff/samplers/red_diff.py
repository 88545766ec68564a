r"""RED-Diff: a variational, optimisation-based solver regularised by the denoiser.

A Gaussian variational posterior :math:`q = \mathcal N(\mu, \sigma_v^2 I)`, :math:`\sigma_v \to 0`, is fitted by
stochastic optimisation over noise levels visited from large to small (Mardani et al. 2023, Algorithm 1). Each
step draws :math:`\varepsilon`, forms :math:`x_\sigma = \mu + \sigma\varepsilon`, and updates :math:`\mu` with
Adam on the gradient

.. math::
    g = w_{obs}\,\nabla_\mu \tfrac12\|y - A(\mu)\|^2 + \lambda_\sigma\,\mathrm{sg}[\hat\varepsilon(x_\sigma) -
    \varepsilon], \qquad \hat\varepsilon = (x_\sigma - D(x_\sigma, \sigma))/\sigma,

with the inverse-SNR weighting :math:`\lambda_\sigma = \lambda\sigma` (in VE coordinates
:math:`\sigma/\alpha = \sigma`), which makes the regulariser the RED term :math:`\lambda(\mu - D(\mu +
\sigma\varepsilon, \sigma))`. No gradient flows through the network. Each of the ``n`` samples is an
independent run; their spread reflects the optimiser's randomness, not a calibrated posterior.

References:
    Mardani, Song, Kautz & Vahdat (2023), "A Variational Perspective on Solving Inverse Problems with Diffusion
    Models".
"""

from __future__ import annotations

import torch

from .base import Sampler

__all__ = ["REDDiff"]


class REDDiff(Sampler):
    """RED-Diff (module docstring).

    Args:
        lam: regularisation weight :math:`\\lambda` (paper: 0.25).
        lr: Adam learning rate in units of ``prior.sigma_data / 0.5``, i.e. as for the paper's images in
            [-1, 1] (paper: 0.1); Adam's steps have the scale of the data, so this keeps one default meaningful.
        obs_weight: weight of the data misfit.
        weighting: ``"inverse-snr"`` (:math:`\\lambda\\sigma`, the paper's) or ``"constant"`` (:math:`\\lambda`).
        init: ``"zeros"`` (default, as InverseBench) or ``"pinv"`` (pseudo-inverse of ``y`` for linear operators;
            it amplifies noise through small singular values, e.g. of a blur).
        betas: Adam's betas (paper: (0.9, 0.99)).

    A step is one denoiser evaluation; ``steps`` defaults to 500. ``diagnostics["loss"]`` holds the data misfit
    :math:`\\tfrac12\\|y - A(\\mu)\\|^2` (mean over samples) per step.
    """

    name = "red-diff"
    default_steps = 500

    def __init__(self, lam: float = 0.25, *, lr: float = 0.1, obs_weight: float = 1.0, weighting: str = "inverse-snr",
                 init: str = "zeros", betas=(0.9, 0.99)):
        if weighting not in ("inverse-snr", "constant"):
            raise ValueError(f"weighting must be 'inverse-snr' or 'constant', got {weighting!r}")
        if init not in ("pinv", "zeros"):
            raise ValueError(f"init must be 'pinv' or 'zeros', got {init!r}")
        if lam < 0 or lr <= 0 or obs_weight < 0:
            raise ValueError("need lam >= 0, lr > 0 and obs_weight >= 0")
        self.lam, self.lr, self.obs_weight, self.weighting, self.init = float(lam), float(lr), float(obs_weight), weighting, init
        self.betas = tuple(betas)

    def _run(self, ctx):
        from invdiff.operators import LinearOperator

        op, y = ctx.operator, ctx.y
        sig = ctx.sigmas[ctx.sigmas > 0].tolist()  # visited from large to small
        if self.init == "pinv" and isinstance(op, LinearOperator):
            mu = op.pinv(y).real.to(ctx.dtype).expand(ctx.n, *ctx.shape).clone()
        else:
            mu = torch.zeros(ctx.n, *ctx.shape, device=ctx.device, dtype=ctx.dtype)
        mu.requires_grad_(True)
        opt = torch.optim.Adam([mu], lr=self.lr * ctx.prior.sigma_data / 0.5, betas=self.betas)
        losses = []
        for i in ctx.bar(range(len(sig)), total=len(sig)):
            s = sig[i]
            eps = ctx.randn()
            x0 = ctx.denoise(mu.detach() + s * eps, s)
            lam_s = self.lam * s if self.weighting == "inverse-snr" else self.lam
            reg = lam_s * (mu.detach() - x0) / s  # lam_s * (eps_hat - eps)
            r = op(mu.detach()) - y
            data_grad = op.vjp(mu.detach(), r).real
            opt.zero_grad(set_to_none=True)
            mu.grad = self.obs_weight * data_grad + reg
            opt.step()
            sq = (r.abs() ** 2).reshape(ctx.n, -1).sum(-1)
            losses.append(float(0.5 * sq.mean()))
            ctx.check(mu.detach(), i, s, "mu")
        return mu.detach(), {"loss": torch.tensor(losses)}
