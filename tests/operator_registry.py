"""Every operator of the package, built small. A new operator joins this registry, not a new test:
``tests/test_operator_contract.py`` runs ``invdiff.testing.check_operator`` over all of them.

Each modality keeps its entries in ``tests/registry_<modality>.py`` (a module-level ``OPERATORS`` dict of
name -> zero-argument factory); they are merged here.
"""

import importlib
import pathlib

import torch

from invdiff.operators import GaussianNoise, MatrixOperator

_g = torch.Generator().manual_seed(0)


def _randn(*shape, dtype=torch.float64):
    if dtype.is_complex:
        return torch.complex(torch.randn(*shape, generator=_g, dtype=torch.float64),
                             torch.randn(*shape, generator=_g, dtype=torch.float64))
    return torch.randn(*shape, generator=_g, dtype=dtype)


def matrix_wide():
    return MatrixOperator(_randn(3, 5), noise=GaussianNoise(0.1))


def matrix_tall_image():
    return MatrixOperator(_randn(12, 8), noise=GaussianNoise(0.2), in_shape=(2, 2, 2), out_shape=(3, 4))


def matrix_complex():
    return MatrixOperator(_randn(4, 6, dtype=torch.complex128), noise=GaussianNoise(0.3))


def matrix_per_measurement_noise():
    return MatrixOperator(_randn(5, 4), noise=GaussianNoise(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])))


def matrix_rank_deficient():
    U = _randn(6, 2)
    return MatrixOperator(U @ _randn(2, 5), noise=GaussianNoise(0.05))


def composed_linear():
    return matrix_wide() @ MatrixOperator(_randn(5, 7))


def composed_adjoint():
    return matrix_wide().H @ matrix_wide()


def mri_of_real_image():
    """A real (1, H, W) image prior's view of single-coil MRI: Reshape, RealToComplex, then k-space."""
    from invdiff.operators import MRI, RealToComplex, Reshape

    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[:, ::2] = True
    return MRI(mask, noise=GaussianNoise(0.1)) @ RealToComplex((6, 8)) @ Reshape((1, 6, 8), (6, 8))


OPERATORS = {
    "matrix_wide": matrix_wide,
    "matrix_tall_image": matrix_tall_image,
    "matrix_complex": matrix_complex,
    "matrix_per_measurement_noise": matrix_per_measurement_noise,
    "matrix_rank_deficient": matrix_rank_deficient,
    "composed_linear": composed_linear,
    "composed_adjoint": composed_adjoint,
    "mri_of_real_image": mri_of_real_image,
}


for _path in sorted(pathlib.Path(__file__).parent.glob("registry_*.py")):
    _extra = importlib.import_module(_path.stem).OPERATORS
    _clash = set(_extra) & set(OPERATORS)
    if _clash:
        raise RuntimeError(f"{_path.name} re-registers operators {sorted(_clash)}")
    OPERATORS.update(_extra)
