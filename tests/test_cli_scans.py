"""End to end: the installed ``invdiff`` command on files made from real data shipped by the dependencies.

Every test runs ``invdiff simulate`` / ``reconstruct`` / ``evaluate`` / ``info`` in a subprocess, as a user would,
and checks the files it writes (values, metadata round-trips, PSNR against the reference) or, for bad input,
the exit code 2, a one-line message naming the file, no traceback and no output left behind.

Data: nibabel's ``example4d.nii.gz`` (a real EPI brain volume), pydicom's ``CT_small.dcm`` (a real CT slice, HU)
and a slice of ``example4d.nii.gz`` made into fastMRI-layout k-space files (single- and multi-coil), and a CF netCDF vorticity
field from invdiff's Kolmogorov-flow solver on a lat/lon grid.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from invdiff import metrics

INVDIFF = Path(sys.executable).parent / "invdiff"
FAST = ["--steps", "50", "--samples", "2", "--quiet"]


def run(*args, cwd=None, timeout=600):
    """Run the installed command; returns the CompletedProcess (text)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
    return subprocess.run([str(INVDIFF), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def ok(*args, **kw):
    r = run(*args, **kw)
    assert r.returncode == 0, f"invdiff {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def user_error(*args, contains=(), **kw):
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    r = run(*args, **kw)
    assert r.returncode == 2, f"expected exit 2, got {r.returncode}:\n{r.stdout}\n{r.stderr}"
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr, r.stderr
    assert err.startswith("invdiff: error: ") and "\n" not in err, err
    for c in contains:
        assert c in err, f"{c!r} not in {err!r}"
    return err


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_the_command_is_installed():
    assert INVDIFF.exists(), f"{INVDIFF} missing: install the package (pip install -e .) as the README says"
    r = ok("--help")
    for cmd in ("simulate", "reconstruct", "evaluate", "info", "priors", "train"):
        assert cmd in r.stdout
    for cmd in ("simulate", "reconstruct", "evaluate", "info"):
        assert "examples:" in ok(cmd, "--help").stdout


# -- real files ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def brain_nifti(work):
    """Two axial slices of nibabel's example4d.nii.gz (a real EPI brain volume, 128x96x24, first time point),
    cropped to the central 96x96 so that resizing to 64x64 keeps the aspect; the affine follows the crop."""
    import nibabel as nib

    src = nib.load(os.path.join(os.path.dirname(nib.__file__), "tests", "data", "example4d.nii.gz"))
    data = np.asarray(src.dataobj, dtype=np.float32)[16:112, :, 10:12, 0]
    aff = src.affine.copy()
    aff[:3, 3] += aff[:3, 0] * 16 + aff[:3, 2] * 10
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm")
    path = work / "brain.nii.gz"
    nib.save(img, path)
    return path


@pytest.fixture(scope="module")
def ct_dicom():
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm"))


def _brain_slice() -> np.ndarray:
    """A real MRI slice: example4d.nii.gz, slice 11, first time point, central 96x96 resized to 64x64, in [0, 1]."""
    import nibabel as nib
    import torch.nn.functional as F

    src = nib.load(os.path.join(os.path.dirname(nib.__file__), "tests", "data", "example4d.nii.gz"))
    x = torch.from_numpy(np.asarray(src.dataobj, dtype=np.float32)[16:112, :, 11, 0])
    x = F.interpolate(x[None, None], size=(64, 64), mode="area")[0, 0].numpy().astype(np.float64)
    return x / x.max()


def _fastmri(path: Path, kspace: np.ndarray, rss: np.ndarray, mask: np.ndarray | None = None) -> Path:
    import h5py

    H, W = kspace.shape[-2:]
    m = f"<matrixSize><x>{W}</x><y>{H}</y><z>1</z></matrixSize>"
    header = ('<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
              f"<encodedSpace>{m}</encodedSpace><reconSpace>{m}</reconSpace><encodingLimits><kspace_encoding_step_1>"
              f"<minimum>0</minimum><maximum>{W - 1}</maximum><center>{W // 2}</center></kspace_encoding_step_1>"
              "</encodingLimits></encoding></ismrmrdHeader>")
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace.astype(np.complex64))
        f.create_dataset("reconstruction_rss", data=rss.astype(np.float32))
        f.create_dataset("ismrmrd_header", data=np.bytes_(header))
        if mask is not None:
            f.create_dataset("mask", data=mask.astype(np.float32))
        f.attrs.update({"acquisition": "AXT1", "max": float(rss.max()), "norm": float(np.linalg.norm(rss)),
                        "patient_id": "example4d"})
    return path


@pytest.fixture(scope="module")
def fastmri_file(work):
    """fastMRI training-file layout made from a real brain slice: fully sampled single-coil k-space (1, 64, 64),
    reconstruction_rss, an ISMRMRD header and fastMRI's attributes; the RSS also saved as the reference."""
    from invdiff.operators.mri import fft2c

    img = _brain_slice()
    k = fft2c(torch.from_numpy(img)).numpy()
    np.save(work / "brain_rss.npy", img[None].astype(np.float32))
    return _fastmri(work / "file_brain.h5", k[None], img[None])


@pytest.fixture(scope="module")
def fastmri_multicoil(work):
    """fastMRI test-file layout: 4-coil k-space (1, 4, 64, 64) undersampled 4x with its ``mask`` dataset."""
    from invdiff.operators.mri import equispaced_mask, fft2c, simulate_coil_maps

    img = _brain_slice()
    maps = simulate_coil_maps(4, (64, 64), dtype=torch.complex128)
    cols = equispaced_mask(64, 0.08, 4, seed=1)
    k = fft2c(maps * torch.from_numpy(img)) * cols.to(torch.float64)
    np.save(work / "brain_rss.npy", img[None].astype(np.float32))
    return _fastmri(work / "file_brain_multicoil.h5", k.numpy()[None], img[None], cols.numpy())


@pytest.fixture(scope="module")
def field_netcdf(work):
    """A CF netCDF vorticity field (Kolmogorov flow, 64x64) on a global grid: latitude north to south,
    longitude -180..180."""
    import xarray as xr

    from invdiff.datasets.kolmogorov import KolmogorovFlow

    ds = KolmogorovFlow(n=1, seed=3)
    w = ds[0].reshape(64, 64).numpy().astype(np.float32)
    lat = (90 - (np.arange(64) + 0.5) * 180 / 64).astype(np.float32)
    lon = (-180 + np.arange(64) * 360 / 64).astype(np.float32)
    field = xr.Dataset(
        {"vorticity": (("lat", "lon"), w, {"units": "s-1", "long_name": "relative vorticity"})},
        coords={"lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})},
        attrs={"Conventions": "CF-1.8", "source": "invdiff.datasets.kolmogorov"},
    )
    path = work / "field.nc"
    field.to_netcdf(path)
    return path


# -- the round trips -------------------------------------------------------------------------------------------
def _summary(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def test_mri_nifti_to_kspace_hdf5_and_back(work, brain_nifti):
    import h5py

    before = digest(brain_nifti)
    k = work / "brain_k.h5"
    ok("simulate", brain_nifti, "--operator", "mri:acceleration=4", "--resize", "64", "--out", k)
    with h5py.File(k, "r") as f:
        assert f["kspace"].shape == (2, 64, 64) and f["kspace"].dtype == np.complex64
        mask = f["mask"][()]
        assert mask.shape == (64,) and 3.5 < 64 / mask.sum() < 4.5
        kk = f["kspace"][()]
        assert np.all(kk[..., mask == 0] == 0)  # unsampled columns are zero
    info = ok("info", k).stdout
    assert "mri" in info and "acceleration" in info
    out = work / "brain_rec.h5"
    ok("reconstruct", k, *FAST, "--out", out, "--reference", brain_nifti, "--report", work / "brain.png",
       "--save-samples")
    assert digest(brain_nifti) == before
    s = _summary(work / "brain_rec.json")
    m, b = s["metrics"]["posterior_mean"], s["metrics"]["baseline"]
    assert s["slices"] == 2 and s["nfe"] > 0 and s["seconds"] > 0
    # the posterior mean beats the zero-filled reconstruction of the same measurement
    assert m["psnr"] > b["psnr"] + 1.0, s["metrics"]
    assert 0 < m["coverage90"] <= 1
    with h5py.File(out, "r") as f:
        assert f["mean"].shape == (64, 64, 2) and f["std"].shape == (64, 64, 2)
        assert f["samples"].shape == (2, 64, 64, 2)
        assert np.isfinite(f["std"][()]).all() and float(np.min(f["std"][()])) >= 0
    assert (work / "brain.png").stat().st_size > 10_000
    # evaluate reads the samples from the same file: its numbers are the summary's, coverage included
    ref = work / "brain_ref64.npy"
    import nibabel as nib
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(nib.load(brain_nifti).dataobj, dtype=np.float32)).permute(2, 0, 1)[:, None]
    np.save(ref, F.interpolate(x, size=(64, 64), mode="area")[:, 0].numpy())
    ev = json.loads(ok("evaluate", out, ref, "--json").stdout)
    for key in ("psnr", "ssim", "relative_l2", "coverage90"):
        assert ev[key] == pytest.approx(m[key], abs=2e-3), (key, ev, m)
    text = ok("evaluate", out, ref).stdout
    assert "PSNR" in text and "coverage" in text


def test_nifti_in_nifti_out_keeps_the_affine(work, brain_nifti):
    import nibabel as nib

    blurred = work / "brain_blur.nii.gz"
    ok("simulate", brain_nifti, "--operator", "blur:sigma=1.5,noise=0.01", "--resize", "64", "--prior",
       "mri-brain-64", "--out", blurred)
    b = nib.load(blurred)
    src = nib.load(brain_nifti)
    assert b.shape == (64, 64, 2)
    # resampling 33x41 -> 64x64 keeps the field of view: corner-to-corner extent is unchanged
    for ax, n_old in ((0, 96), (1, 96)):
        assert np.allclose(b.affine[:3, ax] * 64, src.affine[:3, ax] * n_old, rtol=1e-6)
    assert np.allclose(b.affine[:3, 2], src.affine[:3, 2])
    out = work / "brain_deblur.nii.gz"
    ok("reconstruct", blurred, *FAST, "--out", out, "--save-samples")
    rec, std = nib.load(out), nib.load(work / "brain_deblur_std.nii.gz")
    smp = nib.load(work / "brain_deblur_samples.nii.gz")
    assert smp.shape == (64, 64, 2, 2) and np.array_equal(smp.affine, b.affine)  # samples on the last axis
    # the mean file is the mean of the samples file (float32 storage)
    assert np.allclose(np.asarray(smp.dataobj).mean(-1), np.asarray(rec.dataobj), rtol=1e-4, atol=1e-3)
    assert np.array_equal(rec.affine, b.affine) and np.array_equal(std.affine, b.affine)
    assert rec.shape == (64, 64, 2) and std.shape == (64, 64, 2)
    assert "".join(nib.aff2axcodes(rec.affine)) == "".join(nib.aff2axcodes(src.affine))
    # evaluate: the printed numbers are the metrics of the file against the reference
    ref = work / "brain_blur_ref.npy"
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(nib.load(brain_nifti).dataobj, dtype=np.float32)).permute(2, 0, 1)[:, None]
    ref_img = F.interpolate(x, size=(64, 64), mode="area")[:, 0]
    np.save(ref, ref_img.numpy())
    ev = json.loads(ok("evaluate", out, ref, "--json").stdout)
    mean = torch.from_numpy(np.asarray(rec.dataobj, dtype=np.float64)).permute(2, 0, 1)
    r = ref_img.to(torch.float64)
    rng = float(r.max() - r.min())
    assert ev["psnr"] == pytest.approx(float(metrics.psnr(mean, r, data_range=rng)), abs=1e-4)
    assert ev["relative_l2"] == pytest.approx(float(metrics.relative_l2(mean, r)), rel=1e-4)
    # the samples sibling (OUT_samples.nii.gz) is found: coverage from its per-pixel 5% / 95% quantiles
    samples = torch.from_numpy(np.asarray(smp.dataobj, dtype=np.float64)).permute(3, 2, 0, 1)
    assert ev["coverage90"] == pytest.approx(float(metrics.coverage(samples, r, 0.9)), abs=1e-6)


def test_ct_dicom_to_sinogram_and_back_to_dicom(work, ct_dicom):
    import pydicom

    sino = work / "ct_sino.h5"
    ok("simulate", ct_dicom, "--operator", "ct:views=16", "--resize", "64", "--out", sino)
    out = work / "ct_rec.dcm"
    ok("reconstruct", sino, *FAST, "--out", out, "--reference", ct_dicom)
    s = _summary(work / "ct_rec.json")
    # ct-phantom-64 was trained on random ellipses, not anatomy: on this real slice it does not beat FBP (about
    # 19 dB against FBP's 26 dB at these settings). The check is that geometry and HU scaling are right: a
    # transposed, flipped or unscaled result scores far lower.
    assert s["metrics"]["posterior_mean"]["psnr"] > 16, s["metrics"]
    assert s["metrics"]["baseline"]["psnr"] > 22, s["metrics"]
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(ct_dicom)
    assert ds.PatientID == src.PatientID and ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert np.allclose([float(v) for v in ds.PixelSpacing], [float(v) * 2 for v in src.PixelSpacing], rtol=1e-4)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    src_hu = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
    lo, hi = np.percentile(src_hu, [1, 99])
    r_lo, r_hi = np.percentile(hu, [1, 99])  # measured: -832, 388 against the source's -850, 673
    # Hounsfield units, not normalised values: air where the source has air, tissue well above it
    assert abs(r_lo - lo) < 0.1 * (hi - lo) and r_hi > lo + 0.5 * (hi - lo), (r_lo, r_hi, lo, hi)


def test_fastmri_file_retrospective_undersampling(work, fastmri_file):
    before = digest(fastmri_file)
    out = work / "mr_rec.h5"
    ok("reconstruct", fastmri_file, "--operator", "mri:acceleration=4", "--prior", "mri-brain-64", *FAST,
       "--out", out, "--reference", work / "brain_rss.npy")
    assert digest(fastmri_file) == before
    s = _summary(work / "mr_rec.json")
    assert "estimated" in s["intensity"]["from"]
    assert s["metrics"]["posterior_mean"]["psnr"] > s["metrics"]["baseline"]["psnr"] + 1.0, s["metrics"]
    ev = json.loads(ok("evaluate", out, work / "brain_rss.npy", "--json").stdout)
    assert abs(ev["psnr"] - s["metrics"]["posterior_mean"]["psnr"]) < 1e-3


def test_fastmri_multicoil_file_with_its_mask(work, fastmri_multicoil):
    import h5py

    out = work / "mc_rec.h5"
    r = ok("reconstruct", fastmri_multicoil, "--prior", "mri-brain-64", *FAST, "--out", out,
           "--reference", work / "brain_rss.npy")
    assert "imaginary part" not in r.stderr  # the complex coil maps were never cast to a real dtype
    s = _summary(work / "mc_rec.json")
    assert s["operator"]["mask"] == "file" and abs(s["operator"]["acceleration"] - 4) < 0.5
    assert s["metrics"]["posterior_mean"]["psnr"] > s["metrics"]["baseline"]["psnr"] + 1.0, s["metrics"]
    # with the maps' phase dropped the result was ~20.5 dB; with the estimated maps intact it is ~23.2 dB
    assert s["metrics"]["posterior_mean"]["psnr"] > 22.3, s["metrics"]
    with h5py.File(out, "r") as f:
        assert f["mean"].shape == (1, 64, 64)
        assert f.attrs["acquisition"] == "AXT1"  # the file's attributes travel to the results
    # a setting that contradicts the file's own mask is refused
    user_error("reconstruct", fastmri_multicoil, "--operator", "mri:acceleration=8", "--out", work / "mc8.h5",
               contains=("file_brain_multicoil.h5", "acceleration"))


def test_netcdf_stations_keep_coordinates(work, field_netcdf):
    import xarray as xr

    obs = work / "obs.nc"
    ok("simulate", field_netcdf, "--operator", "stations:n=256", "--out", obs)
    with xr.open_dataset(obs) as o:
        assert o["measurement"].dims == ("station",) and o.sizes["station"] == 256
        # stations sit on grid points of the field, longitudes in its own -180..180 convention
        with xr.open_dataset(field_netcdf) as f:
            assert np.isin(o["station_lat"].values, f["lat"].values).all()
            assert np.isin(o["station_lon"].values, f["lon"].values).all()
    out = work / "field_rec.nc"
    ok("reconstruct", obs, *FAST, "--out", out, "--reference", field_netcdf)
    with xr.open_dataset(out) as r, xr.open_dataset(field_netcdf) as f:
        assert r["mean"].dims == ("lat", "lon")
        np.testing.assert_array_equal(r["lat"].values, f["lat"].values)
        np.testing.assert_array_equal(r["lon"].values, f["lon"].values)
        assert r["lon"].values.min() < 0  # the -180..180 convention is kept
    s = _summary(work / "field_rec.json")
    assert s["metrics"]["posterior_mean"]["psnr"] > s["metrics"]["baseline"]["psnr"], s["metrics"]


# -- bad input: exit 2, a message naming the file, nothing written ---------------------------------------------
def test_missing_and_unknown_files(work):
    user_error("reconstruct", work / "nope.h5", "--out", work / "x.h5", contains=("nope.h5",))
    r = run("--debug", "info", work / "nope.h5")  # --debug shows the traceback instead
    assert r.returncode != 0 and "Traceback" in r.stderr
    bad = work / "data.xyz"
    bad.write_text("hello")
    user_error("info", bad, contains=("data.xyz", "format"))
    folder = work / "not_a_scan"
    folder.mkdir(exist_ok=True)
    user_error("info", folder, contains=("not_a_scan",))  # a folder that is neither DICOM nor zarr
    garbage = work / "garbage.nii.gz"
    garbage.write_bytes(b"\x00" * 300)
    user_error("info", garbage, contains=("garbage.nii.gz",))  # unreadable as NIfTI
    assert not (work / "x.h5").exists()


def test_truncated_hdf5_and_missing_dataset(work, fastmri_file):
    cut = work / "truncated.h5"
    raw = fastmri_file.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    user_error("reconstruct", cut, "--operator", "mri", "--out", work / "t_rec.h5", contains=("truncated.h5",))
    user_error("info", cut, contains=("truncated.h5",))
    user_error("reconstruct", fastmri_file, "--dataset", "kspace_nope", "--operator", "mri",
               "--out", work / "t_rec.h5", contains=("kspace_nope",))
    assert not (work / "t_rec.h5").exists() and not (work / "t_rec.json").exists()


def test_nan_in_data(work):
    x = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    x[3, 5] = np.nan
    p = work / "nan.npy"
    np.save(p, x)
    user_error("simulate", p, "--operator", "blur", "--prior", "mri-brain-64", "--out", work / "nan_y.npy",
               contains=("nan.npy", "NaN"))
    assert not (work / "nan_y.npy").exists()


def test_shape_that_does_not_fit_the_prior(work, ct_dicom):
    err = user_error("simulate", ct_dicom, "--operator", "ct", "--out", work / "big.h5",
                     contains=("CT_small.dcm", "128x128", "64x64", "--resize 64"))
    assert not (work / "big.h5").exists()


def test_operator_contradicting_the_file(work, brain_nifti):
    k = work / "contra_k.h5"
    ok("simulate", brain_nifti, "--operator", "mri:acceleration=4", "--resize", "64", "--out", k)
    user_error("reconstruct", k, "--operator", "mri:acceleration=8", "--out", work / "c.h5",
               contains=("contra_k.h5", "acceleration"))
    user_error("reconstruct", k, "--operator", "ct", "--out", work / "c.h5", contains=("contra_k.h5", "k-space"))
    assert not (work / "c.h5").exists()


def test_existing_output_is_kept_and_input_untouched(work, brain_nifti):
    k = work / "keep_k.h5"
    ok("simulate", brain_nifti, "--operator", "mri", "--resize", "64", "--out", k)
    out = work / "keep_rec.h5"
    out.write_bytes(b"precious")
    before_k = digest(k)
    user_error("reconstruct", k, "--out", out, *FAST, contains=("keep_rec.h5", "--overwrite"))
    assert out.read_bytes() == b"precious" and digest(k) == before_k
    user_error("simulate", brain_nifti, "--operator", "mri", "--resize", "64", "--out", k, contains=("keep_k.h5",))
    assert digest(k) == before_k
    user_error("reconstruct", k, "--out", k, "--overwrite", *FAST, contains=("keep_k.h5",))
    assert digest(k) == before_k


def test_interrupted_run_leaves_nothing(work, brain_nifti):
    k = work / "int_k.h5"
    ok("simulate", brain_nifti, "--operator", "mri", "--resize", "64", "--out", k)
    before = set(os.listdir(work))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    p = subprocess.Popen([str(INVDIFF), "reconstruct", str(k), "--out", str(work / "int_rec.h5"), "--steps", "500",
                          "--samples", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         # a shell without job control starts background jobs with SIGINT ignored, and the child
                         # would inherit that (Python then installs no KeyboardInterrupt handler): restore it
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    t0 = time.time()
    while "slices" not in seen and "%" not in seen and time.time() - t0 < 120:
        seen += p.stderr.read(1)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert set(os.listdir(work)) == before  # no output, no temporary file


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(work, brain_nifti):
    k = work / "dev_k.h5"
    ok("simulate", brain_nifti, "--operator", "mri", "--resize", "64", "--out", k)
    user_error("reconstruct", k, "--device", "cuda", "--out", work / "dev.h5", contains=("CUDA", "--device cpu"))
    assert not (work / "dev.h5").exists()
