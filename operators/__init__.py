"""Forward models: the physics of each modality, with exact adjoints and noise models.

Installed as ``invdiff.operators``. See :mod:`invdiff.operators.base` for the interface.
"""

from .base import LinearOperator, Operator
from .linear import AdjointOperator, ComposedLinearOperator, ComposedOperator, MatrixOperator, compose
from .noise import GaussianNoise, NoiseModel

__all__ = [
    "Operator",
    "LinearOperator",
    "MatrixOperator",
    "AdjointOperator",
    "ComposedOperator",
    "ComposedLinearOperator",
    "compose",
    "NoiseModel",
    "GaussianNoise",
]
