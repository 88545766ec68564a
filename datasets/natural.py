"""Grayscale natural-image patches from the photographs that scikit-image ships (no download).

Source: ``skimage.data`` (scikit-image, BSD-3-Clause; the individual images' licences are listed in
scikit-image's ``skimage/data/README.txt``). Values are in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["NATURAL_IMAGES", "natural_image", "NaturalPatches"]

#: Grayscale (or converted-to-gray) images bundled with scikit-image, loadable offline.
NATURAL_IMAGES = ("camera", "moon", "coins", "page", "text", "brick", "grass", "gravel", "astronaut", "coffee",
                  "chelsea", "rocket", "clock")


def natural_image(name: str) -> torch.Tensor:
    """One scikit-image picture as a float32 ``(H, W)`` tensor in [0, 1] (colour images converted to gray)."""
    import skimage.color
    import skimage.data

    if name not in NATURAL_IMAGES:
        raise ValueError(f"unknown image {name!r}; choose one of {', '.join(NATURAL_IMAGES)}")
    im = getattr(skimage.data, name)()
    if im.ndim == 3:
        im = skimage.color.rgb2gray(im[..., :3])
    im = np.asarray(im, dtype=np.float64)
    if im.max() > 1.0:
        im = im / 255.0
    return torch.from_numpy(im).to(torch.float32)


class NaturalPatches(Dataset):
    """Random ``(1, size, size)`` patches of scikit-image's photographs, values in [0, 1].

    Args:
        size: patch side in pixels.
        n: number of patches (the dataset's length).
        images: names from :data:`NATURAL_IMAGES` to cut from.
        seed: seeds the patch positions; the same arguments always give the same patches.

    Examples:
        >>> ds = NaturalPatches(size=8, n=4, images=("camera",), seed=0)
        >>> ds[0].shape, float(ds[0].min()) >= 0.0
        (torch.Size([1, 8, 8]), True)
    """

    def __init__(self, size: int = 16, n: int = 10_000, *, images=("camera", "moon", "coins", "brick"), seed: int = 0):
        if size < 1 or n < 1:
            raise ValueError(f"size and n must be positive, got size={size}, n={n}")
        pics = [natural_image(name) for name in images]
        small = [name for name, p in zip(images, pics) if min(p.shape) < size]
        if small:
            raise ValueError(f"patch size {size} exceeds image(s) {small}")
        g = torch.Generator().manual_seed(seed)
        which = torch.randint(len(pics), (n,), generator=g)
        patches = torch.empty(n, 1, size, size)
        for i, k in enumerate(which.tolist()):
            H, W = pics[k].shape
            r = int(torch.randint(H - size + 1, (1,), generator=g))
            c = int(torch.randint(W - size + 1, (1,), generator=g))
            patches[i, 0] = pics[k][r : r + size, c : c + size]
        self.patches = patches
        self.size = size

    def __len__(self) -> int:
        return self.patches.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.patches[i]
