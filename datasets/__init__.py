"""Data for invdiff: generators and loaders that need no network (installed as ``invdiff.datasets``)."""

from .ct import EllipsePhantoms, shepp_logan
from .kolmogorov import KolmogorovFlow, KolmogorovSolver
from .mri import BRAIN_SLICES_FILE, BrainSlices, MRIFolder
from .natural import NATURAL_IMAGES, NaturalPatches, natural_image
from .ultrasound import BModeImages, HazeFields

__all__ = ["NaturalPatches", "natural_image", "NATURAL_IMAGES", "EllipsePhantoms", "shepp_logan", "BrainSlices",
           "MRIFolder", "BRAIN_SLICES_FILE", "BModeImages", "HazeFields",
           "KolmogorovFlow", "KolmogorovSolver"]
