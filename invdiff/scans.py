"""File-level workflows behind ``invdiff simulate``, ``invdiff reconstruct`` and ``invdiff evaluate``.

A scan file holds one image, a stack of them or a volume (:class:`invdiff.io.Scan`); its two ``image_axes`` span
one 2-D image and every other axis indexes slices, which are reconstructed one by one.

Intensities: a prior works in its own normalised units ``u`` (its card's value range, e.g. ``[0, 1]``); a file's
values ``x`` are physical (HU, scanner units, m/s). ``x = offset + scale * u`` with ``(offset, scale)`` from
:func:`invdiff.problems.intensity`: ``simulate`` computes them from the clean file and stores them in the
measurement file (``invdiff_intensity``) together with the operator settings (``invdiff_operator``) and the clean
file's geometry (``invdiff_source``: shape, axes, affine, spacing, coordinates), so ``reconstruct`` needs no flags
to rebuild the same problem and writes its results in physical units with the clean file's geometry. For a file
that ``simulate`` did not make (e.g. a scanner's fastMRI file), they are estimated from the classical
reconstruction (zero-filled, FBP, ...).

Measurements in a file: k-space as ``(slices, [coils,] H, W)`` complex (fastMRI layout), sinograms as
``(slices, views, detectors)``, station values as ``(slices, n)`` with ``station_lat`` / ``station_lon``
coordinates, and image-like measurements (blurred, noisy, inpainted, subsampled) in the clean file's own layout.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import problems
from .io import Scan, ScanError

__all__ = ["simulate", "reconstruct", "evaluate", "load_prior", "to_stack", "from_stack", "geometry"]

_SKIP_ATTRS = ("invdiff_operator", "invdiff_source", "invdiff_intensity", "invdiff_prior", "invdiff_seed")


# -- stacks of 2-D images -------------------------------------------------------------------------------------
def _axes(ndim: int, image_axes) -> tuple[int, int]:
    a, b = (int(i) % ndim for i in image_axes)
    if a == b:
        raise ValueError(f"image_axes {image_axes} name the same axis twice")
    return a, b


def to_stack(data: torch.Tensor, image_axes=(-2, -1)) -> torch.Tensor:
    """``(S, H, W)``: the 2-D images of ``data`` (spanned by ``image_axes``), all other axes flattened to ``S``."""
    if data.ndim < 2:
        raise ValueError(f"need at least a 2-D array to find images in, got shape {tuple(data.shape)}")
    a, b = _axes(data.ndim, image_axes)
    moved = torch.movedim(data, (a, b), (-2, -1))
    return moved.reshape(-1, *moved.shape[-2:])


def from_stack(stack: torch.Tensor, shape, image_axes=(-2, -1)) -> torch.Tensor:
    """Inverse of :func:`to_stack` for an original array of ``shape``; the images may have a new ``(H, W)`` and the
    stack may carry one extra leading axis (samples), which stays in front."""
    shape = tuple(shape)
    a, b = _axes(len(shape), image_axes)
    rest = [s for i, s in enumerate(shape) if i not in (a, b)]
    H, W = stack.shape[-2:]
    lead = stack.shape[:-3]
    moved = stack.reshape(*lead, *rest, H, W)
    off = len(lead)
    return torch.movedim(moved, (off + len(rest), off + len(rest) + 1), (off + a, off + b))


# -- geometry carried from a clean file to its measurement and on to the results ---------------------------------
def _jsonable(v):
    if isinstance(v, np.ndarray):
        if np.issubdtype(v.dtype, np.datetime64):
            return {"datetime64": [str(t) for t in v.astype("datetime64[ns]")]}
        return v.tolist()
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_jsonable(u) for u in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(u) for k, u in v.items()}
    return v


def _from_jsonable_coord(v):
    if isinstance(v, dict) and "datetime64" in v:
        return np.array(v["datetime64"], dtype="datetime64[ns]")
    return np.asarray(v)


def geometry(scan: Scan) -> dict:
    """The JSON-able geometry of ``scan`` (format, shape, dims, image axes, spacing, affine, coordinates, units,
    and the attributes that are not invdiff's own)."""
    attrs = {k: v for k, v in scan.attrs.items() if not k.startswith("_") and k not in _SKIP_ATTRS}
    try:
        attrs = json.loads(json.dumps(_jsonable(attrs)))
    except (TypeError, ValueError):
        attrs = {k: v for k, v in attrs.items() if isinstance(v, (str, int, float, bool))}
    return {
        "format": scan.format, "name": scan.name,
        "shape": list(scan.data.shape),
        "dims": list(scan.dims) if scan.dims else None,
        "image_axes": [int(i) % scan.data.ndim for i in scan.image_axes],
        "spacing": _jsonable(list(scan.spacing)) if scan.spacing is not None else None,
        "affine": _jsonable(scan.affine) if scan.affine is not None else None,
        "coords": {k: _jsonable(v) for k, v in scan.coords.items()},
        "units": scan.units, "attrs": attrs, "source": str(scan.source) if scan.source else None,
    }


def _like(geom: dict, fmt: str, attrs: dict | None = None) -> Scan:
    """An image scan of ``geom``'s layout and metadata (zeros as data), to write results like it."""
    return Scan(
        data=torch.zeros(geom["shape"]), format=fmt, kind="image",
        dims=tuple(geom["dims"]) if geom.get("dims") else None, image_axes=tuple(geom["image_axes"]),
        spacing=tuple(geom["spacing"]) if geom.get("spacing") else None,
        affine=np.asarray(geom["affine"], dtype=np.float64) if geom.get("affine") is not None else None,
        coords={k: _from_jsonable_coord(v) for k, v in (geom.get("coords") or {}).items()},
        units=geom.get("units"), name=geom.get("name"), attrs={**(geom.get("attrs") or {}), **(attrs or {})},
    )


def _resize_geometry(scan: Scan, H: int, W: int) -> Scan:
    """``scan``'s metadata for images resampled from their size to ``(H, W)`` (cell-centred, same extent)."""
    a, b = _axes(scan.data.ndim, scan.image_axes)
    old = (scan.data.shape[a], scan.data.shape[b])
    f = (old[0] / H, old[1] / W)
    spacing = list(scan.spacing) if scan.spacing is not None else None
    if spacing is not None:
        for ax, fk in ((a, f[0]), (b, f[1])):
            if ax < len(spacing) and spacing[ax] is not None:
                spacing[ax] = float(spacing[ax]) * fk
    affine = None
    if scan.affine is not None:
        affine = np.array(scan.affine, dtype=np.float64)
        if affine.shape == (4, 4):  # column k of the affine steps along data axis k (NIfTI and DICOM alike)
            for ax, fk in ((a, f[0]), (b, f[1])):
                if ax < 3:
                    # voxel i of the new grid is centred at old index (i + 0.5) * fk - 0.5
                    affine[:3, 3] += affine[:3, ax] * (0.5 * fk - 0.5)
                    affine[:3, ax] *= fk
    coords = dict(scan.coords)
    if scan.dims:
        for ax, n_new in ((a, H), (b, W)):
            name = scan.dims[ax]
            c = coords.get(name)
            if c is not None and np.issubdtype(np.asarray(c).dtype, np.number) and len(c) == scan.data.shape[ax]:
                c = np.asarray(c, dtype=np.float64)
                n_old = c.size
                pos = (np.arange(n_new) + 0.5) * n_old / n_new - 0.5
                step = (c[-1] - c[0]) / max(n_old - 1, 1)
                coords[name] = c[0] + pos * step
    shape = list(scan.data.shape)
    shape[a], shape[b] = H, W
    return scan.replace(data=torch.zeros(shape), spacing=tuple(spacing) if spacing else None, affine=affine,
                        coords=coords)


def _resize(stack: torch.Tensor, H: int, W: int) -> torch.Tensor:
    import torch.nn.functional as F

    if tuple(stack.shape[-2:]) == (H, W):
        return stack
    x = stack[:, None].to(torch.float32)
    if H <= stack.shape[-2] and W <= stack.shape[-1]:
        out = F.interpolate(x, size=(H, W), mode="area")
    else:
        out = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
    return out[:, 0].to(stack.dtype)


# -- priors -----------------------------------------------------------------------------------------------------
def load_prior(name_or_path):
    """A bundled prior by name or a checkpoint by path, on the CPU; a clear error for an unknown one."""
    from invdiff import priors

    return priors.load(name_or_path, map_location="cpu").eval()


def _check_prior_shape(prior, H: int, W: int, path, name: str, resize_hint: bool) -> None:
    shape = tuple(prior.shape)
    if shape[-2:] == (H, W) and len(shape) == 3 and shape[0] == 1:
        return
    from invdiff import priors

    fits = [n for n, card in priors.available().items() if tuple(card["config"]["shape"])[-2:] == (H, W)]
    hint = (f"resize the clean images with --resize {shape[-1]}" if resize_hint else
            f"make the measurement at {shape[-2]}x{shape[-1]} from the clean images (invdiff simulate CLEAN "
            f"--resize {shape[-1]}; for a fastMRI file, CLEAN can be the file with --dataset reconstruction_rss)")
    more = f"; priors for {H}x{W}: {', '.join(fits)}" if fits else f"; or train a {H}x{W} prior (invdiff train)"
    raise ValueError(f"{path}: images are {H}x{W} but the prior {name} expects {shape[-2]}x{shape[-1]}: {hint}{more}")


# -- simulate ---------------------------------------------------------------------------------------------------
def _image_stack(scan: Scan, path) -> torch.Tensor:
    if scan.data.is_complex():
        raise ValueError(f"{path}: holds complex data ({scan.kind}); simulate needs a real clean image, e.g. a "
                         "reconstruction_rss dataset (--dataset reconstruction_rss)")
    return to_stack(scan.data.to(torch.float64), scan.image_axes)


def _ismrmrd_header(H: int, W: int) -> str:
    m = f"<matrixSize><x>{W}</x><y>{H}</y><z>1</z></matrixSize>"
    fov = f"<fieldOfView_mm><x>{W}</x><y>{H}</y><z>1</z></fieldOfView_mm>"
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        f"<encoding><encodedSpace>{m}{fov}</encodedSpace><reconSpace>{m}{fov}</reconSpace>"
        "<encodingLimits><kspace_encoding_step_1><minimum>0</minimum>"
        f"<maximum>{W - 1}</maximum><center>{W // 2}</center></kspace_encoding_step_1></encodingLimits>"
        "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
    )


def _with_suffix(out, like_path, default: str) -> Path:
    """``out``, or ``out`` plus ``like_path``'s format suffix (``default`` if it has none) when ``out`` has no
    known format suffix."""
    from invdiff.io import split_name

    out = Path(out)
    if split_name(out)[0] is not None:
        return out
    return out.with_name(out.name + (split_name(like_path)[2] or default))


def simulate(clean_path, operator: str, out, *, prior=None, resize: int | None = None, seed: int = 0,
             dataset: str | None = None, overwrite: bool = False, log=print) -> Path:
    """Measure the images of ``clean_path`` with ``operator`` (``"NAME:key=value,..."``) and write the measurement
    with its exact settings to ``out``. Returns the written path."""
    from invdiff import io

    clean_path = Path(clean_path)
    scan = io.read(clean_path, name=dataset)
    name, given = problems.parse(operator)
    settings = problems.resolve(name, given)
    prior_name = prior or problems.DEFAULT_PRIOR[name]
    pri = load_prior(prior_name)
    stack = _image_stack(scan, clean_path)
    if resize is not None:
        if resize < 4:
            raise ValueError(f"--resize must be at least 4, got {resize}")
        stack = _resize(stack, resize, resize)
        scan = _resize_geometry(scan, resize, resize)
    S, H, W = stack.shape
    _check_prior_shape(pri, H, W, clean_path, prior_name, resize_hint=True)
    lat = lon = None
    if name in ("stations", "coarse"):
        lat, lon = _latlon(scan)
    # operators follow their input's dtype: never cast them (a real dtype would drop complex coil maps' phase)
    op = problems.build(settings, (H, W), lat=lat, lon=lon)
    offset, scale = problems.intensity(stack, pri)
    g = torch.Generator().manual_seed(int(seed))
    shift = offset * op(torch.ones(op.in_shape, dtype=torch.float64))  # A(offset) of x = offset + scale * u
    ys = []
    for s in range(S):
        u = ((stack[s] - offset) / scale).reshape(op.in_shape)
        ys.append(scale * op.measure(u, generator=g) + shift)
    Y = torch.stack(ys)
    stored = dict(settings)
    if name == "stations":
        stored["positions"] = problems.station_positions(settings, lat, lon).tolist()
    if name == "mri":
        stored["columns"] = op.ops[0].mask[0].tolist()
    kind = problems.measurement_kind(name)
    # without a suffix: k-space and sinograms in HDF5, stations in netCDF, images in the clean file's format
    out = _with_suffix(out, {"kspace": "x.h5", "sinogram": "x.h5", "stations": "x.nc"}.get(kind, clean_path), ".npy")
    lead = [d for i, d in enumerate(scan.dims or ()) if i not in _axes(scan.data.ndim, scan.image_axes)]
    attrs = {
        "invdiff_operator": stored, "invdiff_source": geometry(scan),
        "invdiff_intensity": {"offset": offset, "scale": scale}, "invdiff_prior": str(prior_name),
        "invdiff_seed": int(seed),
    }
    if kind == "kspace":
        data = Y.to(torch.complex64).reshape(S, *op.out_shape)
        meas = Scan(data=data, format="fastmri", kind="kspace",
                    dims=("slice", "ky", "kx") if data.ndim == 3 else ("slice", "coil", "ky", "kx"),
                    attrs={**attrs, "ismrmrd_header": _ismrmrd_header(H, W), "acquisition": "invdiff simulate",
                           "max": float(stack.abs().max()), "norm": float(stack.norm())},
                    extras={"mask": op.ops[0].mask[0].to(torch.float32)})
    elif kind == "sinogram":
        meas = Scan(data=Y.to(torch.float32).reshape(S, *op.out_shape), format="fastmri", kind="sinogram",
                    dims=("slice", "view", "detector"), name="sinogram",
                    coords={"view": np.degrees(op.ops[0].angles.numpy())}, attrs=attrs)
    elif kind == "stations":
        pos = np.asarray(stored["positions"], dtype=np.float64)
        lead_name = lead[0] if len(lead) == 1 else "slice"
        data = Y.to(torch.float32).reshape(S, -1)
        coords = {"station_lat": pos[:, 0], "station_lon": pos[:, 1]}
        if len(lead) == 1 and lead_name in scan.coords:
            coords[lead_name] = scan.coords[lead_name]
        if not lead:
            data, dims = data[0], ("station",)
        else:
            dims = (lead_name, "station")
        meas = Scan(data=data, format="netcdf", kind="stations", dims=dims, coords=coords, units=scan.units,
                    name="measurement", attrs=attrs)
    else:
        img = Y.to(torch.float32).reshape(S, *op.out_shape[-2:])
        data = from_stack(img, scan.data.shape, scan.image_axes)
        geo = scan if tuple(data.shape) == tuple(scan.data.shape) else scan.replace(
            spacing=None, coords={k: v for k, v in scan.coords.items()
                                  if k not in [scan.dims[i] for i in _axes(scan.data.ndim, scan.image_axes)]}
            if scan.dims else {})
        meas = geo.replace(data=data, kind="image", name="measurement",
                           attrs={**scan.attrs, **attrs})  # invdiff's own keys replaced by this run's
    written = io.write(out, meas, overwrite=overwrite)
    log(f"measurement: {written} ({kind}, {S} slice{'s' * (S != 1)} of {H}x{W}, operator "
        f"{operator_text(stored)}, prior {prior_name})")
    return Path(written)


def operator_text(s: dict) -> str:
    """``NAME:key=value,...`` for the scalar settings of ``s`` (data such as masks left out)."""
    kv = ",".join(f"{k}={v}" for k, v in s.items() if k != "name" and not isinstance(v, (list, dict)))
    return f"{s['name']}:{kv}" if kv else s["name"]


def _latlon(scan: Scan):
    """The grid's latitudes and longitudes from a scan's coordinates (or a default global grid)."""
    a, b = _axes(scan.data.ndim, scan.image_axes)
    H, W = scan.data.shape[a], scan.data.shape[b]
    if scan.dims:
        lat = scan.coords.get(scan.dims[a])
        lon = scan.coords.get(scan.dims[b])
        if (lat is not None and lon is not None and scan.dims[a].lower().startswith("lat")
                and scan.dims[b].lower().startswith("lon")):
            return np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    return problems.default_grid(H, W)


# -- reconstruct ------------------------------------------------------------------------------------------------
def _mri_from_file(scan: Scan) -> dict | None:
    """Operator settings implied by a k-space file that invdiff did not write: its mask, or none (fully sampled)."""
    mask = scan.extras.get("mask")
    if mask is None:
        return None
    cols = mask.reshape(-1) != 0
    W = scan.data.shape[-1]
    if cols.numel() != W:
        raise ScanError(f"{scan.source}: the mask has {cols.numel()} entries but the k-space has {W} columns")
    return {"name": "mri", "mask": "file", "columns": cols.tolist(),
            "acceleration": round(W / max(int(cols.sum()), 1), 2)}


def _measurements(scan: Scan, op, kind: str, path) -> torch.Tensor:
    """``(S, *op.out_shape)``: one measurement per slice."""
    out_shape = tuple(op.out_shape)
    if kind == "image":
        stack = to_stack(scan.data, scan.image_axes)
        per = int(np.prod(out_shape))
        if stack.shape[-2] * stack.shape[-1] != per:
            raise ValueError(f"{path}: its images are {stack.shape[-2]}x{stack.shape[-1]} but the operator gives "
                             f"{'x'.join(map(str, out_shape))}; check --operator")
        return stack.reshape(-1, *out_shape)
    data = scan.data
    # the trailing axes must be the operator's output (a leading singleton may be left out: stations (n,))
    core = tuple(d for d in out_shape if d != 1) or (1,)
    trailing = tuple(d for d in data.shape[data.ndim - len(core):] if d != 1) if data.ndim >= len(core) else ()
    if trailing != tuple(d for d in core if d != 1):
        raise ValueError(f"{path}: the measurement has shape {tuple(data.shape)} but the operator gives "
                         f"{out_shape} per slice; check --operator")
    return data.reshape(-1, *out_shape)


def reconstruct(input_path, out, *, operator: str | None = None, prior=None, sampler: str = "dps",
                samples: int = 4, steps: int | None = None, seed: int = 0, options: dict | None = None,
                save_samples: bool = False, report=None, reference=None, summary=None, dataset: str | None = None,
                device: str = "cpu", overwrite: bool = False, progress: bool = True, log=print) -> dict:
    """Reconstruct every slice of the measurement file ``input_path``; write mean, std (and samples) to ``out``,
    plus the JSON ``summary`` and the PNG ``report``. Returns the summary dict."""
    import invdiff
    from invdiff import io
    from invdiff._files import atomic_path, check_writable

    input_path = Path(input_path)
    scan = io.read(input_path, name=dataset)
    stored = scan.attrs.get("invdiff_operator")
    if stored is None and scan.kind == "kspace":
        stored = _mri_from_file(scan)
    if operator is not None:
        name, given = problems.parse(operator)
    elif stored is not None:
        name, given = stored["name"], {}
    else:
        raise ValueError(f"{input_path}: the file stores no operator settings; pass --operator "
                         f"({', '.join(problems.SETUPS)}), e.g. --operator mri:acceleration=4")
    kind = problems.measurement_kind(name)
    if scan.kind == "kspace" and name != "mri":
        raise ValueError(f"{input_path}: holds k-space, which the {name} operator does not measure; "
                         "use --operator mri")
    if scan.kind != "kspace" and name == "mri":
        raise ValueError(f"{input_path}: --operator mri needs k-space, but the file holds {scan.kind} data "
                         f"{tuple(scan.data.shape)}")
    if scan.data.is_complex() and kind != "kspace":
        raise ValueError(f"{input_path}: holds complex data, which the {name} operator does not measure")
    settings = problems.resolve(name, given, stored, source=str(input_path))
    retrospective = scan.kind == "kspace" and (stored is None)  # a fully sampled file: undersample it here
    columns = None  # a fully sampled file's mask, chosen once
    if retrospective:
        columns = problems.mri_columns(settings, scan.data.shape[-1])
        settings["columns"] = columns.tolist()
    src = scan.attrs.get("invdiff_source")
    prior_name = prior or scan.attrs.get("invdiff_prior") or problems.DEFAULT_PRIOR[name]

    # the image grid
    if kind == "kspace":
        H, W = scan.data.shape[-2:]
    elif src is not None:
        a, b = src["image_axes"]
        H, W = src["shape"][a], src["shape"][b]
    elif kind == "image" and name in ("blur", "denoise", "inpaint"):
        st = to_stack(scan.data, scan.image_axes)
        H, W = st.shape[-2:]
    elif kind == "image" and name == "superres":
        st = to_stack(scan.data, scan.image_axes)
        H, W = st.shape[-2] * settings["factor"], st.shape[-1] * settings["factor"]
    else:
        H, W = None, None
    pri = load_prior(prior_name)
    if H is None:
        H, W = tuple(pri.shape[-2:])
    _check_prior_shape(pri, H, W, input_path, prior_name, resize_hint=False)

    # every output is checked before the (long) sampling, so a clash fails at once and nothing is half-written
    out = _with_suffix(out, input_path, ".npz")
    names = ["mean", "std"] + (["samples"] if save_samples else [])
    targets = list(io.output_paths(out, names).values())
    summary = Path(summary) if summary is not None else out.with_name(io.split_name(out)[1] + ".json")
    extra = [summary] + ([Path(report)] if report is not None else [])
    for p in dict.fromkeys(targets + extra):
        check_writable(p, overwrite)
        if p.resolve() == input_path.resolve():
            raise ValueError(f"{p}: an output may not replace the input file")

    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine (torch "
                         f"{torch.__version__}); use --device cpu")
    pri = pri.to(device)

    lat = lon = None
    if name in ("stations", "coarse"):
        if src is not None:
            like_src = _like(src, "netcdf")
            lat, lon = _latlon(like_src)
        else:
            lat, lon = problems.default_grid(H, W)
        if settings.get("positions") is None and "station_lat" in scan.coords:
            settings["positions"] = np.stack([np.asarray(scan.coords["station_lat"], dtype=np.float64),
                                              np.asarray(scan.coords["station_lon"], dtype=np.float64)], -1).tolist()
    multicoil = kind == "kspace" and scan.data.ndim == 4  # coil maps are estimated slice by slice
    base_op = None if multicoil else problems.build(settings, (H, W), lat=lat, lon=lon)

    if kind == "kspace":  # finite: io.read checks every array it returns
        ys = scan.data.reshape(-1, *scan.data.shape[-3 if multicoil else -2:])
    else:
        ys = _measurements(scan, base_op, kind, input_path)
    S = ys.shape[0]
    if columns is not None:
        ys = ys * columns.to(ys.real.dtype)

    ref_stack, ref_note = None, None
    if reference is not None:
        ref_stack, ref_note = _reference_stack(reference, S, H, W)

    slice_ops = {}  # multi-coil operators built for the intensity estimate, handed on to the sampling loop

    def op_for(s, keep: bool = False):
        if not multicoil:
            return base_op
        if s in slice_ops:
            return slice_ops[s] if keep else slice_ops.pop(s)
        from invdiff.operators.mri import estimate_coil_maps

        # calibrate on the fully sampled centre columns of this slice's k-space (McKenzie et al. 2002)
        op = problems.build(settings, (H, W), coil_maps=estimate_coil_maps(ys[s], problems.mri_columns(settings, W)))
        if keep:
            slice_ops[s] = op
        return op

    inten = scan.attrs.get("invdiff_intensity")
    if inten is None:
        base = torch.stack([problems.baseline(settings, op_for(i, keep=True), ys[i].to(
            torch.complex128 if ys.is_complex() else torch.float64))[0].real for i in range(min(S, 8))])
        offset, scale = problems.intensity(base, pri)
        intensity_from = "estimated from the classical reconstruction"
    else:
        offset, scale = float(inten["offset"]), float(inten["scale"])
        intensity_from = "stored in the file by invdiff simulate"

    opts = dict(options or {})
    if sampler == "dps" and "zeta" not in opts:
        opts["zeta"] = _default_zeta(pri, name)
    means, stds, sample_list, bases = [], [], [], []
    nfe, t0 = 0, time.perf_counter()
    if progress and S > 1:
        from tqdm.auto import tqdm

        bar = tqdm(range(S), desc="slices", unit="slice", leave=False)
    else:
        bar = range(S)
    base_name = None

    def shift(op):  # what the intensity offset contributes to a measurement
        return offset * op(torch.ones(op.in_shape, dtype=torch.float64, device=device))

    fixed_shift = shift(base_op.to(device)) if offset != 0 and not multicoil else None
    for s in bar:
        op = op_for(s).to(device)  # operators follow the input's dtype; never cast them (complex coil maps)
        y = ys[s].to(device, torch.complex128 if ys.is_complex() else torch.float64)
        if offset != 0:
            y = y - (fixed_shift if fixed_shift is not None else shift(op))
        y = y / scale
        b, base_name = problems.baseline(settings, op, y)
        bases.append(b.real.reshape(H, W).cpu() * scale + offset)
        post = invdiff.sample(pri, op, y.to(torch.complex64 if y.is_complex() else torch.float32), sampler,
                              n=samples, steps=steps, seed=int(seed) + s, progress=progress and S == 1, **opts)
        nfe += int(post.nfe)
        means.append(post.mean.detach().cpu().reshape(H, W).to(torch.float64) * scale + offset)
        stds.append(post.std.detach().cpu().reshape(H, W).to(torch.float64) * scale)
        sample_list.append(post.samples.detach().cpu().reshape(-1, H, W).to(torch.float64) * scale + offset)
    seconds = time.perf_counter() - t0
    mean, std, smp, base = torch.stack(means), torch.stack(stds), torch.stack(sample_list, 1), torch.stack(bases)

    # the output layout: the clean file's geometry when known, else the input's image layout
    out_fmt = io.split_name(out)[0]
    if src is not None:
        like = _like(src, out_fmt)
    elif kind == "image" and name in ("blur", "denoise", "inpaint"):
        like = scan.replace(format=out_fmt, kind="image")
        like.attrs = {k: v for k, v in like.attrs.items() if k not in _SKIP_ATTRS}
    else:
        shape = (S, H, W)
        like = Scan(data=torch.zeros(shape), format=out_fmt, kind="image", dims=("slice", "y", "x"),
                    image_axes=(1, 2), attrs={k: v for k, v in scan.attrs.items() if k not in _SKIP_ATTRS
                                              and not k.startswith("_") and k != "ismrmrd_header"})
    like_shape = tuple(like.data.shape)
    arrays = {"mean": from_stack(mean, like_shape, like.image_axes).to(torch.float32),
              "std": from_stack(std, like_shape, like.image_axes).to(torch.float32)}
    if save_samples:
        arrays["samples"] = from_stack(smp, like_shape, like.image_axes).to(torch.float32)
    like.attrs = {**like.attrs, "invdiff_reconstruction": {"operator": operator_text(settings), "prior": str(prior_name),
                                                           "sampler": sampler, "samples": samples, "seed": seed}}

    metrics_out = None
    if ref_stack is not None:
        metrics_out = {"posterior_mean": _metrics(mean, ref_stack, smp), "baseline": _metrics(base, ref_stack)}
    written = io.write_results(out, arrays, like, overwrite=overwrite)
    info = {
        "input": str(input_path), "outputs": [str(p) for p in written], "operator": settings_public(settings),
        "prior": str(prior_name), "sampler": sampler, "options": opts, "samples": samples, "steps": steps,
        "seed": seed, "slices": S, "image_shape": [H, W], "nfe": nfe, "seconds": round(seconds, 3),
        "device": str(device), "intensity": {"offset": offset, "scale": scale, "from": intensity_from},
        "baseline": base_name,
        "metrics": metrics_out, "reference": ({"path": str(reference), "note": ref_note} if reference else None),
        "invdiff": invdiff.__version__,
    }
    if report is not None:
        with atomic_path(Path(report)) as tmp:
            _report(tmp, ys, base, mean, std, ref_stack, info)
        info["report"] = str(report)
    with atomic_path(summary) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=2, default=_jsonable))
    log(f"wrote {', '.join(str(p) for p in written)} and {summary}"
        + (f" and {report}" if report is not None else "")
        + f" ({S} slice{'s' * (S != 1)}, {nfe} network evaluations, {seconds:.1f} s)")
    if metrics_out:
        m, b = metrics_out["posterior_mean"], metrics_out["baseline"]
        log(f"PSNR {m['psnr']:.2f} dB (baseline {b['psnr']:.2f} dB), SSIM {m['ssim']:.3f}, "
            f"90% interval coverage {m['coverage90']:.3f}")
    return info


def _reference_stack(reference, S: int, H: int, W: int):
    """The reference's images ``(S, H, W)``; images of another size are resampled the way ``simulate --resize``
    resamples (area averaging), which the returned note says."""
    ref_scan = _image_scan(Path(reference))
    ref = to_stack(ref_scan.data.to(torch.float64), ref_scan.image_axes)
    if ref.shape[0] != S:
        raise ValueError(f"{reference}: the reference has {ref.shape[0]} image(s), the measurement {S}; give the "
                         "clean file the measurement was made from")
    if tuple(ref.shape[-2:]) == (H, W):
        return ref, None
    note = f"resampled from {ref.shape[-2]}x{ref.shape[-1]} to {H}x{W} (area averaging, as simulate --resize)"
    return _resize(ref, H, W), note


def _image_scan(path: Path) -> Scan:
    """The image array of a file to score against: a fastMRI file's reconstruction_rss / _esc rather than its
    k-space (read by name, so the k-space is never loaded)."""
    from invdiff import io

    if io.detect_format(path) == "fastmri":
        for name in ("reconstruction_rss", "reconstruction_esc"):
            scan = _named(path, name)
            if scan is not None:
                return scan
    scan = io.read(path)
    if scan.data.is_complex():
        raise ValueError(f"{path}: holds complex {scan.kind} data, not an image; give an image file or one with a "
                         "reconstruction_rss dataset")
    return scan


def settings_public(s: dict) -> dict:
    """The settings with long data lists (masks, stations) summarised."""
    return {k: (f"<{len(v)} values>" if isinstance(v, list) and len(v) > 8 else v) for k, v in s.items()}


def _default_zeta(prior, name: str) -> float:
    """DPS's step size: for the problem a bundled prior's evidence was made on (e.g. ``mri`` with
    ``mri-brain-64``), the zeta its card reports as best on validation images; 1.0 otherwise."""
    card = getattr(prior, "card", None) or {}
    scores = card.get("evidence", {}).get("reconstruction", {}).get("zeta_validation")
    if scores and problems.DEFAULT_PRIOR.get(name) == card.get("name"):
        return float(max(scores, key=scores.get))
    return 1.0


def _metrics(x: torch.Tensor, ref: torch.Tensor, samples: torch.Tensor | None = None) -> dict:
    """PSNR (data range of the reference), SSIM (mean over slices), relative L2 and 90% coverage."""
    from invdiff import metrics

    rng = float(ref.max() - ref.min()) or 1.0
    out = {
        "psnr": float(metrics.psnr(x, ref, data_range=rng)),
        "ssim": float(metrics.ssim(x, ref, data_range=rng)),  # leading dim: slices, averaged
        "relative_l2": float(metrics.relative_l2(x, ref)),
    }
    if samples is not None and samples.shape[0] >= 2:
        out["coverage90"] = float(metrics.coverage(samples, ref, 0.9))
    return out


def evaluate(recon_path, reference_path, *, samples_path=None, dataset: str | None = None) -> dict:
    """PSNR, SSIM, relative L2 of a reconstruction against a reference file, and the 90% interval coverage when
    posterior samples are given (a ``samples`` array in the reconstruction file, its ``OUT_samples`` sibling, or
    ``samples_path``)."""
    from invdiff import io

    recon_path = Path(recon_path)
    rec = io.read(recon_path, name=dataset) if dataset else (_named(recon_path, "mean") or io.read(recon_path))
    x = to_stack(rec.data.real.to(torch.float64), rec.image_axes)
    r, note = _reference_stack(reference_path, x.shape[0], x.shape[-2], x.shape[-1])
    if samples_path is not None:
        s_scan = _named(Path(samples_path), "samples") or io.read(samples_path)
    elif _is_container(recon_path):
        s_scan = _named(recon_path, "samples")
    else:
        sibling = io.output_paths(recon_path, ["mean", "samples"])["samples"]
        s_scan = io.read(sibling) if sibling.exists() else None
    smp = None
    if s_scan is not None:
        n = s_scan.data.numel() // r.numel()
        if n * r.numel() != s_scan.data.numel() or n < 2:
            raise ValueError(f"{s_scan.source}: the samples do not hold a whole number (>= 2) of reconstructions "
                             f"of {tuple(rec.data.shape)}")
        smp = _samples_stack(s_scan, rec, n)
    out = _metrics(x, r, smp)
    if note:
        out["reference_note"] = note
    return out


def _is_container(path: Path) -> bool:
    from invdiff import io

    return io.detect_format(path) in ("fastmri", "netcdf", "zarr", "npz")


def _named(path: Path, name: str) -> Scan | None:
    """The array ``name`` of a container file, or None when the file is no container or lacks it."""
    from invdiff import io

    if not _is_container(path):
        return None
    try:
        return io.read(path, name=name)
    except ScanError as err:
        if f"'{name}'" in str(err) or "no dataset" in str(err) or "no variable" in str(err):
            return None
        raise


def _samples_stack(s_scan: Scan, rec: Scan, n: int) -> torch.Tensor:
    """``(n, S, H, W)`` from a samples array: NIfTI keeps samples on its last axis, containers on ``sample``."""
    d = s_scan.data.real.to(torch.float64)
    if s_scan.format == "nifti":
        d = torch.movedim(d, -1, 0)
    elif s_scan.dims and "sample" in s_scan.dims:
        d = torch.movedim(d, s_scan.dims.index("sample"), 0)
    return torch.stack([to_stack(d[i], rec.image_axes) for i in range(n)])


# -- the report figure ------------------------------------------------------------------------------------------
def _report(png, ys, base, mean, std, ref, info) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = mean.shape[0] // 2
    panels = []
    y = ys[s]
    if y.is_complex():
        yy = y.reshape(-1, *y.shape[-2:]).abs().pow(2).sum(0).sqrt()
        panels.append((torch.log10(yy + 1e-6 * float(yy.max())), "measurement (log10 |k|)", "gray"))
    elif y.numel() == mean[s].numel() or (y.ndim >= 2 and y.shape[-1] > 1 and y.reshape(-1, y.shape[-1]).shape[0] > 1):
        panels.append((y.reshape(-1, y.shape[-1]), "measurement", "gray"))
    panels.append((base[s], f"baseline ({info.get('baseline') or 'classical'})", "gray"))
    panels.append((mean[s], "posterior mean", "gray"))
    panels.append((std[s], "posterior std", "magma"))
    if ref is not None:
        panels.append((ref[s], "reference", "gray"))
        panels.append(((mean[s] - ref[s]).abs(), "|mean - reference|", "magma"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.4))
    lo, hi = (float(ref[s].min()), float(ref[s].max())) if ref is not None else (float(mean[s].min()), float(mean[s].max()))
    for ax, (img, title, cmap) in zip(np.atleast_1d(axes), panels):
        img = img.detach().cpu().to(torch.float64).numpy()
        kw = {"vmin": lo, "vmax": hi} if cmap == "gray" and title in ("posterior mean", "reference") or title.startswith("baseline") else {}
        im = ax.imshow(img, cmap=cmap, aspect="auto" if img.shape[0] != img.shape[1] else "equal", **kw)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    m = (info.get("metrics") or {}).get("posterior_mean")
    b = (info.get("metrics") or {}).get("baseline")
    sub = f" | PSNR {m['psnr']:.2f} dB (baseline {b['psnr']:.2f}), coverage90 {m.get('coverage90', float('nan')):.2f}" if m else ""
    fig.suptitle(f"{Path(info['input']).name}: {info['sampler']}, {info['samples']} samples, prior {info['prior']}, "
                 f"slice {s + 1}/{mean.shape[0]}{sub}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
