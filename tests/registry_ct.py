"""Registry entries of operators/ct.py and operators/nonlinear.py (merged into operator_registry.OPERATORS)."""

import math

import torch

from invdiff.operators import GaussianNoise
from invdiff.operators.ct import FanBeamCT, ParallelBeamCT, TransmissionCT, TransmissionNoise
from invdiff.operators.nonlinear import Magnitude, PaddedFFT, PhaseRetrieval


def ct_parallel_sparse_view():
    return ParallelBeamCT((10, 12), 7, noise=GaussianNoise(0.1))


def ct_parallel_limited_angle_matrix_free():
    return ParallelBeamCT((9, 9), 6, angle_range=(0, 2 * math.pi / 3), storage="matrix_free", max_entries=400,
                          noise=GaussianNoise(0.05))


def ct_parallel_offset_physical_units():
    return ParallelBeamCT((8, 10), torch.tensor([0.1, 0.9, 1.7, 2.9]), 14, detector_spacing=0.7,
                          detector_offset=0.3, pixel_size=0.5, center=(4.0, 5.0), noise=GaussianNoise(0.02))


def ct_fan_beam():
    return FanBeamCT((10, 12), 9, 30.0, 50.0, noise=GaussianNoise(0.1))


def ct_parallel_low_dose_counts():
    return ParallelBeamCT((8, 8), 5, noise=TransmissionNoise(1e3))


def ct_transmission_nonlinear():
    return TransmissionCT(ParallelBeamCT((8, 8), 5), 1e3)


def nonlinear_phase_retrieval():
    return PhaseRetrieval((6, 5), noise=GaussianNoise(0.1))


def nonlinear_padded_fft():
    return PaddedFFT((6, 5), (8, 9), noise=GaussianNoise(0.1))


def nonlinear_magnitude_of_ct():
    return Magnitude(ParallelBeamCT((6, 6), 3), noise=GaussianNoise(0.1))


OPERATORS = {f.__name__: f for f in (
    ct_parallel_sparse_view, ct_parallel_limited_angle_matrix_free, ct_parallel_offset_physical_units, ct_fan_beam,
    ct_parallel_low_dose_counts, ct_transmission_nonlinear, nonlinear_phase_retrieval, nonlinear_padded_fft,
    nonlinear_magnitude_of_ct,
)}
