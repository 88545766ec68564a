"""Forward models: the physics of each modality, with exact adjoints and noise models.

Installed as ``invdiff.operators``. See :mod:`invdiff.operators.base` for the interface.
"""

from .base import LinearOperator, Operator
from .linear import (
    AdjointOperator, ComposedLinearOperator, ComposedOperator, MatrixOperator, RealToComplex, Reshape, compose,
)
from .noise import GaussianNoise, NoiseModel
from .blur import Blur, Denoising, Inpainting, SuperResolution
from .ct import FanBeamCT, ParallelBeamCT, PoissonNoise, TransmissionCT, TransmissionNoise
from .mri import MRI, MaskedGaussianNoise, NonCartesianMRI
from .nonlinear import Magnitude, PhaseRetrieval
from .ultrasound import PlaneWaveRF, ScanlineSubsampling
from .weather import CoarseGrid, StationObservations, TimeSubsampling

__all__ = [
    "Operator",
    "LinearOperator",
    "MatrixOperator",
    "AdjointOperator",
    "ComposedOperator",
    "ComposedLinearOperator",
    "compose",
    "Reshape",
    "RealToComplex",
    "NoiseModel",
    "GaussianNoise",
    "PoissonNoise",
    "TransmissionNoise",
    # modalities (kernels, masks and other helpers live in their modules: invdiff.operators.blur, ...)
    "Blur",
    "SuperResolution",
    "Inpainting",
    "Denoising",
    "ParallelBeamCT",
    "FanBeamCT",
    "TransmissionCT",
    "MRI",
    "NonCartesianMRI",
    "MaskedGaussianNoise",
    "ScanlineSubsampling",
    "PlaneWaveRF",
    "Magnitude",
    "PhaseRetrieval",
    "StationObservations",
    "CoarseGrid",
    "TimeSubsampling",
]
