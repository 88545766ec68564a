"""Build ``brain_slices.npz`` (used by :class:`invdiff.datasets.mri.BrainSlices`) from Debian's ``mricron-data``.

Run once by a developer; the result is committed, so users never need this script, the Debian package or a
network. To rebuild::

    apt-get install -y mricron-data          # 1.2.20211006+dfsg-4 was used for the committed file
    python datasets/data/make_brain_slices.py

Source volumes (both of one person, the "Colin 27" average of 27 T1-weighted scans, in MNI space):

* ``head`` -- ``/usr/share/mricron/templates/ch2.nii.gz``: the whole head (scalp, skull, brain), 1 mm voxels,
  181 x 217 x 181, uint8.
* ``brain`` -- ``/usr/share/mricron/templates/ch2better.nii.gz``: the brain alone (skull stripped), 0.5 mm voxels,
  301 x 370 x 316, uint8.
* the brain mask used to choose which slices to keep is ``ch2bet.nii.gz`` (skull-stripped, on ``ch2``'s grid).

What the script does, per volume:

1. Intensities: divide by the volume's 99.5th percentile (0.5th percentile is 0 = air for both), clip to [0, 1].
2. A light Gaussian pre-filter (anti-aliasing: sigma = 0.4 x output pixel spacing, in mm).
3. Slices in three planes -- axial, coronal, sagittal -- every ``STEP_MM`` = 2 mm of world (MNI) coordinate,
   kept where the brain mask's cross-section is at least ``MIN_AREA`` = 15 % of its largest cross-section in
   that plane (no slices of neck or of a skull cap with a sliver of brain).
4. Each slice is sampled (trilinear) on one square field of view of ``FOV_MM`` = 216 mm centred at world
   (0, -17, 19) mm (the centre of ``ch2``) with ``SIDE`` = 128 pixels (1.6875 mm pixels), so the two volumes
   share a pixel grid and the whole head fits. Display orientation (radiological, see ``mri.py``):

   - axial: rows anterior (top) -> posterior, columns patient right (left of the image) -> patient left;
   - coronal: rows superior -> inferior, columns patient right -> patient left;
   - sagittal: rows superior -> inferior, columns anterior -> posterior.
5. Stored as uint8 (value / 255).

Train / test split by position blocks: the world coordinate along a slice's normal is cut into 16 mm blocks
(``floor(position / 16 mm)``); blocks whose index is 2 modulo 5 are test (about 20 %), the rest train. Train
slices within ``GUARD_MM`` = 4 mm of a test slice of the same plane are dropped, so no near-identical
neighbours straddle the split. Because the blocks are in world coordinates, the ``head`` and ``brain`` slices of
one anatomical position always land in the same split.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

TEMPLATES = Path("/usr/share/mricron/templates")
COPYRIGHT = Path("/usr/share/doc/mricron-data/copyright")
HERE = Path(__file__).resolve().parent
VOLUMES = {"head": "ch2.nii.gz", "brain": "ch2better.nii.gz"}
MASK = "ch2bet.nii.gz"
PLANES = ("axial", "coronal", "sagittal")
SIDE = 128
FOV_MM = 216.0
CENTRE_MM = np.array([0.0, -17.0, 19.0])
STEP_MM = 2.0
MIN_AREA = 0.15
BLOCK_MM = 16.0
TEST_BLOCK, N_BLOCKS = 2, 5
GUARD_MM = 4.0
NORMAL_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # world axis (RAS) along each plane's normal


def plane_points(plane: str, position: float) -> np.ndarray:
    """World (RAS, mm) coordinates of the ``SIDE x SIDE`` pixel centres of one slice, shape ``(3, SIDE, SIDE)``."""
    s = FOV_MM / SIDE
    t = (np.arange(SIDE) - (SIDE - 1) / 2) * s
    rows, cols = np.meshgrid(t, t, indexing="ij")
    cx, cy, cz = CENTRE_MM
    if plane == "axial":  # top = anterior (+y), image left = patient right (+x)
        x, y, z = cx - cols, cy - rows, np.full_like(rows, position)
    elif plane == "coronal":  # top = superior (+z), image left = patient right (+x)
        x, y, z = cx - cols, np.full_like(rows, position), cz - rows
    else:  # sagittal: top = superior, image left = anterior (+y)
        x, y, z = np.full_like(rows, position), cy - cols, cz - rows
    return np.stack([x, y, z])


def sample(volume: np.ndarray, affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``volume`` at world ``points`` (3, ...), zero outside."""
    from scipy.ndimage import map_coordinates

    inv = np.linalg.inv(affine)
    flat = points.reshape(3, -1)
    ijk = inv[:3, :3] @ flat + inv[:3, 3:4]
    return map_coordinates(volume, ijk, order=1, cval=0.0).reshape(points.shape[1:])


def load(name: str):
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(TEMPLATES / name))
    return np.asarray(img.dataobj, dtype=np.float64), img.affine


def positions(mask: np.ndarray, affine: np.ndarray, plane: str) -> np.ndarray:
    """World positions (every STEP_MM) along the plane's normal where the brain cross-section is big enough."""
    axis = NORMAL_AXIS[plane]
    other = tuple(a for a in range(3) if a != axis)
    area = mask.sum(axis=other)
    world = affine[axis, axis] * np.arange(mask.shape[axis]) + affine[axis, 3]
    inside = world[area >= MIN_AREA * area.max()]
    lo, hi = np.ceil(inside.min() / STEP_MM) * STEP_MM, np.floor(inside.max() / STEP_MM) * STEP_MM
    return np.arange(lo, hi + STEP_MM / 2, STEP_MM)


def split_of(pos: np.ndarray) -> np.ndarray:
    """0 = train, 1 = test, -1 = dropped (a train slice within GUARD_MM of a test slice)."""
    block = np.floor(pos / BLOCK_MM).astype(int)
    split = (block % N_BLOCKS == TEST_BLOCK).astype(int)
    test_pos = pos[split == 1]
    if test_pos.size:
        near = np.min(np.abs(pos[:, None] - test_pos[None, :]), axis=1) <= GUARD_MM + 1e-6
        split[(split == 0) & near] = -1
    return split


def package_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "mricron-data"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    from scipy.ndimage import gaussian_filter

    mask, mask_affine = load(MASK)
    mask = mask > 0
    images, vol_ids, plane_ids, pos_all, splits = [], [], [], [], []
    for v, (vname, fname) in enumerate(VOLUMES.items()):
        vol, affine = load(fname)
        hi = np.percentile(vol, 99.5)
        vol = np.clip(vol / hi, 0.0, 1.0)
        voxel = float(np.abs(np.diag(affine)[:3]).mean())
        vol = gaussian_filter(vol, sigma=0.4 * (FOV_MM / SIDE) / voxel)
        for p, plane in enumerate(PLANES):
            pos = positions(mask, mask_affine, plane)
            split = split_of(pos)
            for x, s in zip(pos, split):
                if s < 0:
                    continue
                im = sample(vol, affine, plane_points(plane, x))
                images.append(np.clip(np.rint(im * 255), 0, 255).astype(np.uint8))
                vol_ids.append(v)
                plane_ids.append(p)
                pos_all.append(x)
                splits.append(s)
    out = HERE / "brain_slices.npz"
    np.savez_compressed(
        out,
        images=np.stack(images),
        volume=np.asarray(vol_ids, np.uint8),
        plane=np.asarray(plane_ids, np.uint8),
        position_mm=np.asarray(pos_all, np.float32),
        split=np.asarray(splits, np.uint8),
        volume_names=np.asarray(list(VOLUMES)),
        plane_names=np.asarray(PLANES),
        pixel_mm=np.float32(FOV_MM / SIDE),
    )
    version = package_version()
    n_train, n_test = splits.count(0), splits.count(1)
    (HERE / "BRAIN_SLICES_LICENSE.txt").write_text(
        f"""brain_slices.npz -- 2-D slices of the Colin 27 ("ch2") T1-weighted MRI templates
=====================================================================================

Made by datasets/data/make_brain_slices.py from the Debian package
mricron-data, version {version} (https://packages.debian.org/source/mricron; upstream MRIcron by
Chris Rorden, https://github.com/neurolabusc/MRIcron), files:

  head  : /usr/share/mricron/templates/ch2.nii.gz        (whole head, 1 mm)
  brain : /usr/share/mricron/templates/ch2better.nii.gz  (skull-stripped brain, 0.5 mm)
  mask  : /usr/share/mricron/templates/ch2bet.nii.gz     (used only to choose slice positions)

Contents: {len(images)} slices of {SIDE} x {SIDE} pixels (uint8, value/255 in [0, 1], {FOV_MM / SIDE:.4f} mm
pixels), axial/coronal/sagittal, every {STEP_MM:g} mm; {n_train} train and {n_test} test slices (split by
{BLOCK_MM:g} mm position blocks with a {GUARD_MM:g} mm guard; see the script's docstring).

Image origin: the Colin 27 average brain -- 27 T1-weighted scans of one healthy adult male, registered and
averaged at the Montreal Neurological Institute:
  C. J. Holmes, R. Hoge, L. Collins, R. Woods, A. W. Toga, A. C. Evans, "Enhancement of MR images using
  registration for signal averaging", Journal of Computer Assisted Tomography 22(2):324-333, 1998.
All slices show ONE person: a prior trained on them learns one anatomy, seen from many positions.

Licence: Debian's copyright file for mricron-data (/usr/share/doc/mricron-data/copyright) places every file
of the package not listed otherwise -- the templates included -- under "Files: *", Copyright 2006-2010,
Chris Rorden, License: BSD-3-clause. That notice follows verbatim.

------------------------------------------------------------------------------------------------------------
{COPYRIGHT.read_text() if COPYRIGHT.exists() else "(copyright file not found when this was built)"}"""
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(images)} slices, {n_train} train / {n_test} test")


if __name__ == "__main__":
    main()
