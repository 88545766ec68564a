"""NIfTI-1 images (nibabel): ``.nii`` and ``.nii.gz``.

Read as stored (no reorientation): ``data = img.get_fdata()`` (float32; float64 for float64 files; the header's
``scl_slope`` / ``scl_inter`` applied), ``affine = img.affine`` (voxel indices ``(i, j, k)`` of the first three
axes to RAS+ world millimetres), ``spacing`` = the header zooms, dims ``("x", "y", "z", "t", ...)``,
``attrs["orientation"]`` (``nibabel.aff2axcodes``, e.g. ``"LAS"``), ``attrs["spatial_units"]`` /
``attrs["time_units"]`` from ``get_xyzt_units()`` (``scan.units`` is the unit of the *values*, which NIfTI has no
field for: it comes back only from invdiff's metadata). invdiff's
metadata (attributes such as the operator settings, dims, units of the values) is kept in a header extension
with code 6 ("comment") holding the meta JSON. The original header stays in ``attrs["_nifti_header"]`` (in memory
only) so results are written with the same header: sform / qform codes, units, description.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from pathlib import Path

import numpy as np

from ._common import (Job, meta_fields, norm_axes, parse_meta, result_arrays, result_scan, scan_meta, spatial_axes,
                      to_json, to_numpy, to_tensor, why)
from ._scan import Scan, ScanError

_DIMS = ("x", "y", "z", "t", "u", "v", "w")
_EXT_CODE = 6  # "comment"
#: LPS (DICOM) <-> RAS (NIfTI) world coordinates
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def _load(path: Path):
    import nibabel as nib

    try:
        img = nib.load(str(path), mmap=False)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        raise ScanError(f"{path}: not a readable NIfTI file (truncated or corrupt): {why(err)}") from err
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image subclasses Nifti1Image
        raise ScanError(f"{path}: not a NIfTI-1/2 image (nibabel reads it as {type(img).__name__})")
    return img


def _meta_of(header) -> dict | None:
    for ext in header.extensions:
        if ext.get_code() == _EXT_CODE:
            meta = parse_meta(ext.get_content())
            if meta is not None:
                return meta
    return None


def orientation(affine) -> str:
    """Axis codes of an affine, e.g. ``"LAS"`` (``?`` for an axis that cannot be told)."""
    import nibabel as nib

    return "".join(c or "?" for c in nib.aff2axcodes(np.asarray(affine)))


def read(path: Path, name: str | None = None, fmt: str = "nifti") -> Scan:
    """Read a NIfTI image as stored (no reorientation); see the module docstring."""
    img = _load(path)
    hdr = img.header
    try:
        on_disk = hdr.get_data_dtype()
        if on_disk.kind == "c":
            a = np.asarray(img.dataobj)
        elif on_disk.names:
            raise ScanError(f"{path}: RGB NIfTI images are not supported; convert to grayscale first")
        else:
            slope, inter = hdr.get_slope_inter()
            f64 = on_disk == np.float64 and slope in (None, 1.0) and inter in (None, 0.0)
            a = img.get_fdata(dtype=np.float64 if f64 else np.float32)
    except ScanError:
        raise
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise ScanError(f"{path}: not a readable NIfTI file (truncated or corrupt): {why(err)}") from err
    data = to_tensor(a)
    meta = _meta_of(hdr)
    fields = meta_fields(meta, data.shape)
    if name is not None and name != fields.get("name"):
        stored = f" ({fields['name']!r})" if fields.get("name") else ""
        raise ScanError(f"{path}: holds one image{stored}; there is no array {name!r}")
    affine = np.asarray(img.affine, dtype=np.float64)
    zooms = tuple(float(z) for z in hdr.get_zooms())[: data.ndim]
    xyz, t = hdr.get_xyzt_units()
    attrs = dict(fields.get("attrs", {}))
    descrip = hdr["descrip"].item()
    attrs.update(orientation=orientation(affine), affine_space="RAS",
                 descrip=descrip.decode("latin-1").rstrip("\x00") if isinstance(descrip, bytes) else str(descrip))
    for key, unit in (("spatial_units", xyz), ("time_units", t)):
        if unit not in (None, "unknown"):
            attrs[key] = unit
        else:
            attrs.pop(key, None)
    units = fields.get("units")
    attrs["_nifti_header"] = hdr.copy()
    return Scan(data=data, format=fmt, kind=fields.get("kind", "image"),
                dims=fields.get("dims", _DIMS[: data.ndim]), image_axes=fields.get("image_axes", (0, 1)),
                spacing=zooms + (None,) * (data.ndim - len(zooms)), affine=affine, coords=fields.get("coords", {}),
                units=units, source=str(path), name=fields.get("name", name), attrs=attrs)


def _affine_for(scan: Scan) -> np.ndarray:
    """The scan's affine in NIfTI (RAS) world coordinates (its columns: the first three axes of the data)."""
    if scan.affine is None:
        aff = np.eye(4)
        for i, s in enumerate((scan.spacing or ())[:3]):
            if s:
                aff[i, i] = float(s)
        return aff
    aff = np.asarray(scan.affine, dtype=np.float64)
    if scan.attrs.get("affine_space") == "LPS":
        aff = FLIP @ aff
    return aff


def _spatial_first(scan: Scan) -> Scan:
    """``scan`` with the axes its affine refers to moved to the front (NIfTI's i, j, k), the others after them."""
    nd = scan.data.ndim
    axes = spatial_axes(scan.dims, nd)
    perm = axes + [i for i in range(nd) if i not in axes]
    if perm == list(range(nd)):
        return scan
    where = {old: new for new, old in enumerate(perm)}
    spacing = scan.spacing
    return scan.replace(data=scan.data.permute(perm), dims=tuple(scan.dims[i] for i in perm) if scan.dims else None,
                        spacing=tuple(spacing[i] for i in perm) if spacing and len(spacing) == nd else None,
                        image_axes=tuple(where[a] for a in norm_axes(scan.image_axes, nd)))


def _image(scan: Scan, path: Path, *, descrip: str | None = None):
    import nibabel as nib

    a = to_numpy(scan.data)
    if a.dtype.kind == "b" or a.dtype.kind in "iu":
        a = a.astype(np.float32)
    elif a.dtype.kind == "f" and a.dtype != np.float64:
        a = a.astype(np.float32)
    if a.ndim > 7 or a.ndim < 1:
        raise ScanError(f"{path}: NIfTI holds 1 to 7 dimensions, got {a.ndim}")
    template = scan.attrs.get("_nifti_header")
    affine = _affine_for(scan)
    hdr = template.copy() if isinstance(template, nib.Nifti1Header) else None
    if hdr is not None and hdr.endianness != "<":
        hdr = hdr.as_byteswapped("<")  # write little-endian, as nearly every tool does
    same = hdr is not None and np.array_equal(hdr.get_best_affine(), affine)
    img = nib.Nifti1Image(a, None if same else affine, header=hdr)
    img.set_data_dtype(a.dtype)
    h = img.header
    h.set_slope_inter(None, None)
    h["cal_min"], h["cal_max"] = 0.0, 0.0
    if hdr is not None and not same:
        img.set_sform(affine, int(hdr["sform_code"]) or 2)
        img.set_qform(affine, int(hdr["qform_code"]) or 2)
    elif hdr is None:
        code = 1 if scan.attrs.get("affine_space") == "LPS" else 2  # scanner / aligned
        img.set_sform(affine, code)
        img.set_qform(affine, code)
        xyz = scan.attrs.get("spatial_units")
        t = scan.attrs.get("time_units")
        if xyz not in ("mm", "meter", "micron"):
            xyz = "mm" if scan.affine is not None or scan.spacing else "unknown"
        h.set_xyzt_units(xyz=xyz, t=t if t in ("sec", "msec", "usec", "hz", "ppm", "rads") else "unknown")
    zooms = list(h.get_zooms()) + [1.0] * a.ndim
    spacing = list(scan.spacing or ())
    for i in range(a.ndim):
        s = spacing[i] if i < len(spacing) else None
        if s is None and i < 3:
            s = float(np.linalg.norm(affine[:3, i]))
        if s is None or not np.isfinite(s) or s <= 0:
            s = 1.0
        zooms[i] = s
    h.set_zooms(tuple(zooms[: a.ndim]))
    text = descrip if descrip is not None else scan.attrs.get("descrip")
    if text is not None:
        h["descrip"] = str(text).encode("latin-1", "replace")[:79]
    for ext in list(h.extensions):
        if ext.get_code() == _EXT_CODE and parse_meta(ext.get_content()) is not None:
            h.extensions.remove(ext)
    meta = scan_meta(scan, path, shape=a.shape)
    h.extensions.append(nib.nifti1.Nifti1Extension(_EXT_CODE, to_json(meta).encode("utf-8")))
    return img


def _save(img, tmp: Path, gz: bool):
    with open(tmp, "wb") as raw:
        cm = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if gz else contextlib.nullcontext(raw)
        with cm as f:
            img.to_stream(f)


def _is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def write_jobs(path: Path, scan: Scan) -> list[Job]:
    """One ``.nii`` / ``.nii.gz`` file (extras are not stored)."""
    img = _image(_spatial_first(scan), path)
    return [(path, False, lambda tmp: _save(img, tmp, _is_gz(path)))]


def results_jobs(targets: dict, arrays: dict, like: Scan, path: Path) -> list[Job]:
    """One image per result; an extra samples axis goes last (4-D / 5-D image), same affine and header."""
    arrays = result_arrays(path, arrays, like)
    jobs = []
    for name, a in arrays.items():
        target = targets[name]
        sub = result_scan(like, name, a)
        if a.ndim == like.data.ndim + 1:  # samples last: (..., n)
            dims = (*like.dims, "sample") if like.dims else None
            spacing = (*like.spacing, None) if like.spacing else None
            sub = sub.replace(data=sub.data.movedim(0, -1), dims=dims, spacing=spacing,
                               image_axes=norm_axes(like.image_axes, like.data.ndim))
        img = _image(sub, target, descrip=f"invdiff {name}")
        jobs.append((target, False, lambda tmp, img=img, t=target: _save(img, tmp, _is_gz(t))))
    return jobs


def describe(path: Path) -> dict:
    """Shape, dtype, zooms, units, orientation, scaling and header description of a NIfTI image."""
    img = _load(path)
    h = img.header
    slope, inter = h.get_slope_inter()
    notes = [f"orientation: {orientation(img.affine)} (sform code {int(h['sform_code'])}, "
             f"qform code {int(h['qform_code'])})",
             f"zooms: {' x '.join(f'{float(z):g}' for z in h.get_zooms())} ({', '.join(h.get_xyzt_units())})"]
    if slope not in (None, 1.0) or inter not in (None, 0.0):
        notes.append(f"scaling: value = stored * {slope} + {inter or 0}")
    notes.append("affine: " + "; ".join(" ".join(f"{v:g}" for v in row) for row in np.asarray(img.affine)[:3]))
    return {"format": f"NIfTI ({type(img).__name__}, nibabel)",
            "arrays": [("image", tuple(img.shape), f"{h.get_data_dtype()} on disk")], "notes": notes,
            "label": "image"}
