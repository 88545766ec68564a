r"""Magnetic resonance imaging: Cartesian single-coil and SENSE multi-coil k-space, and non-Cartesian k-space.

Conventions (the fastMRI ones):

* An image :math:`x` is a complex ``(H, W)`` tensor (any leading batch dims), in arbitrary units; k-space has the
  same units because the Fourier transform is orthonormal.
* The **centred orthonormal 2-D DFT** over the last two dims,

  .. math::
      \mathcal F x = \mathrm{fftshift}\big(\mathrm{fft2}(\mathrm{ifftshift}(x)), \text{norm="ortho"}\big),
      \qquad \mathcal F^{-1} = \mathcal F^H,

  puts the zero frequency (DC) at index ``(H // 2, W // 2)``; pixel ``(i, j)`` sits at position
  ``(i - H // 2, j - W // 2)``. It is unitary, so :math:`\|\mathcal F x\| = \|x\|` (Parseval).
  :func:`fft2c` and :func:`ifft2c` implement it.
* A **sampling mask** :math:`M` is a boolean ``(H, W)`` tensor, or ``(W,)`` selecting phase-encode columns
  (the same columns in every row: fastMRI's 1-D masks). ``True`` = sampled.
* **Coil sensitivity maps** :math:`S_c` are a complex ``(coils, H, W)`` tensor; the simulated and estimated ones
  of this module are normalised so that :math:`\sum_c |S_c|^2 = 1` at every pixel.

The Cartesian operator :class:`MRI` is

.. math::
    \text{single coil: } A x = M \odot \mathcal F x, \qquad
    \text{SENSE: } (A x)_c = M \odot \mathcal F (S_c \odot x), \quad c = 1..C,

returned on the **zero-filled full grid**: ``(H, W)`` or ``(coils, H, W)`` complex with zeros where the mask is
``False``. The adjoint is :math:`A^H y = \sum_c \bar S_c \odot \mathcal F^{-1}(M \odot y_c)`; it ignores whatever
``y`` holds off the mask, so measured files with zeros there and simulated data agree. With one coil
:math:`A^H A = \mathcal F^H M \mathcal F` is diagonal in k-space, so the pseudo-inverse (the zero-filled
reconstruction), the proximal likelihood step and the exact conditional sample are closed forms:

.. math::
    \operatorname{prox}(z) = \mathcal F^{H}\Big[\frac{w \odot y + \mathcal F z / \rho^2}{w + 1/\rho^2}\Big],
    \qquad x = \operatorname{prox}(z) + \mathcal F^{H}\Big[\frac{\varepsilon}{\sqrt{w + 1/\rho^2}}\Big],
    \qquad w = M / \sigma_y^2,

with :math:`\varepsilon` complex white noise of unit variance per real and imaginary part. SENSE uses the
inherited conjugate-gradient forms.

**Noise on the mask only.** A plain ``GaussianNoise(std)`` given to :class:`MRI` is turned into
:class:`MaskedGaussianNoise` ``(std, mask)``: ``measure`` adds complex Gaussian noise (``std`` per real and per
imaginary part, the package convention) on sampled entries and leaves exact zeros elsewhere, and
``log_likelihood`` sums the Gaussian log-density over sampled entries only,
:math:`\sum_{M}\big[-|y - Ax|^2 / (2\sigma^2) - \log(2\pi\sigma^2)\big]`. It is still a :class:`GaussianNoise`
(same ``std``), so every Gaussian closed form and sampler applies unchanged. Multi-coil noise is assumed
pre-whitened (independent between coils); a per-coil ``std`` of shape ``(coils, 1, 1)`` is allowed.

:class:`NonCartesianMRI` samples k-space at arbitrary points (radial, spiral) with a NUFFT
(the optional ``finufft`` package, ``pip install "invdiff[nufft]"``):

.. math::
    (A x)_{c,m} = \frac{1}{\sqrt{HW}} \sum_{p} S_c(p)\, x(p)\, e^{-i\, k_m \cdot p},

with pixel positions :math:`p` centred as above and trajectory points :math:`k_m = (k_y, k_x)` in radians per
pixel in :math:`[-\pi, \pi]` (:math:`2\pi` times cycles per pixel): the Cartesian grid point ``(u, v)`` of
:func:`fft2c` is :math:`k = (2\pi u / H, 2\pi v / W)`, where the two operators agree.

Masks follow fastMRI semantics and are seeded by an ``int`` or a ``torch.Generator``:
:func:`random_mask`, :func:`equispaced_mask`, :func:`gaussian_mask_1d` (1-D, fully sampled centre) and
:func:`poisson_disc_mask` (variable-density 2-D).

References:
    Zbontar et al. (2018), "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI".
    Pruessmann, Weiger, Scheidegger & Boesiger (1999), "SENSE: Sensitivity encoding for fast MRI".
    Roemer, Edelstein, Hayes, Souza & Mueller (1990), "The NMR phased array".
    McKenzie, Yeh, Ohliger, Price & Sodickson (2002), "Self-calibrating parallel imaging with automatic coil
    sensitivity extraction".
    Uecker et al. (2014), "ESPIRiT - an eigenvalue approach to autocalibrating parallel MRI: where SENSE meets
    GRAPPA".
    Lustig, Donoho & Pauly (2007), "Sparse MRI: The application of compressed sensing for rapid MR imaging".
    Bridson (2007), "Fast Poisson disk sampling in arbitrary dimensions".
    Winkelmann, Schaeffter, Koehler, Eggers & Doessel (2007), "An optimal radial profile order based on the
    golden ratio for time-resolved MRI".
    Barnett, Magland & af Klinteberg (2019), "A parallel nonuniform fast Fourier transform library based on an
    'exponential of semicircle' kernel".
    Papandreou & Yuille (2010), "Gaussian sampling by local perturbations".
"""

from __future__ import annotations

import math

import numpy as np
import torch

from invdiff.linalg import batch_scalar, complex_dtype, conjugate_gradient, real_dtype

from .base import LinearOperator, _standard_normal_like, cast_like, linear_autograd
from .noise import GaussianNoise, NoiseModel

__all__ = [
    "MRI",
    "NonCartesianMRI",
    "MaskedGaussianNoise",
    "fft2c",
    "ifft2c",
    "rss",
    "random_mask",
    "equispaced_mask",
    "gaussian_mask_1d",
    "poisson_disc_mask",
    "simulate_coil_maps",
    "estimate_coil_maps",
    "radial_trajectory",
    "spiral_trajectory",
]

_DIMS = (-2, -1)
_NUFFT_HINT = 'NonCartesianMRI needs the optional NUFFT backend: pip install "invdiff[nufft]" (installs finufft)'


# ---------------------------------------------------------------------------------------------------------------
# Fourier transforms
# ---------------------------------------------------------------------------------------------------------------
def fft2c(x: torch.Tensor) -> torch.Tensor:
    r"""Centred orthonormal 2-D DFT over the last two dims (fastMRI's ``fft2c``), DC at ``(H // 2, W // 2)``.

    Args:
        x: image, shape ``(*batch, H, W)``, real or complex.

    Returns:
        k-space, complex, shape ``(*batch, H, W)``.

    Examples:
        >>> x = torch.zeros(4, 4, dtype=torch.complex128); x[2, 2] = 1.0   # the centre pixel
        >>> torch.allclose(fft2c(x), torch.full((4, 4), 0.25, dtype=torch.complex128))
        True
    """
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    r"""Inverse (and adjoint) of :func:`fft2c`: ``fftshift(ifft2(ifftshift(k), norm="ortho"))``.

    Args:
        k: k-space, shape ``(*batch, H, W)``.

    Returns:
        image, complex, shape ``(*batch, H, W)``.
    """
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)


def rss(coil_images: torch.Tensor, dim: int = -3) -> torch.Tensor:
    r"""Root-sum-of-squares coil combination :math:`\sqrt{\sum_c |x_c|^2}` (Roemer et al. 1990).

    Args:
        coil_images: shape ``(*batch, coils, H, W)`` (coils along ``dim``).
        dim: the coil dimension.

    Returns:
        real magnitude image, ``coil_images``'s shape without ``dim``.
    """
    return torch.sqrt(torch.sum(coil_images.real**2 + coil_images.imag**2, dim=dim)) if coil_images.is_complex() \
        else torch.sqrt(torch.sum(coil_images**2, dim=dim))


# ---------------------------------------------------------------------------------------------------------------
# Noise on the sampled entries
# ---------------------------------------------------------------------------------------------------------------
def _as_bool_mask(mask, what: str) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.is_complex():
        raise TypeError(f"{what}: the mask must be boolean (True = sampled), got dtype {mask.dtype}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise TypeError(f"{what}: the mask must be boolean (True = sampled) or hold only 0 and 1")
        mask = mask != 0
    return mask.detach().clone()


class MaskedGaussianNoise(GaussianNoise):
    r"""Complex (or real) Gaussian noise on the sampled entries of a k-space mask, exact zeros elsewhere.

    ``sample`` returns :math:`M \odot (Ax + \mathrm{std}\,\varepsilon)` and ``log_likelihood`` sums the Gaussian
    log-density over the entries with ``mask == True`` only (what ``y`` holds elsewhere is ignored). For complex
    data ``std`` is per real and per imaginary part (package convention), so the per-entry log-density is
    :math:`-|y - Ax|^2/(2\,\mathrm{std}^2) - \log(2\pi\,\mathrm{std}^2)`. A subclass of :class:`GaussianNoise`
    with the same ``std``: every Gaussian closed form applies (the MRI adjoint ignores unsampled entries).

    Args:
        std: standard deviation, a positive number or a tensor broadcastable to the measurement, e.g.
            ``(coils, 1, 1)`` per coil.
        mask: boolean sampling mask broadcastable to the measurement, ``(H, W)`` or ``(W,)``.

    Examples:
        >>> noise = MaskedGaussianNoise(0.1, torch.tensor([True, False, True]))
        >>> y = noise.sample(torch.ones(2, 3, dtype=torch.complex64), generator=torch.Generator().manual_seed(0))
        >>> bool((y[:, 1] == 0).all())
        True
    """

    def __init__(self, std: float | torch.Tensor, mask: torch.Tensor):
        super().__init__(std)
        mask = _as_bool_mask(mask, "MaskedGaussianNoise")
        if mask.ndim == 0:
            raise ValueError("MaskedGaussianNoise: mask must have at least one dim, e.g. (H, W) or (W,)")
        self.register_buffer("mask", mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask={tuple(self.mask.shape)} ({int(self.mask.sum())} sampled)"

    def sample(self, Ax: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = super().sample(Ax, generator=generator)
        return y * self.mask.to(device=y.device, dtype=real_dtype(y.dtype))

    def log_likelihood(self, y: torch.Tensor, Ax: torch.Tensor, *, event_ndim: int) -> torch.Tensor:
        if event_ndim < self.mask.ndim:
            raise ValueError(
                f"MaskedGaussianNoise: event_ndim={event_ndim} is smaller than the mask's {self.mask.ndim} dims"
            )
        logp = super().log_likelihood(y, Ax, event_ndim=0)
        logp = torch.where(self.mask.to(logp.device), logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
        return logp.sum(dim=tuple(range(-event_ndim, 0))) if event_ndim > 0 else logp


# ---------------------------------------------------------------------------------------------------------------
# Cartesian MRI
# ---------------------------------------------------------------------------------------------------------------
class MRI(LinearOperator):
    r"""Cartesian MRI: single-coil :math:`M \odot \mathcal F x` or multi-coil SENSE :math:`M \odot \mathcal F(S_c x)`.

    The output is the zero-filled full k-space grid (fastMRI convention; module docstring): ``(H, W)`` for one
    coil, ``(coils, H, W)`` with coil maps, complex, zero where the mask is ``False``. The Fourier transform is
    the centred orthonormal DFT (:func:`fft2c`), so k-space carries the image's units. Single coil: the
    pseudo-inverse (zero-filled reconstruction), ``prox_likelihood`` and ``sample_conditional`` are exact closed
    forms; SENSE uses conjugate gradients (also offered as :meth:`sense_cg`).

    Args:
        mask: boolean sampling mask, ``(H, W)``, or ``(W,)`` to select phase-encode columns in every row.
        coil_maps: complex coil sensitivities ``(coils, H, W)``, or ``None`` for single-coil. Used as given
            (:func:`simulate_coil_maps` and :func:`estimate_coil_maps` normalise :math:`\sum_c |S_c|^2 = 1`).
        shape: the image shape ``(H, W)``; needed only for a 1-D mask without coil maps.
        noise: measurement noise. A plain ``GaussianNoise(std)`` becomes ``MaskedGaussianNoise(std, mask)``
            (noise on sampled entries only, likelihood over sampled entries only); other models are kept as given.

    Examples:
        >>> from invdiff.operators import GaussianNoise
        >>> A = MRI(equispaced_mask(16, 0.25, 4, seed=0), shape=(16, 16), noise=GaussianNoise(0.01))
        >>> x = torch.randn(16, 16, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
        >>> y = A.measure(x, generator=torch.Generator().manual_seed(1))
        >>> y.shape, bool((y[:, ~A.mask[0]] == 0).all())
        (torch.Size([16, 16]), True)
        >>> float(A.acceleration)
        4.0
    """

    def __init__(
        self,
        mask,
        coil_maps: torch.Tensor | None = None,
        *,
        shape: tuple[int, int] | None = None,
        noise: NoiseModel | None = None,
    ):
        mask = _as_bool_mask(mask, "MRI")
        if mask.ndim not in (1, 2):
            raise ValueError(f"MRI: mask must be (H, W) or (W,) (phase-encode columns), got shape {tuple(mask.shape)}")
        if not bool(mask.any()):
            raise ValueError("MRI: the mask samples nothing; at least one k-space entry must be True")
        if coil_maps is not None:
            coil_maps = torch.as_tensor(coil_maps)
            if coil_maps.ndim != 3:
                raise ValueError(
                    f"MRI: coil_maps must be (coils, H, W) complex, got shape {tuple(coil_maps.shape)}; "
                    "for single-coil MRI pass coil_maps=None"
                )
            if not (coil_maps.is_complex() or coil_maps.is_floating_point()):
                raise TypeError(f"MRI: coil_maps must be a complex tensor, got dtype {coil_maps.dtype}")
            if not bool(torch.isfinite(torch.view_as_real(coil_maps.to(torch.complex128))).all()):
                raise ValueError("MRI: coil_maps contain NaN or Inf")
        candidates = []
        if shape is not None:
            shape = (shape, shape) if isinstance(shape, int) else tuple(int(s) for s in shape)
            if len(shape) != 2 or min(shape) <= 0:
                raise ValueError(f"MRI: shape must be the image shape (H, W), got {shape}")
            candidates.append(("shape", shape))
        if coil_maps is not None:
            candidates.append(("coil_maps", tuple(coil_maps.shape[1:])))
        if mask.ndim == 2:
            candidates.append(("mask", tuple(mask.shape)))
        if not candidates:
            raise ValueError("MRI: with a 1-D (W,) column mask and no coil maps, give the image shape: shape=(H, W)")
        H, W = candidates[0][1]
        for name, s in candidates:
            if s != (H, W):
                raise ValueError(f"MRI: image shapes disagree: {candidates[0][0]} gives {(H, W)}, {name} gives {s}")
        if mask.ndim == 1 and mask.shape[0] != W:
            raise ValueError(f"MRI: 1-D mask has {mask.shape[0]} columns but the image has W={W}")
        mask2d = mask.expand(H, W).clone() if mask.ndim == 1 else mask
        out_shape = (H, W) if coil_maps is None else (coil_maps.shape[0], H, W)
        super().__init__((H, W), out_shape, noise=self._masked_noise(noise, mask2d),
                         in_dtype=torch.complex64, out_dtype=torch.complex64)
        self.register_buffer("mask", mask2d)
        if coil_maps is None:
            self.coil_maps = None
        else:
            dt = torch.complex128 if coil_maps.dtype in (torch.float64, torch.complex128) else torch.complex64
            self.register_buffer("coil_maps", coil_maps.to(dt).detach().clone())

    @staticmethod
    def _masked_noise(noise, mask2d):
        if noise is not None and type(noise) is GaussianNoise:
            return MaskedGaussianNoise(noise.std, mask2d)
        return noise

    def with_noise(self, noise: NoiseModel | None) -> "MRI":
        """A copy with another noise model; a plain ``GaussianNoise`` is masked as in the constructor."""
        return super().with_noise(self._masked_noise(noise, self.mask))

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def n_coils(self) -> int:
        """Number of coils (1 for single-coil)."""
        return 1 if self.coil_maps is None else int(self.coil_maps.shape[0])

    @property
    def acceleration(self) -> float:
        """Acceleration factor: k-space grid size over the number of sampled entries."""
        return self.mask.numel() / int(self.mask.sum())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", coils={self.n_coils}, acceleration={self.acceleration:.3g}"

    # -- physics ---------------------------------------------------------------------------------------------
    def _mask_like(self, t: torch.Tensor) -> torch.Tensor:
        return self.mask.to(device=t.device, dtype=real_dtype(t.dtype))

    def _maps_like(self, t: torch.Tensor) -> torch.Tensor:
        return cast_like(self.coil_maps, t).to(t.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coil_maps is not None:
            x = self._maps_like(x) * x.unsqueeze(-3)
        return fft2c(x) * self._mask_like(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        img = ifft2c(y * self._mask_like(y))
        if self.coil_maps is not None:
            img = torch.sum(self._maps_like(img).conj() * img, dim=-3)
        return img

    def coil_images(self, y: torch.Tensor) -> torch.Tensor:
        r"""Zero-filled image of each coil, :math:`\mathcal F^{-1}(M \odot y_c)`; shape of ``y``."""
        y = self._prepare(y, self.out_shape, self.out_dtype, "MRI measurement")
        return ifft2c(y * self._mask_like(y))

    # -- reconstructions -------------------------------------------------------------------------------------
    def zero_filled(self, y: torch.Tensor, *, combine: str = "sense") -> torch.Tensor:
        r"""Zero-filled baseline reconstruction.

        Single coil: :math:`\mathcal F^{-1}(M \odot y)`, which is also :meth:`pinv`. Multi-coil: the coil images
        combined with the maps, :math:`\sum_c \bar S_c x_c / \sum_c |S_c|^2` (``combine="sense"``, complex;
        equals :meth:`adjoint` for normalised maps) or by root-sum-of-squares (``combine="rss"``, real
        magnitude, the fastMRI ``reconstruction_rss`` baseline).

        Args:
            y: measurement, shape ``(*batch, *out_shape)``.
            combine: ``"sense"`` or ``"rss"`` (multi-coil only).

        Returns:
            image, shape ``(*batch, H, W)``.
        """
        if combine not in ("sense", "rss"):
            raise ValueError(f"MRI.zero_filled: combine must be 'sense' or 'rss', got {combine!r}")
        imgs = self.coil_images(y)
        if self.coil_maps is None:
            return imgs.abs() if combine == "rss" else imgs
        if combine == "rss":
            return rss(imgs, dim=-3)
        S = self._maps_like(imgs)
        norm = torch.sum(S.real**2 + S.imag**2, dim=-3)
        num = torch.sum(S.conj() * imgs, dim=-3)
        return torch.where(norm > 0, num / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.zeros_like(num))

    def sense_cg(
        self, y: torch.Tensor, *, lam: float = 0.0, max_iter: int = 30, tol: float = 1e-6, x0=None
    ) -> torch.Tensor:
        r"""CG-SENSE: solve :math:`(A^H A + \lambda I) x = A^H y` by conjugate gradients (Pruessmann et al.).

        Args:
            y: measurement, shape ``(*batch, *out_shape)``.
            lam: Tikhonov weight :math:`\lambda \ge 0` (0: least squares; early stopping regularises).
            max_iter: iteration cap. tol: relative residual tolerance.
            x0: optional starting image ``(*batch, H, W)`` (default zero).

        Returns:
            image, complex, shape ``(*batch, H, W)``.
        """
        if lam < 0:
            raise ValueError(f"MRI.sense_cg: lam must be >= 0, got {lam}")
        y = self._prepare(y, self.out_shape, self.out_dtype, "MRI measurement")
        b = self.adjoint(y)
        if x0 is not None:
            x0 = self._prepare(x0, self.in_shape, self.in_dtype, "MRI starting image").to(b.dtype)
            x0 = x0.expand_as(b)

        def apply_M(x):
            return self.normal(x) + lam * x

        return conjugate_gradient(apply_M, b, x0=x0, event_ndim=2, max_iter=max_iter, tol=tol)

    def pinv(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""Single coil: the zero-filled reconstruction :math:`\mathcal F^{-1}(M \odot y)` exactly (the
        pseudo-inverse of :math:`M \mathcal F`). Multi-coil: the generic CG pseudo-inverse (``max_iter``,
        ``tol`` as in :meth:`LinearOperator.pinv`)."""
        if self.coil_maps is not None:
            return super().pinv(y, **kwargs)
        return self.coil_images(y)

    # -- closed-form Gaussian steps (single coil) ------------------------------------------------------------
    def _kspace_posterior(self, z, y, rho):
        r"""Single coil: k-space precision :math:`w + 1/\rho^2` and the proximal mean in k-space."""
        z, y = self._coupling(z, y)
        std = self._gaussian_std().to(device=z.device, dtype=real_dtype(z.dtype))
        inv_rho2 = 1.0 / batch_scalar(rho, z, 2) ** 2
        w = self._mask_like(z) / std**2
        prec = w + inv_rho2
        return prec, (w * y + inv_rho2 * fft2c(z)) / prec

    def prox_likelihood(self, z: torch.Tensor, y: torch.Tensor, rho, **kwargs) -> torch.Tensor:
        r"""Single coil: exact :math:`\mathcal F^H[(w y + \mathcal F z/\rho^2) / (w + 1/\rho^2)]`,
        :math:`w = M/\sigma_y^2` (module docstring). Multi-coil: conjugate gradients (``max_iter``, ``tol``).

        Args:
            z: coupling point ``(*batch, H, W)``. y: measurement ``(*batch, *out_shape)`` or ``out_shape``.
            rho: coupling standard deviation, a number or a tensor of the batch shape.
        """
        if self.coil_maps is not None:
            return super().prox_likelihood(z, y, rho, **kwargs)
        _, k = self._kspace_posterior(z, y, rho)
        return ifft2c(k)

    def sample_conditional(
        self, z: torch.Tensor, y: torch.Tensor, rho, *, generator: torch.Generator | None = None, **kwargs
    ) -> torch.Tensor:
        r"""An exact draw from :math:`p(x \mid y, z)`. Single coil: the proximal mean plus
        :math:`\mathcal F^H[\varepsilon / \sqrt{w + 1/\rho^2}]` (diagonal precision in k-space). Multi-coil:
        perturb-and-MAP with conjugate gradients (``max_iter``, ``tol``). Arguments as in
        :meth:`prox_likelihood`."""
        if self.coil_maps is not None:
            return super().sample_conditional(z, y, rho, generator=generator, **kwargs)
        prec, k = self._kspace_posterior(z, y, rho)
        return ifft2c(k + _standard_normal_like(k, generator) / torch.sqrt(prec))


# ---------------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------------
def _generator(seed) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(int(seed))


def _columns(shape_or_W, what: str) -> tuple[int, int | None]:
    """``W`` (number of columns) and ``H`` (``None`` for a 1-D request)."""
    if isinstance(shape_or_W, (int, np.integer)) and not isinstance(shape_or_W, bool):
        shape = (int(shape_or_W),)
    else:
        try:
            shape = tuple(int(s) for s in shape_or_W)
        except TypeError:
            raise TypeError(f"{what}: give the number of columns W or a shape (H, W), got {shape_or_W!r}") from None
    if len(shape) not in (1, 2) or min(shape) <= 0:
        raise ValueError(f"{what}: give the number of columns W > 0 or a shape (H, W), got {shape}")
    return (shape[-1], shape[0] if len(shape) == 2 else None)


def _check_fractions(what: str, W: int, center_fraction: float, acceleration: float) -> int:
    if not 0 <= center_fraction <= 1:
        raise ValueError(f"{what}: center_fraction must be in [0, 1], got {center_fraction}")
    if not acceleration >= 1:
        raise ValueError(f"{what}: acceleration must be >= 1, got {acceleration}")
    num_low = int(round(W * center_fraction))
    if num_low > W / acceleration + 1e-9:
        raise ValueError(
            f"{what}: center_fraction * acceleration = {center_fraction * acceleration:.3g} > 1: the fully "
            "sampled centre alone exceeds 1/acceleration of the columns; lower one of them"
        )
    return num_low


def _centre_block(W: int, num_low: int) -> slice:
    """The ``num_low`` columns centred on the DC column ``W // 2``."""
    start = W // 2 - num_low // 2
    return slice(start, start + num_low)


def _finish(cols: torch.Tensor, H: int | None) -> torch.Tensor:
    return cols if H is None else cols.expand(H, cols.shape[0]).clone()


def random_mask(shape_or_W, center_fraction: float, acceleration: float, *, seed=None) -> torch.Tensor:
    r"""fastMRI random column mask: a fully sampled centre plus columns drawn independently.

    The ``round(W * center_fraction)`` columns around the DC column ``W // 2`` are sampled; every other column
    is sampled with probability :math:`p = (W/R - n_\mathrm{centre}) / (W - n_\mathrm{centre})`, so the expected
    sampled fraction is exactly :math:`1/R` (``R = acceleration``).

    Args:
        shape_or_W: ``W`` for a ``(W,)`` column mask, or ``(H, W)`` for the same columns repeated in every row.
        center_fraction: fraction of columns in the fully sampled centre (fastMRI: 0.08 at 4x, 0.04 at 8x).
        acceleration: target acceleration :math:`R \ge 1`.
        seed: an ``int`` or a ``torch.Generator`` (``None``: torch's global generator).

    Returns:
        bool tensor ``(W,)`` or ``(H, W)``.

    Examples:
        >>> m = random_mask(320, 0.08, 4, seed=0)
        >>> m.dtype, bool(m[160 - 13 : 160 + 13].all())
        (torch.bool, True)
    """
    W, H = _columns(shape_or_W, "random_mask")
    num_low = _check_fractions("random_mask", W, center_fraction, acceleration)
    prob = (W / acceleration - num_low) / (W - num_low) if W > num_low else 0.0
    cols = torch.rand(W, generator=_generator(seed)) < prob
    cols[_centre_block(W, num_low)] = True
    return _finish(cols, H)


def equispaced_mask(shape_or_W, center_fraction: float, acceleration: float, *, seed=None) -> torch.Tensor:
    r"""fastMRI equispaced column mask (the "fraction" variant): a fully sampled centre plus evenly spaced columns.

    Outside the centre, columns are taken every :math:`s = (W - n_\mathrm{centre}) / (W/R - n_\mathrm{centre})`
    columns (rounded to the grid) from a random offset in ``[0, round(s))``. The spacing is chosen so that the
    overall sampled fraction is :math:`\approx 1/R` once the lines falling inside the centre are discounted.

    Args:
        shape_or_W: ``W`` or ``(H, W)`` (columns repeated in every row).
        center_fraction: fraction of columns fully sampled around the DC column ``W // 2``.
        acceleration: target acceleration :math:`R \ge 1`.
        seed: an ``int`` or a ``torch.Generator`` (draws the offset; ``None``: torch's global generator).

    Returns:
        bool tensor ``(W,)`` or ``(H, W)``.

    Examples:
        >>> m = equispaced_mask(320, 0.08, 4, seed=0)
        >>> int(m.sum())  # 320 / 4
        80
    """
    W, H = _columns(shape_or_W, "equispaced_mask")
    num_low = _check_fractions("equispaced_mask", W, center_fraction, acceleration)
    cols = torch.zeros(W, dtype=torch.bool)
    n_outer = W / acceleration - num_low
    if n_outer > 1e-9:
        spacing = (W - num_low) / n_outer
        offset = int(torch.randint(0, max(1, round(spacing)), (1,), generator=_generator(seed)))
        pos = torch.round(torch.arange(offset, W, spacing, dtype=torch.float64)).long()
        cols[pos[pos < W]] = True
    cols[_centre_block(W, num_low)] = True
    return _finish(cols, H)


def gaussian_mask_1d(
    shape_or_W, center_fraction: float, acceleration: float, *, std_fraction: float = 0.25, seed=None
) -> torch.Tensor:
    r"""Variable-density 1-D column mask: a fully sampled centre plus columns drawn from a Gaussian density.

    Exactly ``round(W / acceleration)`` columns are sampled: the centre block, and the rest drawn without
    replacement with weights :math:`\exp(-(j - W/2)^2 / (2 (\text{std\_fraction} \cdot W)^2))`, so low
    frequencies are denser (Lustig et al. 2007).

    Args:
        shape_or_W: ``W`` or ``(H, W)`` (columns repeated in every row).
        center_fraction: fraction of columns fully sampled around the DC column.
        acceleration: acceleration :math:`R \ge 1`.
        std_fraction: the Gaussian's standard deviation as a fraction of ``W`` (> 0).
        seed: an ``int`` or a ``torch.Generator`` (``None``: torch's global generator).

    Returns:
        bool tensor ``(W,)`` or ``(H, W)``.

    Examples:
        >>> gaussian_mask_1d((4, 64), 0.125, 4, seed=0).sum(dim=1)
        tensor([16, 16, 16, 16])
    """
    W, H = _columns(shape_or_W, "gaussian_mask_1d")
    num_low = _check_fractions("gaussian_mask_1d", W, center_fraction, acceleration)
    if not std_fraction > 0:
        raise ValueError(f"gaussian_mask_1d: std_fraction must be > 0, got {std_fraction}")
    cols = torch.zeros(W, dtype=torch.bool)
    centre = _centre_block(W, num_low)
    cols[centre] = True
    n_draw = max(0, int(round(W / acceleration)) - num_low)
    if n_draw > 0:
        j = torch.arange(W, dtype=torch.float64)
        weights = torch.exp(-((j - W // 2) ** 2) / (2 * (std_fraction * W) ** 2))
        weights[centre] = 0
        weights = weights.clamp_min(1e-300) * (~cols)  # every outer column stays drawable
        picks = torch.multinomial(weights, n_draw, replacement=False, generator=_generator(seed))
        cols[picks] = True
    return _finish(cols, H)


def poisson_disc_mask(
    shape,
    acceleration: float,
    *,
    center_fraction: float = 0.08,
    slope: float = 2.0,
    tol: float = 0.02,
    max_iter: int = 30,
    seed=None,
) -> torch.Tensor:
    r"""Variable-density Poisson-disc 2-D mask (for 3-D Cartesian / two phase-encode directions).

    Points of the ``(H, W)`` grid are visited in a random order (from ``seed``); a point is accepted unless it lies
    within the exclusion radius of an already accepted point (random sequential dart throwing, Bridson 2007).
    The radius grows linearly with the normalised distance from the k-space centre,
    :math:`r(k) = r_0 (1 + \text{slope}\cdot\|k\|)` with :math:`\|k\| = \sqrt{(k_y/(H/2))^2 + (k_x/(W/2))^2}`, so
    sampling is dense at low frequencies; a centred ``round(H * center_fraction) x round(W * center_fraction)``
    calibration box is fully sampled. :math:`r_0` is found by bisection (same visiting order every pass) so that
    the sampled fraction is within ``tol`` (relative) of ``1/acceleration`` when the grid allows it.

    Args:
        shape: ``(H, W)``.
        acceleration: target acceleration :math:`R \ge 1` (total grid size over sampled points, calibration
            included).
        center_fraction: side of the fully sampled calibration box as a fraction of ``H`` and ``W``.
        slope: radius growth from centre to edge (0 = uniform density Poisson disc).
        tol: relative tolerance on the number of sampled points. max_iter: bisection cap.
        seed: an ``int`` or a ``torch.Generator`` (``None``: torch's global generator).

    Returns:
        bool tensor ``(H, W)``; its acceleration is ``mask.numel() / mask.sum()``.

    Examples:
        >>> m = poisson_disc_mask((32, 32), 4, seed=0)
        >>> abs(m.numel() / int(m.sum()) - 4) < 0.1
        True
    """
    try:
        H, W = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"poisson_disc_mask: shape must be (H, W), got {shape!r}") from None
    if min(H, W) <= 0:
        raise ValueError(f"poisson_disc_mask: shape must be positive, got {(H, W)}")
    if not acceleration >= 1:
        raise ValueError(f"poisson_disc_mask: acceleration must be >= 1, got {acceleration}")
    if not 0 <= center_fraction <= 1 or not slope >= 0:
        raise ValueError(f"poisson_disc_mask: need 0 <= center_fraction <= 1 and slope >= 0, got "
                         f"{center_fraction}, {slope}")
    cy, cx = int(round(H * center_fraction)), int(round(W * center_fraction))
    calib = np.zeros((H, W), dtype=bool)
    calib[_centre_block(H, cy), _centre_block(W, cx)] = True
    target = H * W / acceleration
    if calib.sum() > target * (1 + tol):
        raise ValueError("poisson_disc_mask: the calibration box alone exceeds 1/acceleration of the grid; "
                         "lower center_fraction or acceleration")
    order = torch.randperm(H * W, generator=_generator(seed)).numpy()
    yy, xx = np.meshgrid((np.arange(H) - H // 2) / (H / 2), (np.arange(W) - W // 2) / (W / 2), indexing="ij")
    growth = (1 + slope * np.sqrt(yy**2 + xx**2)).ravel()

    def throw(r0):
        mask = calib.copy()
        blocked = np.zeros((H, W), dtype=bool)
        stamps: dict = {}
        flat_mask, flat_blocked = mask.reshape(-1), blocked.reshape(-1)
        for idx in order:
            if flat_blocked[idx] or flat_mask[idx]:
                continue
            flat_mask[idx] = True
            r = r0 * growth[idx]
            key = round(r * 20)
            if key not in stamps:
                h = int(math.ceil(key / 20)) + 1
                d = np.arange(-h, h + 1)
                stamps[key] = (h, d[:, None] ** 2 + d[None, :] ** 2 < (key / 20) ** 2)
            h, stamp = stamps[key]
            i, j = divmod(int(idx), W)
            y0, y1, x0, x1 = max(i - h, 0), min(i + h + 1, H), max(j - h, 0), min(j + h + 1, W)
            blocked[y0:y1, x0:x1] |= stamp[y0 - i + h : y1 - i + h, x0 - j + h : x1 - j + h]
        return mask

    lo, hi = 0.5, 1.0  # radius 0.5: nothing excluded (every point accepted)
    best, best_err = None, math.inf
    while True:  # find an upper bracket
        m = throw(hi)
        err = abs(m.sum() - target) / target
        if err < best_err:
            best, best_err = m, err
        if m.sum() <= target or hi > 4 * max(H, W):
            break
        lo, hi = hi, 2 * hi
    for _ in range(max_iter):
        if best_err <= tol:
            break
        mid = math.sqrt(lo * hi)
        m = throw(mid)
        err = abs(m.sum() - target) / target
        if err < best_err:
            best, best_err = m, err
        if m.sum() > target:
            lo = mid
        else:
            hi = mid
    return torch.from_numpy(best)


# ---------------------------------------------------------------------------------------------------------------
# Coil sensitivities
# ---------------------------------------------------------------------------------------------------------------
def simulate_coil_maps(
    n_coils: int, shape, *, coil_radius: float = 1.5, dtype: torch.dtype = torch.complex64
) -> torch.Tensor:
    r"""Smooth birdcage-like coil sensitivities, normalised so that :math:`\sum_c |S_c|^2 = 1` at every pixel.

    Coil :math:`c` is modelled as a straight wire parallel to :math:`B_0` at angle :math:`\theta_c = 2\pi c / C` on
    a circle of radius ``coil_radius`` around the image (in units of the half field of view: the image spans
    ``[-1, 1)`` in each direction). Its in-plane field at position :math:`p` (as a complex number
    :math:`p_x + i p_y`) is :math:`e^{i\theta_c} / (p - q_c)` with :math:`q_c` the wire's position: magnitude
    falling off as 1/distance and a phase that winds around the wire. The maps are then divided by
    :math:`\sqrt{\sum_c |S_c|^2}`.

    Args:
        n_coils: number of coils ``C >= 1``.
        shape: image shape ``(H, W)``.
        coil_radius: radius of the coil circle, > sqrt(2) so the wires stay outside the image.
        dtype: ``torch.complex64`` or ``torch.complex128``.

    Returns:
        complex tensor ``(n_coils, H, W)``.

    Examples:
        >>> S = simulate_coil_maps(4, (8, 8), dtype=torch.complex128)
        >>> torch.allclose((S.abs() ** 2).sum(0), torch.ones(8, 8, dtype=torch.float64))
        True
    """
    if isinstance(n_coils, bool) or not isinstance(n_coils, (int, np.integer)) or n_coils < 1:
        raise ValueError(f"simulate_coil_maps: n_coils must be an integer >= 1, got {n_coils!r}")
    try:
        H, W = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"simulate_coil_maps: shape must be (H, W), got {shape!r}") from None
    if min(H, W) <= 0:
        raise ValueError(f"simulate_coil_maps: shape must be positive, got {(H, W)}")
    if not coil_radius > math.sqrt(2):
        raise ValueError(f"simulate_coil_maps: coil_radius must exceed sqrt(2) (outside the image), got {coil_radius}")
    if dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"simulate_coil_maps: dtype must be torch.complex64 or torch.complex128, got {dtype}")
    y = (torch.arange(H, dtype=torch.float64) - H // 2) / (H / 2)
    x = (torch.arange(W, dtype=torch.float64) - W // 2) / (W / 2)
    p = torch.complex(x[None, :].expand(H, W), y[:, None].expand(H, W))
    theta = 2 * math.pi * torch.arange(n_coils, dtype=torch.float64) / n_coils
    q = coil_radius * torch.exp(1j * theta)
    maps = torch.exp(1j * theta)[:, None, None] / (p[None] - q[:, None, None])
    maps = maps / torch.sqrt(torch.sum(maps.abs() ** 2, dim=0))
    return maps.to(dtype)


def _calibration_box(calib, H: int, W: int) -> tuple[int, int]:
    """Calibration size ``(cy, cx)`` from an int, a pair, or a sampling mask (largest fully sampled centred box)."""
    is_mask = isinstance(calib, (torch.Tensor, np.ndarray)) and (
        calib.dtype in (torch.bool, np.bool_) or tuple(calib.shape) in ((W,), (H, W))
    )
    if is_mask:
        mask = _as_bool_mask(calib, "estimate_coil_maps").cpu()
        if mask.ndim == 1:
            mask = mask.expand(H, mask.shape[0])
        if tuple(mask.shape) != (H, W):
            raise ValueError(f"estimate_coil_maps: mask shape {tuple(mask.shape)} does not match k-space {(H, W)}")

        def run(v, c):  # length of the True run through index c
            if not v[c]:
                return 0
            a = c
            while a > 0 and v[a - 1]:
                a -= 1
            b = c
            while b < len(v) - 1 and v[b + 1]:
                b += 1
            return 2 * min(c - a, b - c) + 1  # symmetric about the centre

        cy, cx = run(mask[:, W // 2], H // 2), run(mask[H // 2], W // 2)
        while cy > 0 and cx > 0 and not bool(mask[_centre_block(H, cy), _centre_block(W, cx)].all()):
            if cy >= cx:
                cy -= 2
            else:
                cx -= 2
        if cy <= 0 or cx <= 0:
            raise ValueError("estimate_coil_maps: the mask has no fully sampled centre to calibrate from")
        return cy, cx
    if isinstance(calib, (int, np.integer)) and not isinstance(calib, bool):
        calib = (int(calib), int(calib))
    try:
        cy, cx = (int(c) for c in calib)
    except (TypeError, ValueError):
        raise TypeError(
            f"estimate_coil_maps: calib must be an int, a pair (cy, cx) or a bool sampling mask, got {calib!r}"
        ) from None
    if not (0 < cy <= H and 0 < cx <= W):
        raise ValueError(f"estimate_coil_maps: calibration size {(cy, cx)} must be within the grid {(H, W)}")
    return cy, cx


def estimate_coil_maps(
    kspace: torch.Tensor, calib, *, threshold: float = 0.0, window: bool = False
) -> torch.Tensor:
    r"""Coil maps from the fully sampled k-space centre: low-resolution coil images over their RSS.

    The centred ``(cy, cx)`` calibration block of each coil's k-space is kept (optionally tapered by a Hann window,
    which lowers ringing and noise at the price of resolution), zero-padded to the full grid and transformed back:
    low-resolution coil images :math:`I_c \approx S_c x`. Because coil maps are smooth,
    :math:`S_c \approx I_c / \sqrt{\sum_{c'} |I_{c'}|^2}` up to the phase of :math:`x`, which is common to all
    coils (McKenzie et al. 2002). The estimate satisfies :math:`\sum_c |S_c|^2 = 1` wherever the RSS is above
    ``threshold * max(RSS)`` and is 0 elsewhere. This is the simple self-calibrating method; ESPIRiT
    (Uecker et al. 2014) is more accurate near object edges.

    Args:
        kspace: multi-coil centred k-space ``(*batch, coils, H, W)`` (:func:`fft2c` convention), fully sampled
            in the calibration region (zero-filled elsewhere is fine).
        calib: calibration size: an int (square), a pair ``(cy, cx)``, or the boolean sampling mask ``(H, W)`` /
            ``(W,)`` (the largest fully sampled centred box is used).
        threshold: relative RSS level below which maps are set to 0 (background), in ``[0, 1)``.
        window: taper the calibration block with a Hann window (off by default: on smooth objects the ratio of
            the untapered low-resolution images is the more accurate; taper for noisy or sharp-edged data).

    Returns:
        complex maps, shape of ``kspace``.

    Examples:
        >>> S = simulate_coil_maps(4, (32, 32), dtype=torch.complex128)
        >>> r = torch.linspace(-1, 1, 32, dtype=torch.float64)
        >>> x = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 0.5)  # an object inside the field of view
        >>> S_est = estimate_coil_maps(fft2c(S * x), 16)
        >>> float((S_est - S)[:, 8:24, 8:24].abs().max()) < 0.01
        True
    """
    kspace = torch.as_tensor(kspace)
    if kspace.ndim < 3:
        raise ValueError(f"estimate_coil_maps: kspace must be (*batch, coils, H, W), got shape {tuple(kspace.shape)}")
    if not kspace.is_complex():
        raise TypeError(f"estimate_coil_maps: kspace must be complex, got dtype {kspace.dtype}")
    if not 0 <= threshold < 1:
        raise ValueError(f"estimate_coil_maps: threshold must be in [0, 1), got {threshold}")
    H, W = kspace.shape[-2:]
    cy, cx = _calibration_box(calib, H, W)
    sy, sx = _centre_block(H, cy), _centre_block(W, cx)
    low = torch.zeros_like(kspace)
    block = kspace[..., sy, sx]
    if window:
        rd = real_dtype(kspace.dtype)
        wy = torch.hann_window(cy + 2, periodic=False, dtype=rd, device=kspace.device)[1:-1]
        wx = torch.hann_window(cx + 2, periodic=False, dtype=rd, device=kspace.device)[1:-1]
        block = block * (wy[:, None] * wx[None, :])
    low[..., sy, sx] = block
    imgs = ifft2c(low)
    r = rss(imgs, dim=-3).unsqueeze(-3)
    keep = r > threshold * r.amax(dim=(-2, -1), keepdim=True)
    keep = keep & (r > 0)
    return torch.where(keep, imgs / torch.where(keep, r, torch.ones_like(r)), torch.zeros_like(imgs))


# ---------------------------------------------------------------------------------------------------------------
# Non-Cartesian MRI (optional finufft backend)
# ---------------------------------------------------------------------------------------------------------------
def _import_finufft():
    try:
        import finufft
    except ImportError as e:
        raise ImportError(_NUFFT_HINT) from e
    return finufft


def _nufft(op: "NonCartesianMRI", f: torch.Tensor, forward: bool) -> torch.Tensor:
    """Type 2 (image -> points, ``forward``) or type 1 (points -> image) NUFFT on the last dims, batched."""
    finufft = _import_finufft()
    device = f.device
    cdtype = f.dtype if f.is_complex() else complex_dtype(f.dtype)
    double = cdtype == torch.complex128
    eps = op.eps if op.eps is not None else (1e-12 if double else 1e-6)
    if not double:
        eps = max(eps, 1e-6)
    traj = op.trajectory.detach().cpu().numpy().astype(np.float64 if double else np.float32)
    ky, kx = np.ascontiguousarray(traj[:, 0]), np.ascontiguousarray(traj[:, 1])
    H, W = op.image_shape
    M = traj.shape[0]
    lead = f.shape[:-2] if forward else f.shape[:-1]
    f = f.detach().to(cdtype).resolve_conj().resolve_neg().cpu()
    data = np.ascontiguousarray(f.numpy().reshape(-1, *(f.shape[-2:] if forward else (M,))))
    n = data.shape[0]
    if n == 0:
        out = np.zeros((0, M) if forward else (0, H, W), dtype=data.dtype)
    elif forward:
        out = finufft.nufft2d2(ky, kx, data if n > 1 else data[0], eps=eps, isign=-1, nthreads=torch.get_num_threads())
    else:
        out = finufft.nufft2d1(ky, kx, data if n > 1 else data[0], (H, W), eps=eps, isign=1,
                               nthreads=torch.get_num_threads())
    out = torch.from_numpy(np.asarray(out)).to(device) / math.sqrt(H * W)
    return out.reshape(*lead, M) if forward else out.reshape(*lead, H, W)


class NonCartesianMRI(LinearOperator):
    r"""Non-Cartesian MRI (radial, spiral, any k-space points) by NUFFT, single-coil or SENSE.

    :math:`(Ax)_{c,m} = (HW)^{-1/2} \sum_p S_c(p) x(p) e^{-i k_m\cdot p}` (module docstring): on the Cartesian grid
    it equals :func:`fft2c` sampled at the trajectory points. Forward is a type-2 NUFFT, the adjoint a type-1 NUFFT
    with the opposite sign (FINUFFT, Barnett et al. 2019), wrapped in autograd functions whose backward passes
    are each other, so gradients are exact adjoints to the NUFFT tolerance ``eps``. FINUFFT runs on the CPU: CUDA
    tensors are copied to the CPU and back. Needs the optional extra: ``pip install "invdiff[nufft]"``.
    No density compensation is applied (``pinv`` solves the least-squares problem by CG).

    Args:
        trajectory: k-space points ``(M, 2)`` as ``(k_y, k_x)`` in radians per pixel, in ``[-pi, pi]``
            (see :func:`radial_trajectory`, :func:`spiral_trajectory`).
        shape: image shape ``(H, W)``.
        coil_maps: complex coil sensitivities ``(coils, H, W)`` or ``None`` (single coil).
        noise: measurement noise model (e.g. ``GaussianNoise(std)``; every point is measured, nothing is masked).
        eps: NUFFT relative tolerance (default ``1e-6`` in single and ``1e-12`` in double precision).

    Output: ``(M,)`` single coil or ``(coils, M)`` complex.

    Raises:
        ImportError: when ``finufft`` is not installed (the message names the extra).

    Examples:
        >>> A = NonCartesianMRI(radial_trajectory(16, 32), (32, 32))  # doctest: +SKIP
        >>> A(torch.ones(32, 32)).shape  # doctest: +SKIP
        torch.Size([512])
    """

    def __init__(
        self,
        trajectory: torch.Tensor,
        shape,
        coil_maps: torch.Tensor | None = None,
        *,
        noise: NoiseModel | None = None,
        eps: float | None = None,
    ):
        _import_finufft()
        trajectory = torch.as_tensor(trajectory)
        if trajectory.ndim != 2 or trajectory.shape[1] != 2 or trajectory.shape[0] == 0:
            raise ValueError(
                f"NonCartesianMRI: trajectory must be (M, 2) (k_y, k_x) points, got {tuple(trajectory.shape)}"
            )
        if trajectory.is_complex() or not trajectory.is_floating_point():
            raise TypeError(f"NonCartesianMRI: trajectory must be real floating point, got {trajectory.dtype}")
        trajectory = trajectory.to(torch.float64)
        if not bool(torch.isfinite(trajectory).all()):
            raise ValueError("NonCartesianMRI: trajectory contains NaN or Inf")
        if float(trajectory.abs().max()) > math.pi * (1 + 1e-6):
            raise ValueError(
                "NonCartesianMRI: trajectory must be in radians per pixel within [-pi, pi]; "
                "scale cycles-per-pixel coordinates by 2*pi"
            )
        try:
            H, W = (int(s) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"NonCartesianMRI: shape must be the image shape (H, W), got {shape!r}") from None
        if eps is not None and not eps > 0:
            raise ValueError(f"NonCartesianMRI: eps must be > 0, got {eps}")
        M = trajectory.shape[0]
        if coil_maps is not None:
            coil_maps = torch.as_tensor(coil_maps)
            if coil_maps.ndim != 3 or tuple(coil_maps.shape[1:]) != (H, W):
                raise ValueError(
                    f"NonCartesianMRI: coil_maps must be (coils, {H}, {W}), got shape {tuple(coil_maps.shape)}"
                )
        out_shape = (M,) if coil_maps is None else (coil_maps.shape[0], M)
        super().__init__((H, W), out_shape, noise=noise, in_dtype=torch.complex64, out_dtype=torch.complex64)
        self.image_shape = (H, W)
        self.eps = eps
        self.register_buffer("trajectory", trajectory)
        if coil_maps is None:
            self.coil_maps = None
        else:
            self.register_buffer("coil_maps", coil_maps.to(torch.complex128).detach().clone())

    def extra_repr(self) -> str:
        coils = 1 if self.coil_maps is None else self.coil_maps.shape[0]
        return super().extra_repr() + f", points={self.trajectory.shape[0]}, coils={coils}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coil_maps is not None:
            x = cast_like(self.coil_maps, x).to(x.device) * x.unsqueeze(-3)
        return linear_autograd(self._nufft_apply, x, False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if not y.is_complex():
            y = y.to(complex_dtype(y.dtype))
        img = linear_autograd(self._nufft_apply, y, True)
        if self.coil_maps is not None:
            img = torch.sum(cast_like(self.coil_maps, img).to(img.device).conj() * img, dim=-3)
        return img

    def _nufft_apply(self, v: torch.Tensor, adjoint: bool) -> torch.Tensor:
        """Type 2 NUFFT (image -> points), or type 1 for the adjoint; one autograd node either way."""
        return _nufft(self, v, not adjoint)


def radial_trajectory(
    n_spokes: int, n_readout: int, *, golden_angle: bool = True, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    r"""Radial k-space spokes through the centre, as ``(k_y, k_x)`` in radians per pixel.

    Spoke ``s`` has angle :math:`\theta_s = s\,\Delta\theta` with :math:`\Delta\theta = \pi/\phi \approx 111.25°`
    (golden angle, Winkelmann et al. 2007) or :math:`\pi/n_\mathrm{spokes}` (uniform); its samples sit at radii
    :math:`2\pi (j - n_\mathrm{readout}/2) / n_\mathrm{readout}`, ``j = 0..n_readout-1`` (the Cartesian readout
    spacing for ``n_readout`` = image width: Nyquist along the spoke).

    Args:
        n_spokes: number of spokes. n_readout: samples per spoke.
        golden_angle: golden-angle (default) or uniform angular spacing.
        dtype: real dtype of the result.

    Returns:
        tensor ``(n_spokes * n_readout, 2)``, spoke-major.

    Examples:
        >>> radial_trajectory(3, 8).shape
        torch.Size([24, 2])
    """
    if min(int(n_spokes), int(n_readout)) < 1:
        raise ValueError(f"radial_trajectory: need n_spokes >= 1 and n_readout >= 1, got {n_spokes}, {n_readout}")
    step = math.pi * 2 / (1 + math.sqrt(5)) if golden_angle else math.pi / n_spokes
    theta = step * torch.arange(n_spokes, dtype=torch.float64)
    r = 2 * math.pi * (torch.arange(n_readout, dtype=torch.float64) - n_readout // 2) / n_readout
    k = torch.stack([r[None, :] * torch.sin(theta)[:, None], r[None, :] * torch.cos(theta)[:, None]], dim=-1)
    return k.reshape(-1, 2).to(dtype)


def spiral_trajectory(
    n_interleaves: int, n_samples: int, turns: float, *, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    r"""Archimedean spiral interleaves from the centre to :math:`|k| = \pi`, as ``(k_y, k_x)`` in radians per pixel.

    Interleave :math:`l` is :math:`k(t) = \pi t\, e^{i(2\pi\,\text{turns}\, t + 2\pi l / L)}` with
    :math:`k_x + i k_y` as a complex number, :math:`t = j / n_\mathrm{samples}`. Successive turns of all interleaves
    are :math:`\pi / (\text{turns}\cdot L)` apart radially; Nyquist for an ``N``-pixel image needs
    :math:`\text{turns} \cdot L \ge N / 2` (Ahn, Kim & Cho 1986, "High-speed spiral-scan echo planar NMR imaging").

    Args:
        n_interleaves: number of rotated interleaves ``L``. n_samples: samples per interleave.
        turns: revolutions of each interleave (> 0).
        dtype: real dtype of the result.

    Returns:
        tensor ``(n_interleaves * n_samples, 2)``, interleave-major.
    """
    if min(int(n_interleaves), int(n_samples)) < 1 or not turns > 0:
        raise ValueError(
            f"spiral_trajectory: need n_interleaves >= 1, n_samples >= 1, turns > 0; got "
            f"{n_interleaves}, {n_samples}, {turns}"
        )
    t = torch.arange(n_samples, dtype=torch.float64) / n_samples
    rot = 2 * math.pi * torch.arange(n_interleaves, dtype=torch.float64) / n_interleaves
    phase = 2 * math.pi * turns * t[None, :] + rot[:, None]
    r = math.pi * t[None, :]
    k = torch.stack([r * torch.sin(phase), r * torch.cos(phase)], dim=-1)
    return k.reshape(-1, 2).to(dtype)
