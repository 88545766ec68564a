r"""What every sampler shares: input validation, seeded randomness, the VE ancestral step, timing, NaN guards.

The ancestral step is the exact DDPM posterior :math:`q(x_{\sigma'} \mid x_\sigma, x_0)` of the
variance-exploding process, generalised by DDIM's :math:`\eta`:

.. math::
    x_{\sigma'} = \hat x_0 + \frac{\sqrt{\sigma'^2 - s^2}}{\sigma}(x_\sigma - \hat x_0) + s\,\varepsilon,\qquad
    s = \eta\,\sigma'\sqrt{1 - \sigma'^2/\sigma^2},

so :math:`\eta = 1` gives mean :math:`\hat x_0 + (\sigma'^2/\sigma^2)(x_\sigma - \hat x_0)` and variance
:math:`\sigma'^2(\sigma^2 - \sigma'^2)/\sigma^2` (Ho et al. 2020, eq. 7, in VE coordinates) and :math:`\eta = 0`
the deterministic DDIM step (Song, Meng & Ermon 2021, eq. 12).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from invdiff.posterior import Posterior
from invdiff.schedules import karras_sigmas

__all__ = ["Sampler", "StackedRandn", "ancestral_coefficients", "posterior_variance", "denoiser_jvp", "ancestral_noise",
           "dense_svd", "gaussian_conditional", "operator_norm2", "systematic_resample", "effective_sample_size"]


class StackedRandn:
    """Independent random streams, so that sample ``k`` does not depend on how many samples are drawn.

    Samples are grouped in fixed chunks of ``chunk``; chunk ``j`` has its own generator seeded from
    ``numpy.random.SeedSequence(seed).spawn``, and always draws all its rows. Sample ``k``'s noise therefore
    depends only on ``(seed, k)`` (the idea of EDM's ``StackedRandomGenerator``) at the cost of one generator
    call per chunk, not per sample. ``seed`` is an int or a tuple of ints (``SeedSequence`` entropy).
    """

    def __init__(self, seed: int | tuple[int, ...], n: int, device, chunk: int = 64):
        self.n, self.chunk, self.device = n, chunk, device
        children = np.random.SeedSequence(seed).spawn(-(-n // chunk))
        self.gens = [torch.Generator(device=device).manual_seed(int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)))
                     for c in children]

    def randn(self, shape, dtype) -> torch.Tensor:
        """``(n, *shape)`` standard normals, row ``k`` from sample ``k``'s stream."""
        out = torch.empty((len(self.gens) * self.chunk, *shape), device=self.device, dtype=dtype)
        for j, g in enumerate(self.gens):  # straight into place: no list of chunks to concatenate
            torch.randn((self.chunk, *shape), generator=g, out=out[j * self.chunk:(j + 1) * self.chunk])
        return out[: self.n]


def ancestral_coefficients(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """``(c, s)`` of the step ``x_next = x0 + c (x - x0) + s eps`` (module docstring)."""
    if sigma_next <= 0:
        return 0.0, 0.0
    s = eta * sigma_next * math.sqrt(max(0.0, 1.0 - sigma_next**2 / sigma**2))
    return math.sqrt(max(0.0, sigma_next**2 - s**2)) / sigma, s


def denoiser_jvp(denoise, x: torch.Tensor, x0: torch.Tensor, sigma: float, w: torch.Tensor) -> torch.Tensor:
    r"""The Jacobian-vector product :math:`(\partial D/\partial x)\,w` at ``x`` (whose denoised value is ``x0``) by
    a forward difference of step :math:`10^{-3}\sigma`: one denoiser evaluation, no autograd."""
    delta = 1e-3 * sigma
    return denoise(torch.add(x, w, alpha=delta), sigma).sub_(x0).div_(delta)


def posterior_variance(denoise, x: torch.Tensor, x0: torch.Tensor, sigma: float, event_ndim: int,
                       probe: torch.Tensor, *, with_jvp: bool = False):
    r"""Per-sample average :math:`\mathrm{Var}[x_0 \mid x_\sigma = x]` by Tweedie's second-order formula,
    :math:`\mathrm{Cov}[x_0 \mid x] = \sigma^2 \partial D/\partial x`, its trace estimated with one random
    probe :math:`v` by a finite difference: :math:`\sigma^2 v^T(D(x + \delta v) - D(x))/(\delta\|v\|^2)`.
    Exact for isotropic Jacobians whatever the probe (the estimate is normalised by
    :math:`\|v\|^2`), so a Gaussian probe serves; one extra denoiser evaluation. Returns shape ``(*batch, 1..1)``,
    and with ``with_jvp`` also the Jacobian-vector product :math:`Jv` (for :func:`ancestral_noise`).
    """
    dims = tuple(range(-event_ndim, 0))
    jvp = denoiser_jvp(denoise, x, x0, sigma, probe)
    r2 = sigma**2 * (probe * jvp).sum(dims, keepdim=True) / (probe * probe).sum(dims, keepdim=True)
    r2 = r2.clamp(min=0.0, max=sigma**2)
    return (r2, jvp) if with_jvp else r2


def ancestral_noise(probe: torch.Tensor, jvp: torch.Tensor, r2: torch.Tensor, sigma: float,
                    sigma_next: float) -> torch.Tensor:
    r"""The noise of the ancestral step :math:`\sigma \to \sigma'` with the uncertainty of :math:`x_0` in each
    direction, not only on average: covariance close to :math:`s_{up}^2 I + (1-c)^2\,\mathrm{Cov}[x_0 \mid x]`.

    ``probe`` is the standard normal :math:`v`, ``jvp`` its product :math:`Jv` and ``r2`` the average variance,
    all from :func:`posterior_variance` (:math:`\mathrm{Cov}[x_0 \mid x] = \sigma^2 J`). The noise is
    :math:`(a I + b J)v`, whose variance along an eigenvector of :math:`J` with eigenvalue :math:`\lambda` is
    :math:`(a + b\lambda)^2`. With :math:`b = \sqrt{s_{up}^2 + (1-c)^2\sigma^2} - s_{up}` the line
    :math:`a + b\lambda` is parallel to the chord of the target standard deviation
    :math:`\sqrt{s_{up}^2 + (1-c)^2\sigma^2\lambda}` over :math:`[0, 1]`, and :math:`a` puts it on the target
    at the sample's average eigenvalue ``r2 / sigma^2``. So the step is exact for isotropic Jacobians, as the
    plain variance-corrected step is, and in any other direction its standard deviation is off by less than the
    gap between that square root and its chord (1.3% on a 100-step EDM grid, 8% for :math:`\sigma'/\sigma =
    0.5`). The plain step (one variance per sample) under-disperses the few directions where :math:`x_0` is most
    uncertain; for a mixture those point between the modes, and the sampler then favours the central modes.
    """
    c, s_up = ancestral_coefficients(sigma, sigma_next)
    k = (1 - c) ** 2 * sigma**2
    b = math.sqrt(s_up**2 + k) - s_up
    lam = r2 / sigma**2
    a = (s_up**2 + k * lam).sqrt() - b * lam
    return (a * probe).add_(jvp, alpha=b)


def gaussian_conditional(ctx, center: torch.Tensor, r: float, *, langevin_steps: int, langevin_lr: float):
    r"""A draw from :math:`p(x \mid y) \propto p(y \mid x)\,\mathcal N(x; \text{center}, r^2 I)`: exact for
    linear operators with Gaussian noise (:meth:`~invdiff.operators.LinearOperator.sample_conditional`),
    otherwise ``langevin_steps`` of unadjusted Langevin dynamics with step ``langevin_lr * r**2`` from ``center``.
    The likelihood step of split Gibbs and the :math:`x_0` step of DAPS."""
    from invdiff.operators import GaussianNoise, LinearOperator

    op, y = ctx.operator, ctx.y
    if isinstance(op, LinearOperator) and isinstance(op.noise, GaussianNoise):
        return op.sample_conditional(center, y, r, generator=ctx.generator).real.to(center.dtype)
    x, gamma = center.clone(), langevin_lr * r**2
    for _ in range(langevin_steps):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(op.log_likelihood(xg, y).sum(), xg)
        x = x + gamma * (g - (x - center) / r**2) + math.sqrt(2 * gamma) * ctx.randn()
    return x


def systematic_resample(logw: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """Systematic resampling of each row of ``logw`` (R, P): ``count`` ancestor indices per row, (R, count)."""
    R, P = logw.shape
    cdf = torch.cumsum(torch.softmax(logw.to(torch.float64), dim=-1), dim=-1)
    cdf[:, -1] = 1.0
    u = (torch.rand(R, 1, generator=gen, dtype=torch.float64, device=logw.device)
         + torch.arange(count, dtype=torch.float64, device=logw.device)) / count
    return torch.searchsorted(cdf, u).clamp(max=P - 1)


def effective_sample_size(logw: torch.Tensor) -> torch.Tensor:
    """Kish's ESS of the weights in the last dim of ``logw``: (sum w)^2 / sum w^2."""
    return torch.exp(2 * torch.logsumexp(logw, -1) - torch.logsumexp(2 * logw, -1))


def operator_norm2(op, ctx, iters: int = 30) -> float:
    """Largest eigenvalue of A^H A by power iteration (a deterministic start)."""
    g = torch.Generator(device=ctx.device).manual_seed(0)
    v = torch.randn(op.in_shape, generator=g, device=ctx.device, dtype=ctx.dtype)
    lam = 0.0
    for _ in range(iters):
        w = op.normal(v).real
        lam = float(torch.linalg.vector_norm(w) / torch.linalg.vector_norm(v).clamp_min(1e-30))
        v = w / torch.linalg.vector_norm(w).clamp_min(1e-30)
    return lam


def dense_svd(operator, dtype=torch.float64, max_size: int = 16384):
    r"""Whitened SVD of a linear Gaussian operator: :math:`\Sigma_y^{-1/2}A = U S V^T`, and the whitening.

    Returns:
        ``(U (m, k), S (k,), Vh (k, d), std (m,))`` in ``dtype`` with ``std`` the per-measurement noise std, so
        ``y / std`` has unit noise. For the SVD-based samplers (DDRM, exact SMC) on small problems.
    """
    from invdiff.operators import GaussianNoise, LinearOperator

    if not isinstance(operator, LinearOperator):
        raise TypeError(f"this method needs a LinearOperator, got {type(operator).__name__}")
    if not isinstance(operator.noise, GaussianNoise) or bool((operator.noise.std <= 0).any()):
        raise TypeError("this method needs GaussianNoise with std > 0 on the operator")
    if operator.in_dtype.is_complex or operator.out_dtype.is_complex:
        raise NotImplementedError("the SVD-based samplers support real operators only")
    d = math.prod(operator.in_shape)
    if d > max_size:
        raise ValueError(f"the input has {d} entries, too many for a dense SVD (limit {max_size}); "
                         "use method='dps', 'daps' or 'split-gibbs'")
    cache = operator.__dict__.setdefault("_sampler_svd", {})
    # keyed by the noise itself: with_noise() copies share this dict but must not share whitened factors
    key = (dtype, str(operator.noise.std.device), tuple(operator.noise.std.reshape(-1).tolist()))
    if key not in cache:
        A = operator.to_matrix(torch.float64).to(torch.float64)
        std = torch.broadcast_to(operator.noise.std.to(torch.float64), operator.out_shape).reshape(-1).to(A.device)
        U, S, Vh = torch.linalg.svd(A / std[:, None], full_matrices=False)
        cache[key] = tuple(t.to(dtype) for t in (U, S, Vh, std))
    return cache[key]


class Sampler:
    """Base class of the samplers: subclasses implement ``_run`` and set ``name`` and ``default_steps``.

    Call :meth:`sample` (or :func:`invdiff.sample`). Hyperparameters are constructor arguments; nothing about a
    call is stored on the object, so one instance can serve many problems.
    """

    name = "sampler"
    default_steps = 100
    needs_linear = False

    def sample(self, prior, operator, y, *, n: int = 1, steps: int | None = None, seed: int | None = None,
               progress: bool = False, sigmas: torch.Tensor | None = None) -> Posterior:
        """Draw ``n`` posterior samples of ``x`` given one measurement ``y``.

        Args:
            prior: an :class:`invdiff.priors.Prior` with ``shape == operator.in_shape``.
            operator: an :class:`invdiff.operators.Operator` with a noise model.
            y: one measurement, shape ``operator.out_shape``.
            n: number of samples. steps: the method's number of steps (its class documents what a step is).
            seed: makes the result reproducible (default: drawn from torch's global generator).
            progress: show a progress bar. sigmas: a decreasing noise grid overriding the default schedule.
        """
        y = self._validate(prior, operator, y, n, steps)
        steps = self.default_steps if steps is None else int(steps)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        dtype = _prior_dtype(prior)
        device = _device_of(prior)
        y = y.to(device=device, dtype=dtype if not y.is_complex() else y.dtype)
        if sigmas is None:
            sigmas = karras_sigmas(steps, prior.sigma_min, prior.sigma_max)
        else:
            sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
            if sigmas.ndim != 1 or len(sigmas) < 2 or not (sigmas[1:] < sigmas[:-1]).all() or (sigmas < 0).any():
                raise ValueError("sigmas must be a 1-D strictly decreasing non-negative tensor of length >= 2")
        t0 = time.perf_counter()
        ctx = _Context(self.name, prior, operator, y, int(n), steps, int(seed), device, dtype, bool(progress), sigmas)
        with torch.no_grad():
            samples, diagnostics = self._run(ctx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        diagnostics = {"method": self.name, "seed": int(seed), **diagnostics}
        try:
            return Posterior.from_samples(samples, nfe=ctx.nfe, seconds=seconds, diagnostics=diagnostics)
        except FloatingPointError as e:
            raise FloatingPointError(f"{self.name}: {e}; reduce the step sizes or check the prior's noise range") from e

    __call__ = sample

    def _run(self, ctx: "_Context") -> tuple[torch.Tensor, dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _validate(self, prior, operator, y, n, steps) -> torch.Tensor:
        from invdiff.operators import LinearOperator, Operator
        from invdiff.priors import Prior

        if not isinstance(prior, Prior):
            raise TypeError(f"{self.name}: prior must be an invdiff Prior, got {type(prior).__name__}")
        if not isinstance(operator, Operator):
            raise TypeError(f"{self.name}: operator must be an invdiff Operator, got {type(operator).__name__}")
        if self.needs_linear and not isinstance(operator, LinearOperator):
            raise TypeError(f"{self.name} needs a LinearOperator; for nonlinear physics use 'dps', 'smc' or 'daps'")
        if tuple(prior.shape) != tuple(operator.in_shape):
            raise ValueError(f"{self.name}: the prior's shape {tuple(prior.shape)} differs from operator.in_shape "
                             f"{tuple(operator.in_shape)}")
        if operator.noise is None:
            raise ValueError(f"{self.name}: the operator has no noise model; build it with noise=GaussianNoise(std)")
        y = torch.as_tensor(y)
        if tuple(y.shape) != tuple(operator.out_shape):
            raise ValueError(f"{self.name}: y must be ONE measurement of shape {tuple(operator.out_shape)}, "
                             f"got {tuple(y.shape)}")
        if not torch.isfinite(y).all():
            raise ValueError(f"{self.name}: y contains NaN or Inf")
        if int(n) != n or n < 1:
            raise ValueError(f"{self.name}: n must be a positive integer, got {n!r}")
        if steps is not None and (int(steps) != steps or steps < 1):
            raise ValueError(f"{self.name}: steps must be a positive integer, got {steps!r}")
        return y


class _Context:
    """Everything about one call: the problem, sizes, randomness, counters and the progress bar."""

    def __init__(self, name, prior, operator, y, n, steps, seed, device, dtype, progress, sigmas):
        self.name, self.prior, self.operator, self.y = name, prior, operator, y
        self.n, self.steps, self.seed, self.device, self.dtype = n, steps, seed, device, dtype
        self.progress, self.sigmas = progress, sigmas
        self.shape = tuple(prior.shape)
        self.nfe = 0
        self._gen: torch.Generator | None = None
        self._stacked: StackedRandn | None = None
        self._resized = 0

    @property
    def generator(self) -> torch.Generator:
        """One generator for methods whose samples interact (SMC)."""
        if self._gen is None:
            self._gen = torch.Generator(device=self.device).manual_seed(self.seed)
        return self._gen

    def randn(self) -> torch.Tensor:
        """``(n, *shape)`` standard normals, one independent stream per sample (particle methods, whose samples
        interact, draw from :attr:`generator` instead)."""
        if self._stacked is None:
            self._stacked = StackedRandn(self.seed, self.n, self.device)
        return self._stacked.randn(self.shape, self.dtype)

    def resize(self, n: int) -> None:
        """Continue with ``n`` samples (a population resampled down to the samples asked for): :meth:`randn` then
        draws from fresh streams, independent of every stream used so far and of other seeds' streams."""
        self._resized += 1
        self.n, self._stacked = int(n), StackedRandn((self.seed, self._resized), int(n), self.device)

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The prior's denoiser, counted: one NFE per call (per sample)."""
        self.nfe += 1
        return self.prior.denoise(x, sigma)

    def check(self, x: torch.Tensor, step: int, sigma: float, what: str = "x") -> None:
        """Raise a clear error when ``x`` is NaN / Inf, or has diverged: values a million times beyond the
        prior's scale (``sigma_max + sigma_data``; no diffusion state or data value gets near that) are a blow-up
        that would otherwise be returned as finite garbage. One reduction per call (min and max propagate NaN)."""
        x = x.detach()
        if not x.numel():
            peak = 0.0
        elif x.is_complex():
            peak = float(x.abs().max())
        else:
            lo, hi = torch.aminmax(x)
            peak = max(-float(lo), float(hi))
        if not math.isfinite(peak):
            raise FloatingPointError(
                f"{self.name}: {what} became NaN/Inf at step {step} (sigma={sigma:.4g}); reduce the step size "
                "(e.g. zeta or lr) or check the operator and prior scales"
            )
        if peak > 1e6 * (float(self.prior.sigma_max) + float(self.prior.sigma_data)):
            raise FloatingPointError(
                f"{self.name}: {what} diverged at step {step} (sigma={sigma:.4g}): max |x| = {peak:.3g}, beyond "
                f"1e6 x the prior's scale; reduce the step size (e.g. zeta or lr) or check the operator and prior scales"
            )

    def bar(self, iterable, total=None):
        if not self.progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=self.name, leave=False)


def _prior_dtype(prior) -> torch.dtype:
    for t in list(prior.buffers()) + list(prior.parameters()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _device_of(module) -> torch.device:
    for t in list(module.buffers()) + list(module.parameters()):
        return t.device
    return torch.device("cpu")
