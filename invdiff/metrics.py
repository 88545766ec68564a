r"""Image-quality metrics, distances between sample sets, and uncertainty calibration.

* :func:`psnr`, :func:`ssim` — agree with scikit-image's ``peak_signal_noise_ratio`` and
  ``structural_similarity`` (same defaults and the same ``data_range`` rules), in torch, batched.
* :func:`relative_l2` — :math:`\|x - x_{ref}\| / \|x_{ref}\|`.
* :func:`sliced_wasserstein` — distance between two sample clouds, averaged over random 1-D projections.
* :func:`coverage`, :func:`calibration_curve`, :func:`zscore` — is the posterior spread honest?
* :func:`crps_ensemble`, :func:`spread_skill` — ensemble scores used in weather forecasting.

Conventions: sample sets put the sample dimension first, ``(n, *shape)``; ``truth`` has ``shape``.

References:
    Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error visibility to structural
    similarity".
    Bonneel, Rabin, Peyre & Pfister (2015), "Sliced and Radon Wasserstein barycenters of measures".
    Gneiting & Raftery (2007), "Strictly proper scoring rules, prediction, and estimation" (CRPS).
    Fortin, Abaza, Anctil & Turcotte (2014), "Why should ensemble spread match the RMSE of the ensemble mean?".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "psnr",
    "ssim",
    "relative_l2",
    "sliced_wasserstein",
    "coverage",
    "calibration_curve",
    "crps_ensemble",
    "spread_skill",
    "SpreadSkill",
    "zscore",
]

# scikit-image's dtype ranges (skimage.util.dtype.dtype_range): floats are taken to live in [-1, 1]
_DTYPE_RANGE = {
    torch.bool: (0, 1),
    torch.uint8: (0, 255),
    torch.int8: (-128, 127),
    torch.int16: (-32768, 32767),
    torch.int32: (-(2**31), 2**31 - 1),
    torch.int64: (-(2**63), 2**63 - 1),
    torch.float16: (-1, 1),
    torch.bfloat16: (-1, 1),
    torch.float32: (-1, 1),
    torch.float64: (-1, 1),
}


def _as_tensor(a, name: str) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
    if t.is_complex():
        raise TypeError(f"{name} is complex; pass a real image (e.g. its magnitude .abs())")
    return t


def _pair(x, reference):
    x = _as_tensor(x, "x")
    reference = _as_tensor(reference, "reference")
    if x.shape != reference.shape:
        raise ValueError(f"x and reference must have the same shape, got {tuple(x.shape)} and {tuple(reference.shape)}")
    return x, reference


def psnr(x, reference, data_range=None, *, dim=None) -> torch.Tensor:
    r"""Peak signal-to-noise ratio :math:`10\log_{10}(R^2/\mathrm{MSE})` in dB.

    Args:
        x: the estimate, any shape.
        reference: the ground truth, same shape.
        data_range: :math:`R`. When ``None`` it follows scikit-image: the range of ``reference``'s dtype, i.e.
            255 for uint8 and, for floats, 1 if ``reference >= 0`` else 2; values outside [-1, 1] then raise
            (pass ``data_range`` explicitly, e.g. ``reference.max() - reference.min()``).
        dim: dims to average the squared error over (default all, one number as in scikit-image); e.g.
            ``dim=(-3, -2, -1)`` gives one PSNR per image of a ``(B, C, H, W)`` batch.

    Returns:
        A float64 tensor (0-d unless ``dim`` leaves dims).
    """
    x, reference = _pair(x, reference)
    if data_range is None:
        dmin, dmax = _DTYPE_RANGE[reference.dtype]
        tmin, tmax = float(reference.min()), float(reference.max())
        if tmax > dmax or tmin < dmin:
            raise ValueError(
                f"reference has values in [{tmin:.4g}, {tmax:.4g}], outside the range [{dmin}, {dmax}] expected for "
                f"{reference.dtype}; pass data_range explicitly (e.g. reference.max() - reference.min())"
            )
        data_range = dmax if tmin >= 0 else dmax - dmin
    err = (x.to(torch.float64) - reference.to(torch.float64)) ** 2
    mse = err.mean() if dim is None else err.mean(dim=dim)
    return 10 * torch.log10(torch.as_tensor(float(data_range), dtype=torch.float64) ** 2 / mse)


def _symmetric_pad_filter(t: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """Filter along ``axis`` with a 1-D odd kernel, half-sample symmetric boundary (scipy.ndimage 'reflect')."""
    r = (kernel.numel() - 1) // 2
    n = t.shape[axis]
    idx = torch.cat([torch.arange(r - 1, -1, -1), torch.arange(n), torch.arange(n - 1, n - 1 - r, -1)])
    idx = idx.remainder(2 * n)
    idx = torch.where(idx >= n, 2 * n - 1 - idx, idx).to(t.device)
    padded = t.index_select(axis, idx).movedim(axis, -1)
    lead = padded.shape[:-1]
    out = F.conv1d(padded.reshape(-1, 1, padded.shape[-1]), kernel.to(t).flip(0).reshape(1, 1, -1))
    return out.reshape(*lead, n).movedim(-1, axis)


def ssim(
    x,
    reference,
    data_range=None,
    *,
    spatial_ndim: int = 2,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    K1: float = 0.01,
    K2: float = 0.03,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Structural similarity, matching ``skimage.metrics.structural_similarity`` (Wang et al. 2004).

    The last ``spatial_ndim`` dims are the image; leading dims (channels, batch) are independent images whose
    SSIMs are averaged (``reduction="mean"``, as scikit-image does over ``channel_axis``) or returned
    (``reduction="none"``). Defaults are scikit-image's: a 7-tap uniform window, sample covariance; with
    ``gaussian_weights=True`` an 11-tap Gaussian of ``sigma`` 1.5. A border of half a window is excluded.

    Args:
        x, reference: same shape ``(*lead, *spatial)``, each spatial side at least ``win_size``.
        data_range: dynamic range :math:`R` of the images. Required for float input, as in scikit-image
            (for [0, 1] images pass 1.0); integer input defaults to its dtype's range.
    """
    x, reference = _pair(x, reference)
    if spatial_ndim < 1 or spatial_ndim > x.ndim:
        raise ValueError(f"spatial_ndim must be between 1 and x.ndim={x.ndim}, got {spatial_ndim}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if data_range is None:
        if x.is_floating_point() or reference.is_floating_point():
            raise ValueError(
                "ssim: float images need data_range (scikit-image's rule too); "
                "e.g. data_range=1.0 for images in [0, 1] or reference.max() - reference.min()"
            )
        dmin, dmax = _DTYPE_RANGE[x.dtype]
        data_range = dmax - dmin
    truncate = 3.5
    radius = int(truncate * sigma + 0.5)
    if win_size is None:
        win_size = 2 * radius + 1 if gaussian_weights else 7
    if win_size % 2 != 1:
        raise ValueError(f"win_size must be odd, got {win_size}")
    spatial = x.shape[x.ndim - spatial_ndim :]
    if any(s < win_size for s in spatial):
        raise ValueError(
            f"ssim: the window ({win_size}) is larger than the image {tuple(spatial)}; pass a smaller odd win_size "
            "or check spatial_ndim (leading dims are channels/batch)"
        )
    if gaussian_weights:
        g = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (g / sigma) ** 2)
    else:
        kernel = torch.ones(win_size, dtype=torch.float64)
    kernel = kernel / kernel.sum()
    axes = list(range(x.ndim - spatial_ndim, x.ndim))

    def filt(t):
        for ax in axes:
            t = _symmetric_pad_filter(t, kernel, ax)
        return t

    a, b = x.to(torch.float64), reference.to(torch.float64)
    NP = win_size**spatial_ndim
    cov_norm = NP / (NP - 1) if use_sample_covariance else 1.0
    ux, uy = filt(a), filt(b)
    vx = cov_norm * (filt(a * a) - ux * ux)
    vy = cov_norm * (filt(b * b) - uy * uy)
    vxy = cov_norm * (filt(a * b) - ux * uy)
    R = float(data_range)
    C1, C2 = (K1 * R) ** 2, (K2 * R) ** 2
    S = ((2 * ux * uy + C1) * (2 * vxy + C2)) / ((ux**2 + uy**2 + C1) * (vx + vy + C2))
    pad = (win_size - 1) // 2
    crop = S[(...,) + tuple(slice(pad, s - pad) for s in spatial)]
    per_image = crop.mean(dim=tuple(axes))
    return per_image.mean() if reduction == "mean" else per_image


def relative_l2(x, reference, *, dim=None) -> torch.Tensor:
    r""":math:`\|x - x_{ref}\|_2 / \|x_{ref}\|_2` over ``dim`` (default all); complex input allowed."""
    x = torch.as_tensor(x)
    reference = torch.as_tensor(reference)
    if x.shape != reference.shape:
        raise ValueError(f"x and reference must have the same shape, got {tuple(x.shape)} and {tuple(reference.shape)}")
    num = torch.linalg.vector_norm((x - reference).to(torch.complex128 if x.is_complex() or reference.is_complex() else torch.float64), dim=dim)
    den = torch.linalg.vector_norm(reference.to(torch.complex128 if reference.is_complex() else torch.float64), dim=dim)
    return num / den


def _flat_samples(a, name: str) -> torch.Tensor:
    a = _as_tensor(a, name)
    if a.ndim < 1 or a.shape[0] < 1:
        raise ValueError(f"{name} must be (n, *shape) samples with n >= 1, got {tuple(a.shape)}")
    return a.reshape(a.shape[0], -1).to(torch.float64)


def _wasserstein_1d_sorted(u: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    r"""Exact :math:`W_p^p` between empirical 1-D measures, columns of sorted ``u`` (n, P) and ``v`` (m, P).

    :math:`W_p^p = \int_0^1 |F^{-1}(t) - G^{-1}(t)|^p dt`, integrated exactly over the merged quantile grid.
    """
    n, m = u.shape[0], v.shape[0]
    if n == m:
        return (u - v).abs().pow(p).mean(0)
    f64 = torch.float64
    cuts = torch.unique(torch.cat([torch.arange(1, n + 1, dtype=f64) / n, torch.arange(1, m + 1, dtype=f64) / m]))
    widths = torch.diff(torch.cat([cuts.new_zeros(1), cuts]))
    mid = cuts - widths / 2
    iu = torch.clamp((mid * n).floor().long(), max=n - 1)
    iv = torch.clamp((mid * m).floor().long(), max=m - 1)
    return ((u[iu] - v[iv]).abs().pow(p) * widths.to(u).unsqueeze(-1)).sum(0)


def sliced_wasserstein(
    a, b, n_projections: int = 1000, generator: torch.Generator | None = None, *, p: float = 2.0
) -> torch.Tensor:
    r"""Sliced Wasserstein distance :math:`\big(E_\theta W_p^p(\theta^T a, \theta^T b)\big)^{1/p}`.

    Directions :math:`\theta` are uniform on the unit sphere; each 1-D distance is exact (the sample sets may
    have different sizes). ``p = 2`` matches POT's ``ot.sliced_wasserstein_distance``, the convention of the
    MCGdiff Gaussian-mixture benchmark.

    Args:
        a: ``(n, *shape)`` samples. b: ``(m, *shape)`` samples.
        n_projections: number of random directions.
        generator: seeds the directions (pass one for reproducible numbers).
        p: the Wasserstein order.

    Returns:
        A 0-d float64 tensor.
    """
    A, B = _flat_samples(a, "a"), _flat_samples(b, "b")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"a and b must have the same sample shape, got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    if int(n_projections) < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    theta = _directions(A.shape[1], int(n_projections), generator).to(A.device)
    return _wasserstein_1d_sorted(_sorted_projections(A, theta), _sorted_projections(B.to(A.device), theta),
                                  p).mean().pow(1 / p)


def _directions(d: int, n: int, generator) -> torch.Tensor:
    """``(d, n)`` directions uniform on the unit sphere (float64)."""
    theta = torch.randn(d, n, generator=generator, dtype=torch.float64)
    return theta / torch.linalg.vector_norm(theta, dim=0, keepdim=True)


def _sorted_projections(A: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The projections of the rows of ``A`` on each direction, sorted per direction: ``(n, P)``."""
    return torch.sort(A @ theta, dim=0).values


def _sample_quantiles(samples: torch.Tensor, qs) -> torch.Tensor:
    """Per-entry quantiles over dim 0 with numpy's default linear interpolation, any size."""
    s, _ = torch.sort(samples.to(torch.float64), dim=0)
    n = s.shape[0]
    q = torch.as_tensor(qs, dtype=torch.float64)
    pos = q * (n - 1)
    lo = pos.floor().long().clamp(0, n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo).reshape(-1, *([1] * (s.ndim - 1)))
    return s[lo] * (1 - w) + s[hi] * w


def _samples_truth(samples, truth):
    samples = _as_tensor(samples, "samples")
    truth = _as_tensor(truth, "truth")
    if samples.ndim < 1 or tuple(samples.shape[1:]) != tuple(truth.shape):
        raise ValueError(
            f"samples must be (n, *shape) with shape equal to truth's {tuple(truth.shape)}, got {tuple(samples.shape)}"
        )
    if samples.shape[0] < 2:
        raise ValueError("need at least 2 samples")
    return samples, truth.to(torch.float64).to(samples.device)


def coverage(samples, truth, level: float = 0.9) -> torch.Tensor:
    """Fraction of ``truth`` entries inside the central ``level`` credible interval of ``samples``.

    Intervals are per entry, from the samples' quantiles ``(1 - level)/2`` and ``(1 + level)/2``. For a
    calibrated posterior and many draws the fraction is ``level`` up to Monte Carlo error. With few draws the
    sample interval is narrower than the true one: a truth exchangeable with ``n`` draws falls inside with
    probability about ``(n * level - 1) / (n + 1)`` (0.79 for ``n = 16`` at level 0.9, 0.87 for ``n = 64``), so
    compare small ensembles with that, not with ``level``.

    Args:
        samples: ``(n, *shape)``. truth: ``(*shape)``. level: in (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    samples, truth = _samples_truth(samples, truth)
    lo, hi = _sample_quantiles(samples, [(1 - level) / 2, (1 + level) / 2])
    return ((truth >= lo) & (truth <= hi)).to(torch.float64).mean()


def calibration_curve(samples, truth, levels=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical coverage of central credible intervals at each nominal level.

    Returns:
        ``(levels, observed)``, 1-D float64 tensors; a calibrated posterior has ``observed ~= levels``, an
        over-dispersed one lies above the diagonal and an over-confident one below.
    """
    samples, truth = _samples_truth(samples, truth)
    levels = torch.linspace(0.05, 0.95, 19, dtype=torch.float64) if levels is None else torch.as_tensor(levels, dtype=torch.float64)
    if ((levels <= 0) | (levels >= 1)).any():
        raise ValueError("levels must lie in (0, 1)")
    qs = torch.cat([(1 - levels) / 2, (1 + levels) / 2])
    quant = _sample_quantiles(samples, qs)
    lo, hi = quant[: len(levels)], quant[len(levels) :]
    inside = (truth >= lo) & (truth <= hi)
    return levels, inside.reshape(len(levels), -1).to(torch.float64).mean(-1)


def crps_ensemble(ensemble, truth, *, fair: bool = False) -> torch.Tensor:
    r"""Continuous ranked probability score of an ensemble, per entry (lower is better).

    :math:`\mathrm{CRPS} = \frac1n\sum_i |x_i - y| - \frac{1}{2n^2}\sum_{i,j}|x_i - x_j|`, the CRPS of the
    ensemble's empirical distribution (as properscoring's ``crps_ensemble``); ``fair=True`` uses
    :math:`\frac{1}{2n(n-1)}` instead, unbiased for the CRPS of the distribution the members are drawn from.

    Args:
        ensemble: ``(n, *shape)``. truth: ``(*shape)``.

    Returns:
        ``(*shape)`` float64 scores; average them for a summary.
    """
    ens, y = _samples_truth(ensemble, truth)
    x, _ = torch.sort(ens.to(torch.float64), dim=0)
    n = x.shape[0]
    skill = (x - y).abs().mean(0)
    i = torch.arange(1, n + 1, dtype=torch.float64, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
    pair_sum = 2 * ((2 * i - n - 1) * x).sum(0)  # sum_{i,j} |x_i - x_j|
    denom = n * (n - 1) if fair else n * n
    return skill - 0.5 * pair_sum / denom


@dataclass
class SpreadSkill:
    """Ensemble spread, ensemble-mean error and their corrected ratio (1 for a calibrated ensemble)."""

    spread: torch.Tensor
    skill: torch.Tensor
    ratio: torch.Tensor


def spread_skill(ensemble, truth) -> SpreadSkill:
    r"""Spread-skill of an ensemble ``(n, *shape)`` against ``truth``.

    ``spread`` = :math:`\sqrt{\overline{s^2}}` (mean unbiased member variance), ``skill`` = RMSE of the
    ensemble mean, ``ratio`` = :math:`\sqrt{(n+1)/n}\,\mathrm{spread}/\mathrm{skill}`, whose expectation is
    close to 1 when truth and members are exchangeable (Fortin et al. 2014); < 1 means over-confident.
    """
    ens, y = _samples_truth(ensemble, truth)
    ens = ens.to(torch.float64)
    n = ens.shape[0]
    spread = ens.var(0, correction=1).mean().sqrt()
    skill = ((ens.mean(0) - y) ** 2).mean().sqrt()
    return SpreadSkill(spread, skill, math.sqrt((n + 1) / n) * spread / skill)


def zscore(samples, truth, *, eps: float = 0.0) -> torch.Tensor:
    r"""Per-entry :math:`(x^\star - \bar x)/(s + \epsilon)`: the truth's distance from the posterior mean in
    posterior standard deviations. For a calibrated posterior the map is roughly standard normal."""
    s, y = _samples_truth(samples, truth)
    s = s.to(torch.float64)
    return (y - s.mean(0)) / (s.std(0, correction=1) + eps)
