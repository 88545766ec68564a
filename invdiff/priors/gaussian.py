r"""Analytic priors with exact denoisers and exact posteriors: the ground truth for every sampler test.

Gaussian :math:`\mathcal N(\mu, \Sigma)`: with :math:`\Sigma = Q\Lambda Q^T`,

.. math::
    D(x, \sigma) = \mu + Q\,\mathrm{diag}\Big(\frac{\lambda_i}{\lambda_i + \sigma^2}\Big) Q^T (x - \mu).

Gaussian mixture :math:`\sum_k w_k \mathcal N(\mu_k, \Sigma_k)`: the noisy marginal is
:math:`\sum_k w_k \mathcal N(\mu_k, \Sigma_k + \sigma^2 I)`, and

.. math::
    D(x, \sigma) = \sum_k r_k(x)\,\big[\mu_k + \Sigma_k(\Sigma_k + \sigma^2 I)^{-1}(x - \mu_k)\big],\qquad
    r_k(x) \propto w_k\,\mathcal N(x; \mu_k, \Sigma_k + \sigma^2 I).

Exact posterior for :math:`y = Ax + n`, :math:`n \sim \mathcal N(0, R)` (Kalman form, valid for singular
:math:`\Sigma` and any :math:`m \lessgtr n`):

.. math::
    S_k = A\Sigma_k A^T + R,\quad K_k = \Sigma_k A^T S_k^{-1},\quad
    \mu_k' = \mu_k + K_k(y - A\mu_k),\quad \Sigma_k' = \Sigma_k - K_k A \Sigma_k,\quad
    w_k' \propto w_k\,\mathcal N(y; A\mu_k, S_k).

A complex-valued measurement of a real ``x`` (e.g. k-space of a real image) enters by stacking real and
imaginary parts, which is exact under the package's complex-noise convention (:mod:`invdiff.operators.noise`).

References:
    Bishop (2006), "Pattern Recognition and Machine Learning", section 2.3.3 (linear Gaussian models).
    Cardoso, Janati El Idrissi, Le Corff & Moulines (2023), "Monte Carlo guided diffusion for Bayesian linear
    inverse problems" (the Gaussian-mixture benchmark built on these formulas).
"""

from __future__ import annotations

import math

import torch

from .base import Prior, expand_sigma

__all__ = ["Gaussian", "GaussianMixture"]

_LOG_2PI = math.log(2 * math.pi)


def _float_dtype(*tensors) -> torch.dtype:
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
            return torch.float64
    return torch.get_default_dtype()


_SINGULAR = "density undefined: a singular covariance at sigma = 0; use sigma > 0"


class _EigenCovariances:
    r"""Covariances of K components as eigen-decompositions :math:`\Sigma_k = Q_k \Lambda_k Q_k^T`.

    ``Q`` is ``None`` (isotropic: identity), ``(d, d)`` (one basis shared by all components) or ``(K, d, d)``;
    ``lam`` is ``(d,)`` or ``(K, d)``. Computed in float64, stored in the prior's dtype.
    """

    def __init__(self, covs, K: int, d: int, dtype: torch.dtype, what: str):
        c = torch.as_tensor(covs, dtype=torch.float64)
        if c.is_complex() or not torch.isfinite(c).all():
            raise ValueError(f"{what}: covariance must be real and finite")
        self.shared = c.ndim != 3
        if c.ndim == 0:
            if c < 0:
                raise ValueError(f"{what}: an isotropic covariance must be >= 0, got {float(c)}")
            self.Q, lam = None, c.expand(d).clone()
        elif c.ndim == 2 and c.shape == (d, d) or c.ndim == 3 and c.shape == (K, d, d):
            sym_err = (c - c.transpose(-1, -2)).abs().max()
            if sym_err > 1e-6 * c.abs().max().clamp_min(1e-300):
                raise ValueError(f"{what}: covariance is not symmetric (max asymmetry {float(sym_err):.3g})")
            c = 0.5 * (c + c.transpose(-1, -2))
            lam, self.Q = torch.linalg.eigh(c)
            tol = 1e-10 * lam.abs().amax(dim=-1, keepdim=True).clamp_min(1e-300)
            if (lam < -tol * 1e4).any():
                raise ValueError(f"{what}: covariance is not positive semi-definite (eigenvalue {float(lam.min()):.3g})")
            lam = lam.clamp_min(0.0)
            self.Q = self.Q.to(dtype)
        else:
            raise ValueError(
                f"{what}: covariance must be a scalar, a ({d}, {d}) matrix"
                + (f" or ({K}, {d}, {d}) per component" if K > 1 else "")
                + f", got shape {tuple(c.shape)}"
            )
        self.lam = lam.to(dtype)

    def rotate(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`Q_k^T v_k` for ``v`` of shape ``(..., K, d)`` (or ``(..., d)`` for a single Gaussian)."""
        if self.Q is None:
            return v
        Q = self.Q.to(v)
        return v @ Q if self.shared else torch.einsum("...kd,kde->...ke", v, Q)

    def unrotate(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`Q_k v_k`, the inverse of :meth:`rotate`."""
        if self.Q is None:
            return v
        Q = self.Q.to(v)
        return v @ Q.transpose(-1, -2) if self.shared else torch.einsum("...ke,kde->...kd", v, Q)

    def dense(self) -> torch.Tensor:
        """The covariance matrices, ``(d, d)`` when shared, else ``(K, d, d)``, float64."""
        lam = self.lam.to(torch.float64)
        if self.Q is None:
            return torch.diag_embed(lam)
        Q = self.Q.to(torch.float64)
        return (Q * lam.unsqueeze(-2)) @ Q.transpose(-1, -2)


class GaussianMixture(Prior):
    r"""A Gaussian-mixture prior :math:`\sum_k w_k \mathcal N(\mu_k, \Sigma_k)` with exact denoiser and posterior.

    Args:
        means: ``(K, *shape)`` component means; ``shape`` is ``(d,)`` for vectors or ``(C, H, W)`` for images.
        weights: ``(K,)`` non-negative, normalised internally.
        covs: a scalar (isotropic, shared), a ``(d, d)`` shared matrix, or ``(K, d, d)`` per component, over the
            flattened ``d = prod(shape)`` coordinates.
        sigma_min, sigma_max, sigma_data: override the defaults derived from the moments
            (``sigma_data`` = root mean per-coordinate variance, ``sigma_min = 1e-3 * sigma_data``,
            ``sigma_max`` = 5 x the square root of the largest eigenvalue :math:`\lambda` of the second-moment
            matrix: there :math:`\mathcal N(0, \sigma_{max}^2 I)` is within :math:`\lambda/2\sigma_{max}^2 = 0.02`
            nats of the noised prior along any direction, and a larger value wastes the samplers' steps on noise
            levels where nothing happens).

    Examples:
        >>> import torch
        >>> gmm = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.tensor([0.5, 0.5]), 0.25)
        >>> x0 = gmm.sample(4, generator=torch.Generator().manual_seed(0))
        >>> x0.shape
        torch.Size([4, 1])
        >>> gmm.denoise(torch.tensor([[2.1]]), 1e-4)  # tiny noise: the denoiser is near the identity
        tensor([[2.1000]])
    """

    exact_denoiser = True

    def __init__(self, means, weights, covs, *, sigma_min=None, sigma_max=None, sigma_data=None):
        dtype = _float_dtype(means, covs)
        means = torch.as_tensor(means, dtype=dtype)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if means.ndim < 2:
            raise ValueError(f"GaussianMixture: means must be (K, *shape), got shape {tuple(means.shape)}")
        K, shape = means.shape[0], tuple(means.shape[1:])
        d = math.prod(shape)
        if weights.shape != (K,):
            raise ValueError(f"GaussianMixture: weights must have shape ({K},), got {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("GaussianMixture: weights must be finite, non-negative and not all zero")
        if not torch.isfinite(means).all():
            raise ValueError("GaussianMixture: means contain NaN or Inf")
        cov = _EigenCovariances(covs, K, d, dtype, "GaussianMixture")
        weights = weights / weights.sum()

        # moments of the mixture, for the default noise range
        mu = means.reshape(K, d).to(torch.float64)
        w64 = weights.unsqueeze(-1)
        mean = (w64 * mu).sum(0)
        lam = cov.lam.to(torch.float64)
        within = (w64 * lam.expand(K, d)).sum() if not cov.shared else lam.sum()
        between = (w64 * (mu - mean) ** 2).sum()
        sd = math.sqrt(float(within + between) / d)
        second = (w64 * mu).transpose(0, 1) @ mu  # sum_k w_k mu_k mu_k^T
        top = float(torch.linalg.eigvalsh(second)[-1] + lam.max()) if d <= 4096 else float(torch.trace(second) + lam.sum())
        super().__init__(
            shape,
            sigma_min=1e-3 * sd if sigma_min is None else sigma_min,
            sigma_max=5 * math.sqrt(max(top, 1e-12)) if sigma_max is None else sigma_max,
            sigma_data=sd if sigma_data is None else sigma_data,
        )
        self.K, self.d = K, d
        self.register_buffer("means", means)
        # means in the shared eigenbasis, for the GEMM fast path (unused with per-component covariances)
        self.register_buffer("_zmeans", cov.rotate(means.reshape(K, d)) if cov.shared else means.new_zeros(0))
        self.register_buffer("weights", weights.to(dtype))
        self.register_buffer("log_weights", torch.log(weights).to(dtype))
        self._cov = cov

    @property
    def covs(self) -> torch.Tensor:
        """Component covariances, ``(d, d)`` when shared, else ``(K, d, d)``."""
        return self._cov.dense().to(self.means.dtype)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if self._cov.Q is not None:
            self._cov.Q = fn(self._cov.Q)
        self._cov.lam = fn(self._cov.lam)
        return out

    # -- sampling and densities -----------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` independent draws, shape ``(n, *shape)``."""
        if int(n) < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        dev = self.means.device
        k = torch.multinomial(self.weights.to(torch.float64), int(n), replacement=True, generator=generator)
        eps = torch.randn(int(n), self.d, generator=generator, device=dev, dtype=self.means.dtype)
        z = eps * self._cov.lam.expand(self.K, self.d)[k].sqrt()
        if self._cov.Q is None:
            x = z
        elif self._cov.shared:
            x = z @ self._cov.Q.transpose(0, 1)
        else:
            x = torch.einsum("ne,nde->nd", z, self._cov.Q[k])
        return (self.means.reshape(self.K, self.d)[k] + x).reshape(int(n), *self.shape)

    def _component_terms(self, x: torch.Tensor, sigma):
        r"""Component log-densities ``(*batch, K)`` of the noised mixture at ``x`` and what ``denoise`` reuses.

        With a shared covariance every term is a matrix product in the common eigenbasis (no ``(batch, K, d)``
        tensor): :math:`\sum_i (z_i - m_{ki})^2/v_i = \sum_i z_i^2/v_i - 2\sum_i z_i m_{ki}/v_i + \sum_i m_{ki}^2/v_i`.
        """
        x = self._check_x(x)
        s = expand_sigma(sigma, x, self.event_ndim)
        batch = x.shape[: x.ndim - self.event_ndim]
        flat = x.reshape(-1, self.d)
        s2 = (s.reshape(-1, 1) if s.ndim else s) ** 2
        lam = self._cov.lam.to(flat)
        if self._cov.shared:
            var = lam + s2  # (d,), or (b, d) with a noise level per batch entry
            zx = self._cov.rotate(flat)  # (b, d)
            zmu = self._zmeans.to(flat)  # (K, d)
            inv = (1.0 / var).expand(flat.shape[0], self.d) if var.ndim == 1 else 1.0 / var
            quad = (zx**2 * inv).sum(-1, keepdim=True) - 2 * (zx * inv) @ zmu.T + inv @ (zmu**2).T
            logdet = torch.log(var).sum(-1, keepdim=True)
            extra = (zx, zmu, var)
        else:
            mu = self.means.reshape(self.K, self.d).to(flat)
            z = self._cov.rotate(flat.unsqueeze(1) - mu)  # (b, K, d)
            var = lam + (s2.unsqueeze(1) if s2.ndim else s2)  # (K, d), or (b, K, d) per batch entry
            quad = (z**2 / var).sum(-1)
            logdet = torch.log(var).sum(-1)
            extra = (z, None, var)
        if not torch.isfinite(logdet).all():
            raise ValueError(_SINGULAR)
        logp = -0.5 * quad - 0.5 * logdet - 0.5 * self.d * _LOG_2PI
        return logp, batch, extra

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        r""":math:`\log p_\sigma(x)` of the (noised) mixture, one value per batch entry."""
        logp, batch, _ = self._component_terms(x, sigma)
        return torch.logsumexp(logp + self.log_weights.to(logp), dim=-1).reshape(batch)

    def responsibilities(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        r""":math:`p(k \mid x_\sigma = x)`, shape ``(*batch, K)``."""
        logp, batch, _ = self._component_terms(x, sigma)
        return torch.softmax(logp + self.log_weights.to(logp), dim=-1).reshape(*batch, self.K)

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        if self._cov.shared:
            return self._denoise_shared(x, sigma)
        logp, batch, (z, _, var) = self._component_terms(x, sigma)
        r = torch.softmax(logp + self.log_weights.to(logp), dim=-1)  # (b, K)
        lam = self._cov.lam.to(z).expand_as(var)
        mu = self.means.reshape(self.K, self.d).to(z)
        shrink = torch.where(var > 0, lam / var, torch.ones_like(var))
        delta = self._cov.unrotate(r.unsqueeze(-1) * shrink * z).sum(-2)
        return ((r @ mu) + delta).reshape(*batch, *self.shape)

    def _denoise_shared(self, x: torch.Tensor, sigma) -> torch.Tensor:
        r"""``denoise`` for a shared covariance.

        The responsibilities need the component log-densities only up to a per-row constant, so the terms every
        component shares (:math:`\sum_i z_i^2/v_i` and the log-determinant) are never formed: two matrix
        products in the eigenbasis, and :math:`D = s \odot z + (1 - s) \odot \bar m` with the shrinkage
        :math:`s = \lambda / v` and :math:`\bar m = \sum_k r_k m_k`. Dropping the shared terms also keeps float32
        logits accurate at large sigma, where the shared term is of order d and its rounding error would exceed
        the differences between components.
        """
        x = self._check_x(x)
        s = expand_sigma(sigma, x, self.event_ndim)
        batch = x.shape[: x.ndim - self.event_ndim]
        flat = x.reshape(-1, self.d)
        lam = self._cov.lam.to(flat)
        var = lam + ((s.reshape(-1, 1) if s.ndim else s) ** 2)  # (d,), or (b, d) with a sigma per entry
        if not bool((var > 0).all()):
            raise ValueError(_SINGULAR)
        zx = self._cov.rotate(flat)
        zmu = self._zmeans.to(flat)
        inv = 1.0 / var
        if var.ndim == 1 and bool((var == var[0]).all()):  # isotropic: one scalar variance
            bias = self.log_weights.to(flat) - 0.5 * inv[0] * (zmu**2).sum(-1)
            logits = torch.addmm(bias, zx, zmu.T, alpha=float(inv[0]))
            r = torch.softmax(logits, dim=-1)
            a = float(lam[0] * inv[0])
            out = torch.addmm(zx, r, zmu, beta=a, alpha=1.0 - a)
        else:
            logits = (zx * inv) @ zmu.T - 0.5 * (inv @ (zmu**2).T) + self.log_weights.to(flat)
            r = torch.softmax(logits, dim=-1)
            shrink = lam * inv
            out = shrink * zx + (1.0 - shrink) * (r @ zmu)
        return self._cov.unrotate(out).reshape(*batch, *self.shape)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(*shape)`` and covariance ``(d, d)`` of the mixture, float64."""
        mu = self.means.reshape(self.K, self.d).to(torch.float64)
        w = self.weights.to(torch.float64)
        mean = w @ mu
        cov = self._cov.dense()
        within = cov if self._cov.shared else torch.einsum("k,kde->de", w, cov)
        dm = mu - mean
        return mean.reshape(self.shape), within + (w.unsqueeze(-1) * dm).transpose(0, 1) @ dm

    # -- exact posterior ------------------------------------------------------------------------------------
    def exact_posterior(self, operator, y: torch.Tensor) -> "GaussianMixture":
        r"""The exact posterior :math:`p(x \mid y)` for a linear operator with Gaussian noise (module docstring).

        Args:
            operator: a :class:`~invdiff.operators.LinearOperator` with ``in_shape == self.shape`` and a
                :class:`~invdiff.operators.GaussianNoise` of std > 0 (scalar or per measurement).
            y: one measurement, shape ``operator.out_shape``.

        Returns:
            A :class:`GaussianMixture` (shared covariance when the prior's is shared).
        """
        A, yv, R = _linear_gaussian_parts(operator, y, self.shape)
        mu = self.means.reshape(self.K, self.d).to(torch.float64)
        Sig = self._cov.dense()
        m_post, S_post, logev = _kalman(mu, Sig, A, yv, R)
        log_w = torch.log(self.weights.to(torch.float64)) + logev
        w_post = torch.softmax(log_w, dim=0)
        return GaussianMixture(
            m_post.reshape(self.K, *self.shape).to(self.means.dtype), w_post, S_post.to(self.means.dtype)
        )


class Gaussian(Prior):
    r"""A Gaussian prior :math:`\mathcal N(\mu, \Sigma)` with exact denoiser and exact posterior.

    Args:
        mean: ``(*shape)``, e.g. ``(d,)`` or ``(C, H, W)``.
        cov: a scalar (isotropic) or a ``(d, d)`` matrix over the flattened ``d = prod(shape)`` coordinates.
        sigma_min, sigma_max, sigma_data: overrides, defaults as in :class:`GaussianMixture`.

    Examples:
        >>> import torch
        >>> g = Gaussian(torch.zeros(2), torch.eye(2))
        >>> g.denoise(torch.tensor([2.0, -2.0]), 1.0)  # shrink by 1 / (1 + sigma^2)
        tensor([ 1., -1.])
    """

    exact_denoiser = True

    def __init__(self, mean, cov, *, sigma_min=None, sigma_max=None, sigma_data=None):
        dtype = _float_dtype(mean, cov)
        mean = torch.as_tensor(mean, dtype=dtype)
        if mean.ndim < 1:
            raise ValueError("Gaussian: mean must have at least one dimension, e.g. shape (d,)")
        if not torch.isfinite(mean).all():
            raise ValueError("Gaussian: mean contains NaN or Inf")
        d = mean.numel()
        cov_e = _EigenCovariances(cov, 1, d, dtype, "Gaussian")
        lam = cov_e.lam.to(torch.float64)
        sd = math.sqrt(float(lam.mean()))
        m64 = mean.reshape(-1).to(torch.float64)
        top = float(lam.max() + m64 @ m64)  # >= the top eigenvalue of E[x x^T]
        super().__init__(
            tuple(mean.shape),
            sigma_min=1e-3 * max(sd, 1e-12) if sigma_min is None else sigma_min,
            sigma_max=5 * math.sqrt(max(top, 1e-12)) if sigma_max is None else sigma_max,
            sigma_data=sd if sigma_data is None else sigma_data,
        )
        self.d = d
        self.register_buffer("mean", mean)
        self._cov = cov_e

    _apply = GaussianMixture._apply

    @property
    def cov(self) -> torch.Tensor:
        """The ``(d, d)`` covariance."""
        return self._cov.dense().to(self.mean.dtype)

    @property
    def std(self) -> torch.Tensor:
        """Per-coordinate standard deviation, shape ``shape``."""
        return self._cov.dense().diagonal().sqrt().to(self.mean.dtype).reshape(self.shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` independent draws, shape ``(n, *shape)``."""
        if int(n) < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        eps = torch.randn(int(n), self.d, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        x = self._cov.unrotate(eps * self._cov.lam.sqrt())
        return (self.mean.reshape(-1) + x).reshape(int(n), *self.shape)

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        r""":math:`\log \mathcal N(x; \mu, \Sigma + \sigma^2 I)`, one value per batch entry."""
        x = self._check_x(x)
        s = expand_sigma(sigma, x, self.event_ndim)
        batch = x.shape[: x.ndim - self.event_ndim]
        z = self._cov.rotate(x.reshape(*batch, self.d) - self.mean.reshape(-1).to(x))
        s2 = (s.reshape(s.shape[: s.ndim - self.event_ndim] + (1,)) if s.ndim else s) ** 2
        var = self._cov.lam.to(z) + s2
        return -0.5 * (z**2 / var).sum(-1) - 0.5 * torch.log(var).sum(-1) - 0.5 * self.d * _LOG_2PI

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x = self._check_x(x)
        s = expand_sigma(sigma, x, self.event_ndim)
        batch = x.shape[: x.ndim - self.event_ndim]
        mu = self.mean.reshape(-1).to(x)
        z = self._cov.rotate(x.reshape(*batch, self.d) - mu)
        s2 = (s.reshape(s.shape[: s.ndim - self.event_ndim] + (1,)) if s.ndim else s) ** 2
        lam = self._cov.lam.to(z)
        var = lam + s2
        shrink = torch.where(var > 0, lam / var, torch.ones_like(var))
        return (mu + self._cov.unrotate(shrink * z)).reshape(*batch, *self.shape)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(*shape)`` and covariance ``(d, d)``, float64."""
        return self.mean.to(torch.float64), self._cov.dense()

    def exact_posterior(self, operator, y: torch.Tensor) -> "Gaussian":
        r"""The exact posterior :math:`\mathcal N(\mu', \Sigma')` for a linear operator with Gaussian noise.

        Args:
            operator: a :class:`~invdiff.operators.LinearOperator` with ``in_shape == self.shape`` and
                :class:`~invdiff.operators.GaussianNoise` of std > 0.
            y: one measurement, shape ``operator.out_shape``.
        """
        A, yv, R = _linear_gaussian_parts(operator, y, self.shape)
        mu = self.mean.reshape(1, -1).to(torch.float64)
        m_post, S_post, _ = _kalman(mu, self._cov.dense(), A, yv, R)
        return Gaussian(m_post.reshape(self.shape).to(self.mean.dtype), S_post.to(self.mean.dtype))


def _linear_gaussian_parts(operator, y, shape):
    """Dense float64 ``A`` (m, d), ``y`` (m,), and noise variances ``R`` (m,), complex data stacked as real."""
    from invdiff.operators import GaussianNoise, LinearOperator

    if not isinstance(operator, LinearOperator):
        raise TypeError(f"exact_posterior needs a LinearOperator, got {type(operator).__name__}")
    if tuple(operator.in_shape) != tuple(shape):
        raise ValueError(f"operator.in_shape {operator.in_shape} does not match the prior's shape {tuple(shape)}")
    if operator.in_dtype.is_complex:
        raise TypeError("exact_posterior: the analytic priors are real; the operator takes complex input")
    if not isinstance(operator.noise, GaussianNoise):
        raise TypeError(
            f"exact_posterior needs GaussianNoise, the operator has {type(operator.noise).__name__}"
        )
    y = torch.as_tensor(y)
    if tuple(y.shape) != tuple(operator.out_shape):
        raise ValueError(f"y must have the operator's out_shape {operator.out_shape} (one measurement), got {tuple(y.shape)}")
    A = operator.to_matrix(torch.float64).to(torch.complex128 if operator.out_dtype.is_complex else torch.float64)
    A = A.cpu() if A.device != operator.noise.std.device else A
    std = torch.broadcast_to(operator.noise.std.to(torch.float64), operator.out_shape).reshape(-1).to(A.device)
    if (std <= 0).any():
        raise ValueError("exact_posterior needs noise std > 0")
    yv = y.reshape(-1).to(A.device)
    if A.is_complex():
        yv = yv.to(torch.complex128)
        A = torch.cat([A.real, A.imag], 0)
        yv = torch.cat([yv.real, yv.imag], 0)
        std = torch.cat([std, std], 0)
    return A.to(torch.float64), yv.to(torch.float64), std**2


def _kalman(mu, Sig, A, y, R):
    """Posterior means (K, d), covariances ((d, d) or (K, d, d)) and log-evidences (K,), all float64."""
    dev = A.device
    mu, Sig = mu.to(dev), Sig.to(dev)
    ASig = A @ Sig  # (m, d) or (K, m, d)
    S = ASig @ A.transpose(0, 1) + torch.diag(R)
    S = 0.5 * (S + S.transpose(-1, -2))
    L = torch.linalg.cholesky(S)
    Kt = torch.cholesky_solve(ASig, L)  # S^{-1} A Sigma = K^T
    resid = y - mu @ A.transpose(0, 1)  # (K, m)
    if Sig.ndim == 2:
        sol = torch.cholesky_solve(resid.transpose(0, 1), L).transpose(0, 1)  # (K, m)
        m_post = mu + sol @ ASig
        S_post = Sig - ASig.transpose(0, 1) @ Kt
        logdet = 2 * torch.log(torch.diagonal(L)).sum()
    else:
        sol = torch.cholesky_solve(resid.unsqueeze(-1), L).squeeze(-1)  # (K, m)
        m_post = mu + torch.einsum("km,kmd->kd", sol, ASig)
        S_post = Sig - ASig.transpose(-1, -2) @ Kt
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    S_post = 0.5 * (S_post + S_post.transpose(-1, -2))
    logev = -0.5 * (resid * sol).sum(-1) - 0.5 * logdet - 0.5 * y.shape[0] * _LOG_2PI
    return m_post, S_post, logev
