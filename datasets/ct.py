r"""CT phantoms: random-ellipse bodies with realistic attenuation, and the Shepp-Logan phantom (no download).

Source: both are computed here. :class:`EllipsePhantoms` draws random additive ellipses in the style of the
random-ellipse training sets of LoDoPaB-CT / dival (Leuschner et al. 2021) and of learned primal-dual (Adler &
Oktem 2018), but inside a body outline and with the attenuation values of real tissues; :func:`shepp_logan`
resizes scikit-image's built-in Shepp-Logan phantom (``skimage.data.shepp_logan_phantom``, BSD-3-Clause).

Units. An image ``x`` holds linear attenuation coefficients normalised to [0, 1]:

.. math::
    \mu\,[\mathrm{cm}^{-1}] = \mu_{max}\, x, \qquad \mu_{max} = 0.5\ \mathrm{cm}^{-1},

the attenuation of dense cortical bone at an effective energy of about 70 keV, where water has
:math:`\mu_w \approx 0.19\ \mathrm{cm}^{-1}` (x = 0.38). In Hounsfield units
:math:`\mathrm{HU} = 1000\,(\mu_{max} x - \mu_w)/\mu_w`, so 1 is about +1600 HU and 0 is air (-1000 HU). The
images span a square field of view of ``field_of_view = 25.6`` cm, so a pixel is ``25.6 / size`` cm wide
(0.4 cm at ``size=64``). To simulate a sinogram of line integrals in physical units use the ray transforms of
:mod:`invdiff.operators.ct` on ``mu_max * x`` with ``pixel_size = EllipsePhantoms.pixel_size(size)`` (cm).

Tissue values used (normalised; HU in brackets): fat 0.33-0.35 (about -100), soft tissue 0.39-0.42 (about
+40), organs soft tissue +-0.05 (+-130 HU), lung/air pockets 0.04-0.2, bone 0.6-1.

References:
    Leuschner, Schmidt, Otero Baguer, Maass (2021), "LoDoPaB-CT, a benchmark dataset for low-dose computed
    tomography reconstruction".
    Adler, Oktem (2018), "Learned Primal-Dual Reconstruction".
    Shepp, Logan (1974), "The Fourier reconstruction of a head section".
    Hubbell, Seltzer (1995), "Tables of X-Ray Mass Attenuation Coefficients and Mass Energy-Absorption
    Coefficients" (NIST; water about 0.19 /cm at 70 keV).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ._seeding import CHUNK as _CHUNK
from ._seeding import SPLITS as _SPLITS
from ._seeding import block_generator as _block_generator
from ._seeding import check_int as _check_int

__all__ = ["EllipsePhantoms", "shepp_logan"]

def _ellipse_coefficients(cx, cy, a, b, phi):
    r"""Coefficients ``(A, B, C, D, E, F)`` of :math:`q(x, y) = A x^2 + B xy + C y^2 + D x + E y + F`.

    :math:`q \le 1` inside the ellipse centred at ``(cx, cy)`` with semi-axes ``a`` (along the direction
    ``phi``) and ``b``; all arguments are tensors of one shape, the result has one more trailing dim of 6.
    """
    c, s = torch.cos(phi), torch.sin(phi)
    ia, ib = 1 / a**2, 1 / b**2
    A = c**2 * ia + s**2 * ib
    B = 2 * c * s * (ia - ib)
    C = s**2 * ia + c**2 * ib
    D = -2 * A * cx - B * cy
    E = -B * cx - 2 * C * cy
    F_ = A * cx**2 + B * cx * cy + C * cy**2
    return torch.stack([A, B, C, D, E, F_], dim=-1)


def _render_block(g: torch.Generator, size: int, supersample: int, max_ellipses: int,
                  mean_ellipses: float) -> torch.Tensor:
    """``_CHUNK`` phantoms ``(_CHUNK, 1, size, size)`` in float32; every random draw comes from ``g``."""
    m, K = _CHUNK, max_ellipses

    def u(lo, hi, *shape):  # uniform on [lo, hi), one per image unless a shape is given
        return lo + (hi - lo) * torch.rand(shape or (m,), generator=g, dtype=torch.float64)

    # body outline: wider than deep, roughly centred, always inside the unit disc (|x|, |y| <= 0.94)
    bx, by = u(-0.04, 0.04), u(-0.04, 0.04)
    ba, bb = u(0.72, 0.90), u(0.55, 0.78)
    bphi = u(-0.15, 0.15)
    fat, tissue = u(0.33, 0.35), u(0.39, 0.42)
    inner = u(0.86, 0.95)  # the subcutaneous fat layer is the ring between the body and this scaled copy

    # interior ellipses: a Poisson number, centres uniform in 0.8 x the body ellipse
    count = torch.poisson(torch.full((m,), float(mean_ellipses), dtype=torch.float64), generator=g).clamp(max=K)
    active = torch.arange(K, dtype=torch.float64) < count[:, None]
    r, t = 0.8 * u(0, 1, m, K).sqrt(), u(0, 2 * math.pi, m, K)
    px, py = ba[:, None] * r * torch.cos(t), bb[:, None] * r * torch.sin(t)
    cb, sb = torch.cos(bphi)[:, None], torch.sin(bphi)[:, None]
    ex, ey = bx[:, None] + cb * px - sb * py, by[:, None] + sb * px + cb * py
    ea = (0.03 + 0.10 * torch.empty(m, K, dtype=torch.float64).exponential_(generator=g)).clamp(max=0.35)
    eb = (0.03 + 0.10 * torch.empty(m, K, dtype=torch.float64).exponential_(generator=g)).clamp(max=0.35)
    ephi = u(0, math.pi, m, K)
    # kind: 0 organ (+-0.05), 1 fat, 2 air / lung, 3 bone (smaller ellipses)
    kind = torch.bucketize(u(0, 1, m, K), torch.tensor([0.5, 0.65, 0.75], dtype=torch.float64))  # p .5 .15 .1 .25
    delta = torch.stack([u(-0.05, 0.05, m, K), (fat - tissue)[:, None].expand(m, K),
                         u(-0.35, -0.2, m, K), u(0.2, 0.55, m, K)]).gather(0, kind[None]).squeeze(0)
    bone = kind == 3
    ea, eb = torch.where(bone, 0.5 * ea, ea), torch.where(bone, 0.5 * eb, eb)
    delta = torch.where(active, delta, torch.zeros_like(delta))

    coef = torch.cat([
        _ellipse_coefficients(bx, by, ba, bb, bphi)[:, None],
        _ellipse_coefficients(bx, by, inner * ba, inner * bb, bphi)[:, None],
        _ellipse_coefficients(ex, ey, ea, eb, ephi),
    ], dim=1).to(torch.float32)  # (m, K + 2, 6)
    value = torch.cat([fat[:, None], (tissue - fat)[:, None], delta], dim=1).to(torch.float32)

    R = size * supersample
    c = (torch.arange(R, dtype=torch.float32) + 0.5) * (2.0 / R) - 1.0
    y, x = -c[:, None].expand(R, R), c[None, :].expand(R, R)  # row 0 at the top: y up, x to the right
    feats = torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)]).reshape(6, R * R)
    out = []
    for i in range(0, m, 8):  # 8 images at a time keep the (8, K + 2, R*R) indicators in cache
        cf, val = coef[i : i + 8], value[i : i + 8]
        j = cf.shape[0]
        inside = (cf.reshape(-1, 6) @ feats).reshape(j, K + 2, R * R)  # q of every ellipse at every pixel
        torch.le(inside, 1.0, out=inside)  # in place: the indicator as float
        img = torch.bmm(val[:, None], inside).reshape(j, 1, R, R)
        img = img.clamp(0.0, 1.0) * inside[:, :1].reshape(j, 1, R, R)  # additive, clipped, 0 outside the body
        out.append(F.avg_pool2d(img, supersample) if supersample > 1 else img)
    return torch.cat(out)


class EllipsePhantoms(Dataset):
    r"""Random-ellipse CT phantoms ``(1, size, size)``: a body with fat, organs, air and bone; values in [0, 1].

    Each image is a body ellipse (semi-axes 0.72-0.90 by 0.55-0.78 of the half field of view, tilted by up to
    0.15 rad) whose outer ring is subcutaneous fat and whose inside is soft tissue, plus a Poisson number
    (mean ``mean_ellipses``, at most ``max_ellipses``) of additive interior ellipses centred in the body: organs
    (+-0.05), fat, air / lung pockets (-0.2 to -0.35) and smaller bone ellipses (+0.2 to +0.55), their sizes
    0.03 + 0.1 Exp(1) of the half field of view (halved for bone). Overlaps add; the sum is clipped to [0, 1]
    and zeroed outside the body, so the image border (and every corner) is 0. Rendered at ``supersample``
    times the resolution and average-pooled (anti-aliasing: edge pixels hold the covered fraction).

    Units (module docstring): :math:`\mu = \mu_{max} x` with ``mu_max = 0.5`` /cm; water is 0.38; a pixel is
    ``field_of_view / size`` cm. Measured over 10,000 images at ``size=64``: the mean over body pixels is
    0.380 +- 0.013 (about water), each image's within [0.29, 0.43]; the body covers 32-60% of the image.

    Seeding: images come in blocks of 64, block ``k`` drawn from a generator seeded by
    ``SeedSequence([tag, seed, split, k])``, so the data are fully determined by ``(seed, split)``, image ``i``
    does not depend on ``n``, and ``split="train"`` and ``split="test"`` are independent draws (never the same
    images) for any seeds. Generating 10,000 images at 64x64 takes 4-10 s on one (shared) CPU core.

    Args:
        n: number of images (the dataset's length).
        size: image side in pixels.
        seed: non-negative integer seed.
        split: ``"train"`` or ``"test"``.
        supersample: render at ``supersample * size`` and average-pool; 1 gives hard (aliased) edges.
        mean_ellipses: mean number of interior ellipses (Poisson).
        max_ellipses: cap on the number of interior ellipses.

    Attributes:
        images: all images, float32 ``(n, 1, size, size)``.
        value_range: ``(0.0, 1.0)``.
        mu_max: 0.5, attenuation in 1/cm of the value 1.
        field_of_view: 25.6, the image side in cm.

    Examples:
        >>> ds = EllipsePhantoms(4, size=32, seed=0)
        >>> len(ds), tuple(ds[0].shape), float(ds.images.min()) >= 0.0, float(ds.images.max()) <= 1.0
        (4, (1, 32, 32), True, True)
        >>> float(ds[0][0, 0, 0])  # a corner lies outside the body
        0.0
        >>> EllipsePhantoms.pixel_size(64)  # cm
        0.4
    """

    value_range = (0.0, 1.0)
    mu_max = 0.5  # 1/cm at value 1
    field_of_view = 25.6  # cm

    _TAG = 0xC7

    def __init__(self, n: int, size: int = 64, *, seed: int = 0, split: str = "train", supersample: int = 2,
                 mean_ellipses: float = 7.0, max_ellipses: int = 12):
        n = _check_int("n", n, 1)
        size = _check_int("size", size, 4)
        seed = _check_int("seed", seed, 0)
        supersample = _check_int("supersample", supersample, 1)
        max_ellipses = _check_int("max_ellipses", max_ellipses, 0)
        if split not in _SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not (isinstance(mean_ellipses, numbers.Real) and 0 <= mean_ellipses < math.inf):
            raise ValueError(f"mean_ellipses must be a finite number >= 0, got {mean_ellipses!r}")
        blocks = [
            _render_block(_block_generator(self._TAG, seed, split, k), size, supersample, max_ellipses,
                          float(mean_ellipses))
            for k in range(-(-n // _CHUNK))
        ]
        self.images = torch.cat(blocks)[:n].contiguous()
        self.size, self.seed, self.split = size, seed, split

    @classmethod
    def pixel_size(cls, size: int) -> float:
        """Pixel side in cm for images of ``size`` pixels: ``field_of_view / size``."""
        return cls.field_of_view / _check_int("size", size, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def shepp_logan(size: int = 64) -> torch.Tensor:
    """scikit-image's Shepp-Logan phantom (400 x 400, modified contrasts) resized to ``(1, size, size)``.

    Resized by ``skimage.transform.resize`` with ``anti_aliasing=True`` (Gaussian pre-filter), float32 in
    [0, 1]; zero outside the head. Not in the units of :class:`EllipsePhantoms`: its values are the modified
    (Toft) Shepp-Logan contrasts, 1 for the skull, 0.2 for the brain, 0-0.4 for its features. Below 64
    pixels the thin skull is averaged out (its maximum is 0.98 at 64, 0.71 at 32, 0.44 at 16).

    Args:
        size: output side in pixels.

    Returns:
        Tensor of shape ``(1, size, size)``.

    Examples:
        >>> x = shepp_logan(64)
        >>> tuple(x.shape), float(x[0, 0, 0]), round(float(x[0, 32, 32]), 2)
        ((1, 64, 64), 0.0, 0.2)
    """
    import skimage.data
    import skimage.transform

    size = _check_int("size", size, 1)
    im = skimage.data.shepp_logan_phantom()
    if size != im.shape[0]:
        im = skimage.transform.resize(im, (size, size), anti_aliasing=True)
    return torch.from_numpy(np.asarray(im, dtype=np.float32)).reshape(1, size, size)
