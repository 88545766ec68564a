r"""MRI images: bundled slices of a real T1-weighted brain, and a loader for a folder of the user's scans.

Nothing here downloads anything.

* :class:`BrainSlices` serves 2-D slices of the **Colin 27** T1-weighted templates that Debian's ``mricron-data``
  package ships (``ch2.nii.gz``, the whole head, and ``ch2better.nii.gz``, the skull-stripped brain; upstream
  MRIcron, BSD-3-Clause per Debian's copyright file). ``datasets/data/make_brain_slices.py`` cut them once into
  ``datasets/data/brain_slices.npz`` (374 slices, 128 x 128, uint8, 1.6875 mm pixels, axial / coronal / sagittal
  every 2 mm); ``datasets/data/BRAIN_SLICES_LICENSE.txt`` records the source, the package version and the
  licence. All slices show **one** person, so a prior trained on them learns one anatomy from many positions.
* :class:`MRIFolder` reads every NIfTI (``.nii``, ``.nii.gz``), DICOM (``.dcm``, needs ``pydicom``) and fastMRI
  HDF5 (``.h5``) file in a folder and turns each into 2-D images.

Intensities. Every image is a magnitude in [0, 1]: a volume :math:`v` is mapped to
:math:`\mathrm{clip}\big((v - p_\mathrm{lo}) / (p_\mathrm{hi} - p_\mathrm{lo}), 0, 1\big)` with
:math:`p_\mathrm{lo}, p_\mathrm{hi}` its 0.5th and 99.5th percentiles (over the whole volume, so the slices of one
scan keep their relative brightness). A fastMRI file without ``reconstruction_rss`` is reconstructed from its
``kspace`` as the root-sum-of-squares image :math:`\sqrt{\sum_c |\mathcal F^{-1} k_c|^2}` with the centred
orthonormal inverse DFT of :mod:`invdiff.operators.mri` (single-coil: :math:`|\mathcal F^{-1} k|`).

Orientation (radiological display, the one clinical viewers and fastMRI images use). NIfTI volumes are first
turned to the closest RAS+ orientation (``nibabel.as_closest_canonical``); then

* axial: rows run anterior (top) to posterior, columns patient right (image left) to patient left;
* coronal: rows superior (top) to inferior, columns patient right to patient left;
* sagittal: rows superior to inferior, columns anterior (image left) to posterior.

DICOM and fastMRI images are taken in their stored row / column order (already a display order).

Resizing. Non-square pixels are first resampled to square ones (from the NIfTI zooms or the DICOM
``PixelSpacing``), the image is made square (``fit="pad"``: zero-pad the short side, keeping the whole field of
view; ``fit="crop"``: centre-crop the long side -- use it for fastMRI k-space, whose readout is 2x oversampled),
then resized to ``size x size`` with an anti-aliased bilinear filter (non-negative weights: no overshoot, the
range stays [0, 1]).

References:
    C. J. Holmes, R. Hoge, L. Collins, R. Woods, A. W. Toga, A. C. Evans, "Enhancement of MR images using
    registration for signal averaging", J. Comput. Assist. Tomogr. 22(2), 1998 (the Colin 27 brain).

    J. Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI", arXiv:1811.08839, 2018
    (the HDF5 layout: ``kspace``, ``reconstruction_rss``).

    P. B. Roemer, W. A. Edelstein, C. E. Hayes, S. P. Souza, O. M. Mueller, "The NMR phased array", Magn.
    Reson. Med. 16(2), 1990 (root-sum-of-squares coil combination).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["BrainSlices", "MRIFolder", "BRAIN_SLICES_FILE"]

#: The bundled slices (inside the installed package; read with NumPy, no network).
BRAIN_SLICES_FILE = Path(__file__).resolve().parent / "data" / "brain_slices.npz"

_PLANES = ("axial", "coronal", "sagittal")
_VOLUMES = ("head", "brain")
_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".h5", ".hdf5")
_CHUNK = 1024  # augmentation parameters are drawn per chunk of this many samples (so sample i ignores n)


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------
def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer (pixels per side), got {size!r}")
    return int(size)


def _resize(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Anti-aliased bilinear resize of ``(N, H, W)`` float images to ``(N, *shape)``; convex weights, no overshoot."""
    if tuple(x.shape[-2:]) == tuple(shape) or x.shape[0] == 0:
        return x.clone()
    return F.interpolate(x[:, None], size=shape, mode="bilinear", antialias=True, align_corners=False)[:, 0]


def _square(x: torch.Tensor, fit: str) -> torch.Tensor:
    """Zero-pad (``fit="pad"``) or centre-crop (``"crop"``) ``(N, H, W)`` to a square."""
    H, W = x.shape[-2:]
    if H == W:
        return x
    if fit == "pad":
        L = max(H, W)
        top, left = (L - H) // 2, (L - W) // 2
        return F.pad(x, (left, L - W - left, top, L - H - top))
    L = min(H, W)
    top, left = (H - L) // 2, (W - L) // 2
    return x[:, top : top + L, left : left + L]


def _normalise(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``v`` to [0, 1] by the range ``[lo, hi]`` (an empty range gives zeros); C-contiguous float32."""
    if not hi > lo:
        return np.zeros(v.shape, dtype=np.float32)
    return np.ascontiguousarray(np.clip((v - lo) / (hi - lo), 0.0, 1.0), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Bundled Colin 27 slices
# ---------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _bundle() -> dict:
    if not BRAIN_SLICES_FILE.exists():
        raise FileNotFoundError(
            f"{BRAIN_SLICES_FILE} is missing from this installation; reinstall invdiff, or rebuild it with "
            "datasets/data/make_brain_slices.py (needs Debian's mricron-data)"
        )
    with np.load(BRAIN_SLICES_FILE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _stream(seed: int, *key: int) -> torch.Generator:
    """An independent seeded generator for one (seed, purpose, chunk) key."""
    state = np.random.SeedSequence([seed, *key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


class BrainSlices(Dataset):
    r"""2-D slices of a real T1-weighted brain MRI (Colin 27), ``(1, size, size)`` float32 in [0, 1].

    The bundled file holds 374 slices (128 x 128 pixels of 1.6875 mm; 216 mm field of view): axial, coronal and
    sagittal every 2 mm through the brain, of the whole head (``volume="head"``, from ``ch2.nii.gz``: scalp,
    skull, brain, background 0) and of the skull-stripped brain (``"brain"``, from ``ch2better.nii.gz``). Slices
    are resized to ``size`` (anti-aliased) and, with ``augment``, each sample is one slice under a seeded random

    * rotation by an angle uniform in [-10, 10] degrees,
    * zoom log-uniform in [0.9, 1.1] and shift uniform in +-4 % of the field of view per axis,
    * left-right flip with probability 1/2 (the brain is nearly symmetric),
    * intensity gamma :math:`x \mapsto x^\gamma`, :math:`\gamma` log-uniform in [0.8, 1.25],

    all of which keep the values in [0, 1] (bilinear resampling with zero fill, then a power). So ``n`` may
    exceed the number of slices. Slices are drawn by cycling through seeded permutations (each slice used
    equally often); the parameters of sample ``i`` come from a stream keyed by ``(seed, i // 1024)``, so the first
    samples do not change when ``n`` grows. Generation time: 10,000 augmented samples of 64 x 64 take about 1.2 s
    on one CPU core (the 139 un-augmented train head slices 0.01 s).

    Splits: slice positions are cut into 16 mm blocks of world (MNI) coordinate along the slice normal; one block
    in five is ``"test"`` (96 slices: 48 head + 48 brain), the rest ``"train"`` (278), and train slices within
    4 mm of a test slice were left out, so neighbouring near-identical slices never straddle the split (and the
    head and brain slices of one position share a split). Source, package version and licence (BSD-3-Clause,
    per Debian's copyright file for ``mricron-data``): ``datasets/data/BRAIN_SLICES_LICENSE.txt``.

    Args:
        n: number of samples; ``None`` = one per slice of the selection. Without ``augment`` at most that many
            (the first ``n`` of a seeded permutation; ``None`` keeps the stored order: volume, plane, position).
        size: output side in pixels (the stored slices are 128; larger sizes interpolate).
        split: ``"train"`` or ``"test"``.
        augment: apply the random transforms above.
        volume: ``"head"`` (default), ``"brain"`` or ``"both"``.
        planes: any of ``"axial"``, ``"coronal"``, ``"sagittal"``.
        seed: non-negative integer; the same arguments always give the same images.

    Attributes:
        images: all samples, float32 ``(n, 1, size, size)``.
        slice_index: ``(n,)`` index of each sample's source slice in the bundled file.
        plane, position_mm: ``(n,)`` each sample's plane name index (into ``("axial", "coronal", "sagittal")``)
            and its world coordinate along the slice normal, in mm.
        value_range: ``(0.0, 1.0)``.

    References:
        C. J. Holmes et al., "Enhancement of MR images using registration for signal averaging", 1998.

    Examples:
        >>> ds = BrainSlices(n=4, size=32, seed=0)
        >>> len(ds), ds[0].shape, ds[0].dtype
        (4, torch.Size([1, 32, 32]), torch.float32)
        >>> lo, hi = ds.value_range
        >>> bool(ds.images.min() >= lo and ds.images.max() <= hi)
        True
        >>> len(BrainSlices(split="test", augment=False))
        48
    """

    value_range = (0.0, 1.0)
    max_rotation_deg = 10.0
    zoom_range = (0.9, 1.1)
    max_shift = 0.04
    gamma_range = (0.8, 1.25)

    def __init__(
        self,
        n: int | None = None,
        size: int = 64,
        *,
        split: str = "train",
        augment: bool = True,
        volume: str = "head",
        planes=_PLANES,
        seed: int = 0,
    ):
        size = _check_size(size)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if volume not in (*_VOLUMES, "both"):
            raise ValueError(f"volume must be 'head', 'brain' or 'both', got {volume!r}")
        planes = (planes,) if isinstance(planes, str) else tuple(planes)
        bad = [p for p in planes if p not in _PLANES]
        if bad or not planes:
            raise ValueError(f"planes must be a non-empty selection of {_PLANES}, got {planes!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"n must be a positive integer or None, got {n!r}")

        z = _bundle()
        names = [str(s) for s in z["plane_names"]]
        keep = z["split"] == (0 if split == "train" else 1)
        if volume != "both":
            keep &= z["volume"] == [str(s) for s in z["volume_names"]].index(volume)
        keep &= np.isin(z["plane"], [names.index(p) for p in planes])
        index = np.flatnonzero(keep)
        N = index.size
        base = _resize(torch.from_numpy(z["images"][index]).to(torch.float32) / 255.0, (size, size))

        if not augment and n is not None and n > N:
            raise ValueError(f"without augmentation there are only {N} {split} slices for this selection; "
                             f"ask for n <= {N} or pass augment=True")
        n_out = N if n is None else int(n)
        if not augment and n is None:
            pick = torch.arange(N)
        else:
            rounds = -(-n_out // N)
            pick = torch.cat([torch.randperm(N, generator=_stream(int(seed), 0, r)) for r in range(rounds)])[:n_out]
        images = self._augment(base, pick, int(seed)) if augment else base[pick]

        self.images = images[:, None].contiguous()
        self.slice_index = torch.from_numpy(index)[pick]
        self.plane = torch.from_numpy(z["plane"][index].astype(np.int64))[pick]
        self.position_mm = torch.from_numpy(z["position_mm"][index])[pick]
        self.size, self.split, self.augment, self.seed = size, split, bool(augment), int(seed)

    def _augment(self, base: torch.Tensor, pick: torch.Tensor, seed: int) -> torch.Tensor:
        n, size = pick.numel(), base.shape[-1]
        out = torch.empty(n, size, size)
        for c in range(-(-n // _CHUNK)):
            g = _stream(seed, 1, c)
            u = torch.rand(_CHUNK, 6, generator=g, dtype=torch.float64)  # the full chunk: sample i ignores n
            sl = slice(c * _CHUNK, min(n, (c + 1) * _CHUNK))
            m = sl.stop - sl.start
            u = u[:m]
            angle = math.radians(self.max_rotation_deg) * (2 * u[:, 0] - 1)
            log_zoom = math.log(self.zoom_range[0]) + u[:, 1] * math.log(self.zoom_range[1] / self.zoom_range[0])
            shift = self.max_shift * 2 * (2 * u[:, 2:4] - 1)  # normalised coordinates span 2
            flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0).to(torch.float64)
            log_gamma = math.log(self.gamma_range[0]) + u[:, 5] * math.log(self.gamma_range[1] / self.gamma_range[0])
            # output (normalised) coordinate p -> input coordinate R(angle) diag(flip, 1) p / zoom + shift
            s = torch.exp(-log_zoom)
            cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
            theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], -1),
                                 torch.stack([sin * flip, cos, shift[:, 1]], -1)], -2).to(torch.float32)
            grid = F.affine_grid(theta, [m, 1, size, size], align_corners=False)
            warped = F.grid_sample(base[pick[sl]][:, None], grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False)[:, 0]
            out[sl] = warped.clamp(0.0, 1.0) ** torch.exp(log_gamma).to(torch.float32)[:, None, None]
        return out

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


# ---------------------------------------------------------------------------------------------------------------
# A folder of the user's scans
# ---------------------------------------------------------------------------------------------------------------
def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".dcm"):
        return "dicom"
    if name.endswith((".h5", ".hdf5")):
        return "hdf5"
    return None


def _nifti_slices(path: Path, plane: str):
    """``(slices, rows, cols)`` array in the documented display orientation, and the (row, col) spacing."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    v = np.asarray(img.get_fdata(dtype=np.float64))
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3]) + (1.0,) * max(0, 3 - v.ndim)
    while v.ndim > 3 and v.shape[-1] == 1:
        v = v[..., 0]
    if v.ndim == 2:
        v = v[..., None]
    if v.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D or 3-D NIfTI image, got shape {v.shape} (split 4-D series first)")
    dx, dy, dz = zooms
    if plane == "axial":  # (x, y, z) -> (z, y reversed, x reversed)
        return np.transpose(v[::-1, ::-1, :], (2, 1, 0)), (dy, dx)
    if plane == "coronal":  # -> (y, z reversed, x reversed)
        return np.transpose(v[::-1, :, ::-1], (1, 2, 0)), (dz, dx)
    return np.transpose(v[:, ::-1, ::-1], (0, 2, 1)), (dz, dy)  # sagittal: (x, z reversed, y reversed)


def _hdf5_slices(path: Path):
    import h5py

    with h5py.File(path, "r") as f:
        if "reconstruction_rss" in f:
            v = np.asarray(f["reconstruction_rss"][()], dtype=np.float64)
        elif "kspace" in f:
            from invdiff.operators.mri import ifft2c, rss

            k = torch.from_numpy(np.asarray(f["kspace"][()]).astype(np.complex128))
            if k.ndim not in (2, 3, 4):
                raise ValueError(f"{path}: kspace must be (H, W), (slices, H, W) or (slices, coils, H, W), "
                                 f"got shape {tuple(k.shape)}")
            x = ifft2c(k)
            v = (rss(x, dim=-3) if k.ndim == 4 else x.abs()).numpy()
        else:
            raise ValueError(f"{path}: an HDF5 file needs a 'reconstruction_rss' or 'kspace' dataset (fastMRI "
                             f"layout); found {sorted(f.keys())}")
    if v.ndim == 2:
        v = v[None]
    if v.ndim != 3:
        raise ValueError(f"{path}: expected (slices, H, W) images, got shape {v.shape}")
    return v, (1.0, 1.0)


def _dicom_slices(path: Path):
    """``(frames, rows, cols)`` values through the modality LUT, the (row, col) spacing and the series UID, read
    by :func:`invdiff.io.read` (which also names the decoder a compressed transfer syntax needs)."""
    try:
        import pydicom  # noqa: F401  (checked here so the message names the folder reader's optional extra)
    except ImportError as err:
        raise ImportError(f"reading DICOM files ({path.name}) needs pydicom: pip install pydicom") from err
    from invdiff import io

    scan = io.read(path)
    v = scan.data.to(torch.float64).numpy()
    if v.ndim == 2:
        v = v[None]
    if v.ndim != 3:
        raise ValueError(f"{path}: expected a grayscale image or multi-frame stack, got shape {v.shape}")
    spacing = tuple(float(d) if d else 1.0 for d in (scan.spacing or (None, None))[-2:])
    series = str(scan.attrs.get("SeriesInstanceUID", "")) or str(path)
    return v, spacing, series


class MRIFolder(Dataset):
    r"""Every MRI scan in a folder as 2-D images, ``(1, size, size)`` float32 in [0, 1].

    Reads NIfTI (``.nii``, ``.nii.gz``; via nibabel, turned to RAS+ and cut into ``plane`` slices), DICOM
    (``.dcm``; via pydicom, imported only when a DICOM file is met; one image per file or per frame) and fastMRI
    HDF5 (``.h5``/``.hdf5``: ``reconstruction_rss`` if present, else the root-sum-of-squares image of ``kspace``,
    shape ``(slices, coils, H, W)`` or single-coil ``(slices, H, W)``). Intensities are normalised per volume --
    per NIfTI or HDF5 file, per DICOM series (``SeriesInstanceUID``) -- by the robust range of the module
    docstring; pixels are made square, the image square (``fit``) and resized to ``size``. Orientation: see the
    module docstring. Files are visited in sorted name order, slices in stored order (NIfTI: increasing RAS
    coordinate, i.e. inferior to superior for axial). All images are loaded at construction.

    Args:
        path: the folder.
        size: output side in pixels.
        pattern: a glob pattern relative to ``path`` (``"**/*.nii.gz"`` recurses). ``None`` takes the files in
            ``path`` (not sub-folders) with a supported suffix and ignores the rest; with a pattern, a matched
            file of an unsupported type is an error.
        plane: how NIfTI volumes are sliced: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        fit: ``"pad"`` (zero-pad to square, keep the whole field of view) or ``"crop"`` (centre crop).
        drop_blank: leave out blank slices (fewer than 1 % of the pixels above 0.1), e.g. air above the head.
        percentiles: the ``(p_lo, p_hi)`` percentiles mapped to 0 and 1.

    Attributes:
        images: float32 ``(N, 1, size, size)``.
        sources: for each image, ``(file path, slice or frame index in that file)``.
        value_range: ``(0.0, 1.0)``.

    Raises:
        FileNotFoundError / NotADirectoryError: ``path`` is not an existing folder.
        ValueError: no readable file, an unsupported file matched by ``pattern``, an HDF5 file without fastMRI
            datasets, a file with the wrong number of dimensions, or only blank slices.
        ImportError: a DICOM file but no pydicom.

    References:
        J. Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI", 2018.

    Examples:
        >>> import tempfile, nibabel as nib, numpy as np
        >>> folder = tempfile.mkdtemp()
        >>> vol = np.zeros((16, 16, 3), np.float32); vol[4:12, 4:12] = 1.0
        >>> nib.save(nib.Nifti1Image(vol, np.eye(4)), f"{folder}/scan.nii.gz")
        >>> ds = MRIFolder(folder, size=8)
        >>> len(ds), ds[0].shape, ds.sources[0][1]
        (3, torch.Size([1, 8, 8]), 0)
    """

    value_range = (0.0, 1.0)

    def __init__(
        self,
        path,
        size: int = 64,
        *,
        pattern: str | None = None,
        plane: str = "axial",
        fit: str = "pad",
        drop_blank: bool = True,
        percentiles: tuple[float, float] = (0.5, 99.5),
    ):
        size = _check_size(size)
        if plane not in _PLANES:
            raise ValueError(f"plane must be one of {_PLANES}, got {plane!r}")
        if fit not in ("pad", "crop"):
            raise ValueError(f"fit must be 'pad' or 'crop', got {fit!r}")
        lo_p, hi_p = (float(p) for p in percentiles)
        if not 0.0 <= lo_p < hi_p <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= p_lo < p_hi <= 100, got {percentiles!r}")
        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"no folder {root}")
        if not root.is_dir():
            raise NotADirectoryError(f"{root} is a file; pass the folder that holds the scans")

        if pattern is None:
            files = sorted(p for p in root.iterdir() if p.is_file() and _kind(p) is not None)
        else:
            files = sorted(p for p in root.glob(pattern) if p.is_file())
            bad = [p.name for p in files if _kind(p) is None]
            if bad:
                raise ValueError(f"unsupported file(s) matched {pattern!r}: {bad[:5]}; supported suffixes are "
                                 f"{', '.join(_SUFFIXES)}")
        if not files:
            found = sorted(p.name for p in root.iterdir())[:10]
            raise ValueError(f"no MRI files ({', '.join(_SUFFIXES)}) in {root}"
                             + (f" matching {pattern!r}" if pattern else "") + f"; it holds {found or 'nothing'}")

        # volumes: list of (array (slices, rows, cols), spacing, [(file, index), ...]); DICOM grouped by series
        volumes, dicom = [], {}
        for f in files:
            kind = _kind(f)
            if kind == "nifti":
                v, spacing = _nifti_slices(f, plane)
            elif kind == "hdf5":
                v, spacing = _hdf5_slices(f)
            else:
                v, spacing, series = _dicom_slices(f)
                dicom.setdefault(series, []).append((v, spacing, f))
                continue
            volumes.append(([v], spacing, [(f, k) for k in range(v.shape[0])]))
        for parts in dicom.values():
            volumes.append(([v for v, _, _ in parts], parts[0][1], [(f, k) for v, _, f in parts
                                                                     for k in range(v.shape[0])]))

        images, sources = [], []
        for stacks, spacing, srcs in volumes:
            flat = np.concatenate([s.reshape(-1) for s in stacks])
            lo, hi = np.percentile(flat, (lo_p, hi_p))
            for s in stacks:
                x = torch.from_numpy(_normalise(s, lo, hi))
                images.append(self._to_size(x, spacing, size, fit))
            sources.extend(srcs)
        images = torch.cat(images)
        if drop_blank:
            keep = ((images > 0.1).to(torch.float32).mean(dim=(-2, -1)) >= 0.01)
            if not bool(keep.any()):
                raise ValueError(f"every slice in {root} is blank (pass drop_blank=False to keep them)")
            images = images[keep]
            sources = [s for s, k in zip(sources, keep.tolist()) if k]
        self.images = images[:, None].contiguous()
        self.sources = [(Path(f), int(k)) for f, k in sources]
        self.size = size

    @staticmethod
    def _to_size(x: torch.Tensor, spacing: tuple[float, float], size: int, fit: str) -> torch.Tensor:
        dr, dc = spacing
        if dr > 0 and dc > 0 and abs(dr - dc) > 1e-3 * max(dr, dc):
            d = min(dr, dc)
            x = _resize(x, (max(1, round(x.shape[-2] * dr / d)), max(1, round(x.shape[-1] * dc / d))))
        return _resize(_square(x, fit), (size, size)).clamp(0.0, 1.0)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

