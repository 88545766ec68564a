"""Seeding and argument checks shared by the generated datasets."""

from __future__ import annotations

import numbers

import numpy as np
import torch

CHUNK = 64  # images per independently seeded block: image k does not depend on n
SPLITS = ("train", "test")


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def block_generator(tag: int, seed: int, split: str, block: int) -> torch.Generator:
    """A generator for one block of images, seeded from (dataset tag, seed, split, block) by SeedSequence.

    Distinct (seed, split) pairs give statistically independent streams, so train and test never share draws.
    """
    state = np.random.SeedSequence([tag, seed, SPLITS.index(split), block]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
