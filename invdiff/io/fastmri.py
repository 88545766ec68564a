"""fastMRI HDF5 files (h5py): ``kspace``, ``ismrmrd_header``, ``mask``, ``reconstruction_rss`` / ``_esc``.

Layout (Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI", arXiv:1811.08839):
``kspace`` is complex64 ``(slices, H, W)`` single-coil or ``(slices, coils, H, W)`` multi-coil; ``ismrmrd_header``
is the ISMRMRD XML header as a byte string; file attributes hold ``acquisition``, ``max``, ``norm``,
``patient_id``, ... . invdiff adds one attribute ``invdiff_meta`` (JSON: dims, kind, spacing, ...) to each dataset
it writes and keeps coordinates, if any, in a group ``coords``; fastMRI tools ignore both.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ._common import (META_KEY, decode_array, decode_attrs, default_dims, encode_attrs, extra_tensor, Job, meta_fields,
                      parse_meta, plain, result_arrays, result_scan, scan_meta, to_json, to_numpy, to_tensor, why)
from ._scan import Scan, ScanError

#: default dataset names, the first one present is read
DEFAULT_NAMES = ("kspace", "measurement", "sinogram", "mean", "reconstruction_rss", "reconstruction_esc")
#: datasets of the fastMRI layout that travel with the main array as extras
KNOWN_EXTRAS = ("mask", "reconstruction_rss", "reconstruction_esc")
#: attributes derived from the ISMRMRD header (not stored as file attributes when the header is stored)
HEADER_KEYS = ("ismrmrd_header", "encoded_matrix", "recon_matrix", "encoded_fov_mm", "recon_fov_mm",
               "encoding_limits")
_NS = "{http://www.ismrm.org/ISMRMRD}"


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ScanError(f"{path}: not a readable HDF5 file (truncated or corrupt): {why(err)}") from err


def _read_dataset(path: Path, ds):
    try:
        return ds[()]
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise ScanError(f"{path}: not a readable HDF5 file (truncated or corrupt): cannot read dataset "
                        f"{ds.name.lstrip('/')!r}: {why(err)}") from err


def _datasets(f) -> list[str]:
    import h5py

    return [k for k in f.keys() if isinstance(f.get(k), h5py.Dataset)]


def parse_ismrmrd_header(text: str) -> dict:
    """Matrix sizes, fields of view and encoding limits of an ISMRMRD XML header ({} if it does not parse)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return {}
    ns = _NS if root.tag.startswith(_NS) else ""
    enc = root.find(f"{ns}encoding")
    if enc is None:
        return {}
    out: dict = {}

    def triple(node, cast):
        if node is None:
            return None
        vals = [node.findtext(f"{ns}{a}") for a in ("x", "y", "z")]
        try:
            return [cast(float(v)) for v in vals if v is not None]
        except ValueError:
            return None

    for space, key in (("encodedSpace", "encoded"), ("reconSpace", "recon")):
        node = enc.find(f"{ns}{space}")
        if node is None:
            continue
        m = triple(node.find(f"{ns}matrixSize"), int)
        fov = triple(node.find(f"{ns}fieldOfView_mm"), float)
        if m:
            out[f"{key}_matrix"] = m
        if fov:
            out[f"{key}_fov_mm"] = fov
    limits = enc.find(f"{ns}encodingLimits")
    if limits is not None:
        lim = {}
        for child in limits:
            vals = {}
            for field in ("minimum", "maximum", "center"):
                v = child.findtext(f"{ns}{field}")
                if v is not None:
                    try:
                        vals[field] = int(float(v))
                    except ValueError:
                        pass
            if vals:
                lim[child.tag.replace(ns, "")] = vals
        if lim:
            out["encoding_limits"] = lim
    return out


def _header_text(value) -> str:
    if isinstance(value, np.ndarray):  # a byte array, or a 0-d / 1-element string array
        value = value.tobytes() if value.dtype.kind in "uiV" else value.ravel()[0] if value.size else b""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace").rstrip("\x00")
    return str(value)


def _pick(path: Path, names: list[str], metas: dict, name: str | None) -> str:
    if name is not None:
        if name not in names:
            raise ScanError(f"{path}: no dataset {name!r}; it has: {', '.join(names) or 'no datasets'}")
        return name
    mains = [n for n in names if (metas.get(n) or {}).get("role") == "main"]
    if mains:
        return mains[0]
    for n in DEFAULT_NAMES:
        if n in names:
            return n
    data = [n for n in names if n not in KNOWN_EXTRAS and n != "ismrmrd_header"]
    if len(data) == 1:
        return data[0]
    raise ScanError(f"{path}: no dataset named {', '.join(DEFAULT_NAMES)}; choose one of: {', '.join(names) or '-'}")


def _read_coord(path: Path, ds) -> np.ndarray:
    """A coordinate written by :func:`_write_coords` (datetimes as int64 ticks, strings as UTF-8)."""
    a = np.asarray(_read_dataset(path, ds))
    dtype = plain(ds.attrs.get("dtype"))
    if dtype == "str":
        return np.asarray([plain(v) for v in a.ravel().tolist()], dtype=str).reshape(a.shape)
    if dtype:
        return decode_array({"dtype": dtype, "shape": list(a.shape), "data": a.tolist()})
    return a


def _default_kind(name: str, a: np.ndarray) -> str:
    if name == "kspace":
        return "kspace"
    if name in ("sinogram", "measurement"):
        return name
    return "measurement" if a.dtype.kind == "c" else "image"


def read(path: Path, name: str | None = None, fmt: str = "fastmri") -> Scan:
    """Read one dataset of an HDF5 file (see the module docstring); extras and attributes come along."""
    import h5py

    with _open(path) as f:
        try:
            names = _datasets(f)
            metas = {n: parse_meta(f[n].attrs.get(META_KEY)) for n in names}
            main = _pick(path, names, metas, name)
            raw = _read_dataset(path, f[main])
            meta = metas.get(main)
            if meta and meta.get("extras") is not None:
                extra_names = [n for n in meta["extras"] if n in names]
            else:
                extra_names = [n for n in KNOWN_EXTRAS if n in names and n != main]
            extras = {n: extra_tensor(_read_dataset(path, f[n])) for n in extra_names}
            attrs = decode_attrs(dict(f.attrs))
            header = None
            if "ismrmrd_header" in names:
                header = _header_text(_read_dataset(path, f["ismrmrd_header"]))
            coords = {}
            if isinstance(f.get("coords"), h5py.Group):
                for k in f["coords"]:
                    coords[k] = _read_coord(path, f["coords"][k])
            units = plain(f[main].attrs.get("units"))
        except ScanError:
            raise
        except (OSError, RuntimeError, KeyError) as err:
            raise ScanError(f"{path}: not a readable HDF5 file (truncated or corrupt): {why(err)}") from err
    a = np.asarray(raw)
    if a.dtype.kind not in "biufc" and not a.dtype.names:
        raise ScanError(f"{path}: dataset {main!r} holds {a.dtype} values, not numbers")
    try:
        data = to_tensor(a)
    except ScanError as err:
        raise ScanError(f"{path}: dataset {main!r}: {why(err)}") from err
    fields = meta_fields(meta, data.shape)
    kind = fields.get("kind") or _default_kind(main, a)
    if "dims" in fields:
        dims = fields["dims"]
    elif kind == "kspace":  # (ky, kx), (slice, ky, kx) single-coil, (slice, coil, ky, kx) multi-coil
        dims = default_dims(data.ndim, last=("ky", "kx"), first=("slice", "coil"))
    else:
        dims = default_dims(data.ndim)
    if header is not None:
        attrs.update(parse_ismrmrd_header(header))
        attrs["ismrmrd_header"] = header
    return Scan(data=data, format=fmt, kind=kind, dims=dims, image_axes=fields.get("image_axes", (-2, -1)),
                spacing=fields.get("spacing"), affine=fields.get("affine"), coords=coords,
                units=fields.get("units", None if units is None else str(units)), source=str(path), name=main,
                attrs=attrs, extras=extras)


def _file_attrs(attrs: dict) -> tuple[dict, str | None]:
    """File attributes to store and the ISMRMRD header text (stored as a dataset), from public attributes."""
    attrs = dict(attrs)
    header = attrs.get("ismrmrd_header")
    if isinstance(header, str):
        for k in HEADER_KEYS:
            attrs.pop(k, None)
    else:
        header = None
    return encode_attrs(attrs), header


def _write_dataset(f, name: str, a: np.ndarray, meta: dict | None):
    if a.dtype.kind == "c":
        a = a.astype(np.complex128 if a.dtype.itemsize == 16 else np.complex64)
    ds = f.create_dataset(name, data=a)  # uncompressed, as fastMRI ships its files
    if meta is not None:
        ds.attrs[META_KEY] = to_json(meta)


def _write_coords(f, coords: dict):
    if not coords:
        return
    g = f.create_group("coords")
    for k, v in coords.items():
        v = np.asarray(v)
        if v.dtype.kind in "mM":
            ds = g.create_dataset(k, data=v.view(np.int64))
            ds.attrs["dtype"] = v.dtype.str
        elif v.dtype.kind in "OUS":
            import h5py

            ds = g.create_dataset(k, data=np.asarray([str(s) for s in v.ravel()], dtype=object).reshape(v.shape),
                                  dtype=h5py.string_dtype())
            ds.attrs["dtype"] = "str"
        else:
            g.create_dataset(k, data=v)


def _write_file(tmp: Path, path: Path, arrays: dict[str, tuple[np.ndarray, dict | None]], scan: Scan):
    import h5py

    attrs, header = _file_attrs(scan_meta(scan, path, coords=False)["attrs"])
    with h5py.File(tmp, "w") as f:
        for name, (a, meta) in arrays.items():
            _write_dataset(f, name, a, meta)
        if header is not None:
            f.create_dataset("ismrmrd_header", data=np.bytes_(header.encode("utf-8")))
        _write_coords(f, scan.coords)
        for k, v in attrs.items():
            f.attrs[k] = v


def _main_name(scan: Scan) -> str:
    if scan.name:
        return scan.name
    return {"kspace": "kspace", "sinogram": "sinogram", "measurement": "measurement"}.get(scan.kind, "image")


def write_jobs(path: Path, scan: Scan) -> list[Job]:
    """One HDF5 file: the main dataset, every extra, ``ismrmrd_header`` (if in attrs), coords, file attributes."""
    main = _main_name(scan)
    reserved = {"ismrmrd_header", "coords"}
    bad = [n for n in (main, *scan.extras) if n in reserved or "/" in n or not n]
    if bad or main in scan.extras:
        raise ScanError(f"{path}: cannot store a dataset named {(bad or [main])[0]!r}")
    meta = scan_meta(scan, path, coords=False)
    meta.pop("attrs")
    meta.update(role="main", extras=list(scan.extras))
    arrays = {main: (to_numpy(scan.data), meta)}
    for k, v in scan.extras.items():
        arrays[k] = (to_numpy(v), None)
    return [(path, False, lambda tmp: _write_file(tmp, path, arrays, scan))]


def results_jobs(path: Path, arrays: dict, like: Scan) -> list[Job]:
    """One HDF5 file with a dataset per result (named as the keys) and like's attributes on the file."""
    arrays = result_arrays(path, arrays, like)
    bad = [n for n in arrays if n in ("ismrmrd_header", "coords")]
    if bad:
        raise ScanError(f"{path}: cannot store a dataset named {bad[0]!r}")
    out = {}
    for name, a in arrays.items():
        meta = scan_meta(result_scan(like, name, a), path, coords=False)
        meta.pop("attrs")
        meta.update(role="result", extras=[])
        out[name] = (a, meta)
    return [(path, False, lambda tmp: _write_file(tmp, path, out, like))]


def describe(path: Path) -> dict:
    """Datasets (name, shape, dtype), file attribute names and the ISMRMRD summary of an HDF5 file."""
    with _open(path) as f:
        rows = []
        for k in _datasets(f):
            ds = f[k]
            rows.append((k, tuple(ds.shape), str(ds.dtype) if not ds.dtype.names else "compound"))
        if "coords" in f:
            for k in f["coords"]:
                rows.append((f"coords/{k}", tuple(f["coords"][k].shape), str(f["coords"][k].dtype)))
    return {"format": "fastMRI HDF5 (h5py)", "arrays": rows, "label": "datasets"}
