r"""Image restoration operators: blur, super-resolution, inpainting and denoising.

All act on the last two dims of an image, ``(*batch, H, W)`` or ``(*batch, C, H, W)`` (``image_shape`` says
which), and are unit-preserving: the measurement has the image's units.

* :class:`Blur` — :math:`y = k * x`, a true convolution (the kernel is flipped, as in
  ``scipy.ndimage.convolve``) with the kernel centred at index ``(kh // 2, kw // 2)``. Boundaries:
  ``"circular"`` (periodic; diagonal in the Fourier basis, so the pseudo-inverse and the Gaussian likelihood
  steps have closed forms), ``"reflect"`` (mirror without repeating the edge pixel, ``d c b | a b c d | c b a``:
  scipy's ``"mirror"``, torch's ``"reflect"``) and ``"zero"``. All are computed with FFTs.
* :class:`SuperResolution` — average pooling over ``factor x factor`` blocks. :math:`A A^T = I/f^2`, so every
  closed form follows from the projection :math:`f^2 A^T A` onto block-constant images.
* :class:`Inpainting` — observe the pixels where ``mask`` is true. The measurement is the vector of observed
  values (shape ``(*lead, n_observed)``), so any noise model is exact on it; ``op.adjoint(y)`` (or
  :meth:`Inpainting.fill`) puts them back on the image grid.
* :class:`Denoising` — the identity; the problem is all in the noise model.

Kernels: :func:`gaussian_kernel`, :func:`uniform_kernel` and :func:`motion_blur_kernel` (random camera-shake
trajectories, as in the DPS experiments). Each sums to 1.

References:
    Chung et al., "Diffusion Posterior Sampling for General Noisy Inverse Problems", ICLR 2023.
    Levin et al., "Understanding and evaluating blind deconvolution algorithms", CVPR 2009.
"""

from __future__ import annotations

import math

import torch

from invdiff.linalg import batch_scalar, real_dtype

from .base import LinearOperator, _standard_normal_like, cast_like
from .noise import NoiseModel

__all__ = [
    "Blur",
    "SuperResolution",
    "Inpainting",
    "Denoising",
    "gaussian_kernel",
    "uniform_kernel",
    "motion_blur_kernel",
    "box_mask",
    "random_mask",
]


def _image_shape(image_shape, who: str) -> tuple[int, ...]:
    if isinstance(image_shape, int):
        raise TypeError(f"{who}: image_shape must be (H, W) or (C, H, W), got the integer {image_shape}")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) not in (2, 3) or any(s <= 0 for s in shape):
        raise ValueError(f"{who}: image_shape must be (H, W) or (C, H, W) with positive sizes, got {shape}")
    return shape


def _gen(generator, seed):
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


# -- kernels ------------------------------------------------------------------------------------------------
def gaussian_kernel(std: float, size: int | None = None, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """An isotropic Gaussian blur kernel, normalised to sum 1.

    Args:
        std: standard deviation in pixels (> 0).
        size: odd side length (default ``2 * ceil(3 * std) + 1``).

    Returns:
        ``(size, size)`` tensor.
    """
    if not std > 0:
        raise ValueError(f"gaussian_kernel: std must be > 0 pixels, got {std}")
    size = 2 * math.ceil(3 * std) + 1 if size is None else int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_kernel: size must be a positive odd integer, got {size}")
    t = torch.arange(size, dtype=dtype) - size // 2
    g = torch.exp(-0.5 * (t / std) ** 2)
    k = g[:, None] * g[None, :]
    return k / k.sum()


def uniform_kernel(size: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A ``size x size`` box kernel (all entries ``1/size^2``); ``size`` odd."""
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"uniform_kernel: size must be a positive odd integer, got {size}")
    return torch.full((size, size), 1.0 / size**2, dtype=dtype)


def motion_blur_kernel(
    size: int = 61,
    intensity: float = 0.5,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A random camera-shake kernel: a smooth random trajectory rasterised with bilinear weights, sum 1.

    The trajectory is a random walk of the camera's velocity: ``intensity`` in [0, 1] sets how strongly the
    direction wanders (0: a straight streak; 1: a tangled path). Its length is about ``size / 2`` pixels and it
    is centred on the kernel's centre of mass, so the blur does not shift the image on average.

    Args:
        size: odd side length in pixels (61 in the DPS experiments).
        intensity: curvature of the path, in [0, 1].
        generator / seed: the randomness (one of them; default seed 0).

    Returns:
        ``(size, size)`` tensor.
    """
    size = int(size)
    if size < 3 or size % 2 == 0:
        raise ValueError(f"motion_blur_kernel: size must be an odd integer >= 3, got {size}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"motion_blur_kernel: intensity must lie in [0, 1], got {intensity}")
    g = _gen(generator, seed)
    steps = 4 * size
    angle = 2 * math.pi * torch.rand((), generator=g, dtype=torch.float64)
    turns = torch.randn(steps, generator=g, dtype=torch.float64) * (0.05 + 0.6 * intensity)
    # smooth the turning so the path is a curve, not a jitter
    turns = torch.cumsum(turns, 0) * (0.2 + 0.8 * intensity) / math.sqrt(steps)
    heading = angle + torch.cumsum(turns, 0)
    step = 0.5 * size / steps
    path = torch.cumsum(torch.stack([torch.cos(heading), torch.sin(heading)], -1) * step, 0)
    path = path - path.mean(0)
    extent = path.abs().max()
    if extent > (size - 1) / 2 - 1:
        path = path * (((size - 1) / 2 - 1) / extent)
    pos = path + (size - 1) / 2
    k = torch.zeros(size * size, dtype=torch.float64)
    i0, j0 = pos[:, 0].floor(), pos[:, 1].floor()
    fi, fj = pos[:, 0] - i0, pos[:, 1] - j0
    for di, wi in ((0, 1 - fi), (1, fi)):
        for dj, wj in ((0, 1 - fj), (1, fj)):
            k.index_add_(0, ((i0 + di) * size + (j0 + dj)).long(), wi * wj)
    k = k.reshape(size, size)
    return (k / k.sum()).to(dtype)


# -- masks -----------------------------------------------------------------------------------------------------
def box_mask(image_shape, box, *, observed_inside: bool = False) -> torch.Tensor:
    """A ``(H, W)`` bool mask that hides (or, with ``observed_inside``, keeps only) a rectangle.

    Args:
        image_shape: ``(H, W)`` (a leading channel dim is ignored).
        box: ``(top, left, height, width)`` in pixels.
    """
    H, W = _image_shape(image_shape, "box_mask")[-2:]
    top, left, h, w = (int(v) for v in box)
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > H or left + w > W:
        raise ValueError(f"box_mask: box {tuple(box)} (top, left, height, width) does not fit in {H}x{W}")
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[top : top + h, left : left + w] = True
    return inside if observed_inside else ~inside


def random_mask(image_shape, fraction_observed: float, *, generator=None, seed=None) -> torch.Tensor:
    """A ``(H, W)`` bool mask keeping exactly ``round(fraction_observed * H * W)`` pixels, chosen at random."""
    H, W = _image_shape(image_shape, "random_mask")[-2:]
    if not 0.0 < fraction_observed <= 1.0:
        raise ValueError(f"random_mask: fraction_observed must lie in (0, 1], got {fraction_observed}")
    n = max(1, round(fraction_observed * H * W))
    idx = torch.randperm(H * W, generator=_gen(generator, seed))[:n]
    mask = torch.zeros(H * W, dtype=torch.bool)
    mask[idx] = True
    return mask.reshape(H, W)


# -- shared closed forms ------------------------------------------------------------------------------------
class _ClosedForm(LinearOperator):
    """Closed-form likelihood steps for operators with a known spectral split (abstract helper).

    Subclasses provide ``_prox_solve(b, rho_t, std, power)`` that applies :math:`P^{power}` (power -1 or -1/2)
    for :math:`P = A^H A/\\sigma^2 + I/\\rho^2`, and ``_closed_form_ok(std)`` saying when it applies (e.g. scalar
    noise); otherwise the generic conjugate-gradient versions run.
    """

    def _closed_form_ok(self, std: torch.Tensor) -> bool:
        return std.ndim == 0

    def _prox_parts(self, z, y, rho):
        z, y = self._coupling(z, y)
        std = self._gaussian_std().to(device=z.device, dtype=real_dtype(z.dtype))
        rho_t = batch_scalar(rho, z, len(self.in_shape))
        b = self.adjoint(y / std**2) + z / rho_t**2
        return b, rho_t, std

    def prox_likelihood(self, z, y, rho, **kwargs):
        if not self._closed_form_ok(self._gaussian_std()):
            return super().prox_likelihood(z, y, rho, **kwargs)
        b, rho_t, std = self._prox_parts(z, y, rho)
        return self._apply_P_power(b, rho_t, std, -1.0)

    def sample_conditional(self, z, y, rho, *, generator=None, **kwargs):
        if not self._closed_form_ok(self._gaussian_std()):
            return super().sample_conditional(z, y, rho, generator=generator, **kwargs)
        b, rho_t, std = self._prox_parts(z, y, rho)
        mean = self._apply_P_power(b, rho_t, std, -1.0)
        return mean + self._apply_P_power(_standard_normal_like(mean, generator), rho_t, std, -0.5)

    def _apply_P_power(self, v, rho_t, std, power):  # pragma: no cover - abstract
        raise NotImplementedError


# -- blur ---------------------------------------------------------------------------------------------------
class Blur(_ClosedForm):
    r"""Convolution with a fixed kernel, :math:`y = k * x`, computed with FFTs.

    Args:
        kernel: ``(kh, kw)`` real tensor; odd sizes keep the centre unambiguous (it is ``(kh//2, kw//2)``).
            Not normalised here: the kernel helpers return kernels that sum to 1.
        image_shape: ``(H, W)`` or ``(C, H, W)``; the same kernel blurs every channel.
        boundary: ``"circular"`` (default; closed-form pseudo-inverse and likelihood steps for scalar Gaussian
            noise), ``"reflect"`` or ``"zero"`` (generic conjugate-gradient steps).
        noise: the measurement noise model.

    Examples:
        >>> import torch
        >>> op = Blur(gaussian_kernel(1.0), (16, 16))
        >>> x = torch.zeros(16, 16); x[8, 8] = 1.0
        >>> bool(torch.allclose(op(x)[5:12, 5:12], gaussian_kernel(1.0).float()))   # a delta blurs to the kernel
        True
    """

    def __init__(self, kernel, image_shape, *, boundary: str = "circular", noise: NoiseModel | None = None):
        shape = _image_shape(image_shape, "Blur")
        kernel = torch.as_tensor(kernel)
        if kernel.ndim != 2:
            raise ValueError(f"Blur: kernel must be 2-D (kh, kw), got shape {tuple(kernel.shape)}")
        if kernel.is_complex() or not torch.isfinite(kernel.to(torch.float64)).all():
            raise ValueError("Blur: kernel must be real and finite")
        if boundary not in ("circular", "reflect", "zero"):
            raise ValueError(f"Blur: boundary must be 'circular', 'reflect' or 'zero', got {boundary!r}")
        H, W = shape[-2:]
        kh, kw = kernel.shape
        if boundary == "circular" and (kh > H or kw > W):
            raise ValueError(f"Blur: a {kh}x{kw} kernel is larger than the {H}x{W} image")
        if boundary == "reflect" and (kh // 2 >= H or kw // 2 >= W):
            raise ValueError(f"Blur: reflect padding by {kh // 2}x{kw // 2} needs an image larger than that")
        super().__init__(shape, shape, noise=noise)
        self.boundary = boundary
        self.pads = (0, 0, 0, 0) if boundary == "circular" else (kh // 2, kh - 1 - kh // 2, kw // 2, kw - 1 - kw // 2)
        Hp, Wp = H + self.pads[0] + self.pads[1], W + self.pads[2] + self.pads[3]
        self.padded = (Hp, Wp)
        # transfer function of the kernel placed with its centre at the origin of the (padded) grid
        k = torch.zeros(Hp, Wp, dtype=torch.float64)
        k[:kh, :kw] = kernel.to(torch.float64)
        k = torch.roll(k, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
        self.register_buffer("kernel", kernel.to(torch.float64))
        self.register_buffer("transfer", torch.fft.rfft2(k))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={tuple(self.kernel.shape)}, boundary={self.boundary!r}"

    def _filter(self, x, conj: bool):
        K = cast_like(self.transfer, x).to(x.device)
        K = K.conj() if conj else K
        return torch.fft.irfft2(torch.fft.rfft2(x) * K, s=self.padded)

    def _pad(self, x):
        if self.boundary == "circular":
            return x
        t, b, l, r = self.pads
        if self.boundary == "zero":
            return torch.nn.functional.pad(x, (l, r, t, b))
        # reflect without repeating the edge, done by indexing (any batch rank, differentiable)
        H, W = x.shape[-2:]
        rows = _reflect_index(H, t, b, x.device)
        cols = _reflect_index(W, l, r, x.device)
        return x.index_select(-2, rows).index_select(-1, cols)

    def _unpad_adjoint(self, g):
        if self.boundary == "circular":
            return g
        H, W = self.in_shape[-2:]
        t, b, l, r = self.pads
        if self.boundary == "zero":
            return g[..., t : t + H, l : l + W]
        rows = _reflect_index(H, t, b, g.device)
        cols = _reflect_index(W, l, r, g.device)
        out = torch.zeros(*g.shape[:-1], W, dtype=g.dtype, device=g.device).index_add(-1, cols, g)
        return torch.zeros(*g.shape[:-2], H, W, dtype=g.dtype, device=g.device).index_add(-2, rows, out)

    def _crop(self, y):
        if self.boundary == "circular":
            return y
        H, W = self.in_shape[-2:]
        return y[..., self.pads[0] : self.pads[0] + H, self.pads[2] : self.pads[2] + W]

    def _uncrop(self, y):
        if self.boundary == "circular":
            return y
        t, b, l, r = self.pads
        return torch.nn.functional.pad(y, (l, r, t, b))

    def forward(self, x):
        return self._crop(self._filter(self._pad(x), conj=False))

    def adjoint(self, y):
        return self._unpad_adjoint(self._filter(self._uncrop(y), conj=True))

    # -- closed forms (circular boundary, scalar Gaussian noise) ----------------------------------------------
    def _closed_form_ok(self, std):
        return self.boundary == "circular" and std.ndim == 0

    def _apply_P_power(self, v, rho_t, std, power):
        K2 = cast_like(self.transfer, v).to(v.device).abs() ** 2
        lam = K2 / std**2 + 1.0 / rho_t**2  # rho_t is (*batch, 1, 1[, 1]): broadcasts over the spectrum
        return torch.fft.irfft2(torch.fft.rfft2(v) * lam**power, s=self.padded)

    def pinv(self, y, *, rcond: float = 1e-6, **kwargs):
        r""":math:`A^+ y`: exact inverse filter with transfer-function magnitudes below ``rcond * max`` dropped
        (circular boundary); conjugate gradients otherwise."""
        if self.boundary != "circular":
            return super().pinv(y, **kwargs)
        y = self._prepare(y, self.out_shape, self.out_dtype, "Blur measurement")
        K = cast_like(self.transfer, y).to(y.device)
        keep = K.abs() > rcond * K.abs().max()
        inv = torch.where(keep, 1.0 / torch.where(keep, K, torch.ones_like(K)), torch.zeros_like(K))
        return torch.fft.irfft2(torch.fft.rfft2(y) * inv, s=self.padded)


def _reflect_index(n: int, before: int, after: int, device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by mirror reflection (edge not repeated)."""
    idx = torch.arange(-before, n + after, device=device)
    period = 2 * (n - 1) if n > 1 else 1
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


# -- super-resolution ---------------------------------------------------------------------------------------
class SuperResolution(_ClosedForm):
    r"""Average pooling over ``factor x factor`` blocks: a ``(H, W)`` image to ``(H/f, W/f)``.

    :math:`A A^T = I / f^2`, so :math:`A^+ = f^2 A^T` (block replication) and the Gaussian likelihood steps use
    the projection :math:`\Pi = f^2 A^T A` onto block-constant images:
    :math:`P^{p} = (1/\rho^2)^{p} (I - \Pi) + (1/(f^2\sigma^2) + 1/\rho^2)^{p}\, \Pi`.

    Args:
        factor: the integer downsampling factor; it must divide ``H`` and ``W``.
        image_shape: ``(H, W)`` or ``(C, H, W)``.
        noise: the measurement noise model.

    Examples:
        >>> import torch
        >>> op = SuperResolution(2, (4, 4))
        >>> op(torch.arange(16.0).reshape(4, 4))
        tensor([[ 2.5000,  4.5000],
                [10.5000, 12.5000]])
    """

    def __init__(self, factor: int, image_shape, *, noise: NoiseModel | None = None):
        shape = _image_shape(image_shape, "SuperResolution")
        if int(factor) != factor or factor < 1:
            raise ValueError(f"SuperResolution: factor must be a positive integer, got {factor}")
        factor = int(factor)
        H, W = shape[-2:]
        if H % factor or W % factor:
            raise ValueError(f"SuperResolution: factor {factor} must divide the image size {H}x{W}")
        super().__init__(shape, shape[:-2] + (H // factor, W // factor), noise=noise)
        self.factor = factor

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}"

    def forward(self, x):
        f = self.factor
        h, w = self.out_shape[-2:]
        return x.reshape(*x.shape[:-2], h, f, w, f).mean(dim=(-3, -1))

    def adjoint(self, y):
        f = self.factor
        up = y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
        return up / f**2

    def _apply_P_power(self, v, rho_t, std, power):
        proj = self.factor**2 * self.adjoint(self(v))
        lam = 1.0 / (self.factor**2 * std**2) + 1.0 / rho_t**2
        return rho_t ** (-2 * power) * (v - proj) + lam**power * proj

    def pinv(self, y, **_ignored):
        r""":math:`A^+ y = f^2 A^T y`: each low-resolution pixel replicated over its block."""
        y = self._prepare(y, self.out_shape, self.out_dtype, "SuperResolution measurement")
        return self.factor**2 * self.adjoint(y)


# -- inpainting ---------------------------------------------------------------------------------------------
class Inpainting(_ClosedForm):
    r"""Observe the pixels where ``mask`` is true: :math:`y = x[\text{mask}]`.

    Args:
        mask: bool tensor, ``(H, W)`` (the same pixels in every channel) or the full ``image_shape``.
        image_shape: ``(H, W)`` or ``(C, H, W)`` (default ``mask.shape``).
        noise: the measurement noise model (per-observation std tensors have shape ``(*lead, n_observed)``).

    Shapes: with a ``(H, W)`` mask the measurement is ``(*lead, n_observed)`` where ``lead`` are the channel
    dims of ``image_shape``; with a full-shape mask it is ``(n_observed,)``. Observed values come in row-major
    order of the mask. :meth:`fill` (the adjoint) puts a measurement back on the image grid.

    Examples:
        >>> import torch
        >>> op = Inpainting(torch.tensor([[True, False], [False, True]]))
        >>> op(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([1., 4.])
        >>> op.fill(torch.tensor([1.0, 4.0]), value=float("nan"))
        tensor([[1., nan],
                [nan, 4.]])
    """

    def __init__(self, mask, image_shape=None, *, noise: NoiseModel | None = None):
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"Inpainting: mask must be a bool tensor (True = observed), got {mask.dtype}")
        if mask.ndim not in (2, 3):
            raise ValueError(f"Inpainting: mask must be (H, W) or (C, H, W), got shape {tuple(mask.shape)}")
        shape = tuple(mask.shape) if image_shape is None else _image_shape(image_shape, "Inpainting")
        if tuple(mask.shape) != shape[len(shape) - mask.ndim :]:
            raise ValueError(f"Inpainting: mask shape {tuple(mask.shape)} does not match image_shape {shape}")
        n_obs = int(mask.sum())
        if n_obs == 0:
            raise ValueError("Inpainting: the mask observes no pixel")
        lead = shape[: len(shape) - mask.ndim]
        super().__init__(shape, lead + (n_obs,), noise=noise)
        self.register_buffer("mask", mask)
        self.register_buffer("index", torch.nonzero(mask.reshape(-1)).reshape(-1))
        self._event = mask.ndim

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, observed={self.out_shape[-1]}/{self.mask.numel()}"

    def forward(self, x):
        flat = x.reshape(*x.shape[: x.ndim - self._event], -1)
        return flat.index_select(-1, self.index.to(x.device))

    def adjoint(self, y):
        out = torch.zeros(*y.shape[:-1], self.mask.numel(), dtype=y.dtype, device=y.device)
        out = out.index_copy(-1, self.index.to(y.device), y)
        return out.reshape(*y.shape[:-1], *self.mask.shape)

    def fill(self, y, value: float = 0.0) -> torch.Tensor:
        """The measurement on the image grid, unobserved pixels set to ``value`` (e.g. NaN for plots)."""
        y = self._prepare(y, self.out_shape, self.out_dtype, "Inpainting measurement")
        img = self.adjoint(y)
        return img.masked_fill(~self.mask.to(img.device), value)

    def _closed_form_ok(self, std):
        return True  # A^H A is diagonal, whatever the per-observation noise

    def _apply_P_power(self, v, rho_t, std, power):
        precision = self.adjoint(torch.broadcast_to(1.0 / std**2, self.out_shape).to(v.dtype))
        return v * (precision + 1.0 / rho_t**2) ** power

    def pinv(self, y, **_ignored):
        """The zero-filled image (observed pixels put back, the rest 0): exactly :math:`A^+ y`."""
        y = self._prepare(y, self.out_shape, self.out_dtype, "Inpainting measurement")
        return self.adjoint(y)


class Denoising(_ClosedForm):
    r"""The identity :math:`y = x`; pair it with a noise model (e.g. ``GaussianNoise(0.1)``).

    Args:
        image_shape: shape of ``x`` (any).
        noise: the measurement noise model.
    """

    def __init__(self, image_shape, *, noise: NoiseModel | None = None):
        super().__init__(image_shape, image_shape, noise=noise)

    def forward(self, x):
        return x.clone()

    def adjoint(self, y):
        return y.clone()

    def _apply_P_power(self, v, rho_t, std, power):
        return v * (1.0 / std**2 + 1.0 / rho_t**2) ** power

    def _closed_form_ok(self, std):
        return True  # per-pixel std is still diagonal

    def pinv(self, y, **_ignored):
        return self._prepare(y, self.out_shape, self.out_dtype, "Denoising measurement").clone()
