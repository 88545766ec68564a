"""Format detection and the public read / write / write_results / output_paths / describe functions.

The per-format code lives in :mod:`.fastmri`, :mod:`.nifti`, :mod:`.dicom`, :mod:`.grid` (netCDF, zarr) and
:mod:`.arrays` (npy, npz, png, tiff); each is imported only when its format is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ._common import check_finite, commit, finite_range, fmt_num, public_attrs, to_json, why
from ._scan import Scan, ScanError

__all__ = ["FORMATS", "detect_format", "split_name", "read", "write", "write_results", "output_paths", "describe"]

#: format name -> file suffixes (lower case)
FORMATS: dict[str, tuple[str, ...]] = {
    "fastmri": (".h5", ".hdf5"),
    "nifti": (".nii", ".nii.gz"),
    "dicom": (".dcm",),
    "netcdf": (".nc", ".nc4", ".cdf"),
    "zarr": (".zarr",),
    "npy": (".npy",),
    "npz": (".npz",),
    "png": (".png",),
    "tiff": (".tif", ".tiff"),
}
#: formats that hold several named arrays in one file (every result goes into the same file)
CONTAINERS = ("fastmri", "netcdf", "zarr", "npz")
_ALL_SUFFIXES = " ".join(s for sfx in FORMATS.values() for s in sfx)


def split_name(path) -> tuple[str | None, str, str]:
    """``(format, stem, suffix)`` from a path's name alone (``format`` None for an unknown suffix); the suffix
    keeps the name's case and ``.nii.gz`` is one suffix: ``"brain.nii.gz"`` -> ``("nifti", "brain", ".nii.gz")``."""
    path = Path(path)
    name = path.name
    low = name.lower()
    best = None
    for fmt, sfx in FORMATS.items():
        for s in sfx:
            if low.endswith(s) and len(low) > len(s) and (best is None or len(s) > len(best[1])):
                best = (fmt, s)
    if best is None:
        return None, name, ""
    n = len(best[1])
    return best[0], name[:-n], name[-n:]


def detect_format(path) -> str:
    """The format of an existing file or folder: by suffix, by content for DICOM without a suffix.

    Args:
        path: a file, a folder of DICOM files, or a ``.zarr`` store.

    Returns:
        A key of :data:`FORMATS`.

    Raises:
        ScanError: the path does not exist, cannot be read, or has an unknown format.
    """
    p = Path(path)
    if not os.path.lexists(p):
        raise ScanError(f"{p}: no such file or folder")
    if not p.exists():
        raise ScanError(f"{p}: a broken link (its target does not exist)")
    if not os.access(p, os.R_OK) or (p.is_dir() and not os.access(p, os.X_OK)):
        raise ScanError(f"{p}: permission denied (cannot read it)")
    fmt, _, suffix = split_name(p)
    if p.is_dir():
        if fmt == "zarr" or any((p / m).exists() for m in ("zarr.json", ".zgroup", ".zattrs")):
            return "zarr"
        from .dicom import is_dicom_file

        try:
            if any(is_dicom_file(f) for f in p.iterdir()):
                return "dicom"
        except OSError as err:
            raise ScanError(f"{p}: cannot list the folder: {why(err)}") from err
        raise ScanError(f"{p}: a folder, but neither a zarr store nor a folder of DICOM files")
    if fmt == "zarr":
        raise ScanError(f"{p}: a .zarr store must be a folder")
    if fmt == "netcdf":
        from .grid import sniff

        sniff(p)  # ScanError unless it has an HDF5 or CDF signature
        return fmt
    if fmt is not None:
        return fmt
    from .dicom import is_dicom_file

    if is_dicom_file(p):
        return "dicom"
    shown = "".join(p.suffixes[-2:]) if p.suffixes else "(no suffix)"
    raise ScanError(f"{p}: unknown file format {shown!r}; invdiff reads {_ALL_SUFFIXES}, "
                    "folders of DICOM files and .zarr stores")


def _module(fmt: str):
    if fmt == "fastmri":
        from . import fastmri as mod
    elif fmt == "nifti":
        from . import nifti as mod
    elif fmt == "dicom":
        from . import dicom as mod
    elif fmt in ("netcdf", "zarr"):
        from . import grid as mod
    else:
        from . import arrays as mod
    return mod


def read(path, *, name: str | None = None) -> Scan:
    """Read one array of a scan file with its metadata.

    Args:
        path: a file or folder in one of :data:`FORMATS` (see :func:`detect_format`).
        name: which array: an HDF5 dataset, a netCDF / zarr variable, an ``.npz`` key, a DICOM series (UID,
            number or description). Default: fastMRI ``kspace``, else ``measurement``, ``sinogram``, ``mean``,
            ``reconstruction_rss``, ``reconstruction_esc``; netCDF / zarr the only data variable, else
            ``measurement`` or ``mean``; npz the only array, else ``measurement``, ``mean``, ``arr_0``.

    Returns:
        A :class:`Scan`. The file is opened read-only and never changed.

    Raises:
        ScanError: missing, unreadable, truncated or corrupt file; no such array; NaN / Inf values; compressed
            DICOM pixel data without a decoder; a reader library (pydicom, zarr, h5netcdf) not installed.
    """
    path = Path(path)
    fmt = detect_format(path)
    mod = _module(fmt)
    scan = mod.read(path, name, fmt)
    return check_finite(scan, path)


def _target_format(path: Path, fallback: str | None) -> str:
    fmt, _, _ = split_name(path)
    if fmt is not None:
        return fmt
    if fallback == "dicom" and not path.suffix:
        return "dicom"
    raise ScanError(f"{path}: cannot tell the output format from the name; use one of the suffixes "
                    f"{_ALL_SUFFIXES}")


def _jobs(fmt: str, path: Path, scan: Scan):
    mod = _module(fmt)
    if fmt in ("netcdf", "zarr", "npy", "npz", "png", "tiff"):
        return mod.write_jobs(path, scan, fmt)
    return mod.write_jobs(path, scan)


def write(path, scan: Scan, *, overwrite: bool = False) -> Path:
    """Write ``scan`` in the format of ``path``'s suffix, atomically, with its metadata.

    Args:
        path: the output; its suffix picks the format (no suffix: a DICOM scan is written as DICOM).
        scan: the scan; ``attrs`` keys starting with ``_`` are not written.
        overwrite: replace an existing output.

    Returns:
        ``path`` (a folder for a DICOM stack or a zarr store).

    Raises:
        FileExistsError: the output exists and ``overwrite`` is false (it is left untouched).
        FileNotFoundError: the output's folder does not exist.
        ScanError: the format cannot hold the scan (complex data as PNG / DICOM, a stack as PNG, ...).
    """
    path = Path(path)
    if not isinstance(scan, Scan):
        raise TypeError(f"write() needs a Scan, got {type(scan).__name__}")
    fmt = _target_format(path, scan.format)
    commit(_jobs(fmt, path, scan), overwrite)
    return path


def output_paths(path, names: Sequence[str]) -> dict[str, Path]:
    """The files :func:`write_results` would create for results with these names.

    Containers (``.h5``, ``.hdf5``, ``.nc``, ``.nc4``, ``.cdf``, ``.zarr``, ``.npz``) hold every result: each name
    maps to ``path``. Single-array formats map the first name to ``path`` and each other name to the sibling
    ``{stem}_{name}{suffix}`` (``out.nii.gz`` and ``std`` -> ``out_std.nii.gz``).

    Examples:
        >>> {k: str(v) for k, v in output_paths("out.nii.gz", ["mean", "std"]).items()}
        {'mean': 'out.nii.gz', 'std': 'out_std.nii.gz'}
        >>> {k: str(v) for k, v in output_paths("out.h5", ["mean", "std"]).items()}
        {'mean': 'out.h5', 'std': 'out.h5'}
    """
    path = Path(path)
    fmt, stem, suffix = split_name(path)
    names = list(names)
    if fmt in CONTAINERS:
        return {n: path for n in names}
    out = {}
    for i, n in enumerate(names):
        out[n] = path if i == 0 else path.with_name(f"{stem}_{n}{suffix}")
    return out


def write_results(path, arrays: dict[str, torch.Tensor], like: Scan, *, overwrite: bool = False) -> list[Path]:
    """Write reconstruction results in the format family of ``path``, carrying ``like``'s metadata. All or nothing.

    Args:
        path: the output (see :func:`output_paths` for the files made from it). No suffix: DICOM when ``like``
            is DICOM.
        arrays: result tensors by name (e.g. ``{"mean": ..., "std": ..., "samples": ...}``), each of shape
            ``like.data.shape`` or ``(n, *like.data.shape)`` (one extra leading samples axis).
        like: the scan the results belong to (affine, spacing, coordinates, dims, units, attributes).
        overwrite: replace existing outputs.

    Layout: HDF5 one dataset per name and like's attributes on the file; netCDF / zarr one variable per name with
    like's dims and coordinates (a ``sample`` dim first for the extra axis); npz one key per name and
    ``__invdiff__`` metadata; NIfTI one image per name, the samples axis last, like's affine and header; DICOM
    one file per 2-D result or a folder of ``0001.dcm``, ... per stack, derived from like's DICOM files; TIFF /
    npy one stacked file per name; PNG one 2-D image per name (no samples axis).

    Returns:
        The written paths, in order, each once.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is false; nothing is written then.
        FileNotFoundError: the output folder does not exist.
        ScanError: wrong shapes, or the format cannot hold a result. Nothing is written then.
    """
    path = Path(path)
    if not isinstance(like, Scan):
        raise TypeError(f"write_results() needs a Scan as like, got {type(like).__name__}")
    fmt = _target_format(path, like.format)
    targets = output_paths(path, list(arrays))
    mod = _module(fmt)
    if fmt in ("fastmri",):
        jobs = mod.results_jobs(path, arrays, like)
    elif fmt in ("netcdf", "zarr"):
        jobs = mod.results_jobs(path, arrays, like, fmt)
    elif fmt in ("nifti", "dicom"):
        jobs = mod.results_jobs(targets, arrays, like, path)
    else:
        jobs = mod.results_jobs(targets, arrays, like, path, fmt)
    return commit(jobs, overwrite)


# ---------------------------------------------------------------------------------------------------------------
# describe
# ---------------------------------------------------------------------------------------------------------------
def _shape(shape) -> str:
    return " x ".join(str(int(n)) for n in shape) if len(shape) else "scalar"


def _value(v) -> str:
    text = to_json(v) if isinstance(v, (dict, list, tuple)) else str(v)
    return text if len(text) <= 200 else text[:197] + "..."


def describe(path) -> str:
    """A multi-line description of a scan file for ``invdiff info FILE``.

    Lists the format, the arrays with shape and dtype, the main array's value range, spacing, orientation,
    units, coordinates (ranges, longitude convention), file attributes and stored invdiff operator settings.

    Raises:
        ScanError: as :func:`read`.
    """
    path = Path(path)
    fmt = detect_format(path)
    mod = _module(fmt)
    info = mod.describe(path, fmt) if fmt in ("netcdf", "zarr", "npy", "npz", "png", "tiff") else mod.describe(path)
    lines = [f"{path}", f"  format: {info['format']}"]
    rows = info.get("arrays", [])
    if rows:
        lines.append(f"  {info.get('label', 'arrays')}:")
        width = max(len(str(r[0])) for r in rows)
        for name, shape, dtype in rows:
            lines.append(f"    {str(name):<{width}}  {_shape(shape):<20} {dtype}")
    try:
        scan = _module(fmt).read(path, None, fmt)
    except ScanError as err:
        lines.extend(f"  {n}" for n in info.get("notes", []) + info.get("fallback", []))
        lines.append(f"  (no default array: {str(err).removeprefix(str(path) + ': ')})")
        return "\n".join(lines)
    lines.append(f"  main array: {scan.name or '(the image)'} [{', '.join(scan.dims or ('?',))}] "
                 f"{_shape(scan.data.shape)} {str(scan.data.dtype).replace('torch.', '')}, kind {scan.kind}")
    x = scan.data
    bad = int((~torch.isfinite(x)).sum()) if (x.is_floating_point() or x.is_complex()) else 0
    a = x.detach().abs().numpy() if x.is_complex() else x.detach().numpy()
    lo, hi = finite_range(a)
    lines.append(f"  values: {fmt_num(lo)} .. {fmt_num(hi)}{' ' + scan.units if scan.units else ''}"
                 f"{' (magnitude)' if x.is_complex() else ''}{f' ({bad} NaN/Inf)' if bad else ''}")
    if scan.spacing and any(s is not None for s in scan.spacing):
        sp = ", ".join(f"{d}={fmt_num(s)}" for d, s in zip(scan.dims or range(len(scan.spacing)), scan.spacing)
                       if s is not None)
        lines.append(f"  spacing: {sp}")
    if scan.units:
        lines.append(f"  units: {scan.units}")
    lines.extend(f"  {n}" for n in info.get("notes", []))
    if scan.coords and fmt not in ("netcdf", "zarr"):  # netCDF / zarr list every coordinate in their notes
        from .grid import coord_summary

        for k, v in scan.coords.items():
            lines.append(f"  coordinate {k}: {coord_summary(k, v)}")
    if scan.extras:
        lines.append("  extras: " + ", ".join(f"{k} {_shape(v.shape)}" for k, v in scan.extras.items()))
    attrs = public_attrs(scan.attrs)
    attrs.pop("orientation", None)  # shown with the format notes
    op = attrs.pop("invdiff_operator", None)
    src = attrs.pop("invdiff_source", None)
    header = attrs.pop("ismrmrd_header", None)
    if attrs:
        lines.append("  attributes:")
        for k, v in attrs.items():
            lines.append(f"    {k}: {_value(v)}")
    if header is not None:
        lines.append(f"  ismrmrd_header: {len(header)} characters of XML")
    if op is not None:
        lines.append("  invdiff operator: " + (", ".join(f"{k}={_value(v)}" for k, v in op.items())
                                               if isinstance(op, dict) else _value(op)))
    if src is not None:
        lines.append(f"  invdiff source: {_value(src)}")
    return "\n".join(lines)
