r"""Denoising Diffusion Restoration Models (DDRM), for linear operators with Gaussian noise.

In the spectral basis of the (noise-whitened) operator :math:`A = U S V^T`, a coordinate
:math:`\bar x_i = (V^T x)_i` with :math:`s_i > 0` is observed as :math:`\bar y_i = (U^T y)_i / s_i` with noise
:math:`\sigma_i^y = 1/s_i`; the others are unobserved. With :math:`\hat x_0 = D(x_\sigma, \sigma)`, the step to
:math:`\sigma'` (Kawar et al. 2022, eq. 7-8, VE form) is

.. math::
    \bar x'_i = \begin{cases}
    \hat{\bar x}_{0,i} + \sqrt{1-\eta^2}\,\sigma'\,(\bar x_i - \hat{\bar x}_{0,i})/\sigma + \eta\sigma'\varepsilon_i
        & \text{unobserved}\\
    \hat{\bar x}_{0,i} + \sqrt{1-\eta^2}\,\sigma'\,(\bar y_i - \hat{\bar x}_{0,i})/\sigma^y_i + \eta\sigma'\varepsilon_i
        & \sigma' < \sigma^y_i\\
    (1-\eta_b)\hat{\bar x}_{0,i} + \eta_b\bar y_i + \sqrt{\sigma'^2 - (\sigma^y_i)^2\eta_b^2}\,\varepsilon_i
        & \sigma' \ge \sigma^y_i
    \end{cases}

Only the observed directions are handled in the spectral basis; the unobserved ones are updated in the original
coordinates through the projector :math:`I - V_o V_o^T`, so no full :math:`d \times d` basis is formed.
Not asymptotically exact.

References:
    Kawar, Elad, Ermon & Song (2022), "Denoising Diffusion Restoration Models".
"""

from __future__ import annotations

import math

import torch

from .base import Sampler, dense_svd

__all__ = ["DDRM"]


class DDRM(Sampler):
    """DDRM (module docstring).

    Args:
        eta: noise of the unobserved / low-noise updates (paper: 0.85).
        eta_b: weight of the measurement in the high-noise updates (paper: 1.0).

    A step is one denoiser evaluation; ``steps`` defaults to 100 (paper: 20).
    """

    name = "ddrm"
    default_steps = 100
    needs_linear = True

    def __init__(self, eta: float = 0.85, *, eta_b: float = 1.0):
        if not 0 <= eta <= 1 or not 0 <= eta_b <= 1:
            raise ValueError(f"eta and eta_b must be in [0, 1], got {eta}, {eta_b}")
        self.eta, self.eta_b = float(eta), float(eta_b)

    def _run(self, ctx):
        U, S, Vh, std = dense_svd(ctx.operator, ctx.dtype)
        obs = S > 1e-10 * S.max()
        Vo, So = Vh[obs], S[obs]
        ybar = ((ctx.y.reshape(-1).to(ctx.dtype) / std) @ U)[obs] / So  # (k,)
        sy = 1.0 / So
        n, d = ctx.n, math.prod(ctx.shape)
        sig = ctx.sigmas.tolist()

        def split(x):
            u = x @ Vo.T
            return u, x - u @ Vo

        def noise():
            return ctx.randn().reshape(n, d)

        e = noise()
        u_e, perp_e = split(e)
        u0 = torch.where(sig[0] > sy, ybar + (sig[0] ** 2 - sy**2).clamp_min(0).sqrt() * u_e, sig[0] * u_e)
        x = sig[0] * perp_e + u0 @ Vo
        eta, eb = self.eta, self.eta_b
        for i in ctx.bar(range(len(sig) - 1), total=len(sig) - 1):
            s, s_next = sig[i], sig[i + 1]
            x0 = ctx.denoise(x.reshape(n, *ctx.shape), s).reshape(n, d)
            if s_next == 0:
                x = x0
                break
            u, perp = split(x)
            u0_hat, perp0 = split(x0)
            e_u, e_perp = split(noise())
            perp_new = perp0 + math.sqrt(1 - eta**2) * s_next * (perp - perp0) / s + eta * s_next * e_perp
            low = u0_hat + math.sqrt(1 - eta**2) * s_next * (ybar - u0_hat) / sy + eta * s_next * e_u
            high = (1 - eb) * u0_hat + eb * ybar + (s_next**2 - (sy * eb) ** 2).clamp_min(0).sqrt() * e_u
            u_new = torch.where(s_next < sy, low, high)
            x = perp_new + u_new @ Vo
            ctx.check(x, i, s)
        return x.reshape(n, *ctx.shape), {}
