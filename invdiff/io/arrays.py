"""Plain arrays: NumPy ``.npy`` / ``.npz``, PNG (Pillow) and TIFF (tifffile).

* ``.npy`` holds the array only (no metadata): read back with default dims ``(..., "row", "col")``.
* ``.npz`` holds named arrays plus the meta JSON (dims, spacing, units, attributes, coordinates) as a string
  array under the key ``__invdiff__``.
* PNG holds one 2-D grayscale image. invdiff writes 16 bits with the value range in the meta JSON text chunk
  (``invdiff``), so reading restores float values to within ``(max - min) / 65535 / 2``; other PNGs read as float32
  in [0, 1] (8-bit / 255, 16-bit / 65535; colour averaged to gray, noted in ``attrs["converted"]``).
* TIFF keeps float32 / float64 values (integers read as float32 counts, not rescaled), any number of pages; the
  meta JSON is the first page's ImageDescription.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ._common import (default_dims, extra_tensor, Job, meta_fields, parse_meta, result_arrays, result_scan, scan_meta,
                      to_json, to_numpy, to_tensor, why)
from ._scan import Scan, ScanError

META_NPZ = "__invdiff__"
NPZ_DEFAULTS = ("measurement", "mean", "arr_0")


def _one_name(path: Path, name: str | None, stored: str | None):
    if name is not None and name != stored:
        raise ScanError(f"{path}: holds one array{f' ({stored!r})' if stored else ''}; there is no array {name!r}")


def _scan(path: Path, fmt: str, data, meta: dict | None, name: str | None, **over) -> Scan:
    fields = meta_fields(meta, tuple(data.shape))
    fields.update(over)
    kind = fields.pop("kind", "measurement" if data.is_complex() else "image")
    dims = fields.pop("dims", default_dims(data.ndim))
    return Scan(data=data, format=fmt, kind=kind, dims=dims, source=str(path),
                name=fields.pop("name", name), **fields)


def _reshape(a: np.ndarray, meta: dict | None) -> np.ndarray:
    shape = (meta or {}).get("shape")
    if shape and tuple(shape) != a.shape and int(np.prod(shape)) == a.size:
        return a.reshape(shape)
    return a


# ---------------------------------------------------------------------------------------------------------------
# .npy
# ---------------------------------------------------------------------------------------------------------------
def _np_load(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ScanError(f"{path}: not a readable NumPy file (corrupt, or holds Python objects): {why(err)}") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ScanError(f"{path}: not a readable NumPy file (truncated or corrupt): {why(err)}") from err


def read_npy(path: Path, name: str | None = None, fmt: str = "npy") -> Scan:
    """The array of a ``.npy`` file, float32 (float64 / complex kept); no metadata."""
    _one_name(path, name, None)
    a = _np_load(path)
    if not isinstance(a, np.ndarray):
        raise ScanError(f"{path}: not a .npy file (it holds several arrays; use the .npz suffix)")
    if a.dtype.kind not in "biufc":
        raise ScanError(f"{path}: holds {a.dtype} values, not numbers")
    return _scan(path, fmt, to_tensor(a), None, None)


def _save_npy(tmp: Path, a: np.ndarray):
    with open(tmp, "wb") as f:
        np.save(f, a, allow_pickle=False)


def write_npy(path: Path, scan: Scan) -> list[Job]:
    """The data array only (``.npy`` has no room for metadata)."""
    a = to_numpy(scan.data)
    return [(path, False, lambda tmp: _save_npy(tmp, a))]


# ---------------------------------------------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------------------------------------------
def read_npz(path: Path, name: str | None = None, fmt: str = "npz") -> Scan:
    """One array of an ``.npz`` archive (``name``; default: the only one, else measurement / mean / arr_0)."""
    z = _np_load(path)
    if isinstance(z, np.ndarray):
        raise ScanError(f"{path}: holds a single array, not an archive (use the .npy suffix)")
    try:
        with z:
            keys = [k for k in z.files if k != META_NPZ]
            meta = parse_meta(str(z[META_NPZ][()]) if META_NPZ in z.files else None) or {}
            if name is not None:
                if name not in keys:
                    raise ScanError(f"{path}: no array {name!r}; it has: {', '.join(keys) or 'no arrays'}")
                main = name
            elif meta.get("main") in keys:
                main = meta["main"]
            elif len(keys) == 1:
                main = keys[0]
            else:
                main = next((k for k in NPZ_DEFAULTS if k in keys), None)
                if main is None:
                    raise ScanError(f"{path}: {len(keys)} arrays and none is called {', '.join(NPZ_DEFAULTS)}; "
                                    f"choose one of: {', '.join(keys) or '-'}")
            info = (meta.get("arrays") or {}).get(main) or {}
            a = z[main]
            extras = {k: extra_tensor(z[k]) for k in info.get("extras", []) if k in keys}
    except ScanError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise ScanError(f"{path}: not a readable .npz archive (truncated or corrupt): {why(err)}") from err
    if a.dtype.kind not in "biufc":
        raise ScanError(f"{path}: array {main!r} holds {a.dtype} values, not numbers")
    full = dict(info, attrs=meta.get("attrs", {}), coords=meta.get("coords"), invdiff=1)
    return _scan(path, fmt, to_tensor(a), full, main, extras=extras)


def _save_npz(tmp: Path, arrays: dict, meta: dict):
    with open(tmp, "wb") as f:
        np.savez(f, **arrays, **{META_NPZ: np.array(to_json(meta))})


def _npz_meta(path: Path, scans: dict[str, Scan], main: str | None, like: Scan) -> dict:
    full = scan_meta(like, path)
    arrays = {}
    for k, s in scans.items():
        m = scan_meta(s, path, coords=False)
        m.pop("attrs")
        arrays[k] = m
    return {"invdiff": 1, "main": main, "arrays": arrays, "attrs": full["attrs"], "coords": full.get("coords", {})}


def write_npz(path: Path, scan: Scan) -> list[Job]:
    """The data under ``scan.name`` (default ``measurement`` / ``mean``), the extras, and ``__invdiff__`` meta."""
    main = scan.name or ("mean" if scan.kind == "image" else "measurement")
    if main == META_NPZ or main in scan.extras:
        raise ScanError(f"{path}: cannot store an array named {main!r}")
    arrays = {main: to_numpy(scan.data), **{k: to_numpy(v) for k, v in scan.extras.items()}}
    sub = {main: scan}
    meta = _npz_meta(path, sub, main, scan)
    meta["arrays"][main]["extras"] = list(scan.extras)
    return [(path, False, lambda tmp: _save_npz(tmp, arrays, meta))]


# ---------------------------------------------------------------------------------------------------------------
# PNG
# ---------------------------------------------------------------------------------------------------------------
def read_png(path: Path, name: str | None = None, fmt: str = "png") -> Scan:
    """A grayscale PNG as float32 (see the module docstring for the value mapping)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            text = dict(getattr(img, "text", {}) or {})
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                mode = img.mode
            if mode == "LA":
                img = img.getchannel("L")
                mode = "L"
            a = np.asarray(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ScanError(f"{path}: not a readable PNG file (truncated or corrupt): {why(err)}") from err
    meta = parse_meta(text.get("invdiff"))
    _one_name(path, name, (meta or {}).get("name"))
    attrs_extra = {}
    if a.ndim == 3:
        a = a[..., :3].astype(np.float64).mean(axis=-1) / 255.0
        attrs_extra["converted"] = "rgb->gray"
        vr = None
    else:
        vr = (meta or {}).get("value_range")
        if mode == "1":
            a = a.astype(np.float64)
        elif mode in ("I;16", "I;16B", "I;16L", "I") and a.dtype != np.uint8:
            a = a.astype(np.float64)
            if vr is None:
                a = a / 65535.0
            else:
                lo, hi = float(vr[0]), float(vr[1])
                a = lo + (hi - lo) * (a / 65535.0)
        else:
            a = a.astype(np.float64) / 255.0
            if vr is not None:
                lo, hi = float(vr[0]), float(vr[1])
                a = lo + (hi - lo) * a
    scan = _scan(path, fmt, to_tensor(a.astype(np.float32)), meta, None)
    scan.attrs = {**scan.attrs, **attrs_extra}
    return scan


def _save_png(tmp: Path, u16: np.ndarray, text: str):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("invdiff", text, zip=True)
    Image.fromarray(u16).save(tmp, format="PNG", pnginfo=info)


def png_jobs(path: Path, scan: Scan, data: np.ndarray | None = None) -> list[Job]:
    """A 16-bit grayscale PNG with the value range in the meta text chunk."""
    a = to_numpy(scan.data) if data is None else data
    if a.dtype.kind == "c":
        raise ScanError(f"{path}: PNG cannot hold complex data; write .npy, .npz or .h5 instead")
    squeezed = a.reshape([n for n in a.shape if n != 1]) if a.ndim > 2 else a
    if squeezed.ndim != 2:
        raise ScanError(f"{path}: PNG holds one 2-D image; this array has shape {tuple(a.shape)} -- "
                        "write .tif or .npy for stacks and samples")
    v = np.nan_to_num(squeezed.astype(np.float64))
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    u16 = np.zeros(v.shape, np.uint16) if hi <= lo else np.rint((v - lo) / (hi - lo) * 65535).astype(np.uint16)
    meta = scan_meta(scan, path, shape=a.shape)
    meta["value_range"] = [lo, hi]
    text = to_json(meta)
    return [(path, False, lambda tmp: _save_png(tmp, u16, text))]


# ---------------------------------------------------------------------------------------------------------------
# TIFF
# ---------------------------------------------------------------------------------------------------------------
def _tifffile():
    try:
        import tifffile
    except ImportError as err:
        raise ScanError("reading and writing TIFF needs tifffile: pip install tifffile") from err
    return tifffile


def read_tiff(path: Path, name: str | None = None, fmt: str = "tiff") -> Scan:
    """A TIFF image or stack, values as stored (float32 / float64; integers as float32)."""
    tifffile = _tifffile()
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ScanError(f"{path}: a TIFF file without images")
            page = tif.pages[0]
            meta = parse_meta(getattr(page, "description", None))
            a = tif.asarray() if meta else tif.series[0].asarray()
            rgb = int(getattr(page, "samplesperpixel", 1) or 1) > 1 and page.photometric in (
                tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    except ScanError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError, EOFError, IndexError, KeyError) as err:
        raise ScanError(f"{path}: not a readable TIFF file (truncated or corrupt): {why(err)}") from err
    _one_name(path, name, (meta or {}).get("name"))
    extra = {}
    if rgb and not meta:
        a = a[..., :3].astype(np.float64).mean(axis=-1).astype(np.float32)
        extra["converted"] = "rgb->gray"
    if a.dtype.kind not in "biufc":
        raise ScanError(f"{path}: holds {a.dtype} values, not numbers")
    a = _reshape(a, meta)
    scan = _scan(path, fmt, to_tensor(a), meta, None)
    scan.attrs = {**scan.attrs, **extra}
    return scan


def _save_tiff(tmp: Path, a: np.ndarray, text: str):
    tifffile = _tifffile()
    tifffile.imwrite(tmp, a, description=text, metadata=None, photometric="minisblack")


def tiff_jobs(path: Path, scan: Scan) -> list[Job]:
    """All of the array, as pages of float32 (float64 / complex kept), with the meta JSON as description."""
    _tifffile()
    a = to_numpy(scan.data)
    if a.dtype.kind in "biu":
        a = a.astype(np.float32)
    text = to_json(scan_meta(scan, path, shape=a.shape))
    return [(path, False, lambda tmp: _save_tiff(tmp, a, text))]


# ---------------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------------
def read(path: Path, name: str | None = None, fmt: str = "npy") -> Scan:
    """Read an ``.npy``, ``.npz``, PNG or TIFF file."""
    return {"npy": read_npy, "npz": read_npz, "png": read_png, "tiff": read_tiff}[fmt](path, name, fmt)


def write_jobs(path: Path, scan: Scan, fmt: str = "npy") -> list[Job]:
    """Write one scan as ``fmt`` (``npy``, ``npz``, ``png`` or ``tiff``)."""
    return {"npy": write_npy, "npz": write_npz, "png": png_jobs, "tiff": tiff_jobs}[fmt](path, scan)


def results_jobs(targets: dict, arrays: dict, like: Scan, path: Path, fmt: str) -> list[Job]:
    """npz: one archive with every result; npy / tiff: one stacked file per result; png: one 2-D image per result."""
    arrays = result_arrays(path, arrays, like)
    scans = {k: result_scan(like, k, a) for k, a in arrays.items()}
    if fmt == "npz":
        bad = [k for k in arrays if k == META_NPZ]
        if bad:
            raise ScanError(f"{path}: cannot store an array named {bad[0]!r}")
        meta = _npz_meta(path, scans, None, like)
        return [(path, False, lambda tmp: _save_npz(tmp, arrays, meta))]
    jobs = []
    for k, s in scans.items():
        if fmt == "png" and arrays[k].ndim != like.data.ndim:
            raise ScanError(f"{targets[k]}: PNG holds one 2-D image; result {k!r} has a samples axis, shape "
                            f"{tuple(arrays[k].shape)} -- write .tif or .npy for stacks and samples")
        jobs += write_jobs(targets[k], s, fmt)
    return jobs


def describe(path: Path, fmt: str) -> dict:
    """Arrays (name, shape, dtype) of an ``.npy`` / ``.npz`` / PNG / TIFF file."""
    if fmt == "npy":
        a = np.load(path, mmap_mode="r", allow_pickle=False)
        return {"format": "NumPy .npy", "arrays": [("array", a.shape, str(a.dtype))], "notes": [], "label": "array"}
    if fmt == "npz":
        with _np_load(path) as z:
            rows = []
            for k in z.files:
                if k == META_NPZ:
                    continue
                a = z[k]
                rows.append((k, a.shape, str(a.dtype)))
        return {"format": "NumPy .npz archive", "arrays": rows, "notes": [], "label": "arrays"}
    if fmt == "png":
        from PIL import Image

        with Image.open(path) as img:
            return {"format": "PNG (Pillow)", "arrays": [("image", (img.height, img.width), f"mode {img.mode}")],
                    "notes": [], "label": "image"}
    tifffile = _tifffile()
    with tifffile.TiffFile(path) as tif:
        rows = [(f"series {i}", tuple(s.shape), str(s.dtype)) for i, s in enumerate(tif.series)]
        return {"format": "TIFF (tifffile)", "arrays": rows, "notes": [f"{len(tif.pages)} page(s)"],
                "label": "series"}

