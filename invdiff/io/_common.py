"""Helpers shared by the format modules: metadata as JSON, attribute encoding, array conversion, commits.

Metadata travels in one JSON object, the *meta*, in formats without a native place for it (NIfTI header
extension, DICOM private tag, TIFF ImageDescription, PNG text chunk, ``__invdiff__`` in ``.npz``, a dataset
attribute in HDF5, a variable attribute in netCDF / zarr)::

    {"invdiff": 1, "kind": ..., "name": ..., "dims": [...], "image_axes": [a, b], "spacing": [...],
     "units": ..., "affine": [[...]] | null, "shape": [...], "coords": {name: ARRAY}, "attrs": {...}}

where ``ARRAY`` is ``{"dtype": "datetime64[ns]", "shape": [...], "data": [...]}`` (datetimes as int64 ticks, so
every value comes back exactly). ``attrs`` keys that begin with ``_`` (in-memory templates such as
``_nifti_header`` or ``_dicom``) are never written.

Attribute stores that hold only strings and numbers (HDF5, netCDF, zarr) get str / int / float values as they
are and everything else (dicts, lists, bools, None) as JSON text; the names of the JSON-encoded keys are listed
in the attribute ``invdiff_json`` so readers decode exactly those back.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .._files import atomic_dir, atomic_path, check_writable
from ._scan import Scan, ScanError

META_KEY = "invdiff_meta"  #: attribute holding the meta JSON in HDF5 / netCDF / zarr
JSON_KEYS = "invdiff_json"  #: attribute listing which attributes are JSON-encoded
RESERVED = (META_KEY, JSON_KEYS)

#: dims the affine's columns refer to (in data order): NIfTI x, y, z and DICOM slice, row, col
SPATIAL_DIMS = ("x", "y", "z", "slice", "row", "col")


# ---------------------------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------------------------
def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-able")


def to_json(obj) -> str:
    """JSON text of ``obj``; NumPy scalars / arrays, tensors, bytes and paths are converted."""
    return json.dumps(obj, default=_json_default, separators=(",", ":"))


def public_attrs(attrs: dict | None) -> dict:
    """The attributes a writer stores: every key that does not begin with ``_``."""
    return {str(k): v for k, v in (attrs or {}).items() if not str(k).startswith("_")}


def check_attrs(attrs: dict, path) -> dict:
    """The public attributes, made JSON-able (round trip through JSON); ScanError naming the bad key otherwise."""
    out = {}
    for k, v in public_attrs(attrs).items():
        try:
            out[k] = json.loads(to_json(v))
        except (TypeError, ValueError) as err:
            raise ScanError(f"{path}: attribute {k!r} cannot be stored ({err}); attributes must be JSON-able "
                            "(str, numbers, lists, dicts)") from err
    return out


def plain(value):
    """A value read from an attribute store as a plain Python object (str, int, float, list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return plain(value[()])
        return [plain(v) for v in value.tolist()] if value.dtype.kind in "OSU" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def encode_attrs(attrs: dict) -> dict:
    """Attributes for a store of str / int / float values: other values as JSON text, listed under ``invdiff_json``."""
    out, encoded = {}, []
    for k, v in attrs.items():
        if k in RESERVED:
            continue
        if isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            out[k] = v
        else:
            out[k] = to_json(v)
            encoded.append(k)
    if encoded:
        out[JSON_KEYS] = to_json(encoded)
    return out


def decode_attrs(raw: dict) -> dict:
    """Inverse of :func:`encode_attrs` for attributes read from a file (also decodes JSON ``invdiff_*`` strings)."""
    raw = {str(k): plain(v) for k, v in raw.items()}
    try:
        encoded = set(json.loads(raw.get(JSON_KEYS, "[]")))
    except (TypeError, ValueError):
        encoded = set()
    out = {}
    for k, v in raw.items():
        if k in RESERVED:
            continue
        if isinstance(v, str) and (k in encoded or (k.startswith("invdiff_") and v[:1] in "{[")):
            with contextlib.suppress(ValueError):
                v = json.loads(v)
        out[k] = v
    return out


def encode_array(a) -> dict:
    """A NumPy array as a JSON-able dict that :func:`decode_array` turns back into the identical array."""
    a = np.asarray(a)
    if a.dtype.kind in "mM":
        data = a.view(np.int64).tolist()
    elif a.dtype.kind == "c":
        data = [np.real(a).tolist(), np.imag(a).tolist()]
    elif a.dtype.kind in "OSU":
        data = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object])(a).tolist() \
            if a.size else []
    else:
        data = a.tolist()
    return {"dtype": a.dtype.str if a.dtype.kind not in "OS" else "str", "shape": list(a.shape), "data": data}


def decode_array(d: dict) -> np.ndarray:
    """Inverse of :func:`encode_array`."""
    dtype = np.dtype(d["dtype"]) if d["dtype"] != "str" else np.dtype(str)
    shape = tuple(d["shape"])
    if dtype.kind in "mM":
        return np.asarray(d["data"], dtype=np.int64).reshape(shape).view(dtype)
    if dtype.kind == "c":
        re, im = d["data"]
        return (np.asarray(re) + 1j * np.asarray(im)).astype(dtype).reshape(shape)
    if dtype.kind == "U" and not shape:
        return np.asarray(d["data"], dtype=str)
    return np.asarray(d["data"], dtype=dtype).reshape(shape)


# ---------------------------------------------------------------------------------------------------------------
# Scan <-> meta
# ---------------------------------------------------------------------------------------------------------------
def scan_meta(scan: Scan, path, *, shape=None, dims=None, image_axes=None, coords=True) -> dict:
    """The meta JSON object of ``scan`` (see the module docstring); ``shape`` / ``dims`` override the scan's."""
    affine = None if scan.affine is None else np.asarray(scan.affine, dtype=np.float64).tolist()
    spacing = None if scan.spacing is None else [None if s is None else float(s) for s in scan.spacing]
    meta = {
        "invdiff": 1,
        "kind": scan.kind,
        "name": scan.name,
        "dims": list(dims if dims is not None else scan.dims) if (dims or scan.dims) else None,
        "image_axes": [int(a) for a in (image_axes if image_axes is not None else scan.image_axes)],
        "spacing": spacing,
        "units": scan.units,
        "affine": affine,
        "shape": list(shape if shape is not None else scan.data.shape),
        "attrs": check_attrs(scan.attrs, path),
    }
    if coords and scan.coords:
        meta["coords"] = {str(k): encode_array(v) for k, v in scan.coords.items()}
    return meta


def parse_meta(text) -> dict | None:
    """The meta object in ``text`` (str or bytes), or None if it is not invdiff metadata."""
    if text is None:
        return None
    if isinstance(text, (bytes, bytearray, np.bytes_)):
        text = bytes(text).decode("utf-8", "replace")
    text = str(text).strip().rstrip("\x00").strip()
    if not text.startswith("{"):
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and "invdiff" in meta else None


def meta_fields(meta: dict | None, shape) -> dict:
    """Scan fields from a meta object, for data of ``shape`` (dims / axes / spacing that do not fit are dropped)."""
    if not meta:
        return {}
    ndim = len(shape)
    out: dict[str, Any] = {}
    if meta.get("kind"):
        out["kind"] = str(meta["kind"])
    if meta.get("name"):
        out["name"] = str(meta["name"])
    if meta.get("dims") and len(meta["dims"]) == ndim:
        out["dims"] = tuple(str(d) for d in meta["dims"])
    axes = meta.get("image_axes")
    if axes and len(axes) == 2 and all(-max(ndim, 1) <= int(a) < max(ndim, 1) for a in axes):
        out["image_axes"] = (int(axes[0]), int(axes[1]))
    if meta.get("spacing") and len(meta["spacing"]) == ndim:
        out["spacing"] = tuple(None if s is None else float(s) for s in meta["spacing"])
    if meta.get("units") is not None:
        out["units"] = str(meta["units"])
    if meta.get("affine") is not None:
        out["affine"] = np.asarray(meta["affine"], dtype=np.float64)
    if meta.get("coords"):
        out["coords"] = {k: decode_array(v) for k, v in meta["coords"].items()}
    if isinstance(meta.get("attrs"), dict):
        out["attrs"] = dict(meta["attrs"])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------------------------
def to_numpy(x) -> np.ndarray:
    """A tensor (any device, with or without grad) or array as a C-contiguous NumPy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.to(torch.float32)
        x = x.resolve_conj().numpy() if x.is_complex() else x.numpy()
    return np.ascontiguousarray(x)


def to_tensor(a, *, keep_float64: bool = True) -> torch.Tensor:
    """An array read from a file as a tensor: real -> float32 (float64 kept), complex -> complex64 (complex128
    kept), bool kept, in native byte order."""
    a = np.asarray(a)
    if a.dtype.names and len(a.dtype.names) == 2 and a.dtype.names[0].lower() in ("r", "real", "re"):
        re, im = (a[n].astype(np.float64) for n in a.dtype.names)  # HDF5 compound complex written by other tools
        a = (re + 1j * im).astype(np.complex128 if a.dtype[0].itemsize == 8 else np.complex64)
    if a.dtype.kind == "c":
        a = a.astype(np.complex128 if a.dtype.itemsize == 16 and keep_float64 else np.complex64, copy=False)
    elif a.dtype.kind == "b":
        a = a.astype(bool, copy=False)
    elif a.dtype.kind in "iuf":
        a = a.astype(np.float64 if a.dtype == np.float64 and keep_float64 else np.float32, copy=False)
    else:
        raise ScanError(f"unsupported data type {a.dtype}")
    a = a.astype(a.dtype.newbyteorder("="), copy=False)
    return torch.from_numpy(np.ascontiguousarray(a))


def extra_tensor(a) -> torch.Tensor:
    """An extra array (mask, reference image) as a tensor, its dtype kept where torch has it."""
    a = np.asarray(a)
    if a.dtype.kind == "b":
        return torch.from_numpy(np.ascontiguousarray(a))
    if a.dtype.kind in "fc" or a.dtype.names:
        return to_tensor(a)
    if a.dtype.kind in "iu":
        a = a.astype(a.dtype.newbyteorder("="), copy=False)
        if a.dtype in (np.uint32, np.uint64):
            a = a.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(a))
    raise ScanError(f"unsupported data type {a.dtype}")


def check_finite(scan: Scan, path) -> Scan:
    """ScanError if the main array holds NaN or Inf values."""
    x = scan.data
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ScanError(f"{path}: {scan.name or 'the data'!r} contains {bad} NaN/Inf values "
                            f"(of {x.numel()}); fill or mask missing values before using it")
    return scan


def default_dims(ndim: int, last: tuple[str, ...] = ("row", "col"), first: tuple[str, ...] = ("slice",)):
    """Dim names for an array without stored names: ``first`` axes, ``axis<k>`` fillers, then ``last``."""
    if ndim <= len(last):
        return tuple(last[len(last) - ndim:])
    lead = ndim - len(last)
    head = list(first[:lead]) + [f"axis{k}" for k in range(len(first), lead)]
    return tuple(head) + tuple(last)


def norm_axes(axes, ndim: int) -> tuple[int, int]:
    """Image axes as non-negative indices."""
    return tuple(int(a) % max(ndim, 1) for a in axes)


def spatial_axes(dims, ndim: int) -> list[int]:
    """Axes of data whose indices the affine's columns take, in data order (at most three)."""
    if dims:
        axes = [i for i, d in enumerate(dims) if d in SPATIAL_DIMS]
        if axes:
            return axes[:3]
    return list(range(min(3, ndim)))


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------
def result_arrays(path, arrays: dict, like: Scan) -> dict[str, np.ndarray]:
    """Validated result arrays as NumPy: each of like's shape or with one extra leading (sample) axis."""
    if not isinstance(arrays, dict) or not arrays:
        raise ScanError(f"{path}: no arrays to write")
    shape = tuple(like.data.shape)
    out = {}
    for name, x in arrays.items():
        if not isinstance(name, str) or not name or name.startswith("_") or "/" in name:
            raise ScanError(f"{path}: invalid result name {name!r}")
        a = to_numpy(x)
        if a.shape != shape and a.shape[1:] != shape:
            raise ScanError(f"{path}: result {name!r} has shape {tuple(a.shape)}, but the input has shape {shape} "
                            f"(an extra leading samples axis is allowed)")
        out[name] = a
    return out


def result_scan(like: Scan, name: str, a: np.ndarray) -> Scan:
    """A Scan for one result array carrying ``like``'s metadata (a leading ``sample`` dim for the extra axis)."""
    extra = a.ndim == like.data.ndim + 1
    kind = like.kind
    if kind == "kspace" and a.dtype.kind != "c":
        kind = "image"
    dims = like.dims
    axes = like.image_axes
    spacing = like.spacing
    if extra:
        dims = ("sample", *like.dims) if like.dims else None
        axes = tuple(a_ + 1 if a_ >= 0 else a_ for a_ in like.image_axes)
        spacing = (None, *like.spacing) if like.spacing else None
    return like.replace(data=torch.from_numpy(a), kind=kind, dims=dims, image_axes=axes, spacing=spacing, name=name,
                        extras={})


# ---------------------------------------------------------------------------------------------------------------
# All-or-nothing commits
# ---------------------------------------------------------------------------------------------------------------
#: one output: (target path, is a folder, function writing it into a temporary path)
Job = tuple[Path, bool, Callable[[Path], None]]


def commit(jobs: Iterable[Job], overwrite: bool) -> list[Path]:
    """Write every job or none: check all targets, write all to temporaries, then rename them into place."""
    jobs = list(jobs)
    targets = [Path(t) for t, _, _ in jobs]
    if len(set(map(os.path.abspath, targets))) != len(targets):
        raise ScanError(f"two outputs would go to the same file: {', '.join(map(str, targets))}")
    for t in targets:
        check_writable(t, overwrite)
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_dir(t) if is_dir else atomic_path(t)) for t, is_dir, _ in jobs]
        for (_, _, fn), tmp in zip(jobs, tmps):
            fn(tmp)
    return targets


def why(err: BaseException, limit: int = 300) -> str:
    """A library's error message on one line (whitespace collapsed, at most ``limit`` characters)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def finite_range(a: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values of a real array (0, 0 if none)."""
    a = np.asarray(a)
    fin = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    if fin.size == 0:
        return 0.0, 0.0
    return float(fin.min()), float(fin.max())


def fmt_num(v) -> str:
    """A number in a short readable form."""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.6g}"
