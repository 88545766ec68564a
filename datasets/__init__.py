"""Data for invdiff: generators and loaders that need no network (installed as ``invdiff.datasets``)."""

from .natural import NATURAL_IMAGES, NaturalPatches, natural_image

__all__ = ["NaturalPatches", "natural_image", "NATURAL_IMAGES"]
