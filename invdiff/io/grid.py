"""Gridded and station data in netCDF (xarray with h5netcdf or scipy) and zarr (xarray with zarr).

A variable is read with its dims, every coordinate over those dims (kept as stored: latitude in any order,
longitude 0..360 or -180..180, datetimes as ``datetime64``), its ``units`` and the variable + dataset
attributes. ``image_axes`` are the latitude / longitude axes (``lat``/``latitude``/``y``, ``lon``/``longitude``/
``x``), else the last two. A variable with a ``station`` dim is ``kind="stations"`` (coordinates
``station_lat`` / ``station_lon`` along ``station``).

netCDF files are written with h5netcdf (netCDF-4) where it is installed, else with scipy (netCDF-3 classic, no
complex data); zarr stores as zarr format 2 with consolidated metadata (readable by zarr-python 2 and 3). CF
attributes stay on the variables (``units``, ``standard_name``, ``long_name``, ...) and coordinates; the other
attributes go on the dataset. The coordinates' dims and attributes are kept in memory as
``attrs["_coord_dims"]`` / ``attrs["_coord_attrs"]`` so results are written with the same coordinates.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np

from ._common import (META_KEY, check_attrs, decode_attrs, encode_attrs, extra_tensor, Job, meta_fields, parse_meta,
                      result_arrays, result_scan, scan_meta, to_json, to_numpy, to_tensor, why)
from ._scan import Scan, ScanError

DEFAULT_NAMES = ("measurement", "mean")
#: variable attributes (CF) kept on the data variables; the other attributes go on the dataset
VAR_KEYS = ("standard_name", "long_name", "cell_methods", "valid_min", "valid_max", "valid_range", "comment")
LAT_NAMES = ("lat", "latitude", "y")
LON_NAMES = ("lon", "longitude", "x")
_COORD_DEFAULTS = {
    "lat": {"units": "degrees_north", "standard_name": "latitude"},
    "latitude": {"units": "degrees_north", "standard_name": "latitude"},
    "lon": {"units": "degrees_east", "standard_name": "longitude"},
    "longitude": {"units": "degrees_east", "standard_name": "longitude"},
    "station_lat": {"units": "degrees_north", "standard_name": "latitude"},
    "station_lon": {"units": "degrees_east", "standard_name": "longitude"},
}


def _have(module: str) -> bool:
    """Whether ``module`` imports (an optional engine: h5netcdf, netCDF4, zarr)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def sniff(path: Path) -> str:
    """``"netcdf4"`` (HDF5 signature) or ``"netcdf3"`` (``CDF``) from a netCDF file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise ScanError(f"{path}: cannot read it: {why(err)}") from err
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "netcdf4"
    if head.startswith(b"CDF"):
        return "netcdf3"
    raise ScanError(f"{path}: not a netCDF file (no HDF5 or CDF signature; truncated or corrupt?)")


def _read_engine(path: Path, fmt: str) -> str:
    if fmt == "zarr":
        if not _have("zarr"):
            raise ScanError("reading zarr needs zarr: pip install zarr")
        return "zarr"
    if sniff(path) == "netcdf3":
        return "scipy"
    if _have("h5netcdf"):
        return "h5netcdf"
    if _have("netCDF4"):
        return "netcdf4"
    raise ScanError(f"{path}: reading netCDF-4 (HDF5) files needs h5netcdf: pip install h5netcdf")


def _write_engine(path: Path, fmt: str, complex_data: bool) -> str:
    if fmt == "zarr":
        if not _have("zarr"):
            raise ScanError("writing zarr needs zarr: pip install zarr")
        return "zarr"
    if complex_data:
        raise ScanError(f"{path}: netCDF has no complex numbers; write complex data (k-space) as .h5, .npz or .zarr")
    if _have("h5netcdf"):
        return "h5netcdf"
    if path.name.lower().endswith(".nc4"):
        raise ScanError(f"{path}: writing netCDF-4 needs h5netcdf: pip install h5netcdf (or use .nc for netCDF-3)")
    return "scipy"


def _open(path: Path, fmt: str):
    import xarray as xr

    engine = _read_engine(path, fmt)
    kwargs = {"engine": engine, "decode_coords": "all", "decode_timedelta": False, "mask_and_scale": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zarr without consolidated metadata
            return xr.open_dataset(str(path), **kwargs)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, EOFError) as err:
        kind = "zarr store" if fmt == "zarr" else "netCDF file"
        raise ScanError(f"{path}: not a readable {kind} (truncated or corrupt): {why(err)}") from err


def _pick(path: Path, ds, name: str | None) -> str:
    names = [str(k) for k in ds.data_vars]
    if name is not None:
        if name not in names:
            raise ScanError(f"{path}: no variable {name!r}; it has: {', '.join(names) or 'no data variables'}")
        return name
    mains = [n for n in names if (parse_meta(ds[n].attrs.get(META_KEY)) or {}).get("role") == "main"]
    if mains:
        return mains[0]
    if len(names) == 1:
        return names[0]
    for n in DEFAULT_NAMES:
        if n in names:
            return n
    raise ScanError(f"{path}: {len(names)} data variables and none is called {' or '.join(DEFAULT_NAMES)}; "
                    f"choose one of: {', '.join(names) or '-'}")


def _image_axes(dims) -> tuple[int, int]:
    lat = next((i for i, d in enumerate(dims) if str(d).lower() in LAT_NAMES), None)
    lon = next((i for i, d in enumerate(dims) if str(d).lower() in LON_NAMES), None)
    if lat is not None and lon is not None:
        return (lat, lon)
    return (-2, -1) if len(dims) >= 2 else (-1, -1)


def _spacing(var, dims) -> tuple | None:
    out = []
    for d in dims:
        s = None
        if d in var.coords and var.coords[d].ndim == 1 and var.coords[d].size > 1:
            c = np.asarray(var.coords[d].values)
            if c.dtype.kind in "iuf":
                diff = np.diff(c.astype(np.float64))
                if np.allclose(diff, diff[0], rtol=1e-6, atol=0):
                    s = float(abs(diff[0]))
        out.append(s)
    return tuple(out) if any(s is not None for s in out) else None


def read(path: Path, name: str | None = None, fmt: str = "netcdf") -> Scan:
    """Read one variable of a netCDF file or zarr store (see the module docstring)."""
    with _open(path, fmt) as ds:
        main = _pick(path, ds, name)
        try:
            var = ds[main].load()
            meta = parse_meta(var.attrs.get(META_KEY)) or {}
            extra_names = [n for n in meta.get("extras", []) if n in ds.data_vars]
            extras = {n: extra_tensor(ds[n].values) for n in extra_names}
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise ScanError(f"{path}: cannot read variable {main!r} (truncated or corrupt?): {why(err)}") from err
        attrs = decode_attrs(dict(ds.attrs))
    values = np.asarray(var.values)
    if values.dtype.kind not in "biufc":
        raise ScanError(f"{path}: variable {main!r} holds {values.dtype} values, not numbers")
    stored = var.encoding.get("dtype")
    if values.dtype == np.float64 and stored is not None and np.dtype(stored) != np.float64:
        values = values.astype(np.float32)  # packed integers (scale_factor / add_offset): float32 like the rest
    data = to_tensor(values)
    dims = tuple(str(d) for d in var.dims)
    var_attrs = decode_attrs({k: v for k, v in var.attrs.items() if k != META_KEY})
    units = var_attrs.pop("units", None)
    attrs.update(var_attrs)
    coords, coord_dims, coord_attrs = {}, {}, {}
    for k, c in var.coords.items():
        coords[str(k)] = np.asarray(c.values)
        coord_dims[str(k)] = tuple(str(d) for d in c.dims)
        coord_attrs[str(k)] = decode_attrs(dict(c.attrs))
    attrs["_coord_dims"] = coord_dims
    attrs["_coord_attrs"] = coord_attrs
    fields = meta_fields(meta, data.shape)  # kind, image axes (range-checked), spacing, affine as written
    kind = fields.get("kind") or ("stations" if "station" in dims else
                                  main if main in ("measurement", "sinogram") else "image")
    return Scan(data=data, format=fmt, kind=kind, dims=dims,
                image_axes=fields.get("image_axes") or _image_axes(dims),
                spacing=fields.get("spacing") or _spacing(var, dims), affine=fields.get("affine"), coords=coords,
                units=None if units is None else str(units), source=str(path), name=main,
                attrs=attrs, extras=extras)


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------
def _coord_dims(path: Path, k: str, v: np.ndarray, dims: tuple, sizes: dict, known: dict) -> tuple:
    """The dims of coordinate ``k``: as read, its own name, or the dims whose sizes match its shape."""
    if k in known and len(known[k]) == v.ndim and all(sizes.get(d) == n for d, n in zip(known[k], v.shape)):
        return tuple(known[k])
    if v.ndim == 0:
        return ()
    if k in dims and v.ndim == 1 and sizes[k] == v.shape[0]:
        return (k,)
    if v.ndim == 1:
        matches = [d for d in dims if sizes[d] == v.shape[0]]
        pref = [d for d in matches if k.startswith(d) or k.endswith(d)]
        if pref or len(matches) == 1:
            return ((pref or matches)[0],)
    import itertools

    for combo in itertools.combinations(dims, v.ndim):
        if tuple(sizes[d] for d in combo) == v.shape:
            return combo
    raise ScanError(f"{path}: coordinate {k!r} of shape {v.shape} fits no dims of {dict(sizes)}")


def _dataset(path: Path, variables: dict, scan: Scan, dims: tuple, fmt: str):
    """An xarray Dataset: ``variables`` {name: (array, dims, meta)} with scan's coordinates and attributes."""
    import xarray as xr

    sizes = {}
    for a, vdims, _ in variables.values():
        sizes.update(zip(vdims, a.shape))
    public = check_attrs(scan.attrs, path)
    var_attrs = {k: public[k] for k in VAR_KEYS if k in public}
    ds_attrs = {k: v for k, v in public.items() if k not in VAR_KEYS and k != "units"}
    known_dims = scan.attrs.get("_coord_dims") or {}
    known_attrs = scan.attrs.get("_coord_attrs") or {}
    coords = {}
    for k, v in scan.coords.items():
        v = np.asarray(v)
        cd = _coord_dims(path, k, v, dims, sizes, known_dims)
        cattrs = dict(known_attrs.get(k) or _COORD_DEFAULTS.get(k.lower(), {}))
        coords[k] = (cd, v, encode_attrs(cattrs))
    data_vars = {}
    for name, (a, vdims, meta) in variables.items():
        attrs = encode_attrs(var_attrs)
        if scan.units is not None:
            attrs["units"] = str(scan.units)
        if meta is not None:
            attrs[META_KEY] = to_json(meta)
        data_vars[name] = (vdims, a, attrs)
    try:
        ds = xr.Dataset(data_vars, coords=coords, attrs=encode_attrs(ds_attrs))
    except (ValueError, TypeError) as err:
        raise ScanError(f"{path}: cannot arrange the data as a {fmt} dataset: {why(err)}") from err
    return ds


def _to_file(ds, tmp: Path, path: Path, fmt: str, engine: str):
    encoding = {k: {"_FillValue": None} for k in ds.coords if ds[k].dtype.kind in "f"}
    try:
        if fmt == "zarr":
            try:
                ds.to_zarr(str(tmp), mode="w", zarr_format=2, consolidated=True, encoding=encoding)
            except TypeError:  # older xarray without zarr_format
                ds.to_zarr(str(tmp), mode="w", consolidated=True, encoding=encoding)
        else:
            ds.to_netcdf(str(tmp), engine=engine, encoding=encoding)
    except (ValueError, TypeError, OverflowError) as err:
        raise ScanError(f"{path}: cannot write it as {fmt}: {why(err)}") from err


def _dims_of(path: Path, scan: Scan, ndim: int) -> tuple:
    if scan.dims is not None:
        if len(scan.dims) != ndim or len(set(scan.dims)) != ndim:
            raise ScanError(f"{path}: dims {scan.dims} do not name the {ndim} axes of the data")
        return tuple(scan.dims)
    return tuple(f"dim_{i}" for i in range(ndim))


def _var_meta(scan: Scan, path: Path, role: str, extras=()) -> dict:
    meta = scan_meta(scan, path, coords=False)
    for k in ("attrs", "dims", "units", "name"):
        meta.pop(k, None)
    meta.update(role=role, extras=list(extras))
    return meta


def write_jobs(path: Path, scan: Scan, fmt: str = "netcdf") -> list[Job]:
    """One netCDF file / zarr store: the variable, the extras as further variables, coordinates, attributes."""
    a = to_numpy(scan.data)
    engine = _write_engine(path, fmt, a.dtype.kind == "c" or any(e.is_complex() for e in scan.extras.values()))
    dims = _dims_of(path, scan, a.ndim)
    main = scan.name or scan.kind or "data"
    variables = {main: (a, dims, _var_meta(scan, path, "main", scan.extras))}
    for k, v in scan.extras.items():
        e = to_numpy(v)
        edims = dims if e.shape == a.shape else tuple(f"{k}_dim{i}" for i in range(e.ndim))
        variables[k] = (e, edims, None)
    ds = _dataset(path, variables, scan, dims, fmt)
    return [(path, fmt == "zarr", lambda tmp: _to_file(ds, tmp, path, fmt, engine))]


def results_jobs(path: Path, arrays: dict, like: Scan, fmt: str = "netcdf") -> list[Job]:
    """One netCDF file / zarr store with a variable per result (a leading ``sample`` dim for the extra axis)."""
    arrays = result_arrays(path, arrays, like)
    engine = _write_engine(path, fmt, any(a.dtype.kind == "c" for a in arrays.values()))
    dims = _dims_of(path, like, like.data.ndim)
    if "sample" in dims:
        raise ScanError(f"{path}: the input already has a dim called 'sample'")
    variables = {}
    for name, a in arrays.items():
        vdims = dims if a.ndim == len(dims) else ("sample", *dims)
        variables[name] = (a, vdims, _var_meta(result_scan(like, name, a), path, "result"))
    ds = _dataset(path, variables, like, dims, fmt)
    return [(path, fmt == "zarr", lambda tmp: _to_file(ds, tmp, path, fmt, engine))]


def describe(path: Path, fmt: str = "netcdf") -> dict:
    """Variables, coordinates (with ranges and the longitude convention) and engine of a netCDF file / zarr store."""
    engine = _read_engine(path, fmt)
    with _open(path, fmt) as ds:
        rows = [(str(k), tuple(int(ds.sizes[d]) for d in v.dims), f"{v.dtype} [{', '.join(map(str, v.dims))}]")
                for k, v in ds.data_vars.items()]
        notes = []
        for k, c in ds.coords.items():
            notes.append(f"coordinate {k} [{', '.join(map(str, c.dims))}]: {coord_summary(str(k), c.values, c.attrs)}")
        fallback = []  # shown only when there is no default variable (else the attributes come with it)
        for k, v in decode_attrs(dict(ds.attrs)).items():
            text = to_json(v) if isinstance(v, (dict, list)) else str(v)
            fallback.append(f"dataset attribute {k}: {text if len(text) <= 200 else text[:197] + '...'}")
    label = {"scipy": "netCDF-3 (scipy)", "h5netcdf": "netCDF-4 (h5netcdf)", "netcdf4": "netCDF-4 (netCDF4)",
             "zarr": "zarr (xarray + zarr)"}[engine]
    return {"format": label, "arrays": rows, "notes": notes, "fallback": fallback, "label": "variables"}


def coord_summary(name: str, values, attrs=None) -> str:
    """One line about a coordinate: its range, order and (longitude) convention."""
    v = np.asarray(values)
    attrs = attrs or {}
    if v.size == 0:
        return "empty"
    if v.dtype.kind == "M":
        first, last = (np.datetime_as_string(t, unit="s") for t in (v.ravel()[0], v.ravel()[-1]))
        return f"{v.size} values, {first} .. {last}"
    if v.dtype.kind == "m":
        return f"{v.size} values, {v.ravel()[0]} .. {v.ravel()[-1]}"
    if v.dtype.kind not in "iuf":
        return f"{v.size} values: {', '.join(map(str, v.ravel()[:4]))}{' ...' if v.size > 4 else ''}"
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    out = f"{v.size} values, {v.ravel()[0]:g} .. {v.ravel()[-1]:g}"
    if v.ndim == 1 and v.size > 1:
        d = np.diff(v.astype(np.float64))
        out += ", ascending" if np.all(d > 0) else ", descending" if np.all(d < 0) else ""
        if np.allclose(d, d[0], rtol=1e-6):
            out += f", step {abs(d[0]):g}"
    units = str(attrs.get("units", ""))
    if units:
        out += f" {units}"
    lname = name.lower()
    if lname in ("lon", "longitude", "station_lon") or units.startswith("degree_e") or units.startswith("degrees_e"):
        conv = "0..360" if hi > 180 else "-180..180" if lo < 0 else "0..180 (either convention)"
        out += f"; longitude convention {conv}"
    return out
