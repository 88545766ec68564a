r"""Simulated ultrasound B-mode images with correlated Rayleigh speckle, and correlated haze fields (no download).

Source: everything is simulated here; nothing is read or downloaded.

B-mode pipeline (:class:`BModeImages`), per image of ``size x size`` pixels, rows = depth (axial), columns =
lateral position:

1. Echogenicity map :math:`E \ge 0` (:func:`random_echogenicity`, linear amplitude, 1 = 0 dB): 1-4 tissue
   layers separated by tilted, gently undulating boundaries, each layer of uniform echogenicity in
   [-20, 0] dB; 0-2 elliptical inclusions, hyperechoic (+6 to +12 dB over the layer) or hypoechoic (-6 to
   -15 dB); 0-3 anechoic cysts (discs, :math:`E = 0`). A label map records which is which.
2. Fully developed speckle (:func:`speckle_envelope`): one circular complex Gaussian scatterer per pixel,
   amplitude-weighted by :math:`E`, :math:`s = E\,(n_1 + i n_2)/\sqrt2`, convolved with a separable Gaussian
   point-spread function (the demodulated, IQ-domain PSF) of standard deviations ``psf_sigma = (axial,
   lateral)`` pixels, axially longer than laterally, normalised to unit energy :math:`\sum h^2 = 1`. The IQ
   image is then circular complex Gaussian with :math:`E|\cdot|^2 = E^2` wherever :math:`E` is constant over
   the PSF, so its envelope :math:`A = |h * s|` is Rayleigh with RMS :math:`E`: mean :math:`E\sqrt{\pi}/2`,
   point SNR :math:`\mathrm{mean}/\mathrm{std} = \sqrt{\pi/(4-\pi)} \approx 1.91` (mean^2/var 3.66), and
   speckle grains elongated axially.
3. Log compression (:func:`bmode_display`): :math:`b = 1 + (20\log_{10}A - g)/D` clipped to [0, 1], with
   dynamic range :math:`D` = ``dynamic_range_db`` (50 dB) and headroom :math:`g` = ``headroom_db`` (10 dB):
   0 dB echogenicity's RMS shows at :math:`1 - g/D = 0.8`, -20 dB at 0.4, and echoes below :math:`g - D =
   -40` dB (cyst interiors) are black. Rayleigh speckle has a log-amplitude standard deviation of 5.57 dB
   (0.11 in display units).

:class:`HazeFields` draws the additive, spatially correlated Gaussian haze of
:func:`invdiff.operators.ultrasound.haze` on its own, the nuisance of the dehazing problem.

References:
    Wagner, Smith, Sandrik, Lopez (1983), "Statistics of speckle in ultrasound B-scans".
    Burckhardt (1978), "Speckle in ultrasound B-mode scans".
    Jensen (1996), "Field: A program for simulating ultrasound systems".
    Stevens, Meral, Yu, Apostolakis, Robert, Schueler, Wijkstra, Mischi, van Sloun (2024), "Dehazing Ultrasound
    using Diffusion Models".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from invdiff.operators.ultrasound import haze, log_compress

from ._seeding import CHUNK as _CHUNK
from ._seeding import SPLITS as _SPLITS
from ._seeding import block_generator as _block_generator
from ._seeding import check_int as _check_int

__all__ = ["BModeImages", "HazeFields", "random_echogenicity", "speckle_envelope", "bmode_display", "LABELS"]

#: Meaning of the values of :attr:`BModeImages.labels`.
LABELS = {0: "tissue layer", 1: "anechoic cyst", 2: "hyperechoic inclusion", 3: "hypoechoic inclusion"}

def _check_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return v


def random_echogenicity(n: int, size: int = 64, *, generator: torch.Generator | None = None):
    r"""Random tissue echogenicity maps (step 1 of the module's pipeline) and their label maps.

    Args:
        n: number of maps.
        size: side in pixels (rows = depth, columns = lateral).
        generator: seeds every draw.

    Returns:
        ``(echogenicity, labels)``: float32 ``(n, 1, size, size)`` linear amplitudes in [0, 10^(12/20)]
        (1 = 0 dB, cysts exactly 0), and uint8 ``(n, 1, size, size)`` with the codes of :data:`LABELS`.

    Examples:
        >>> E, lab = random_echogenicity(2, 16, generator=torch.Generator().manual_seed(0))
        >>> tuple(E.shape), bool((E[lab == 1] == 0).all()), bool((E[lab != 1] > 0).all())
        ((2, 1, 16, 16), True, True)
    """
    n, size = _check_int("n", n, 1), _check_int("size", size, 1)
    g = generator

    def u(lo, hi, *shape):  # uniform on [lo, hi)
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in (0, 1)
    z, x = c[:, None], c[None, :]  # depth down the rows, lateral along the columns

    # layers: up to 3 boundaries z = d + tilt (x - 1/2) + amp sin(2 pi f x + phase); unused ones sit below
    nb = torch.randint(0, 4, (n,), generator=g)
    depth = torch.sort(u(0.1, 0.9, n, 3), dim=1).values
    depth = torch.where(torch.arange(3) < nb[:, None], depth, torch.full_like(depth, 2.0))
    tilt, amp = u(-0.3, 0.3, n, 3), u(0.0, 0.04, n, 3)
    freq, phase = u(0.5, 2.0, n, 3), u(0, 2 * math.pi, n, 3)
    xs = x.reshape(1, 1, size)  # (1, 1, W)
    bnd = depth[..., None] + tilt[..., None] * (xs - 0.5) + amp[..., None] * torch.sin(
        2 * math.pi * freq[..., None] * xs + phase[..., None])  # (n, 3, W)
    layer = (z[None, None] > bnd[:, :, None, :]).sum(1)  # (n, H, W): boundaries above each pixel
    layer_db = u(-20.0, 0.0, n, 4)
    base = layer_db.gather(1, layer.reshape(n, -1)).reshape(n, size, size)
    db = base.clone()
    labels = torch.zeros(n, size, size, dtype=torch.uint8)

    # inclusions: 0-2 ellipses, +6..+12 dB (hyper) or -6..-15 dB (hypo) over the local layer
    ni = torch.randint(0, 3, (n,), generator=g)
    cx, cz = u(0.15, 0.85, n, 2), u(0.15, 0.85, n, 2)
    a, b, phi = u(0.06, 0.18, n, 2), u(0.06, 0.18, n, 2), u(0, math.pi, n, 2)
    hyper = torch.rand(n, 2, generator=g) < 0.5
    contrast = torch.where(hyper, u(6.0, 12.0, n, 2), u(-15.0, -6.0, n, 2))
    for k in range(2):
        dx, dz = x[None] - cx[:, k, None, None], z[None] - cz[:, k, None, None]
        cs, sn = torch.cos(phi[:, k, None, None]), torch.sin(phi[:, k, None, None])
        q = ((cs * dx + sn * dz) / a[:, k, None, None]) ** 2 + ((cs * dz - sn * dx) / b[:, k, None, None]) ** 2
        inside = (q <= 1) & (k < ni)[:, None, None]
        db = torch.where(inside, base + contrast[:, k, None, None], db)  # a later inclusion covers an earlier one
        labels = torch.where(inside, torch.where(hyper[:, k, None, None], 2, 3).to(torch.uint8), labels)

    # anechoic cysts: 0-3 discs of radius 0.05-0.15 (3-10 pixels at size 64)
    nc = torch.randint(0, 4, (n,), generator=g)
    ccx, ccz, rad = u(0.15, 0.85, n, 3), u(0.15, 0.85, n, 3), u(0.05, 0.15, n, 3)
    cyst = torch.zeros(n, size, size, dtype=torch.bool)
    for k in range(3):
        d2 = (x[None] - ccx[:, k, None, None]) ** 2 + (z[None] - ccz[:, k, None, None]) ** 2
        cyst |= (d2 <= rad[:, k, None, None] ** 2) & (k < nc)[:, None, None]
    labels = torch.where(cyst, torch.tensor(1, dtype=torch.uint8), labels)
    E = torch.where(cyst, torch.zeros(()), 10.0 ** (db / 20))
    return E.unsqueeze(1), labels.unsqueeze(1)


def _unit_energy_gaussian(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(4 * sigma))
    i = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    return (k / k.square().sum().sqrt()).to(torch.float32)


def speckle_envelope(echogenicity: torch.Tensor, generator: torch.Generator | None = None, *,
                     psf_sigma=(1.5, 0.75)) -> torch.Tensor:
    r"""Envelope of PSF-filtered complex Gaussian scatterers weighted by ``echogenicity`` (step 2, module docs).

    Where the echogenicity is a constant :math:`E` over the PSF's support the envelope is Rayleigh with RMS
    :math:`E` (mean :math:`E\sqrt\pi/2`, mean/std 1.91); its autocorrelation is that of the PSF, longer along
    depth (``dim=-2``) than laterally. The scatterers are drawn on a domain padded by the PSF's radius (the
    echogenicity extended by its edge values), so the statistics hold up to the image border.

    Args:
        echogenicity: non-negative amplitude map, float, shape ``(*batch, H, W)`` (rows = depth).
        generator: seeds the scatterers (on ``echogenicity``'s device).
        psf_sigma: ``(axial, lateral)`` standard deviations of the Gaussian PSF in pixels, each ``> 0``.

    Returns:
        The non-negative envelope, shape and dtype of ``echogenicity``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> env = speckle_envelope(torch.ones(8, 64, 64), g)
        >>> round(float(env.square().mean()), 1)  # RMS = echogenicity
        1.0
    """
    E = torch.as_tensor(echogenicity)
    if E.ndim < 2 or not E.is_floating_point():
        raise ValueError(f"speckle_envelope: echogenicity must be a float tensor (*batch, H, W), got "
                         f"{E.dtype} of shape {tuple(E.shape)}")
    if bool((E < 0).any()):
        raise ValueError("speckle_envelope: echogenicity must be non-negative (an amplitude, not dB)")
    try:
        sz, sx = (float(v) for v in psf_sigma)
    except (TypeError, ValueError):
        raise ValueError(f"speckle_envelope: psf_sigma must be (axial, lateral) in pixels, got {psf_sigma!r}") from None
    sz, sx = _check_positive("psf_sigma[0] (axial)", sz), _check_positive("psf_sigma[1] (lateral)", sx)
    kz, kx = _unit_energy_gaussian(sz).to(E), _unit_energy_gaussian(sx).to(E)
    rz, rx = kz.numel() // 2, kx.numel() // 2
    H, W = E.shape[-2:]
    flat = E.reshape(-1, 1, H, W)
    padded = F.pad(flat, (rx, rx, rz, rz), mode="replicate")
    noise = torch.randn((flat.shape[0], 2) + padded.shape[-2:], generator=generator, dtype=E.dtype, device=E.device)
    s = (padded * noise).reshape(-1, 1, *padded.shape[-2:]) / math.sqrt(2)  # real, imaginary as batch entries
    iq = F.conv2d(F.conv2d(s, kz.reshape(1, 1, -1, 1)), kx.reshape(1, 1, 1, -1)).reshape(-1, 2, H, W)
    return iq.square().sum(1).sqrt().reshape(E.shape)


def bmode_display(envelope: torch.Tensor, *, dynamic_range_db: float = 50.0, headroom_db: float = 10.0):
    r"""Log compression to [0, 1]: ``1 + (20 log10(envelope) - headroom_db) / dynamic_range_db``, clipped.

    A fixed reference (not each image's maximum) so that brightness means echogenicity across images: an
    envelope of RMS 1 (0 dB echogenicity) shows at ``1 - headroom_db / dynamic_range_db``.

    Args:
        envelope: non-negative envelope, any shape.
        dynamic_range_db: displayed range in dB, ``> 0``.
        headroom_db: level in dB (re RMS 1) displayed as 1.

    Returns:
        Tensor of ``envelope``'s shape in [0, 1].

    Examples:
        >>> bmode_display(torch.tensor([10 ** 0.5, 1.0, 0.01, 0.0])).tolist()
        [1.0, 0.800000011920929, 0.0, 0.0]
    """
    _check_positive("dynamic_range_db", dynamic_range_db)
    try:
        headroom = float(headroom_db)
    except (TypeError, ValueError):
        raise ValueError(f"headroom_db must be a number, got {headroom_db!r}") from None
    if not math.isfinite(headroom):
        raise ValueError(f"headroom_db must be finite, got {headroom_db!r}")
    return log_compress(envelope, float(dynamic_range_db), reference=10.0 ** (headroom / 20))


class BModeImages(Dataset):
    r"""Simulated B-mode images ``(1, size, size)`` with layers, cysts, inclusions and correlated speckle, in [0, 1].

    The pipeline (module docstring): random echogenicity map -> complex Gaussian scatterers filtered by an
    anisotropic Gaussian PSF -> envelope (Rayleigh speckle) -> log compression with a fixed reference over
    ``dynamic_range_db`` (50 dB). Rows are depth. The ground truth of every image is kept: ``echogenicity``
    (the speckle-free amplitude, a despeckling target; ``bmode_display(echogenicity)`` shows it on the
    images' scale) and ``labels``.

    Measured at ``size=64`` with the defaults: cyst pixels one pixel in from the rim average 0.07, two pixels
    in 0.01 (the PSF's reach); tissue layers 0.54; in a homogeneous region the pre-log envelope has mean/std
    1.92 (Rayleigh: 1.91) and the display value a standard deviation of 0.11 (5.57 dB / 50 dB).

    Seeding: images come in blocks of 64, block ``k`` drawn from a generator seeded by
    ``SeedSequence([tag, seed, split, k])``, so the data are fully determined by ``(seed, split)``, image ``i``
    does not depend on ``n``, and the ``"train"`` and ``"test"`` splits are independent draws for any seeds.
    Generating 10,000 images at 64x64 takes 4-8 s on one (shared) CPU core.

    Args:
        n: number of images (the dataset's length).
        size: image side in pixels.
        seed: non-negative integer seed.
        split: ``"train"`` or ``"test"``.
        psf_sigma: ``(axial, lateral)`` PSF standard deviations in pixels.
        dynamic_range_db: displayed dynamic range.
        headroom_db: level above the RMS of 0 dB echogenicity that displays as 1.

    Attributes:
        images: float32 ``(n, 1, size, size)`` in [0, 1].
        echogenicity: float32 ``(n, 1, size, size)`` linear amplitude, 0 in cysts.
        labels: uint8 ``(n, 1, size, size)``, codes in :data:`LABELS`.
        value_range: ``(0.0, 1.0)``.

    Examples:
        >>> ds = BModeImages(3, size=32, seed=0)
        >>> len(ds), tuple(ds[0].shape), 0.0 <= float(ds.images.min()) <= float(ds.images.max()) <= 1.0
        (3, (1, 32, 32), True)
    """

    value_range = (0.0, 1.0)
    _TAG = 0xB0

    def __init__(self, n: int, size: int = 64, *, seed: int = 0, split: str = "train", psf_sigma=(1.5, 0.75),
                 dynamic_range_db: float = 50.0, headroom_db: float = 10.0):
        n = _check_int("n", n, 1)
        size = _check_int("size", size, 4)
        seed = _check_int("seed", seed, 0)
        if split not in _SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        bmode_display(torch.ones(1), dynamic_range_db=dynamic_range_db, headroom_db=headroom_db)  # validates
        images, echo, labels = [], [], []
        for k in range(-(-n // _CHUNK)):
            g = _block_generator(self._TAG, seed, split, k)
            E, lab = random_echogenicity(_CHUNK, size, generator=g)
            env = speckle_envelope(E, g, psf_sigma=psf_sigma)
            images.append(bmode_display(env, dynamic_range_db=dynamic_range_db, headroom_db=headroom_db))
            echo.append(E)
            labels.append(lab)
        self.images = torch.cat(images)[:n].contiguous()
        self.echogenicity = torch.cat(echo)[:n].contiguous()
        self.labels = torch.cat(labels)[:n].contiguous()
        self.size, self.seed, self.split = size, seed, split

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class HazeFields(Dataset):
    r"""Additive, spatially correlated Gaussian haze fields ``(1, size, size)`` for the dehazing problem.

    Each field is :func:`invdiff.operators.ultrasound.haze` applied to zeros: white Gaussian noise filtered by a
    separable Gaussian and scaled so every pixel is :math:`\mathcal N(0, \mathrm{strength}^2)`, with correlation
    :math:`\exp(-d^2 / (2\ell^2))` at lag :math:`d` pixels (:math:`e^{-1/2} \approx 0.61` at
    :math:`d = \ell` = ``correlation_length``), stationary up to the border. Add a field to a B-mode image
    (:class:`BModeImages`, in [0, 1] display units) to make a hazy observation.

    Value range: unbounded (Gaussian), ``value_range = (-inf, inf)``; 99.99% of the values lie within
    ``+- 3.9 * strength``.

    Seeding as in :class:`BModeImages` (blocks of 64, ``SeedSequence([tag, seed, split, block])``): determined
    by ``(seed, split)``, independent across splits, image ``i`` independent of ``n``. 10,000 fields at 64x64
    take about 1 s on one CPU core.

    Args:
        n: number of fields (the dataset's length).
        size: field side in pixels.
        seed: non-negative integer seed.
        split: ``"train"`` or ``"test"``.
        strength: pixel standard deviation, ``> 0``.
        correlation_length: :math:`\ell` in pixels, a number or ``(l_axial, l_lateral)``.

    Attributes:
        images: float32 ``(n, 1, size, size)``.
        value_range: ``(-inf, inf)``.

    Examples:
        >>> ds = HazeFields(8, size=32, seed=0, strength=0.1)
        >>> len(ds), tuple(ds[0].shape), abs(float(ds.images.std()) - 0.1) < 0.03
        (8, (1, 32, 32), True)
    """

    value_range = (-math.inf, math.inf)
    _TAG = 0x4A

    def __init__(self, n: int, size: int = 64, *, seed: int = 0, split: str = "train", strength: float = 0.1,
                 correlation_length=4.0):
        n = _check_int("n", n, 1)
        size = _check_int("size", size, 2)
        seed = _check_int("seed", seed, 0)
        if split not in _SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        strength = _check_positive("strength", strength)
        blocks = [haze(torch.zeros(_CHUNK, 1, size, size), _block_generator(self._TAG, seed, split, k),
                       strength=strength, correlation_length=correlation_length)
                  for k in range(-(-n // _CHUNK))]
        self.images = torch.cat(blocks)[:n].contiguous()
        self.size, self.seed, self.split = size, seed, split
        self.strength, self.correlation_length = strength, correlation_length

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]
