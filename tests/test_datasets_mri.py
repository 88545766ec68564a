"""MRI data: the bundled Colin 27 slices (BrainSlices) and the folder loader (MRIFolder)."""

import doctest
import importlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import invdiff.datasets.mri as mri
from invdiff.datasets.mri import BRAIN_SLICES_FILE, BrainSlices, MRIFolder
from invdiff.operators.mri import fft2c

AXIAL, CORONAL, SAGITTAL = 0, 1, 2


def corr(a, b):
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


@pytest.fixture(scope="module")
def bundle():
    return mri._bundle()


# ---------------------------------------------------------------------------------------------------------------
# BrainSlices
# ---------------------------------------------------------------------------------------------------------------
def test_bundle_ships_inside_the_package_and_loads_without_network(monkeypatch):
    package_dir = Path(importlib.import_module("invdiff.datasets").__file__).resolve().parent
    assert BRAIN_SLICES_FILE.parent == package_dir / "data"
    assert BRAIN_SLICES_FILE.stat().st_size < 3_000_000
    licence = (package_dir / "data" / "BRAIN_SLICES_LICENSE.txt").read_text()
    assert "BSD-3-clause" in licence and "mricron-data" in licence and "1.2.20211006" in licence

    def no_network(*args, **kwargs):
        raise AssertionError("BrainSlices touched the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    mri._bundle.cache_clear()
    try:
        ds = BrainSlices(n=8, size=32)
    finally:
        mri._bundle.cache_clear()
    assert len(ds) == 8


def test_bundle_contents(bundle):
    im = bundle["images"]
    assert im.dtype == np.uint8 and im.shape == (374, 128, 128)
    assert [str(p) for p in bundle["plane_names"]] == ["axial", "coronal", "sagittal"]
    assert [str(v) for v in bundle["volume_names"]] == ["head", "brain"]
    assert (bundle["split"] == 0).sum() == 278 and (bundle["split"] == 1).sum() == 96
    # normalised per volume by a robust 99.5th percentile: saturated pixels exist but are rare
    assert im.max() == 255 and 0.0 < (im == 255).mean() < 0.01
    # every 2 mm
    for v in range(2):
        for p in range(3):
            pos = np.sort(bundle["position_mm"][(bundle["volume"] == v) & (bundle["plane"] == p)])
            assert np.all(np.diff(pos) >= 2.0 - 1e-6) and np.allclose(pos % 2.0, 0.0)


def test_values_in_stated_range_float32():
    for augment in (False, True):
        ds = BrainSlices(n=200, size=48, augment=augment, volume="both", seed=1)
        lo, hi = BrainSlices.value_range
        assert ds.images.dtype == torch.float32 and ds.images.shape == (200, 1, 48, 48)
        assert float(ds.images.min()) >= lo and float(ds.images.max()) <= hi
        assert float(ds.images.max()) > 0.9  # the range is used, not squeezed
        assert torch.equal(ds[5], ds.images[5])


def test_deterministic_from_seed_and_seeds_differ():
    a = BrainSlices(n=64, size=32, seed=7)
    b = BrainSlices(n=64, size=32, seed=7)
    c = BrainSlices(n=64, size=32, seed=8)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert (a.images - c.images).abs().mean() > 0.05
    # sample i does not depend on n (parameters are drawn per fixed-size chunk)
    longer = BrainSlices(n=1500, size=32, seed=7)
    assert torch.equal(longer.images[:64], a.images)


def test_splits_are_disjoint_with_a_guard_band(bundle):
    train, test = bundle["split"] == 0, bundle["split"] == 1
    flat = bundle["images"].reshape(len(bundle["images"]), -1)
    tr, te = torch.from_numpy(flat[train]).float(), torch.from_numpy(flat[test]).float()
    # no identical (and no nearly identical) slice in both splits: RMS difference > 10 grey levels of 255
    cross = float(torch.cdist(tr, te).min())
    assert cross / flat.shape[1] ** 0.5 > 10.0
    # ... and farther apart than typical neighbouring slices (2 mm) within the training split
    within = torch.cdist(tr, tr).fill_diagonal_(float("inf")).min(dim=1).values
    assert cross > float(within.median())
    for v in range(2):
        for p in range(3):
            sel = (bundle["volume"] == v) & (bundle["plane"] == p)
            ptr, pte = bundle["position_mm"][sel & train], bundle["position_mm"][sel & test]
            assert np.abs(ptr[:, None] - pte[None, :]).min() > 4.0  # the guard band
            assert 0.15 < len(pte) / (len(pte) + len(ptr)) < 0.35
    # head and brain slices of one position share a split
    key = {(int(p), float(x)): int(s) for p, x, s, v in
           zip(bundle["plane"], bundle["position_mm"], bundle["split"], bundle["volume"]) if v == 0}
    for p, x, s, v in zip(bundle["plane"], bundle["position_mm"], bundle["split"], bundle["volume"]):
        if v == 1 and (int(p), float(x)) in key:
            assert key[(int(p), float(x))] == int(s)
    a = BrainSlices(split="train", augment=False, volume="both")
    b = BrainSlices(split="test", augment=False, volume="both")
    assert len(a) == 278 and len(b) == 96
    assert not set(a.slice_index.tolist()) & set(b.slice_index.tolist())
    assert torch.cdist(a.images.flatten(1), b.images.flatten(1)).min() > 1.0


def test_augmentation_changes_images_but_keeps_range_and_brightness():
    plain = BrainSlices(augment=False, size=64)
    aug = BrainSlices(n=3 * len(plain), size=64, seed=2)
    # each slice used equally often (cycling seeded permutations)
    assert torch.equal(torch.bincount(aug.slice_index, minlength=374)[plain.slice_index],
                       torch.full((len(plain),), 3))
    lookup = {int(k): i for i, k in enumerate(plain.slice_index)}
    base = plain.images[[lookup[int(k)] for k in aug.slice_index]]
    diff = (aug.images - base).abs().mean(dim=(1, 2, 3))
    assert float(diff.min()) > 1e-3 and float(diff.median()) > 0.03
    assert float(aug.images.min()) >= 0.0 and float(aug.images.max()) <= 1.0
    # small transforms: the mean brightness and the head's area stay close to the originals'
    assert abs(float(aug.images.mean()) / float(plain.images.mean()) - 1) < 0.1
    fg_aug = (aug.images > 0.1).float().mean()
    fg_plain = (plain.images > 0.1).float().mean()
    assert abs(float(fg_aug / fg_plain) - 1) < 0.1
    # an augmented sample still looks like its source slice (or its mirror image)
    c = torch.tensor([max(corr(x, b), corr(x, b.flip(-1))) for x, b in zip(aug.images[:100], base[:100])])
    assert float(c.median()) > 0.8


def test_looks_like_a_brain():
    head = BrainSlices(augment=False, volume="head")
    brain = BrainSlices(augment=False, volume="brain")
    fg_head = (head.images > 0.1).float().mean(dim=(1, 2, 3))
    fg_brain = (brain.images > 0.1).float().mean(dim=(1, 2, 3))
    # the head fills 30-70 % of the 216 mm field of view, the skull-stripped brain less
    assert 0.25 < float(fg_head.min()) and float(fg_head.max()) < 0.75
    assert 0.2 < float(fg_brain.median()) < 0.4 and bool((fg_brain < fg_head).all())
    # air is black: the corners of the field of view are empty
    assert float(head.images[..., :6, :6].max()) < 0.05
    for ds in (head, brain):
        x = ds.images[:, 0]
        sym = {p: np.median([corr(a, a.flip(-1)) for a in x[ds.plane == p]]) for p in (AXIAL, CORONAL, SAGITTAL)}
        # left-right (column) mirror symmetry in axial and coronal slices, not in sagittal ones
        assert sym[AXIAL] > 0.9 and sym[CORONAL] > 0.9 and sym[SAGITTAL] < sym[AXIAL] - 0.1
    # superior at the top: in coronal head slices the skull's dome (narrow) is above the cut neck (wide)
    widths = []
    for a in head.images[head.plane == CORONAL, 0]:
        rows = torch.nonzero((a > 0.1).sum(-1) > 0).flatten()
        widths.append((int((a[rows[-1]] > 0.1).sum()), int((a[rows[0]] > 0.1).sum())))
    assert np.mean([bottom > top for bottom, top in widths]) > 0.9


def test_brain_slices_argument_errors():
    with pytest.raises(ValueError, match="split"):
        BrainSlices(split="val")
    with pytest.raises(ValueError, match="volume"):
        BrainSlices(volume="knee")
    with pytest.raises(ValueError, match="planes"):
        BrainSlices(planes=("axial", "oblique"))
    with pytest.raises(ValueError, match="augment=True"):
        BrainSlices(n=1000, augment=False)
    with pytest.raises(ValueError, match="size"):
        BrainSlices(size=0)
    with pytest.raises(ValueError, match="seed"):
        BrainSlices(seed=-1)
    with pytest.raises(ValueError, match="n must"):
        BrainSlices(n=0)


def test_docstring_examples():
    result = doctest.testmod(mri, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ---------------------------------------------------------------------------------------------------------------
# MRIFolder
# ---------------------------------------------------------------------------------------------------------------
def save_nifti(path, vol, affine=None):
    nib = pytest.importorskip("nibabel")
    img = nib.Nifti1Image(np.asarray(vol, np.float32), np.eye(4) if affine is None else affine)
    nib.save(img, str(path))


def test_nifti_values_count_and_orientation(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.uniform(10.0, 50.0, size=(8, 8, 5))
    save_nifti(tmp_path / "a.nii.gz", vol)
    ds = MRIFolder(tmp_path, size=8, percentiles=(0, 100), drop_blank=False)
    assert len(ds) == 5 and [k for _, k in ds.sources] == list(range(5))
    expected = (vol - vol.min()) / (vol.max() - vol.min())
    for k in range(5):  # axial: rows anterior -> posterior (y reversed), columns patient right -> left (x reversed)
        torch.testing.assert_close(ds[k][0], torch.from_numpy(expected[::-1, ::-1, k].T.copy()).float())

    # a marker at the patient's right (max x), anterior (max y), slice z = 2 of a RAS volume
    marker = np.zeros((8, 8, 8))
    marker[7, 7, 2] = 1.0
    marker[7, 3, 6] = 1.0
    (tmp_path / "a.nii.gz").unlink()
    save_nifti(tmp_path / "m.nii", marker)
    # the same object stored left-posterior-superior (LPS): nibabel reorients it, the images agree
    save_nifti(tmp_path / "m_lps.nii", marker[::-1, ::-1, :], affine=np.diag([-1.0, -1.0, 1.0, 1.0]))
    axial = MRIFolder(tmp_path, size=8, percentiles=(0, 100), drop_blank=False)
    assert len(axial) == 16
    torch.testing.assert_close(axial.images[:8], axial.images[8:])
    assert axial.images[2, 0, 0, 0] == 1.0 and axial.images[2].sum() == 1.0  # top-left: anterior, patient right
    coronal = MRIFolder(tmp_path, size=8, pattern="m.nii", plane="coronal", percentiles=(0, 100), drop_blank=False)
    assert coronal.images[3, 0, 1, 0] == 1.0  # slice y = 3; row 1 = z 6 (superior on top); column 0 = x 7 (right)
    sagittal = MRIFolder(tmp_path, size=8, pattern="m.nii", plane="sagittal", percentiles=(0, 100),
                         drop_blank=False)
    assert sagittal.images[7, 0, 1, 4] == 1.0  # slice x = 7; row 1 = z 6; column 4 = y 3 (anterior on the left)
    assert sagittal.images[7, 0, 5, 0] == 1.0  # z 2, y 7


def test_nifti_robust_normalisation_square_pixels_and_blank_slices(tmp_path):
    # an outlier does not crush the range (99.5th percentile), blank slices are dropped with their sources
    vol = np.zeros((16, 16, 6))
    vol[2:14, 2:14, 1:5] = np.linspace(1.0, 2.0, 12)[:, None, None]
    vol[8, 8, 3] = 1000.0
    save_nifti(tmp_path / "v.nii.gz", vol)
    (tmp_path / "notes.txt").write_text("ignored without a pattern")
    ds = MRIFolder(tmp_path, size=16)
    assert [k for _, k in ds.sources] == [1, 2, 3, 4]
    assert float(ds.images.max()) == 1.0 and float(ds.images.min()) == 0.0
    inside = ds.images[:, 0, 3:13, 3:13]
    assert float(inside.median()) > 0.4

    # 2 mm x 1 mm pixels: 8 x 16 voxels span 16 mm x 16 mm -> a square image, no padding needed
    aniso = np.ones((8, 16, 3))
    aniso[..., 2] = 0.0  # a blank slice, dropped (and it sets p_lo = 0)
    save_nifti(tmp_path / "aniso.nii", aniso, affine=np.diag([2.0, 1.0, 1.0, 1.0]))
    a = MRIFolder(tmp_path, size=16, pattern="aniso.nii", percentiles=(0, 100))
    assert len(a) == 2 and float(a.images.min()) > 0.99
    # 1 mm pixels: the same voxels span 8 x 16 mm; "pad" fills the short side with zeros, "crop" cuts the long one
    save_nifti(tmp_path / "rect.nii", aniso, affine=np.eye(4))
    padded = MRIFolder(tmp_path, size=16, pattern="rect.nii", percentiles=(0, 100), fit="pad")
    cropped = MRIFolder(tmp_path, size=16, pattern="rect.nii", percentiles=(0, 100), fit="crop")
    cols = padded.images[0, 0].mean(0)  # axial columns are x: 8 mm of 16
    assert torch.allclose(cols[:4], torch.zeros(4)) and torch.allclose(cols[4:12], torch.ones(8))
    assert float(cropped.images.min()) > 0.99


def write_h5(path, **datasets):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)


def test_fastmri_kspace_gives_the_rss_image(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 16, 16, generator=g, dtype=torch.float64) + 0.5  # magnitude, 2 slices
    maps = torch.randn(4, 16, 16, dtype=torch.complex128, generator=g)
    maps = maps / maps.abs().pow(2).sum(0).sqrt()  # sum_c |S_c|^2 = 1, so RSS = |x|
    k_multi = fft2c(maps * x[:, None]).to(torch.complex64).numpy()
    k_single = fft2c(x * torch.exp(1j * torch.rand(2, 16, 16, generator=g, dtype=torch.float64))).numpy()
    write_h5(tmp_path / "multi.h5", kspace=k_multi)
    write_h5(tmp_path / "single.h5", kspace=k_single)
    expected = (x - x.min()) / (x.max() - x.min())
    for name in ("multi.h5", "single.h5"):
        ds = MRIFolder(tmp_path, size=16, pattern=name, percentiles=(0, 100))
        assert len(ds) == 2 and [k for _, k in ds.sources] == [0, 1]
        torch.testing.assert_close(ds.images[:, 0].double(), expected, atol=1e-4, rtol=0)

    # reconstruction_rss is preferred over kspace when both are there
    rss = np.random.default_rng(1).uniform(0, 3, size=(3, 16, 16)).astype(np.float32)
    write_h5(tmp_path / "both.h5", kspace=k_multi, reconstruction_rss=rss)
    ds = MRIFolder(tmp_path, size=8, pattern="both.h5", percentiles=(0, 100), drop_blank=False)
    assert len(ds) == 3
    small = torch.nn.functional.interpolate(torch.from_numpy(rss)[:, None], size=8, mode="bilinear", antialias=True)
    torch.testing.assert_close(ds.images, ((small - rss.min()) / (rss.max() - rss.min())).float())

    # oversampled readout (32 x 16): crop keeps the central 16 x 16
    tall = torch.zeros(1, 32, 16, dtype=torch.float64)
    tall[0, 8:24] = x[0]
    write_h5(tmp_path / "tall.h5", reconstruction_rss=tall.numpy())
    crop = MRIFolder(tmp_path, size=16, pattern="tall.h5", fit="crop", percentiles=(0, 100))
    torch.testing.assert_close(crop.images[0, 0].double(), x[0] / x[0].max())  # the zero rows set p_lo = 0


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        MRIFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no MRI files"):
        MRIFolder(tmp_path)
    (tmp_path / "README.md").write_text("hello")
    with pytest.raises(NotADirectoryError):
        MRIFolder(tmp_path / "README.md")
    with pytest.raises(ValueError, match="no MRI files"):
        MRIFolder(tmp_path)
    with pytest.raises(ValueError, match="unsupported"):
        MRIFolder(tmp_path, pattern="*")
    write_h5(tmp_path / "other.h5", images=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="reconstruction_rss"):
        MRIFolder(tmp_path)
    (tmp_path / "other.h5").unlink()
    save_nifti(tmp_path / "empty.nii", np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="blank"):
        MRIFolder(tmp_path)
    save_nifti(tmp_path / "empty.nii", np.zeros((4, 4, 3, 2)))
    with pytest.raises(ValueError, match="4-D"):
        MRIFolder(tmp_path)
    for bad in (dict(size=0), dict(plane="oblique"), dict(fit="stretch"), dict(percentiles=(50, 10))):
        with pytest.raises(ValueError):
            MRIFolder(tmp_path, **bad)


def test_dicom_without_pydicom_says_how_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    (tmp_path / "slice.dcm").write_bytes(b"\0" * 132)
    with pytest.raises(ImportError, match="pip install pydicom"):
        MRIFolder(tmp_path)


def write_dicom(path, pixels, series_uid, spacing=(1.0, 1.0), slope=1.0):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "MR", series_uid
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", "0"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)


def test_dicom_series_normalised_together(tmp_path):
    pytest.importorskip("pydicom")
    ramp = np.tile(np.arange(16, dtype=np.uint16) * 10, (16, 1))  # 0..150 along columns
    write_dicom(tmp_path / "s1.dcm", ramp, "1.2.3.1")
    write_dicom(tmp_path / "s2.dcm", ramp // 2, "1.2.3.1")  # same series, half as bright
    write_dicom(tmp_path / "t1.dcm", ramp, "1.2.3.2", slope=3.0)  # its own series
    ds = MRIFolder(tmp_path, size=16, percentiles=(0, 100))
    assert [p.name for p, _ in ds.sources] == ["s1.dcm", "s2.dcm", "t1.dcm"]
    expected = torch.from_numpy(ramp / 150.0).float()
    torch.testing.assert_close(ds.images[0, 0], expected)  # stored row/column order
    torch.testing.assert_close(ds.images[1, 0], torch.from_numpy((ramp // 2) / 150.0).float())
    torch.testing.assert_close(ds.images[2, 0], expected)
