r"""Ultrasound: scan-line subsampling, a linear plane-wave RF model, and B-mode image utilities.

Operators
---------
:class:`ScanlineSubsampling` — focused-transmit line subsampling. A B-mode image ``x`` of shape
``(..., H, W)`` holds ``W`` scan lines (the columns, last dim) of ``H`` depth samples each; acquiring only
``k`` of them is the coordinate selection :math:`y = S x`, ``y = x[..., lines]`` of shape ``(..., H, k)`` (only
the observed columns, in increasing line order). :math:`S S^T = I` and :math:`S^T S = \operatorname{diag}(m)`
with ``m`` the column mask, so the pseudo-inverse (zero filling), the proximal step and the exact Gaussian
conditional are closed forms: with per-pixel data precision :math:`w = S^T(1/\sigma_y^2)` (zero on missing
lines),

.. math::
    x \mid y, z \sim \mathcal N\Big(\frac{S^T(y/\sigma_y^2) + z/\rho^2}{w + 1/\rho^2},\;
    \operatorname{diag}\frac{1}{w + 1/\rho^2}\Big).

:class:`PlaneWaveRF` — a linear model from a reflectivity map to the RF channel data of a linear array
insonified by steered plane waves (the Born / point-scatterer approximation). Geometry, in metres:

* pixel ``(i, j)`` sits at depth :math:`z_i = z_0 + i\,\Delta z` (``depth_start`` :math:`z_0`) and lateral
  position :math:`x_j = (j - (W-1)/2)\,\Delta x` (the image is centred on the array);
* element ``e`` sits at :math:`(x_e, 0)`, :math:`x_e = (e - (E-1)/2)\,\mathrm{pitch}`;
* angle :math:`\theta_a` (radians, positive towards :math:`+x`) launches a plane wave whose front reaches
  :math:`p = (x, z)` at :math:`\tau_a(p) = (z\cos\theta_a + x\sin\theta_a + \tfrac{E-1}{2}\,\mathrm{pitch}\,
  |\sin\theta_a|)/c` — the offset makes the first element fire at :math:`t = 0`, so delays are
  nonnegative under the aperture;
* the echo returns to element ``e`` after :math:`\tau_e(p) = \sqrt{z^2 + (x - x_e)^2}/c`;
* sample ``k`` of every trace is taken at :math:`t_k = k / f_s`, :math:`k = 0, \dots, T-1`.

.. math::
    y[a, e, k] = \sum_p r(p)\, g_e(p)\, h\big(t_k - \tau_a(p) - \tau_e(p)\big), \qquad
    h(t) = e^{-\alpha t^2}\cos(2\pi f_0 t), \quad \alpha = \frac{(\pi f_0 B)^2}{4 \cdot 0.3\ln 10},

with :math:`B` the fractional bandwidth measured where the pulse spectrum falls 6 dB below its peak (to
:math:`10^{-6/20}`), as
``scipy.signal.gausspulse`` defines it, :math:`h` truncated where its envelope falls below
``-pulse_cutoff_db``, and :math:`g_e(p)` an optional element directivity :math:`z/\sqrt{z^2 + (x-x_e)^2}` times
an optional cylindrical spreading loss :math:`\sqrt{1\,\mathrm{cm} / |p - x_e|}` (both 1 by default). Units:
the reflectivity :math:`r` is dimensionless and the RF data are in units of the pulse's peak amplitude.

Implementation (matrix-free, exact adjoint): each pixel's delay is spread by linear interpolation onto a time
grid ``upsample`` times finer than :math:`f_s` (two taps per pixel, angle and element), and the fine traces are
convolved with the finely sampled pulse and decimated in one strided ``conv1d``. So :math:`h` at a fractional
delay is linearly interpolated between its samples at rate ``upsample * fs`` (relative error about
:math:`(\pi f_0 / (\mathrm{upsample}\,f_s))^2 / 2`). The adjoint runs the same steps transposed:
``conv_transpose1d`` (the matched filter) and a gather at every pixel's delay summed over angles and elements,

.. math::
    (A^T y)(p) = \sum_{a, e} g_e(p) \sum_k y[a, e, k]\, h\big(t_k - \tau_a(p) - \tau_e(p)\big),

which IS delay-and-sum beamforming with the pulse as matched filter (coherent plane-wave compounding over the
angles); :meth:`PlaneWaveRF.das` offers it, optionally normalised by the exact diagonal of :math:`A^T A` so a
unit point scatterer beamforms to 1 at its own pixel.

Utilities
---------
* :func:`analytic_signal`, :func:`envelope` — the discrete analytic signal by FFT (the construction of
  ``scipy.signal.hilbert``) and its modulus, the envelope of RF data or of an RF-like beamformed image.
* :func:`log_compress` — :math:`20\log_{10}(\mathrm{env}/\mathrm{ref})` clipped to ``[-dynamic_range_db, 0]``
  dB, returned in dB or mapped linearly to ``[0, 1]``.
* :func:`speckle` — multiplicative, mean-preserving speckle on an amplitude (envelope) image:
  :math:`x \cdot \sqrt{I_L}/c_L`, :math:`I_L \sim \mathrm{Gamma}(L, 1/L)` the mean of ``L`` independent
  exponential intensities (fully developed speckle), :math:`c_L = \Gamma(L + 1/2) / (\Gamma(L)\sqrt L)`. For
  ``looks=1`` the factor is Rayleigh with mean 1 and variance :math:`4/\pi - 1 \approx 0.273`; in general its
  variance is :math:`1/c_L^2 - 1`.
* :func:`haze` — additive, spatially correlated Gaussian haze: ``x + strength * h`` with ``h`` white noise
  filtered by a Gaussian of standard deviation :math:`\ell/\sqrt2` pixels and normalised to unit variance, so
  its correlation at lag :math:`d` pixels is :math:`\exp(-d^2 / (2\ell^2))` (:math:`e^{-1/2}\approx 0.61` at
  :math:`d = \ell`, ``correlation_length``). Clean/hazy pairs pose dehazing as an inverse problem.

References:
    Stevens, Nolan, Robert, van Sloun (2024), "Sequential Posterior Sampling with Diffusion Models".
    Stevens, Meral, Yu, Apostolakis, Robert, Schueler, Wijkstra, Mischi, van Sloun (2024),
    "Dehazing Ultrasound using Diffusion Models".
    Montaldo, Tanter, Bercoff, Benech, Fink (2009), "Coherent plane-wave compounding for very high frame rate
    ultrasonography and transient elastography".
    Marple (1999), "Computing the discrete-time analytic signal via FFT".
    Wagner, Smith, Sandrik, Lopez (1983), "Statistics of speckle in ultrasound B-scans".
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from invdiff.linalg import batch_scalar, real_dtype

from .base import LinearOperator, _standard_normal_like, cast_like, linear_autograd
from .noise import NoiseModel

__all__ = [
    "ScanlineSubsampling",
    "PlaneWaveRF",
    "analytic_signal",
    "envelope",
    "log_compress",
    "speckle",
    "haze",
]


# ----------------------------------------------------------------------------------------------------------
# Scan-line subsampling
# ----------------------------------------------------------------------------------------------------------
class ScanlineSubsampling(LinearOperator):
    r"""Keep ``k`` of the ``W`` scan lines (columns) of a B-mode image: ``y = x[..., lines]``.

    Models a focused-transmit acquisition that fires only some lines (module docstring: the closed forms).

    Args:
        image_shape: shape of one image, ``(H, W)`` or ``(C, H, W)``; the last dim indexes the scan lines.
        lines: which lines are acquired: a count ``k`` (``1 <= k <= W``, chosen by ``selection``), a 1-D bool
            mask of shape ``(W,)``, or a 1-D sequence / integer tensor of distinct line indices in ``[0, W)``.
        selection: for a count: ``"even"`` — ``k`` lines evenly spaced from the first to the last column (the
            centre one for ``k = 1``); ``"random"`` — ``k`` distinct lines drawn uniformly with ``seed``.
        seed: seed of the ``"random"`` selection (the draw happens once, at construction).
        noise: measurement noise model, e.g. ``GaussianNoise(0.05)`` (std broadcastable to ``(..., H, k)``).

    Attributes:
        lines: ``(k,)`` int64 indices of the acquired lines, increasing; the output's columns in this order.
        mask: ``(W,)`` bool, True on acquired lines.

    Units: those of the image (no scaling). Output shape ``(*batch, *image_shape[:-1], k)``.

    Examples:
        >>> import torch
        >>> from invdiff.operators.ultrasound import ScanlineSubsampling
        >>> op = ScanlineSubsampling((4, 8), 3)
        >>> op.lines.tolist()
        [0, 4, 7]
        >>> y = op(torch.arange(32.0).reshape(4, 8))
        >>> y[0].tolist(), op.adjoint(y).shape
        ([0.0, 4.0, 7.0], torch.Size([4, 8]))
    """

    def __init__(
        self,
        image_shape,
        lines,
        *,
        selection: str = "even",
        seed: int = 0,
        noise: NoiseModel | None = None,
    ):
        shape = (image_shape,) if isinstance(image_shape, int) else tuple(int(s) for s in image_shape)
        if len(shape) < 2 or any(s <= 0 for s in shape):
            raise ValueError(
                f"ScanlineSubsampling: image_shape must be (H, W) or (C, H, W) with positive sizes, got {shape}"
            )
        W = shape[-1]
        idx = self._line_indices(lines, W, selection, seed)
        super().__init__(shape, shape[:-1] + (idx.numel(),), noise=noise)
        mask = torch.zeros(W, dtype=torch.bool)
        mask[idx] = True
        self.register_buffer("lines", idx)
        self.register_buffer("mask", mask)

    @staticmethod
    def _line_indices(lines, W: int, selection: str, seed: int) -> torch.Tensor:
        if isinstance(lines, bool):
            raise TypeError("ScanlineSubsampling: lines must be a count, a bool mask of shape (W,) or indices")
        if isinstance(lines, numbers.Integral) and not isinstance(lines, bool):
            k = int(lines)
            if not 1 <= k <= W:
                raise ValueError(f"ScanlineSubsampling: the line count must be in [1, {W}] (W), got {k}")
            if selection == "even":
                if k == 1:
                    return torch.tensor([W // 2], dtype=torch.long)
                pos = torch.linspace(0, W - 1, k, dtype=torch.float64)
                return torch.floor(pos + 0.5).long()  # spacing >= 1, so rounding half up keeps them distinct
            if selection == "random":
                g = torch.Generator().manual_seed(int(seed))
                return torch.sort(torch.randperm(W, generator=g)[:k]).values
            raise ValueError(f"ScanlineSubsampling: selection must be 'even' or 'random', got {selection!r}")
        t = torch.as_tensor(lines)
        if t.ndim != 1 or t.numel() == 0:
            raise ValueError(
                f"ScanlineSubsampling: lines must be a count, a (W,) bool mask or a non-empty 1-D index list, "
                f"got shape {tuple(t.shape)}"
            )
        if t.dtype == torch.bool:
            if t.numel() != W:
                raise ValueError(f"ScanlineSubsampling: a bool line mask must have W = {W} entries, got {t.numel()}")
            if not t.any():
                raise ValueError("ScanlineSubsampling: the line mask selects no line; select at least one")
            return torch.nonzero(t.cpu()).reshape(-1)
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"ScanlineSubsampling: line indices must be integers, got dtype {t.dtype}")
        t = t.long().cpu()
        if (t < 0).any() or (t >= W).any():
            raise ValueError(f"ScanlineSubsampling: line indices must lie in [0, {W - 1}], got {t.tolist()}")
        s = torch.sort(t).values
        if (s[1:] == s[:-1]).any():
            raise ValueError(f"ScanlineSubsampling: line indices must be distinct, got {t.tolist()}")
        return s

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lines={self.lines.numel()}/{self.mask.numel()}"

    def forward(self, x):
        return x.index_select(-1, self.lines.to(x.device))

    def adjoint(self, y):
        """Zero-filled image: the observed lines in place, zeros elsewhere; shape ``(*batch, *image_shape)``."""
        out = y.new_zeros(y.shape[:-1] + (self.in_shape[-1],))
        return out.index_copy(-1, self.lines.to(y.device), y)

    def pinv(self, y, **_ignored):
        """:math:`S^+ = S^T` (zero filling), exact since :math:`S S^T = I`."""
        y = self._prepare(y, self.out_shape, self.out_dtype, "ScanlineSubsampling measurement")
        return self.adjoint(y)

    def _posterior(self, z, y, rho):
        r"""Mean and per-pixel standard deviation of :math:`p(x \mid y, z)` (module docstring)."""
        z, y = self._coupling(z, y)
        std = self._gaussian_std().to(device=z.device, dtype=real_dtype(z.dtype))
        inv_var = 1.0 / std**2
        inv_var = inv_var.expand(torch.broadcast_shapes(inv_var.shape, self.out_shape))
        w = self.adjoint(inv_var)  # data precision per pixel, 0 on missing lines
        inv_rho2 = 1.0 / batch_scalar(rho, z, len(self.in_shape)) ** 2
        prec = w + inv_rho2
        mean = (self.adjoint(y * inv_var) + z * inv_rho2) / prec
        return mean, prec.rsqrt()

    def prox_likelihood(self, z, y, rho, **_ignored):
        r"""Closed form :math:`(S^T(y/\sigma_y^2) + z/\rho^2)/(S^T(1/\sigma_y^2) + 1/\rho^2)`, elementwise."""
        return self._posterior(z, y, rho)[0]

    def sample_conditional(self, z, y, rho, *, generator=None, **_ignored):
        r"""Exact draw: the proximal mean plus :math:`(S^T(1/\sigma_y^2) + 1/\rho^2)^{-1/2}\varepsilon`."""
        mean, sd = self._posterior(z, y, rho)
        return mean + sd * _standard_normal_like(mean, generator)


# ----------------------------------------------------------------------------------------------------------
# Plane-wave RF model
# ----------------------------------------------------------------------------------------------------------
def _positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"PlaneWaveRF: {name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"PlaneWaveRF: {name} must be a finite positive number, got {value!r}")
    return v


def _pulse_alpha(f0: float, bandwidth: float) -> float:
    """Envelope rate of the Gaussian pulse whose spectrum is 6 dB down (10^(-6/20)) at f0 (1 +- bandwidth/2)."""
    return (math.pi * f0 * bandwidth) ** 2 / (4 * 0.3 * math.log(10.0))


def _pulse(t: torch.Tensor, f0: float, bandwidth: float) -> torch.Tensor:
    """Gaussian-modulated cosine with -6 dB fractional bandwidth ``bandwidth`` (peak 1 at ``t = 0``)."""
    return torch.exp(-_pulse_alpha(f0, bandwidth) * t**2) * torch.cos(2 * math.pi * f0 * t)


class PlaneWaveRF(LinearOperator):
    r"""Reflectivity map ``(H, W)`` -> RF channel data ``(angles, elements, time samples)`` of steered plane waves.

    The model, the grid and the delay conventions are in the module docstring; the adjoint is delay-and-sum
    beamforming with the pulse as matched filter (:meth:`das`).

    Args:
        image_shape: ``(H, W)`` pixels: depth by lateral position.
        angles: steering angles in radians, a number or a 1-D sequence, each in ``(-pi/2, pi/2)``.
        n_elements: number of array elements ``E``.
        pitch: element spacing (m).
        pixel_size: ``dz`` or ``(dz, dx)`` (m); default half a wavelength ``c / (2 f0)`` in both directions.
            The beamformed (adjoint) image oscillates axially like the echoes (period :math:`\lambda/2`); for an
            unaliased RF-like image whose envelope along depth is meaningful use
            ``dz <= c / (4 f0 (1 + bandwidth / 2))``. Finer grids make :math:`A` ill-conditioned (a band-pass
            pulse cannot see the reflectivity's slow axial variations, nor a small aperture fine lateral
            detail), so generic conjugate-gradient ``pinv`` / ``prox_likelihood`` converge slowly there.
        depth_start: depth of the first pixel row (m), ``>= 0``.
        f0: pulse centre frequency (Hz).
        bandwidth: -6 dB fractional bandwidth of the pulse, in ``(0, 2)``.
        fs: RF sampling frequency (Hz), default ``4 * f0``; must exceed twice the pulse's upper -6 dB frequency
            ``f0 (1 + bandwidth / 2)``.
        c: speed of sound (m/s).
        n_samples: time samples ``T`` per trace; default just long enough for the deepest echo and its pulse.
            Echoes outside ``[0, T / fs)`` are dropped.
        upsample: the fine-grid factor of the fractional-delay interpolation (module docstring), integer ``>= 1``.
        pulse_cutoff_db: the pulse is truncated where its envelope is below ``-pulse_cutoff_db`` dB.
        directivity: multiply by the element obliquity :math:`z / |p - x_e|`.
        spreading: multiply by the cylindrical spreading loss :math:`\sqrt{1\,\mathrm{cm}/|p - x_e|}`.
        noise: measurement noise model of the RF data, e.g. ``GaussianNoise(0.01)``.

    Cost: per batch entry and angle, ``4 E H W`` multiply-adds for the taps, a scatter (forward) or gather
    (adjoint) of ``2 E H W`` values, and a ``(2 M + 1)``-tap strided convolution of ``E`` traces of
    ``T * upsample`` fine samples (``M`` the pulse half-length in fine samples); working memory
    ``E * T * upsample`` values per batch entry.

    Attributes:
        times: ``(T,)`` float64 sample times (s). depths ``(H,)``, laterals ``(W,)``, element_positions ``(E,)``
            (m), float64.

    Examples:
        >>> import torch
        >>> from invdiff.operators.ultrasound import PlaneWaveRF
        >>> op = PlaneWaveRF((16, 16), angles=(-0.1, 0.1), n_elements=8)
        >>> rf = op(torch.zeros(16, 16).index_put_((torch.tensor(8), torch.tensor(8)), torch.tensor(1.0)))
        >>> rf.shape == (2, 8, op.n_samples)
        True
        >>> image = op.das(rf, normalize=True)
        >>> round(float(image[8, 8]), 4)
        1.0
    """

    def __init__(
        self,
        image_shape,
        *,
        angles=(0.0,),
        n_elements: int = 64,
        pitch: float = 3e-4,
        pixel_size=None,
        depth_start: float = 5e-3,
        f0: float = 5e6,
        bandwidth: float = 0.6,
        fs: float | None = None,
        c: float = 1540.0,
        n_samples: int | None = None,
        upsample: int = 8,
        pulse_cutoff_db: float = 60.0,
        directivity: bool = False,
        spreading: bool = False,
        noise: NoiseModel | None = None,
    ):
        shape = tuple(int(s) for s in image_shape) if not isinstance(image_shape, int) else (image_shape,)
        if len(shape) != 2 or any(s <= 0 for s in shape):
            raise ValueError(f"PlaneWaveRF: image_shape must be (H, W) with positive sizes, got {shape}")
        H, W = shape
        ang = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
        if ang.numel() == 0 or not torch.isfinite(ang).all() or (ang.abs() >= math.pi / 2).any():
            raise ValueError(f"PlaneWaveRF: angles must be finite radians in (-pi/2, pi/2), got {angles!r}")
        if isinstance(n_elements, bool) or not isinstance(n_elements, numbers.Integral) or n_elements < 1:
            raise ValueError(f"PlaneWaveRF: n_elements must be a positive int, got {n_elements!r}")
        if isinstance(upsample, bool) or not isinstance(upsample, numbers.Integral) or upsample < 1:
            raise ValueError(f"PlaneWaveRF: upsample must be a positive int, got {upsample!r}")
        pitch, f0, c = _positive("pitch", pitch), _positive("f0", f0), _positive("c", c)
        pulse_cutoff_db = _positive("pulse_cutoff_db", pulse_cutoff_db)
        bandwidth = _positive("bandwidth", bandwidth)
        if bandwidth >= 2:
            raise ValueError(f"PlaneWaveRF: bandwidth is a fractional bandwidth in (0, 2), got {bandwidth}")
        fs = 4 * f0 if fs is None else _positive("fs", fs)
        f_high = f0 * (1 + bandwidth / 2)
        if fs <= 2 * f_high:
            raise ValueError(
                f"PlaneWaveRF: fs = {fs:.4g} Hz aliases the pulse; use fs > 2 f0 (1 + bandwidth/2) = "
                f"{2 * f_high:.4g} Hz (the default is 4 f0)"
            )
        depth_start = float(depth_start)
        if not (math.isfinite(depth_start) and depth_start >= 0):
            raise ValueError(f"PlaneWaveRF: depth_start must be a finite depth >= 0 (m), got {depth_start!r}")
        if pixel_size is None:
            pixel_size = c / (2 * f0)
        ps = (pixel_size, pixel_size) if isinstance(pixel_size, numbers.Real) or (torch.is_tensor(pixel_size) and pixel_size.ndim == 0) else tuple(pixel_size)
        if len(ps) != 2:
            raise ValueError(f"PlaneWaveRF: pixel_size must be a number or (dz, dx), got {pixel_size!r}")
        dz, dx = _positive("pixel_size", ps[0]), _positive("pixel_size", ps[1])

        E, U = int(n_elements), int(upsample)

        depths = depth_start + dz * torch.arange(H, dtype=torch.float64)
        laterals = dx * (torch.arange(W, dtype=torch.float64) - (W - 1) / 2)
        elements = pitch * (torch.arange(E, dtype=torch.float64) - (E - 1) / 2)
        zz = depths[:, None].expand(H, W).reshape(-1)
        xx = laterals[None, :].expand(H, W).reshape(-1)
        offset = (E - 1) / 2 * pitch * ang.sin().abs()
        tau_tx = (zz[None] * ang.cos()[:, None] + xx[None] * ang.sin()[:, None] + offset[:, None]) / c  # (A, P)
        dist = torch.sqrt(zz[None] ** 2 + (xx[None] - elements[:, None]) ** 2)  # (E, P)
        tau_rx = dist / c

        alpha = _pulse_alpha(f0, bandwidth)
        t_cut = math.sqrt(pulse_cutoff_db * math.log(10.0) / 20 / alpha)
        M = int(math.floor(t_cut * fs * U))
        if n_samples is None:
            t_max = float(tau_tx.max() + tau_rx.max())
            n_samples = int(math.ceil((t_max + t_cut) * fs)) + 1
        elif isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"PlaneWaveRF: n_samples must be a positive int, got {n_samples!r}")
        T = int(n_samples)
        super().__init__(shape, (ang.numel(), E, T), noise=noise)
        self.f0, self.fs, self.c, self.bandwidth, self.pitch = f0, fs, c, bandwidth, pitch
        self.pixel_size, self.depth_start, self.upsample = (dz, dx), depth_start, U
        self.n_samples, self._M = T, M

        gain = torch.ones_like(dist)
        if directivity:
            gain = gain * zz[None] / dist.clamp_min(1e-12)
        if spreading:
            gain = gain * torch.sqrt(1e-2 / dist.clamp_min(1e-12))
        pulse_fine = _pulse(torch.arange(-M, M + 1, dtype=torch.float64) / (fs * U), f0, bandwidth)
        self.register_buffer("angles", ang)
        self.register_buffer("depths", depths)
        self.register_buffer("laterals", laterals)
        self.register_buffer("element_positions", elements)
        self.register_buffer("times", torch.arange(T, dtype=torch.float64) / fs)
        self.register_buffer("_tx_fine", tau_tx * (fs * U))  # delays in fine-grid samples
        self.register_buffer("_rx_fine", tau_rx * (fs * U))
        self.register_buffer("_gain", None if (not directivity and not spreading) else gain)
        self.register_buffer("_kernel", pulse_fine.flip(0).reshape(1, 1, -1))  # conv1d correlates: flip
        self.register_buffer("_row_offset", (torch.arange(E) * (T * U))[:, None])  # int64 (E, 1)
        # per angle: do all delays lie inside the window? (a margin of 0.01 fine samples keeps floor() in range
        # for delays rounded to float32); if so the taps need no masking
        rx_min, rx_max = float(self._rx_fine.min()), float(self._rx_fine.max())
        self._inside = [float(t.min()) + rx_min >= 0.01 and float(t.max()) + rx_max <= T * U - 2.01
                        for t in self._tx_fine]
        self.register_buffer("_das_norm", self._diagonal_of_normal(pulse_fine))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, f0={self.f0:.3g}, fs={self.fs:.3g}, c={self.c:.4g}, pitch={self.pitch:.3g}, "
            f"pixel_size={self.pixel_size}, depth_start={self.depth_start:.3g}"
        )

    # -- the two-tap fractional delays ---------------------------------------------------------------------
    def _taps(self, a: int, like: torch.Tensor):
        """Fine-grid taps of angle ``a`` at ``like``'s precision and device.

        With ``u`` the delay in fine samples, the taps sit at ``floor(u)`` and ``floor(u) + 1``. Returns ``idx0``,
        int64 ``(E, P)`` flat indices of the first tap into angle ``a``'s ``(E, T * upsample)`` fine traces (the
        second tap is ``idx0 + 1``), and the weights ``w0, w1`` ``(E, P)``; delays outside the time window get weight 0.
        """
        TU = self.n_samples * self.upsample
        dev = like.device
        # delays reach ~1e4 fine samples: split them into integer and fraction in float64 (float32 would round
        # the fraction at ~1e-3), and cast only the weights to the working precision
        u = self._tx_fine[a].to(dev)[None, :] + self._rx_fine.to(dev)
        k0 = torch.floor(u)
        if self._inside[a]:  # every delay lies safely inside the window (decided once, in float64)
            valid = None
        else:
            valid = (u >= 0) & (u <= TU - 1)
            k0 = k0.clamp(0, TU - 2)
        w1 = u - k0
        gain = None if self._gain is None else self._gain.to(dev)
        if valid is not None:
            gain = valid.to(u.dtype) if gain is None else gain * valid
        if gain is None:
            w0 = 1 - w1
        else:
            w1 = gain * w1
            w0 = gain - w1
        wdtype = real_dtype(like.dtype)
        return k0.long() + self._row_offset.to(dev), w0.to(wdtype), w1.to(wdtype)

    def _diagonal_of_normal(self, pulse_fine: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\operatorname{diag}(A^T A)`, shape ``(H*W,)``, up to pulses clipped by the time window.

        A pixel's trace is :math:`w_0 h_U(tU - k_0) + w_1 h_U(tU - k_0 - 1)` on the coarse times; its energy is
        a quadratic form in :math:`(w_0, w_1)` whose Gram entries depend only on :math:`k_0 \bmod U`.
        """
        U, M = self.upsample, self._M
        n = (2 * M + 2 * U) // U + 2
        tU = U * torch.arange(-n, n + 1, dtype=torch.float64)

        def h_at(m):  # h_U(m) for integer m (zero outside the support)
            inside = (m >= -M) & (m <= M)
            return torch.where(inside, pulse_fine[(m + M).clamp(0, 2 * M).long()], torch.zeros_like(m))

        rows = torch.stack([h_at(tU - r) for r in range(U + 1)])  # (U+1, times)
        G = rows @ rows.T
        r = torch.arange(U)
        g00, g01, g11 = G[r, r], G[r, r + 1], G[r + 1, r + 1]
        diag = torch.zeros(self.in_shape[0] * self.in_shape[1], dtype=torch.float64)
        for a in range(self.angles.numel()):
            idx0, w0, w1 = self._taps(a, diag)
            rem = idx0 % U  # k0 mod U (the row offsets are multiples of U)
            diag += (w0**2 * g00[rem] + 2 * w0 * w1 * g01[rem] + w1**2 * g11[rem]).sum(0)
        return diag

    # -- forward / adjoint ---------------------------------------------------------------------------------
    def forward(self, x):
        return linear_autograd(self._rf_apply, x, False)

    def adjoint(self, y):
        return linear_autograd(self._rf_apply, y, True)

    def _rf_apply(self, v, transpose: bool):
        return self._adjoint_impl(v) if transpose else self._forward_impl(v)

    def _forward_impl(self, x):
        H, W = self.in_shape
        A, E, T = self.out_shape
        U = self.upsample
        xf = x.reshape(-1, 1, H * W)
        B = xf.shape[0]
        kernel = cast_like(self._kernel, x)
        out = []
        for a in range(A):  # one angle at a time bounds the fine traces' memory to B * E * T * U values
            idx0, w0, w1 = self._taps(a, x)
            fine = xf.new_zeros(B, E * T * U)  # taps accumulate in place (autograd-safe: a fresh tensor)
            fine.index_add_(1, idx0.reshape(-1), (xf * w0).reshape(B, -1))
            fine.index_add_(1, idx0.reshape(-1) + 1, (xf * w1).reshape(B, -1))
            out.append(F.conv1d(fine.reshape(B * E, 1, T * U), kernel, stride=U, padding=self._M).reshape(B, E, T))
        return torch.stack(out, dim=1).reshape(*x.shape[:-2], A, E, T)

    def _adjoint_impl(self, y):
        H, W = self.in_shape
        A, E, T = self.out_shape
        U = self.upsample
        yf = y.reshape(-1, A, E, T)
        B = yf.shape[0]
        kernel = cast_like(self._kernel, y)
        out = y.new_zeros(B, H * W)
        for a in range(A):
            # the matched filter: the transpose of the strided pulse convolution, back onto the fine grid
            fine = F.conv_transpose1d(
                yf[:, a].reshape(B * E, 1, T), kernel, stride=U, padding=self._M, output_padding=U - 1
            ).reshape(B, E * T * U)
            idx0, w0, w1 = self._taps(a, y)
            g0 = fine.index_select(1, idx0.reshape(-1)).reshape(B, E, H * W)
            g1 = fine.index_select(1, idx0.reshape(-1) + 1).reshape(B, E, H * W)
            out = out + (g0 * w0 + g1 * w1).sum(dim=1)  # delay and sum over elements, then over angles
        return out.reshape(*y.shape[:-3], H, W)

    def das(self, rf: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
        r"""Delay-and-sum beamforming with the pulse as matched filter: exactly :meth:`adjoint`.

        Args:
            rf: channel data, shape ``(*batch, angles, elements, time samples)``.
            normalize: divide each pixel by the exact diagonal of :math:`A^T A` (its point-scatterer energy), so
                a unit scatterer on a pixel beamforms to 1 there; pixels no echo reaches stay 0.

        Returns:
            The beamformed, RF-like image, shape ``(*batch, H, W)``; take :func:`envelope` along depth
            (``dim=-2``) for a B-mode image.
        """
        rf = self._prepare(rf, self.out_shape, self.out_dtype, "PlaneWaveRF channel data")
        img = self.adjoint(rf)
        if normalize:
            norm = cast_like(self._das_norm, img).to(img.device).reshape(self.in_shape)
            img = torch.where(norm > 0, img / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.zeros_like(img))
        return img

    beamform = das


# ----------------------------------------------------------------------------------------------------------
# Utilities
# ----------------------------------------------------------------------------------------------------------
def _real_input(x, what: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.is_complex():
        raise TypeError(f"{what}: expected a real tensor, got dtype {x.dtype}")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def analytic_signal(rf: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""The discrete analytic signal :math:`x + i\,\mathcal H x` along ``dim``, by FFT (Marple 1999).

    The spectrum's negative frequencies are zeroed and the positive ones doubled (DC and, for even length,
    Nyquist kept once) — the construction of ``scipy.signal.hilbert``; its real part is ``rf`` exactly.

    Args:
        rf: real signal, any shape ``(..., n, ...)`` with ``n`` along ``dim``.
        dim: the time (or depth) dimension.

    Returns:
        Complex tensor of ``rf``'s shape (complex64 for float32 input, complex128 for float64).
    """
    x = _real_input(rf, "analytic_signal")
    n = x.shape[dim]
    h = torch.zeros(n, dtype=x.dtype, device=x.device)
    h[0] = 1
    if n % 2 == 0:
        h[1 : n // 2] = 2
        h[n // 2] = 1
    else:
        h[1 : (n + 1) // 2] = 2
    shape = [1] * x.ndim
    shape[dim] = n
    return torch.fft.ifft(torch.fft.fft(x, dim=dim) * h.reshape(shape), dim=dim)


def envelope(rf: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Envelope :math:`|x + i\,\mathcal H x|` of a real RF signal along ``dim`` (Hilbert transform by FFT).

    Args:
        rf: real RF data or an RF-like beamformed image, any shape; ``dim`` is time (use ``dim=-2``, depth, for
            an image ``(..., H, W)``).
        dim: the dimension along which the signal oscillates.

    Returns:
        Real non-negative tensor of ``rf``'s shape and precision.

    Examples:
        >>> import math, torch
        >>> t = torch.linspace(-1, 1, 201, dtype=torch.float64)
        >>> env = envelope(torch.exp(-8 * t**2) * torch.cos(2 * math.pi * 20 * t))
        >>> abs(float(env[100]) - 1.0) < 1e-3
        True
    """
    return analytic_signal(rf, dim=dim).abs()


def log_compress(
    env: torch.Tensor,
    dynamic_range_db: float = 60.0,
    *,
    reference=None,
    image_ndim: int = 2,
    output: str = "unit",
) -> torch.Tensor:
    r"""Log compression of an envelope for display: :math:`20\log_{10}(\mathrm{env}/\mathrm{ref})` in dB.

    The dB values are clipped to ``[-dynamic_range_db, 0]``; ``output="unit"`` maps them linearly to ``[0, 1]``
    (``-dynamic_range_db`` dB -> 0, 0 dB -> 1), ``output="db"`` returns them.

    Args:
        env: non-negative envelope, shape ``(*batch, *image)`` with ``image_ndim`` image dims.
        dynamic_range_db: displayed dynamic range in dB, ``> 0``.
        reference: the 0 dB level, a number or a tensor broadcastable to ``env``; default the maximum of each
            image (over the last ``image_ndim`` dims).
        image_ndim: number of trailing dims forming one image (for the default reference).
        output: ``"unit"`` or ``"db"``.

    Returns:
        Tensor of ``env``'s shape.

    Examples:
        >>> import torch
        >>> log_compress(torch.tensor([[1.0, 0.1, 0.001, 0.0]]), 40).tolist()
        [[1.0, 0.5, 0.0, 0.0]]
    """
    x = _real_input(env, "log_compress")
    if not (float(dynamic_range_db) > 0 and math.isfinite(float(dynamic_range_db))):
        raise ValueError(f"log_compress: dynamic_range_db must be a positive number, got {dynamic_range_db!r}")
    if output not in ("unit", "db"):
        raise ValueError(f"log_compress: output must be 'unit' or 'db', got {output!r}")
    if bool((x < 0).any()):
        raise ValueError("log_compress: env must be non-negative; take envelope(rf) (or abs) first")
    if reference is None:
        if not 1 <= image_ndim <= x.ndim:
            raise ValueError(f"log_compress: image_ndim must be in [1, {x.ndim}] for this input, got {image_ndim}")
        ref = x.amax(dim=tuple(range(-image_ndim, 0)), keepdim=True)
    else:
        ref = torch.as_tensor(reference, dtype=x.dtype, device=x.device)
    tiny = torch.finfo(x.dtype).tiny
    db = 20 * torch.log10(x.clamp_min(tiny) / ref.clamp_min(tiny))
    db = db.clamp(-float(dynamic_range_db), 0.0)
    db = torch.where(ref > 0, db, torch.full_like(db, -float(dynamic_range_db)))  # a blank image stays black
    return db if output == "db" else (db + float(dynamic_range_db)) / float(dynamic_range_db)


def speckle(x: torch.Tensor, generator: torch.Generator | None = None, *, looks: int = 1) -> torch.Tensor:
    r"""Multiplicative, mean-preserving speckle on an amplitude image: ``x * sqrt(I_L) / c_L``.

    :math:`I_L` is the mean of ``looks`` independent unit-mean exponential intensities (a Gamma(L, 1/L) draw,
    built from :math:`2L` standard normals), so :math:`\sqrt{I_L}` is Rayleigh for ``looks=1`` (Nakagami-L in
    general); :math:`c_L = \Gamma(L+1/2)/(\Gamma(L)\sqrt L)` makes the factor's mean 1 (module docstring).

    Args:
        x: non-negative amplitude (envelope) image, any shape; every entry gets an independent factor.
        generator: seeds the draw (on ``x``'s device).
        looks: number of averaged independent looks ``L >= 1``; the factor's variance is :math:`1/c_L^2 - 1`
            (0.273 for one look).

    Returns:
        Tensor of ``x``'s shape and dtype with mean ``x``.
    """
    x = _real_input(x, "speckle")
    if isinstance(looks, bool) or not isinstance(looks, numbers.Integral) or looks < 1:
        raise ValueError(f"speckle: looks must be a positive int, got {looks!r}")
    n = torch.randn((2 * looks,) + tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)
    intensity = (n**2).mean(dim=0)  # Gamma(L, 1/L): mean 1
    c_L = math.exp(math.lgamma(looks + 0.5) - math.lgamma(looks)) / math.sqrt(looks)
    return x * intensity.sqrt() / c_L


def _gauss_kernel(length: float, dtype, device) -> torch.Tensor:
    """1-D unit-energy Gaussian of std ``length / sqrt(2)`` pixels (field correlation exp(-d^2/(2 length^2)))."""
    s = length / math.sqrt(2)
    radius = max(1, int(math.ceil(4 * s)))
    i = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * s**2))
    return (k / k.square().sum().sqrt()).to(device=device, dtype=dtype)


def haze(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    strength: float = 0.1,
    correlation_length=4.0,
) -> torch.Tensor:
    r"""Additive spatially correlated Gaussian haze over the last two dims: ``x + strength * h``.

    ``h`` is white Gaussian noise filtered by a separable Gaussian of standard deviation
    ``correlation_length / sqrt(2)`` pixels per axis and scaled to unit variance, drawn on a padded domain so
    it is stationary up to the image border: :math:`\mathrm{corr}(h(p), h(p + d)) \approx \exp(-d^2/2\ell^2)`.

    Args:
        x: image, shape ``(*batch, H, W)``; each batch entry gets its own haze field.
        generator: seeds the draw (on ``x``'s device).
        strength: standard deviation of the haze, ``>= 0``, in the image's units.
        correlation_length: :math:`\ell` in pixels, a number or ``(l_H, l_W)``, each ``> 0``.

    Returns:
        Tensor of ``x``'s shape and dtype.
    """
    x = _real_input(x, "haze")
    if x.ndim < 2:
        raise ValueError(f"haze: expected an image (*batch, H, W), got shape {tuple(x.shape)}")
    strength = float(strength)
    if not (math.isfinite(strength) and strength >= 0):
        raise ValueError(f"haze: strength must be a finite number >= 0, got {strength!r}")
    ls = (correlation_length,) * 2 if isinstance(correlation_length, (int, float)) else tuple(correlation_length)
    if len(ls) != 2 or not all(math.isfinite(float(v)) and float(v) > 0 for v in ls):
        raise ValueError(
            f"haze: correlation_length must be a positive number of pixels or (l_H, l_W), got {correlation_length!r}"
        )
    kh, kw = (_gauss_kernel(float(v), x.dtype, x.device) for v in ls)
    rh, rw = kh.numel() // 2, kw.numel() // 2
    H, W = x.shape[-2:]
    noise = torch.randn(
        (math.prod(x.shape[:-2]), 1, H + 2 * rh, W + 2 * rw), generator=generator, device=x.device, dtype=x.dtype
    )
    field = F.conv2d(F.conv2d(noise, kh.reshape(1, 1, -1, 1)), kw.reshape(1, 1, 1, -1))
    return x + strength * field.reshape(x.shape)
