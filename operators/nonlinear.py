r"""Magnitude-only measurements: :math:`y = |A x|`, and Fourier phase retrieval.

:class:`Magnitude` wraps any linear operator (often complex-valued: a Fourier transform, a coded-diffraction
pattern) and keeps only the modulus of each entry. It is nonlinear and loses a global phase (and, for Fourier
phase retrieval, shifts and the conjugate flip), so its posterior is multimodal: the case that tells samplers
apart. Its vector-Jacobian product is :math:`J^H v = \mathrm{Re}\,A^H\big(\tfrac{Ax}{|Ax|}\, v\big)` for real
inputs, with the phase factor taken as 0 where :math:`Ax = 0` (the subgradient of smallest norm).

:class:`PhaseRetrieval` is the usual benchmark: the image is zero-padded by the oversampling factor and the
measurement is the modulus of its orthonormal 2-D FFT (as in the DPS experiments, oversampling 2).

References:
    Fienup, "Phase retrieval algorithms: a comparison", Applied Optics 1982.
    Chung et al., "Diffusion Posterior Sampling for General Noisy Inverse Problems", ICLR 2023.
"""

from __future__ import annotations

import math

import torch

from invdiff.linalg import complex_dtype, real_dtype

from .base import LinearOperator, Operator
from .noise import NoiseModel

__all__ = ["Magnitude", "PhaseRetrieval", "PaddedFFT"]


class Magnitude(Operator):
    r""":math:`y = |A x|`, entrywise modulus of a linear operator's output (real, non-negative).

    Args:
        linear: the inner :class:`LinearOperator` (its own noise model is ignored).
        noise: the noise model of the magnitudes, e.g. ``GaussianNoise(0.05)``.
    """

    def __init__(self, linear: LinearOperator, *, noise: NoiseModel | None = None):
        if not isinstance(linear, LinearOperator):
            raise TypeError(f"Magnitude: expected a LinearOperator, got {type(linear).__name__}")
        super().__init__(linear.in_shape, linear.out_shape, noise=noise, in_dtype=linear.in_dtype,
                         out_dtype=real_dtype(linear.out_dtype))
        self.linear = linear.with_noise(None)

    def forward(self, x):
        return self.linear(x).abs()

    def vjp(self, x, v):
        x = self._prepare(x, self.in_shape, self.in_dtype, "Magnitude input")
        z = self.linear(x)
        mag = z.abs()
        phase = torch.where(mag > 0, z / torch.where(mag > 0, mag, torch.ones_like(mag)), torch.zeros_like(z))
        g = self.linear.adjoint(phase * v.to(mag.dtype))
        return g if x.is_complex() else (g.real if g.is_complex() else g)


class PaddedFFT(LinearOperator):
    r"""Zero-pad a real image ``(*batch, H, W)`` to ``(P, Q)`` (centred) and take its orthonormal 2-D FFT.

    A real-to-complex linear map; its adjoint for the real inner product is the real part of the cropped
    inverse FFT.

    Args:
        image_shape: ``(H, W)``.
        padded_shape: ``(P, Q)`` with ``P >= H``, ``Q >= W``.
    """

    def __init__(self, image_shape, padded_shape, *, noise: NoiseModel | None = None):
        H, W = (int(s) for s in image_shape)
        P, Q = (int(s) for s in padded_shape)
        if P < H or Q < W:
            raise ValueError(f"PaddedFFT: padded_shape {(P, Q)} must be at least the image shape {(H, W)}")
        super().__init__((H, W), (P, Q), noise=noise, in_dtype=torch.float32, out_dtype=torch.complex64)
        self.offset = ((P - H) // 2, (Q - W) // 2)

    def forward(self, x):
        H, W = self.in_shape
        P, Q = self.out_shape
        t, l = self.offset
        padded = torch.nn.functional.pad(x, (l, Q - W - l, t, P - H - t))
        return torch.fft.fft2(padded.to(complex_dtype(x.dtype)), norm="ortho")

    def adjoint(self, y):
        H, W = self.in_shape
        t, l = self.offset
        return torch.fft.ifft2(y, norm="ortho")[..., t : t + H, l : l + W].real


class PhaseRetrieval(Magnitude):
    r"""Fourier phase retrieval: :math:`y = |\mathcal F\, \mathrm{pad}(x)|` for a real image.

    Args:
        image_shape: ``(H, W)``.
        oversampling: the padded size is ``ceil(oversampling * H) x ceil(oversampling * W)`` (default 2).
        noise: noise model of the Fourier magnitudes.

    Examples:
        >>> import torch
        >>> op = PhaseRetrieval((8, 8))
        >>> x = torch.rand(8, 8)
        >>> bool(torch.allclose(op(x), op(torch.flip(x, (0, 1)))))   # the conjugate flip is invisible
        True
    """

    def __init__(self, image_shape, oversampling: float = 2.0, *, noise: NoiseModel | None = None):
        if not oversampling >= 1:
            raise ValueError(f"PhaseRetrieval: oversampling must be >= 1, got {oversampling}")
        H, W = (int(s) for s in image_shape)
        super().__init__(PaddedFFT((H, W), (math.ceil(oversampling * H), math.ceil(oversampling * W))), noise=noise)
        self.oversampling = float(oversampling)
