"""invdiff.io: every reader against the library's own reading of real files, every writer by a round trip.

Files come from the installed dependencies (pydicom's and nibabel's test data, xarray's example netCDF) or are
built here; nothing is downloaded. Tolerances are stated where a format quantises: DICOM stores int16 with a
RescaleSlope per image (error <= slope / 2), PNG 16 bits over the value range (error <= range / 65535 / 2).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from invdiff import io
from invdiff.io import Scan, ScanError

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
h5py = pytest.importorskip("h5py")
xr = pytest.importorskip("xarray")

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_FILES = Path(nib.__file__).parent / "tests" / "data"
XARRAY_EXAMPLE = Path(xr.__file__).parent / "tests" / "data" / "example_1.nc"

OPERATOR = {"name": "mri", "acceleration": 4.0, "center_fraction": 0.08, "coils": None, "shape": [32, 24]}
SOURCE = {"file": "clean.nii.gz", "format": "nifti", "flags": [True, False]}


def pub(attrs: dict) -> dict:
    """The public (persisted) attributes."""
    return {k: v for k, v in attrs.items() if not k.startswith("_")}


def dicom_file(name: str) -> Path:
    """A file of pydicom's test data (never downloaded: skip if this pydicom lacks it)."""
    p = PYDICOM_FILES / name
    if not p.exists():
        pytest.skip(f"pydicom test file {name} is not installed")
    return p


def snapshot(path: Path) -> dict:
    """Bytes and mtime of a file, or of every file under a folder."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def leftovers(folder: Path) -> list[str]:
    """Temporary files an atomic write would leave behind (none may remain)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------------------------
def test_ct_small_values_are_hounsfield_units_and_geometry_from_tags():
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    scan = io.read(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert scan.data.dtype == torch.float32 and scan.format == "dicom" and scan.kind == "image"
    assert np.array_equal(scan.data.numpy().astype(np.float64), expected)  # exact: integers in float32
    assert scan.units == "HU" and scan.dims == ("row", "col") and scan.image_axes == (-2, -1)
    assert scan.spacing == tuple(float(v) for v in ds.PixelSpacing)
    assert scan.attrs["Modality"] == "CT" and scan.attrs["PatientID"] == ds.PatientID
    assert scan.attrs["TransferSyntax"] == "Explicit VR Little Endian"
    # affine (row, col, 0) -> LPS: IPP + col * PixelSpacing[1] * row direction + row * PixelSpacing[0] * col direction
    iop, ipp, ps = (np.array(ds.ImageOrientationPatient, float), np.array(ds.ImagePositionPatient, float),
                    np.array(ds.PixelSpacing, float))
    r, c = 17, 101
    world = ipp + c * ps[1] * iop[:3] + r * ps[0] * iop[3:]
    np.testing.assert_allclose((scan.affine @ [r, c, 0, 1])[:3], world, rtol=0, atol=1e-9)
    assert scan.attrs["affine_space"] == "LPS"


def test_mr_small_values_through_modality_lut():
    path = dicom_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    scan = io.read(path)
    from pydicom.pixels import apply_modality_lut

    assert np.array_equal(scan.data.numpy(), apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert scan.attrs["Modality"] == "MR" and scan.units is None


def test_dicom_results_keep_patient_and_study_with_new_series(tmp_path, gen):
    path = dicom_file("CT_small.dcm")
    ct = io.read(path)
    ct.attrs["invdiff_operator"] = OPERATOR
    mean = ct.data + 0.3 * torch.randn(ct.data.shape, generator=gen)
    std = 5.0 + torch.rand(ct.data.shape, generator=gen)
    samples = mean + torch.randn((3, *ct.data.shape), generator=gen)
    out = tmp_path / "rec.dcm"
    written = io.write_results(out, {"mean": mean, "std": std, "samples": samples}, like=ct)
    assert written == [out, tmp_path / "rec_std.dcm", tmp_path / "rec_samples.dcm"]
    assert out.is_file() and (tmp_path / "rec_samples.dcm").is_dir()
    # outputs get the permissions open() and mkdir() would give, not the private 0600 / 0700 of temporary files
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o666 & ~umask
    assert ((tmp_path / "rec_samples.dcm").stat().st_mode & 0o777) == 0o777 & ~umask
    orig = pydicom.dcmread(path)
    uids = set()
    for name, x in (("mean", mean), ("std", std)):
        f = written[0] if name == "mean" else written[1]
        ds = pydicom.dcmread(f)
        back = io.read(f)
        step = float(ds.RescaleSlope)  # the int16 quantisation step of this image
        assert step < (x.max() - x.min()).item() / 65000
        err = (back.data.double() - x.double()).abs().max().item()
        assert err <= step / 2 + 1e-6 * x.abs().max().item(), (name, err, step)
        assert ds.PatientID == orig.PatientID and ds.StudyInstanceUID == orig.StudyInstanceUID
        assert ds.SeriesInstanceUID != orig.SeriesInstanceUID and ds.SOPInstanceUID != orig.SOPInstanceUID
        assert "DERIVED" in ds.ImageType and name in ds.SeriesDescription
        assert back.attrs["invdiff_operator"] == OPERATOR and back.units == "HU"
        np.testing.assert_allclose(back.affine, ct.affine, atol=1e-6)
        uids.add(ds.SeriesInstanceUID)
    assert len(uids) == 2
    files = sorted((tmp_path / "rec_samples.dcm").iterdir())
    assert [f.name for f in files] == ["0001.dcm", "0002.dcm", "0003.dcm"]
    back = io.read(tmp_path / "rec_samples.dcm")
    assert back.dims == ("sample", "row", "col") and back.data.shape == samples.shape
    np.testing.assert_allclose(back.affine, ct.affine, atol=1e-6)  # (row, col) geometry shared by the samples
    steps = torch.tensor([float(pydicom.dcmread(f).RescaleSlope) for f in files])
    err = (back.data.double() - samples.double()).abs().amax(dim=(1, 2))
    assert torch.all(err <= steps.double() / 2 + 1e-3)
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1


def _volume_scan(n=5, step=(0.0, 0.0, 2.5)) -> Scan:
    """A (slice, row, col) stack with LPS geometry and integer values (stored exactly as int16)."""
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 2000, size=(n, 12, 10)).astype(np.float32)
    vol[:, 0, 0] = np.arange(n) * 100  # slice k is recognisable
    aff = np.eye(4)
    aff[:3, 0] = step  # slice
    aff[:3, 1] = [0.0, 0.8, 0.0]  # rows run posterior, 0.8 mm
    aff[:3, 2] = [0.7, 0.0, 0.0]  # columns run left, 0.7 mm
    aff[:3, 3] = [-10.0, 20.0, 30.0]
    return Scan(data=torch.from_numpy(vol), format="dicom", dims=("slice", "row", "col"), affine=aff,
                spacing=(float(np.linalg.norm(step)), 0.8, 0.7), units="HU",
                attrs={"Modality": "CT", "PatientID": "P1", "affine_space": "LPS"})


def _shuffle_series(folder: Path, seed: int):
    """Rename the files of a series folder and renumber their InstanceNumber in a shuffled order."""
    files = sorted(folder.iterdir())
    perm = np.random.default_rng(seed).permutation(len(files))
    for f, k in zip(files, perm):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(len(files) - k)
        ds.save_as(folder / f"IM{k:03d}x.dcm", enforce_file_format=True)
        f.unlink()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_dicom_series_folder_is_sorted_by_position(tmp_path, sign):
    scan = _volume_scan(step=(0.0, 0.0, 2.5 * sign))
    folder = tmp_path / "series"
    io.write(folder, scan)
    _shuffle_series(folder, seed=3)
    back = io.read(folder)
    vol = scan.data.numpy()
    # sorted by position along the normal cross(row dir, col dir) = (1,0,0) x (0,1,0) = +z (superior)
    expected = vol if sign > 0 else vol[::-1]
    assert np.array_equal(back.data.numpy(), expected)
    assert back.dims == ("slice", "row", "col") and back.spacing == pytest.approx((2.5, 0.8, 0.7))
    # every voxel keeps its world position
    k = np.arange(len(vol))
    world_in = (scan.affine @ np.c_[k, np.zeros((len(k), 2)), np.ones(len(k))].T)[:3].T
    kk = k if sign > 0 else k[::-1]
    world_out = (back.affine @ np.c_[kk, np.zeros((len(k), 2)), np.ones(len(k))].T)[:3].T
    np.testing.assert_allclose(world_out, world_in, atol=1e-6)
    assert back.attrs["PatientID"] == "P1" and back.units == "HU"


def test_dicom_folder_with_two_series_names_them(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for k, src in enumerate(("CT_small.dcm", "MR_small.dcm")):
        shutil.copy(dicom_file(src), folder / f"{k}.dcm")
    with pytest.raises(ScanError, match="2 DICOM series") as err:
        io.read(folder)
    ct_uid = pydicom.dcmread(dicom_file("CT_small.dcm")).SeriesInstanceUID
    assert ct_uid in str(err.value) and str(folder) in str(err.value)
    assert io.read(folder, name=ct_uid).attrs["Modality"] == "CT"


def test_compressed_dicom_needs_decoder_message(monkeypatch):
    path = dicom_file("JPEG2000.dcm")
    ds = pydicom.dcmread(path)
    from pydicom.pixels import apply_modality_lut
    from pydicom.pixels.decoders.base import get_decoder

    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    if decoder.is_available:  # this environment decodes JPEG 2000 (Pillow with OpenJPEG): values must match
        scan = io.read(path)
        assert np.array_equal(scan.data.numpy(), apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    # without any JPEG 2000 plugin (as with a plain `pip install pydicom`): the message says what to install
    monkeypatch.setattr(decoder, "_available", {})
    with pytest.raises(ScanError) as err:
        io.read(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "JPEG 2000 Image Compression" in msg
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in msg and "\n" not in msg


def test_jpeg_ls_without_decoder_is_a_clear_error():
    path = dicom_file("JPEGLSNearLossless_16.dcm")
    from pydicom.pixels.decoders.base import get_decoder

    if get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    with pytest.raises(ScanError, match=r"compressed with JPEG-LS.*needs an extra decoder: pip install"):
        io.read(path)


def test_truncated_dicom(tmp_path):
    path = dicom_file("MR_truncated.dcm")
    with pytest.raises(ScanError, match="truncated or corrupt") as err:
        io.read(path)
    assert str(err.value).startswith(str(path))
    half = tmp_path / "half.dcm"
    data = dicom_file("CT_small.dcm").read_bytes()
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanError, match="half.dcm: "):
        io.read(half)


def test_missing_pydicom_is_reported(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ScanError, match="reading DICOM needs pydicom: pip install pydicom"):
        io.read(dicom_file("CT_small.dcm"))


def test_nifti_volume_to_dicom_series_keeps_world_positions(tmp_path):
    nii = io.read(NIBABEL_FILES / "anatomical.nii")
    out = tmp_path / "series"
    io.write(out, nii.replace(format="dicom"))  # no suffix: the scan's own format, DICOM
    back = io.read(out)
    x = nii.data.numpy()
    assert back.data.shape == (x.shape[2], x.shape[0], x.shape[1])  # slices along z, rows x, columns y
    # the voxel (i, j, k) of the NIfTI image is (k, i, j) of the series, at the same point (RAS -> LPS)
    i, j, k = 7, 11, 13
    ras = nii.affine @ [i, j, k, 1]
    lps = back.affine @ [k, i, j, 1]
    np.testing.assert_allclose(lps[:3], ras[:3] * [-1, -1, 1], atol=1e-4)
    assert back.data[k, i, j] == x[i, j, k]  # integer values are stored exactly


# ---------------------------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------------------------
def test_nifti_read_equals_nibabel():
    path = NIBABEL_FILES / "anatomical.nii"
    img = nib.load(path)
    scan = io.read(path)
    assert np.array_equal(scan.data.numpy(), img.get_fdata(dtype=np.float32))
    assert np.array_equal(scan.affine, img.affine)
    assert scan.spacing == tuple(float(z) for z in img.header.get_zooms())
    assert scan.dims == ("x", "y", "z") and scan.image_axes == (0, 1)
    assert scan.attrs["orientation"] == "".join(nib.aff2axcodes(img.affine)) == "LAS"
    assert scan.attrs["spatial_units"] == "mm" and scan.attrs["descrip"] == "spm - 3D normalized"


def test_nifti_4d_read_equals_nibabel():
    path = NIBABEL_FILES / "example4d.nii.gz"
    img = nib.load(path)
    scan = io.read(path)
    assert np.array_equal(scan.data.numpy(), img.get_fdata(dtype=np.float32))
    assert scan.dims == ("x", "y", "z", "t") and scan.spacing == tuple(float(z) for z in img.header.get_zooms())
    assert scan.attrs["time_units"] == "sec"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_affine_zooms_data_and_attrs(tmp_path, suffix):
    src = NIBABEL_FILES / "anatomical.nii"
    scan = io.read(src)
    scan.attrs.update(invdiff_operator=OPERATOR, invdiff_source=SOURCE)
    out = io.write(tmp_path / f"copy{suffix}", scan)
    back = io.read(out)
    assert np.array_equal(back.affine, scan.affine) and back.spacing == scan.spacing
    assert back.data.dtype == torch.float32 and torch.equal(back.data, scan.data)
    assert pub(back.attrs) == pub(scan.attrs) and back.attrs["orientation"] == "LAS"
    assert back.dims == scan.dims and back.image_axes == scan.image_axes
    h0, h1 = nib.load(src).header, nib.load(out).header
    assert (int(h1["sform_code"]), int(h1["qform_code"])) == (int(h0["sform_code"]), int(h0["qform_code"]))
    assert h1.get_xyzt_units() == h0.get_xyzt_units()
    if suffix == ".nii.gz":
        assert out.read_bytes()[:2] == b"\x1f\x8b"


def test_nifti_results_put_samples_last_with_the_same_affine(tmp_path, gen):
    like = io.read(NIBABEL_FILES / "anatomical.nii")
    like.attrs["invdiff_operator"] = OPERATOR
    shape = like.data.shape
    mean, std = torch.randn(shape, generator=gen), torch.rand(shape, generator=gen)
    samples = torch.randn((4, *shape), generator=gen)
    out = tmp_path / "rec.nii.gz"
    assert io.output_paths(out, ["mean", "std", "samples"]) == {
        "mean": out, "std": tmp_path / "rec_std.nii.gz", "samples": tmp_path / "rec_samples.nii.gz"}
    written = io.write_results(out, {"mean": mean, "std": std, "samples": samples}, like=like)
    assert written == list(io.output_paths(out, ["mean", "std", "samples"]).values())
    img = nib.load(written[2])
    assert img.shape == (*shape, 4) and np.array_equal(img.affine, like.affine)
    assert img.get_data_dtype() == np.float32 and img.header.get_slope_inter() == (None, None)
    assert np.array_equal(img.get_fdata(dtype=np.float32), np.moveaxis(samples.numpy(), 0, -1))
    back = io.read(written[2])
    assert back.dims == ("x", "y", "z", "sample") and back.attrs["invdiff_operator"] == OPERATOR
    m = io.read(written[0])
    assert torch.equal(m.data, mean) and np.array_equal(m.affine, like.affine) and m.attrs["orientation"] == "LAS"
    assert torch.equal(io.read(written[1]).data, std)


def test_nifti_scaling_is_applied(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = tmp_path / "scaled.nii"
    nib.save(nib.Nifti1Image(raw, np.diag([1.5, 1.5, 3.0, 1.0])), path)
    data = bytearray(path.read_bytes())
    data[112:120] = struct.pack("<ff", 2.0, 10.0)  # scl_slope, scl_inter of the NIfTI-1 header
    path.write_bytes(bytes(data))
    assert nib.load(path).dataobj.slope == 2.0
    scan = io.read(path)
    assert np.array_equal(scan.data.numpy(), raw * 2.0 + 10.0) and scan.spacing == (1.5, 1.5, 3.0)


def test_truncated_nifti(tmp_path):
    data = (NIBABEL_FILES / "anatomical.nii").read_bytes()
    bad = tmp_path / "cut.nii"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanError, match=r"cut.nii: not a readable NIfTI file \(truncated or corrupt\)"):
        io.read(bad)


def test_dicom_to_nifti_converts_lps_to_ras(tmp_path):
    ct = io.read(dicom_file("CT_small.dcm"))
    back = io.read(io.write(tmp_path / "ct.nii.gz", ct))
    assert torch.equal(back.data, ct.data) and back.units == "HU"
    np.testing.assert_allclose(back.affine, np.diag([-1.0, -1, 1, 1]) @ ct.affine, atol=1e-5)
    assert back.attrs["PatientID"] == ct.attrs["PatientID"] and back.attrs["affine_space"] == "RAS"


# ---------------------------------------------------------------------------------------------------------------
# fastMRI HDF5
# ---------------------------------------------------------------------------------------------------------------
HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <encoding>
    <encodedSpace><matrixSize><x>48</x><y>24</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280.0</x><y>140.5</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>16</x><y>16</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140.0</x><y>140.0</y><z>3.0</z></fieldOfView_mm></reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>23</maximum><center>12</center></kspace_encoding_step_1>
      <slice><minimum>0</minimum><maximum>1</maximum><center>0</center></slice>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>"""
FILE_ATTRS = {"acquisition": "CORPD_FBK", "max": 0.000345, "norm": 0.0123, "patient_id": "abc123"}


def _fastmri(path: Path, coils: int | None = None, nan: bool = False) -> dict:
    rng = np.random.default_rng(1)
    shape = (2, 32, 24) if coils is None else (2, coils, 32, 24)
    k = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    if nan:
        k[1, ..., 3, 4] = np.nan
    mask = rng.random(24) < 0.4
    rss = rng.random((2, 16, 16)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("mask", data=mask)
        f.create_dataset("reconstruction_rss", data=rss)
        f.create_dataset("ismrmrd_header", data=np.bytes_(HEADER.encode()))
        f.attrs.update(FILE_ATTRS)
    return {"kspace": k, "mask": mask, "reconstruction_rss": rss}


def test_fastmri_read_gives_kspace_header_mask_and_attrs(tmp_path):
    path = tmp_path / "file1000001.h5"
    ref = _fastmri(path)
    scan = io.read(path)
    assert scan.format == "fastmri" and scan.kind == "kspace" and scan.name == "kspace"
    assert scan.data.dtype == torch.complex64 and np.array_equal(scan.data.numpy(), ref["kspace"])
    assert scan.dims == ("slice", "ky", "kx") and scan.image_axes == (-2, -1)
    assert np.array_equal(scan.extras["mask"].numpy(), ref["mask"]) and scan.extras["mask"].dtype == torch.bool
    assert np.array_equal(scan.extras["reconstruction_rss"].numpy(), ref["reconstruction_rss"])
    a = scan.attrs
    assert {k: a[k] for k in FILE_ATTRS} == FILE_ATTRS
    assert a["encoded_matrix"] == [48, 24, 1] and a["recon_matrix"] == [16, 16, 1]
    assert a["encoded_fov_mm"] == [280.0, 140.5, 4.5] and a["recon_fov_mm"] == [140.0, 140.0, 3.0]
    assert a["encoding_limits"]["kspace_encoding_step_1"] == {"minimum": 0, "maximum": 23, "center": 12}
    assert a["ismrmrd_header"] == HEADER


def test_fastmri_write_keeps_the_layout(tmp_path):
    path = tmp_path / "in.h5"
    _fastmri(path, coils=3)
    scan = io.read(path)
    assert scan.dims == ("slice", "coil", "ky", "kx")
    scan.attrs["invdiff_operator"] = OPERATOR
    out = io.write(tmp_path / "out.h5", scan)
    with h5py.File(out, "r") as f:
        assert {"kspace", "mask", "reconstruction_rss", "ismrmrd_header"} <= set(f.keys())
        assert f["kspace"].dtype == np.complex64 and f["ismrmrd_header"][()].decode() == HEADER
        assert f.attrs["acquisition"] == "CORPD_FBK" and "encoded_matrix" not in f.attrs
    back = io.read(out)
    assert torch.equal(back.data, scan.data) and back.dims == scan.dims and back.kind == "kspace"
    assert pub(back.attrs) == pub(scan.attrs)
    assert set(back.extras) == set(scan.extras)
    assert all(torch.equal(back.extras[k], scan.extras[k]) for k in scan.extras)


def test_fastmri_other_datasets_and_errors(tmp_path):
    path = tmp_path / "f.h5"
    ref = _fastmri(path)
    rss = io.read(path, name="reconstruction_rss")
    assert rss.kind == "image" and rss.dims == ("slice", "row", "col")
    assert np.array_equal(rss.data.numpy(), ref["reconstruction_rss"])
    with pytest.raises(ScanError) as err:
        io.read(path, name="sinogram")
    assert str(err.value) == f"{path}: no dataset 'sinogram'; it has: ismrmrd_header, kspace, mask, reconstruction_rss"
    cut = tmp_path / "cut.h5"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanError, match=r"cut.h5: not a readable HDF5 file \(truncated or corrupt\)"):
        io.read(cut)
    bad = tmp_path / "nan.h5"
    _fastmri(bad, nan=True)
    with pytest.raises(ScanError, match=r"nan.h5: 'kspace' contains 1 NaN/Inf values"):
        io.read(bad)


def test_fastmri_results_are_datasets_with_file_attrs(tmp_path, gen):
    path = tmp_path / "f.h5"
    _fastmri(path)
    scan = io.read(path)
    like = scan.replace(data=scan.extras["reconstruction_rss"], kind="image", dims=("slice", "row", "col"),
                        name=None, extras={})
    mean = torch.rand(like.data.shape, generator=gen)
    samples = torch.rand((3, *like.data.shape), generator=gen)
    out = tmp_path / "rec.h5"
    assert io.write_results(out, {"mean": mean, "std": mean / 2, "samples": samples}, like=like) == [out]
    with h5py.File(out, "r") as f:
        assert {"mean", "std", "samples", "ismrmrd_header"} <= set(f.keys())
        assert f.attrs["acquisition"] == "CORPD_FBK"
    back = io.read(out)
    assert back.name == "mean" and torch.equal(back.data, mean) and back.kind == "image"
    s = io.read(out, name="samples")
    assert s.dims == ("sample", "slice", "row", "col") and torch.equal(s.data, samples)
    assert s.attrs["recon_matrix"] == [16, 16, 1]


# ---------------------------------------------------------------------------------------------------------------
# netCDF / zarr
# ---------------------------------------------------------------------------------------------------------------
def _field(lon360: bool) -> Scan:
    lat = np.linspace(90.0, -90.0, 7)  # descending, as ERA5 stores it
    lon = np.arange(0.0, 360.0, 45.0) if lon360 else np.arange(-180.0, 180.0, 45.0)
    time = np.array(["2021-03-01T00", "2021-03-01T06", "2021-03-01T12"], dtype="datetime64[ns]")
    rng = np.random.default_rng(2)
    data = torch.from_numpy((250 + 40 * rng.random((3, 7, 8))).astype(np.float32))
    return Scan(data=data, format="netcdf", dims=("time", "lat", "lon"), image_axes=(1, 2),
                coords={"time": time, "lat": lat, "lon": lon}, units="K", name="t2m",
                attrs={"standard_name": "air_temperature", "long_name": "2 metre temperature",
                       "Conventions": "CF-1.8", "history": "made by a test", "version": 3,
                       "invdiff_operator": OPERATOR, "invdiff_source": SOURCE})


def _engines():
    import importlib.util

    have = importlib.util.find_spec("h5netcdf") is not None
    return [pytest.param("scipy", id="netcdf3-scipy"),
            pytest.param("h5netcdf", id="netcdf4-h5netcdf",
                         marks=[] if have else [pytest.mark.skip(reason="h5netcdf is not installed")])]


@pytest.fixture
def engine(request, monkeypatch):
    from invdiff.io import grid

    if request.param == "scipy":  # write netCDF-3 as if h5netcdf were not installed
        real = grid._have
        monkeypatch.setattr(grid, "_have", lambda m: False if m == "h5netcdf" else real(m))
    return request.param


@pytest.mark.parametrize("engine", _engines(), indirect=True)
@pytest.mark.parametrize("lon360", [False, True], ids=["lon-180..180", "lon0..360"])
def test_netcdf_round_trip_keeps_coords_and_attrs(tmp_path, engine, lon360):
    scan = _field(lon360)
    out = io.write(tmp_path / "t2m.nc", scan)
    assert out.read_bytes()[:4] == (b"CDF\x02" if engine == "scipy" else b"\x89HDF")
    back = io.read(out)
    assert back.format == "netcdf" and back.name == "t2m" and back.kind == "image"
    assert torch.equal(back.data, scan.data) and back.dims == scan.dims and back.units == "K"
    assert set(back.coords) == {"time", "lat", "lon"}
    for k, v in scan.coords.items():
        assert back.coords[k].dtype == v.dtype and np.array_equal(back.coords[k], v), k
    assert pub(back.attrs) == scan.attrs
    assert back.image_axes == (1, 2) and back.spacing == (None, 30.0, 45.0)
    with xr.open_dataset(out, engine=engine) as ds:  # CF attributes where other tools look for them
        assert ds["lat"].attrs["units"] == "degrees_north" and ds["lon"].attrs["standard_name"] == "longitude"
        assert ds["t2m"].attrs["units"] == "K" and ds["t2m"].attrs["standard_name"] == "air_temperature"
        assert ds.attrs["Conventions"] == "CF-1.8"
    text = io.describe(out)
    assert ("longitude convention 0..360" if lon360 else "longitude convention -180..180") in text
    assert "90 .. -90" in text and "descending" in text


@pytest.mark.parametrize("engine", _engines(), indirect=True)
def test_netcdf_results_add_a_sample_dim(tmp_path, engine, gen):
    like = _field(True)
    # keep the coordinate attributes of a file that was read
    like = io.read(io.write(tmp_path / "in.nc", like))
    mean = like.data + 1
    samples = mean + torch.randn((2, *like.data.shape), generator=gen)
    out = tmp_path / "rec.nc"
    assert io.write_results(out, {"mean": mean, "std": mean / 10, "samples": samples}, like=like) == [out]
    back = io.read(out)
    assert back.name == "mean" and torch.equal(back.data, mean) and back.units == "K"
    s = io.read(out, name="samples")
    assert s.dims == ("sample", "time", "lat", "lon") and torch.equal(s.data, samples)
    assert all(np.array_equal(s.coords[k], like.coords[k]) for k in like.coords)
    assert s.attrs["invdiff_operator"] == OPERATOR


def test_netcdf_stations_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    scan = Scan(data=torch.from_numpy(rng.random((2, 5)).astype(np.float32)), format="netcdf",
                kind="stations", dims=("time", "station"), units="mm",
                coords={"time": np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[ns]"),
                        "station_lat": np.array([51.5, 48.9, -33.9, 35.7, 64.1]),
                        "station_lon": np.array([-0.1, 2.35, 151.2, 139.7, -21.9])},
                name="precip", attrs={"source": "synthetic"})
    back = io.read(io.write(tmp_path / "stations.nc", scan))
    assert back.kind == "stations" and back.dims == ("time", "station") and torch.equal(back.data, scan.data)
    assert set(back.coords) == set(scan.coords)
    assert all(np.array_equal(back.coords[k], v) for k, v in scan.coords.items())
    assert back.attrs["_coord_dims"]["station_lat"] == ("station",) and pub(back.attrs) == scan.attrs


def test_zarr_round_trip_and_results(tmp_path, gen):
    pytest.importorskip("zarr")
    scan = _field(False)
    scan.extras["land"] = torch.rand(scan.data.shape, generator=gen)
    store = io.write(tmp_path / "t2m.zarr", scan)
    assert store.is_dir() and io.detect_format(store) == "zarr"
    before = snapshot(store)
    back = io.read(store)
    assert snapshot(store) == before
    assert back.format == "zarr" and torch.equal(back.data, scan.data) and pub(back.attrs) == scan.attrs
    assert all(np.array_equal(back.coords[k], v) for k, v in scan.coords.items())
    assert torch.equal(back.extras["land"], scan.extras["land"])
    out = tmp_path / "rec.zarr"
    io.write_results(out, {"mean": scan.data, "samples": scan.data.expand(2, -1, -1, -1)}, like=back)
    assert io.read(out, name="samples").dims == ("sample", "time", "lat", "lon")
    with pytest.raises(FileExistsError):
        io.write_results(out, {"mean": scan.data}, like=back)
    io.write_results(out, {"mean": scan.data + 1}, like=back, overwrite=True)
    assert torch.equal(io.read(out).data, scan.data + 1) and leftovers(tmp_path) == []


def test_missing_zarr_is_reported(tmp_path, monkeypatch):
    import sys

    (tmp_path / "x.zarr").mkdir()
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ScanError, match="reading zarr needs zarr: pip install zarr"):
        io.read(tmp_path / "x.zarr")


def test_xarray_example_file():
    if not XARRAY_EXAMPLE.exists():
        pytest.skip("xarray's example_1.nc is not installed")
    with pytest.raises(ScanError, match="choose one of: temp, rh"):
        io.read(XARRAY_EXAMPLE)
    scan = io.read(XARRAY_EXAMPLE, name="temp")
    with xr.open_dataset(XARRAY_EXAMPLE) as ds:
        assert np.array_equal(scan.data.numpy(), ds["temp"].values)
        assert scan.dims == tuple(ds["temp"].dims) and scan.units == ds["temp"].attrs.get("units")
        assert np.array_equal(scan.coords["lon"], ds["lon"].values)
    assert scan.image_axes == (2, 3)
    with pytest.raises(ScanError, match="no variable 'sst'; it has: temp, rh"):
        io.read(XARRAY_EXAMPLE, name="sst")


def test_netcdf_nan_is_an_error(tmp_path):
    scan = _field(False)
    scan.data[0, 3, 4] = float("nan")
    out = io.write(tmp_path / "gap.nc", scan)
    with pytest.raises(ScanError, match="'t2m' contains 1 NaN/Inf values"):
        io.read(out)


# ---------------------------------------------------------------------------------------------------------------
# npy / npz / png / tiff
# ---------------------------------------------------------------------------------------------------------------
def _image_scan(gen, shape=(20, 30), dtype=torch.float32) -> Scan:
    return Scan(data=torch.randn(shape, generator=gen, dtype=dtype) * 50 + 10, format="npy", kind="image",
                dims=("row", "col"), spacing=(0.5, 0.25), units="a.u.", name="mean",
                attrs={"invdiff_operator": OPERATOR, "note": "x", "flag": True})


def test_npy_round_trip_is_exact(tmp_path, gen):
    for dtype in (torch.float32, torch.float64, torch.complex64):
        scan = _image_scan(gen, dtype=dtype) if dtype != torch.complex64 else \
            _image_scan(gen).replace(data=torch.randn(20, 30, dtype=torch.complex64, generator=gen))
        back = io.read(io.write(tmp_path / f"{str(dtype)[6:]}.npy", scan))
        assert back.data.dtype == dtype and torch.equal(back.data, scan.data)
        assert back.dims == ("row", "col")


def test_npz_round_trip_keeps_all_metadata(tmp_path, gen):
    scan = _field(True).replace(format="npz", affine=np.diag([2.0, 3.0, 4.0, 1.0]), spacing=(None, 30.0, 45.0))
    scan.extras["mask"] = torch.rand(scan.data.shape, generator=gen) > 0.5
    out = io.write(tmp_path / "f.npz", scan)
    with np.load(out) as z:
        assert set(z.files) == {"t2m", "mask", "__invdiff__"} and json.loads(str(z["__invdiff__"]))["invdiff"] == 1
    back = io.read(out)
    assert torch.equal(back.data, scan.data) and back.name == "t2m" and back.units == "K"
    assert back.dims == scan.dims and back.spacing == scan.spacing and back.image_axes == scan.image_axes
    assert np.array_equal(back.affine, scan.affine) and pub(back.attrs) == scan.attrs
    assert all(back.coords[k].dtype == v.dtype and np.array_equal(back.coords[k], v) for k, v in scan.coords.items())
    assert torch.equal(back.extras["mask"], scan.extras["mask"])
    res = tmp_path / "rec.npz"
    io.write_results(res, {"mean": scan.data, "samples": scan.data[None].repeat(2, 1, 1, 1)}, like=scan)
    assert io.read(res).name == "mean" and io.read(res, name="samples").dims[0] == "sample"


def test_png_round_trip_within_16_bit_quantisation(tmp_path, gen):
    scan = _image_scan(gen)
    out = io.write(tmp_path / "img.png", scan)
    back = io.read(out)
    x = scan.data.double()
    step = (x.max() - x.min()).item() / 65535  # one 16-bit level over the value range
    assert (back.data.double() - x).abs().max().item() <= step / 2 + 1e-5 * x.abs().max().item()
    assert back.dims == scan.dims and back.spacing == scan.spacing and pub(back.attrs) == scan.attrs
    assert back.units == "a.u."
    with pytest.raises(ScanError, match=r"PNG holds one 2-D image.*\.tif or \.npy"):
        io.write(tmp_path / "stack.png", scan.replace(data=torch.zeros(2, 4, 4)))
    with pytest.raises(ScanError, match="complex"):
        io.write(tmp_path / "k.png", scan.replace(data=torch.zeros(4, 4, dtype=torch.complex64)))
    with pytest.raises(ScanError, match=r"samples axis.*\.tif or \.npy"):
        io.write_results(tmp_path / "r.png", {"mean": scan.data, "samples": scan.data[None].repeat(2, 1, 1)},
                         like=scan)
    assert not (tmp_path / "r.png").exists() and leftovers(tmp_path) == []


def test_plain_png_reads_as_unit_range(tmp_path):
    from PIL import Image

    gray = np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert np.array_equal(io.read(tmp_path / "g.png").data.numpy(), (gray / 255.0).astype(np.float32))
    rgb = np.stack([gray, gray // 2, np.full_like(gray, 30)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    scan = io.read(tmp_path / "c.png")
    np.testing.assert_allclose(scan.data.numpy(), rgb.astype(np.float64).mean(-1) / 255.0, rtol=1e-6)
    assert scan.attrs["converted"] == "rgb->gray"


def test_tiff_round_trip_and_stacked_results(tmp_path, gen):
    pytest.importorskip("tifffile")
    scan = _image_scan(gen)
    back = io.read(io.write(tmp_path / "img.tif", scan))
    assert torch.equal(back.data, scan.data) and back.dims == scan.dims and pub(back.attrs) == scan.attrs
    vol = scan.replace(data=torch.randn(2, 3, 5, 6, generator=gen), dims=("t", "slice", "row", "col"), spacing=None)
    back = io.read(io.write(tmp_path / "vol.tiff", vol))
    assert torch.equal(back.data, vol.data) and back.dims == vol.dims
    samples = scan.data[None] + torch.randn(3, 20, 30, generator=gen)
    paths = io.write_results(tmp_path / "rec.tif", {"mean": scan.data, "samples": samples}, like=scan)
    assert paths == [tmp_path / "rec.tif", tmp_path / "rec_samples.tif"]
    s = io.read(paths[1])
    assert torch.equal(s.data, samples) and s.dims == ("sample", "row", "col")


@pytest.mark.parametrize("suffix", [".h5", ".nii", ".nii.gz", ".dcm", ".nc", ".npz", ".png", ".tif"])
def test_every_format_keeps_dims_spacing_units_and_attrs(tmp_path, gen, suffix):
    scan = _image_scan(gen)
    back = io.read(io.write(tmp_path / f"img{suffix}", scan))
    x = scan.data.double()
    # DICOM stores int16 with a slope of range / 65530; PNG 16 bits over the range; the others are exact
    tol = {".dcm": 1.0 / 65530 / 2, ".png": 1.0 / 65535 / 2}.get(suffix, 0.0) * (x.max() - x.min()).item()
    assert (back.data.double() - x).abs().max().item() <= tol + 1e-6 * x.abs().max().item()
    assert back.dims == scan.dims and back.units == scan.units and back.kind == "image"
    assert back.spacing == pytest.approx(scan.spacing)
    assert {k: back.attrs.get(k) for k in scan.attrs} == scan.attrs


def test_hdf5_keeps_coordinates_and_extras(tmp_path, gen):
    scan = _field(False).replace(format="fastmri")
    scan.coords["station"] = np.array(["a", "bb", "ccc"])  # a string coordinate along time
    scan.extras["weights"] = torch.rand(7, 8, generator=gen)
    back = io.read(io.write(tmp_path / "f.h5", scan))
    assert torch.equal(back.data, scan.data) and back.dims == scan.dims and back.name == "t2m"
    assert all(back.coords[k].dtype.kind == v.dtype.kind and np.array_equal(back.coords[k], v)
               for k, v in scan.coords.items())
    assert torch.equal(back.extras["weights"], scan.extras["weights"]) and pub(back.attrs) == scan.attrs
    assert back.units == "K" and back.image_axes == (1, 2)


# ---------------------------------------------------------------------------------------------------------------
# detection, safety, all-or-nothing
# ---------------------------------------------------------------------------------------------------------------
def test_detect_format_and_errors(tmp_path):
    assert io.detect_format(NIBABEL_FILES / "example4d.nii.gz") == "nifti"
    assert io.detect_format(dicom_file("CT_small.dcm")) == "dicom"
    plain = tmp_path / "IM0001"  # DICOM without a suffix: found by the DICM marker
    shutil.copy(dicom_file("CT_small.dcm"), plain)
    assert io.detect_format(plain) == "dicom" and io.detect_format(tmp_path) == "dicom"
    with pytest.raises(ScanError) as err:
        io.detect_format(tmp_path / "nothing.h5")
    assert str(err.value) == f"{tmp_path / 'nothing.h5'}: no such file or folder"
    (tmp_path / "x.xyz").write_text("?")
    with pytest.raises(ScanError, match=r"x.xyz: unknown file format '\.xyz'; invdiff reads \.h5 .*\.nii"):
        io.read(tmp_path / "x.xyz")
    (tmp_path / "fake.nc").write_bytes(b"hello world")
    with pytest.raises(ScanError, match="fake.nc: not a netCDF file"):
        io.read(tmp_path / "fake.nc")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScanError, match="neither a zarr store nor a folder of DICOM files"):
        io.read(empty)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    p = tmp_path / "secret.npy"
    np.save(p, np.zeros(3))
    p.chmod(0)
    with pytest.raises(ScanError, match="permission denied"):
        io.read(p)


def test_existing_output_is_never_replaced_without_overwrite(tmp_path, gen):
    scan = _image_scan(gen)
    for suffix in (".npy", ".nii.gz", ".h5", ".nc", ".tif", ".png", ".npz", ".dcm"):
        out = tmp_path / f"out{suffix}"
        out.write_bytes(b"precious")
        with pytest.raises(FileExistsError, match=f"{out.name} already exists; pass --overwrite to replace it"):
            io.write(out, scan)
        assert out.read_bytes() == b"precious"
        io.write(out, scan, overwrite=True)
        assert torch.allclose(io.read(out).data, scan.data, atol=1e-2 * scan.data.abs().max().item())
    with pytest.raises(FileNotFoundError):
        io.write(tmp_path / "no" / "such" / "folder.npy", scan)
    assert leftovers(tmp_path) == []


def test_write_results_is_all_or_nothing(tmp_path, gen):
    like = io.read(NIBABEL_FILES / "anatomical.nii")
    mean = torch.rand(like.data.shape, generator=gen)
    out = tmp_path / "rec.nii"
    second = tmp_path / "rec_std.nii"
    second.write_bytes(b"older result")
    with pytest.raises(FileExistsError, match="rec_std.nii already exists"):
        io.write_results(out, {"mean": mean, "std": mean}, like=like)
    assert not out.exists() and second.read_bytes() == b"older result" and leftovers(tmp_path) == []
    # a failure while writing (second result has a wrong shape) leaves nothing either
    with pytest.raises(ScanError, match="'std' has shape"):
        io.write_results(out, {"mean": mean, "std": mean[:-1]}, like=like, overwrite=True)
    assert not out.exists() and second.read_bytes() == b"older result" and leftovers(tmp_path) == []
    written = io.write_results(out, {"mean": mean, "std": mean}, like=like, overwrite=True)
    assert written == [out, second] and torch.equal(io.read(second).data, mean)


def test_output_paths():
    assert io.output_paths("a/out.nii.gz", ["mean", "std"]) == {"mean": Path("a/out.nii.gz"),
                                                                "std": Path("a/out_std.nii.gz")}
    assert io.output_paths("out.NPY", ["mean", "samples"])["samples"] == Path("out_samples.NPY")
    for c in ("r.h5", "r.hdf5", "r.nc", "r.zarr", "r.npz"):
        assert set(io.output_paths(c, ["mean", "std", "samples"]).values()) == {Path(c)}
    assert io.output_paths("series", ["mean", "std"]) == {"mean": Path("series"), "std": Path("series_std")}
    assert set(io.FORMATS) == {"fastmri", "nifti", "dicom", "netcdf", "zarr", "npy", "npz", "png", "tiff"}
    assert io.split_name("a/Brain.NII.GZ") == ("nifti", "Brain", ".NII.GZ")  # one suffix, case kept
    assert io.split_name("rec.h5") == ("fastmri", "rec", ".h5")
    assert io.split_name("notes.txt") == (None, "notes.txt", "") and io.split_name(".npy")[0] is None


def _inputs(tmp_path: Path, gen) -> list[Path]:
    """One input of every format, written by the test (or shipped with a dependency)."""
    _fastmri(tmp_path / "k.h5")
    scan = _image_scan(gen)
    paths = [tmp_path / "k.h5", dicom_file("CT_small.dcm"), NIBABEL_FILES / "example4d.nii.gz"]
    for suffix in (".npy", ".npz", ".png", ".tif", ".nii"):
        paths.append(io.write(tmp_path / f"x{suffix}", scan))
    paths.append(io.write(tmp_path / "f.nc", _field(False)))
    paths.append(io.write(tmp_path / "series", _volume_scan()))
    return paths


def test_reading_never_modifies_the_input(tmp_path, gen):
    for path in _inputs(tmp_path, gen):
        before = snapshot(path)
        io.read(path)
        text = io.describe(path)
        assert snapshot(path) == before, path
        assert text.startswith(str(path)) and "format:" in text and "values:" in text


def test_describe_lists_what_matters(tmp_path):
    _fastmri(tmp_path / "k.h5")
    text = io.describe(tmp_path / "k.h5")
    for part in ("fastMRI HDF5", "kspace", "2 x 32 x 24", "complex64", "acquisition: CORPD_FBK",
                 "recon_matrix: [16,16,1]", "mask", "ismrmrd_header"):
        assert part in text, part
    text = io.describe(NIBABEL_FILES / "anatomical.nii")
    assert "orientation: LAS" in text and "zooms: 2 x 2 x 2 (mm, sec)" in text and "33 x 41 x 25" in text
    scan = io.read(NIBABEL_FILES / "anatomical.nii")
    scan.attrs["invdiff_operator"] = OPERATOR
    text = io.describe(io.write(tmp_path / "op.nii", scan))
    assert "invdiff operator: name=mri, acceleration=4.0" in text


def test_docstring_examples():
    import doctest

    from invdiff.io import _formats

    result = doctest.testmod(_formats, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_single_array_formats_refuse_other_names(tmp_path, gen):
    scan = _image_scan(gen)
    for suffix in (".npy", ".png", ".tif", ".nii", ".dcm"):
        out = io.write(tmp_path / f"x{suffix}", scan)
        with pytest.raises(ScanError, match="there is no array 'std'|no array 'std'"):
            io.read(out, name="std")
        if suffix != ".npy":
            assert io.read(out, name="mean").name == "mean"


def test_truncated_files_of_every_format_are_scan_errors(tmp_path, gen):
    for path in _inputs(tmp_path, gen):
        if path.is_dir() or tmp_path not in path.parents:
            continue
        data = path.read_bytes()
        for frac in (0.5, 0.9):
            cut = tmp_path / f"cut{int(frac * 10)}_{path.name}"
            cut.write_bytes(data[: int(len(data) * frac)])
            with pytest.raises(ScanError) as err:
                io.read(cut)
            assert str(err.value).startswith(str(cut)) and "\n" not in str(err.value), err.value
