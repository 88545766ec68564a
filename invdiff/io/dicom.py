"""DICOM images (pydicom, imported when needed): one file, a multi-frame file, or a folder holding one series.

Values go through the modality LUT (``RescaleSlope`` / ``RescaleIntercept``: Hounsfield units for CT) and come
back as float32. A folder is one series: its images are sorted by position along the slice normal
(``ImagePositionPatient . (row direction x column direction)``, from ``ImageOrientationPatient``), or by
``InstanceNumber`` where positions are missing or repeat. Geometry: ``spacing`` from ``PixelSpacing`` (rows,
columns) and the distance between slice positions; ``affine`` maps ``(slice, row, col)`` indices (a 2-D image:
``(row, col, 0)``) to LPS patient coordinates in mm (``attrs["affine_space"] = "LPS"``).

Writing stores float values as int16 with ``RescaleSlope`` / ``RescaleIntercept`` chosen per image to span its
range (the error is at most half of ``RescaleSlope``; integer data within int16 is stored exactly with slope 1).
A 2-D image is one file; a stack is a folder of ``0001.dcm``, ``0002.dcm``, ... . Derived images keep the
template's patient and study tags (the files the scan was read from), and get a new ``SeriesInstanceUID`` and new
``SOPInstanceUID``\\ s; without a template they are Secondary Capture images. invdiff's metadata (attributes,
dims, ...) is kept in a private tag (group 0x0011, creator ``"invdiff"``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ._common import (default_dims, Job, meta_fields, norm_axes, parse_meta, result_arrays, result_scan, scan_meta,
                      spatial_axes, to_json, to_numpy, to_tensor, why)
from ._scan import Scan, ScanError

_PRIVATE_GROUP = 0x0011
_CREATOR = "invdiff"
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_ATTRS = ("Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription", "Rows", "Columns")
#: decoders to install, by words in the transfer syntax name
_DECODERS = (
    ("JPEG 2000", "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)"),
    ("High-Throughput JPEG 2000", "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)"),
    ("JPEG-LS", "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls, or python-gdcm)"),
    ("JPEG", "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)"),
    ("RLE", "pip install pylibjpeg pylibjpeg-rle (or python-gdcm)"),
)
#: tags that describe stored pixels and do not carry over to new pixel data
_PIXEL_TAGS = (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "NumberOfFrames", "FrameIncrementPointer",
    "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "LargestImagePixelValue",
    "SmallestImagePixelValue", "PixelPaddingValue", "PixelPaddingRangeLimit", "ModalityLUTSequence",
    "VOILUTSequence", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "PlanarConfiguration",
    "IconImageSequence", "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData", "LossyImageCompression",
    "LossyImageCompressionRatio", "LossyImageCompressionMethod", "RescaleType", "SliceLocation",
)


def _pydicom(action: str = "reading"):
    try:
        import pydicom
    except ImportError as err:
        raise ScanError(f"{action} DICOM needs pydicom: pip install pydicom") from err
    return pydicom


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or any file with the ``DICM`` marker after the 128-byte preamble."""
    path = Path(path)
    if not path.is_file() or path.name.startswith(".") or path.name.upper() == "DICOMDIR":
        return False
    if path.name.lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if is_dicom_file(p))


def _dcmread(path: Path, *, pixels: bool = True):
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        try:
            return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
        except InvalidDicomError:
            if not path.name.lower().endswith(".dcm"):
                raise
            ds = pydicom.dcmread(str(path), stop_before_pixels=not pixels, force=True)
            if "SOPClassUID" not in ds and "PixelData" not in ds:
                raise
            return ds
    except InvalidDicomError as err:
        raise ScanError(f"{path}: not a DICOM file ({why(err)})") from err
    except (EOFError, OSError, ValueError, KeyError, TypeError, OverflowError) as err:
        raise ScanError(f"{path}: not a readable DICOM file (truncated or corrupt): {why(err)}") from err


def _ts(ds):
    meta = getattr(ds, "file_meta", None)
    return getattr(meta, "TransferSyntaxUID", None) if meta is not None else None


def _decoder_hint(ts) -> str:
    name = getattr(ts, "name", str(ts))
    for word, hint in _DECODERS:
        if word.lower() in name.lower():
            return hint
    return "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"


def _modality_lut(arr, ds):
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return apply_modality_lut(arr, ds)


def _frame_rescale(ds):
    """Rescale slope / intercept from the shared functional groups of an enhanced multi-frame image, or None."""
    try:
        item = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        return float(item.RescaleSlope), float(item.RescaleIntercept)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


def pixels(ds, path: Path) -> tuple[np.ndarray, bool]:
    """The image of one dataset through the modality LUT, float64 ``(rows, cols)`` or ``(frames, rows, cols)``;
    and whether colour was averaged to gray."""
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ScanError(f"{path}: a DICOM file without pixel data (SOP class "
                        f"{getattr(getattr(ds, 'SOPClassUID', None), 'name', '?')})")
    ts = _ts(ds)
    try:
        arr = ds.pixel_array
    except Exception as err:  # noqa: BLE001 -- pydicom's decoders raise many types; all mean "cannot decode"
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        if ts is not None and getattr(ts, "is_compressed", False) and "less than expected" not in msg:
            raise ScanError(f"{path}: pixel data is compressed with {ts.name}, which needs an extra decoder: "
                            f"{_decoder_hint(ts)}") from err
        raise ScanError(f"{path}: not a readable DICOM file (truncated or corrupt): {msg}") from err
    arr = np.asarray(arr)
    if str(getattr(ds, "PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        try:
            from pydicom.pixels import apply_color_lut
        except ImportError:  # pydicom < 3
            from pydicom.pixel_data_handlers.util import apply_color_lut
        arr = apply_color_lut(arr, ds)
    colour = arr.ndim >= 3 and int(getattr(ds, "SamplesPerPixel", 1) or 1) > 1 or \
        str(getattr(ds, "PhotometricInterpretation", "")).strip() == "PALETTE COLOR"
    if colour:
        arr = arr.astype(np.float64).mean(axis=-1)
    elif "PixelData" in ds:
        rescale = None if "RescaleSlope" in ds or "ModalityLUTSequence" in ds else _frame_rescale(ds)
        arr = arr * rescale[0] + rescale[1] if rescale else _modality_lut(arr, ds)
        if "DoseGridScaling" in ds:  # RT dose: stored * DoseGridScaling is the dose in DoseUnits
            arr = np.asarray(arr, dtype=np.float64) * float(ds.DoseGridScaling)
    return np.asarray(arr, dtype=np.float64), colour


def _floats(value, n: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.size == n and np.all(np.isfinite(out)) else None


def _geometry(ds):
    """(orientation (6,), position (3,) or None, pixel spacing (2,) or None) of a (single-frame) dataset."""
    iop = _floats(getattr(ds, "ImageOrientationPatient", None) or (), 6)
    ipp = _floats(getattr(ds, "ImagePositionPatient", None) or (), 3)
    ps = _floats(getattr(ds, "PixelSpacing", None) or (), 2)
    if iop is None or ps is None:  # enhanced multi-frame: shared functional groups
        try:
            shared = ds.SharedFunctionalGroupsSequence[0]
            if iop is None:
                iop = _floats(shared.PlaneOrientationSequence[0].ImageOrientationPatient, 6)
            if ps is None:
                ps = _floats(shared.PixelMeasuresSequence[0].PixelSpacing, 2)
        except (AttributeError, IndexError, KeyError, TypeError):
            pass
    return iop, ipp, ps


def _frame_positions(ds, n: int, iop, ipp):
    """(n, 3) positions of the frames of a multi-frame image (functional groups, or RT dose frame offsets)."""
    offsets = _floats(getattr(ds, "GridFrameOffsetVector", None) or (), n)
    if offsets is not None and ipp is not None:
        return ipp + offsets[:, None] * _normal(iop)
    try:
        seq = ds.PerFrameFunctionalGroupsSequence
        pos = [_floats(item.PlanePositionSequence[0].ImagePositionPatient, 3) for item in seq]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return np.stack(pos) if len(pos) == n and all(p is not None for p in pos) else None


def _normal(iop) -> np.ndarray:
    return np.cross(iop[:3], iop[3:])


def _affine(iop, origin, ps, step) -> np.ndarray:
    """LPS affine of (slice, row, col) indices: ``step`` per slice, column direction x ps[0], row direction x ps[1]."""
    aff = np.eye(4)
    aff[:3, 0] = step
    aff[:3, 1] = iop[3:] * ps[0]
    aff[:3, 2] = iop[:3] * ps[1]
    aff[:3, 3] = origin
    return aff


def _text(v) -> str:
    return "" if v is None else str(v)


def _attrs_of(ds) -> dict:
    out = {}
    for k in _ATTRS:
        if k in ds:
            v = ds.get(k)
            out[k] = int(v) if k in ("Rows", "Columns") else _text(v)
    ts = _ts(ds)
    if ts is not None:
        out["TransferSyntax"] = getattr(ts, "name", str(ts))
    out["affine_space"] = "LPS"
    return out


def _units(ds, meta_units) -> str | None:
    rtype = str(getattr(ds, "RescaleType", "") or "").strip()
    if "DoseGridScaling" in ds and getattr(ds, "DoseUnits", None):
        return str(ds.DoseUnits)
    if str(getattr(ds, "Modality", "")) == "CT" and rtype in ("", "HU"):
        return "HU"
    if meta_units:
        return meta_units
    return rtype if rtype and rtype != "US" else None


def _meta(ds) -> dict | None:
    try:
        block = ds.private_block(_PRIVATE_GROUP, _CREATOR)
        return parse_meta(block[0x00].value)
    except (KeyError, ValueError, AttributeError):
        return None


def _strip(ds):
    """``ds`` without its pixel data, kept as the writer's template (the writer sets new pixels)."""
    for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if t in ds:
            del ds[t]
    return ds


def _series_key(ds) -> str:
    return _text(getattr(ds, "SeriesInstanceUID", "")) or "?"


def _names_of(ds) -> set[str]:
    """The names that select this dataset's series: UID, number, description, and invdiff's array name."""
    names = {_series_key(ds), _text(ds.get("SeriesNumber")), _text(ds.get("SeriesDescription"))}
    meta = _meta(ds)
    if meta and meta.get("name"):
        names.add(str(meta["name"]))
    return names - {""}


def _pick_series(path: Path, datasets: list, name: str | None) -> list[int]:
    """Indices of the datasets of the one series to read (``name``: its UID, number or description)."""
    groups: dict[str, list[int]] = {}
    for i, ds in enumerate(datasets):
        groups.setdefault(_series_key(ds), []).append(i)

    def label(k, g):
        ds = datasets[g[0]]
        return f"{k} ({_text(ds.get('SeriesDescription')) or 'no description'}, {len(g)} files)"

    if name is not None:
        chosen = [k for k, g in groups.items() if name in _names_of(datasets[g[0]])]
        if len(chosen) != 1:
            raise ScanError(f"{path}: no DICOM series {name!r}; it has: "
                            + ", ".join(label(k, g) for k, g in groups.items()))
        return groups[chosen[0]]
    if len(groups) > 1:
        raise ScanError(f"{path}: the folder holds {len(groups)} DICOM series: "
                        + ", ".join(label(k, g) for k, g in groups.items())
                        + "; put each series in its own folder or choose one by its SeriesInstanceUID")
    return next(iter(groups.values()))


def _order(datasets: list, geos: list) -> tuple[list[int], np.ndarray | None]:
    """Reading order of a series (by position along the normal, else InstanceNumber) and the sorted positions;
    ``geos`` are the datasets' :func:`_geometry`."""
    inst = []
    for ds in datasets:
        try:
            inst.append(int(ds.get("InstanceNumber")))
        except (TypeError, ValueError):
            inst.append(0)
    n = len(datasets)
    if all(g[0] is not None and g[1] is not None for g in geos) and all(
            np.allclose(g[0], geos[0][0], atol=1e-4) for g in geos):
        d = np.asarray([g[1] @ _normal(geos[0][0]) for g in geos])
        if np.unique(np.round(d, 4)).size == n:
            order = list(np.lexsort((inst, d)))
            return order, np.stack([geos[i][1] for i in order])
    return sorted(range(n), key=lambda i: inst[i]), None


def _scan_from(path: Path, fmt: str, data: np.ndarray, first, datasets, name, *, dims, spacing, affine, colour):
    meta = _meta(first)
    tensor = to_tensor(data.astype(np.float32))
    shape = tuple(tensor.shape)
    if meta and meta.get("shape") and int(np.prod(meta["shape"])) == tensor.numel() and tuple(meta["shape"]) != shape:
        tensor = tensor.reshape(meta["shape"])  # a stack written from an array with more axes
        dims, spacing, affine = None, None, None
    fields = meta_fields(meta, tensor.shape)
    attrs = dict(fields.get("attrs", {}))
    attrs.update(_attrs_of(first))
    if colour:
        attrs["converted"] = "rgb->gray"
    attrs["_dicom"] = [_strip(ds) for ds in datasets]
    if fields.get("dims") is None and dims is None:
        dims = default_dims(tensor.ndim)
    return Scan(data=tensor, format=fmt, kind=fields.get("kind", "image"), dims=fields.get("dims", dims),
                image_axes=fields.get("image_axes", (-2, -1)), spacing=spacing or fields.get("spacing"),
                affine=affine if affine is not None else fields.get("affine"), coords=fields.get("coords", {}),
                units=_units(first, fields.get("units")), source=str(path), name=fields.get("name", name),
                attrs=attrs)


def _read_file(path: Path, name, fmt) -> Scan:
    ds = _dcmread(path)
    if name is not None and name not in _names_of(ds):
        raise ScanError(f"{path}: holds one image (series {_series_key(ds)}); there is no array {name!r}")
    data, colour = pixels(ds, path)
    iop, ipp, ps = _geometry(ds)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if data.ndim == 2:
        dims = ("row", "col")
        spacing = (float(ps[0]), float(ps[1])) if ps is not None else None
        affine = None
        if iop is not None and ipp is not None and ps is not None:
            thick = float(getattr(ds, "SliceThickness", 0) or 0) or 1.0
            aff = _affine(iop, ipp, ps, _normal(iop) * thick)
            affine = aff[:, [1, 2, 0, 3]]  # (row, col, 0) -> world
    elif data.ndim == 3:
        dims = ("frame", "row", "col")
        step = float(getattr(ds, "SpacingBetweenSlices", 0) or 0) or None
        spacing = (step, float(ps[0]), float(ps[1])) if ps is not None else None
        affine = None
        pos = _frame_positions(ds, frames, iop, ipp) if iop is not None else None
        if pos is not None and ps is not None:
            delta = (pos[-1] - pos[0]) / max(frames - 1, 1) if frames > 1 else _normal(iop) * (step or 1.0)
            affine = _affine(iop, pos[0], ps, delta)
            dims = ("slice", "row", "col")
            spacing = (float(np.linalg.norm(delta)), float(ps[0]), float(ps[1]))
    else:
        raise ScanError(f"{path}: unexpected DICOM pixel array shape {data.shape}")
    return _scan_from(path, fmt, data, ds, [ds], name, dims=dims, spacing=spacing, affine=affine, colour=colour)


def _read_folder(path: Path, name, fmt) -> Scan:
    files = dicom_files(path)
    if not files:
        raise ScanError(f"{path}: a folder without DICOM files")
    headers = [_dcmread(f, pixels=False) for f in files]
    picked = [files[i] for i in _pick_series(path, headers, name)]
    datasets = [_dcmread(f) for f in picked]
    geos = [_geometry(ds) for ds in datasets]
    order, positions = _order(datasets, geos)
    datasets, picked, geos = ([seq[i] for i in order] for seq in (datasets, picked, geos))
    images, colour = [], False
    for ds, f in zip(datasets, picked):
        img, c = pixels(ds, f)
        colour |= c
        if img.ndim != 2:
            raise ScanError(f"{f}: a multi-frame file inside a series folder; read the file on its own")
        images.append(img)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ScanError(f"{path}: the series' images differ in size: {sorted(shapes)}")
    data = np.stack(images)
    first = datasets[0]
    iop, _, ps = geos[0]
    n = len(datasets)
    affine, spacing = None, None
    if positions is not None and ps is not None:
        delta = (positions[-1] - positions[0]) / (n - 1) if n > 1 else \
            _normal(iop) * (float(getattr(first, "SliceThickness", 0) or 0) or 1.0)
        affine = _affine(iop, positions[0], ps, delta)
        spacing = (float(np.linalg.norm(delta)), float(ps[0]), float(ps[1]))
    elif ps is not None:
        step = float(getattr(first, "SpacingBetweenSlices", 0) or 0) or None
        spacing = (step, float(ps[0]), float(ps[1]))
    dims = ("slice", "row", "col")
    if positions is None and n > 1 and all(g[0] is not None and g[1] is not None and g[2] is not None
                                           and np.allclose(np.r_[g[0], g[1]], np.r_[geos[0][0], geos[0][1]])
                                           for g in geos):
        # every image at one place (time series, echoes, samples): frames of one 2-D image geometry
        dims = ("frame", "row", "col")
        thick = float(getattr(first, "SliceThickness", 0) or 0) or 1.0
        affine = _affine(geos[0][0], geos[0][1], geos[0][2], _normal(geos[0][0]) * thick)[:, [1, 2, 0, 3]]
        spacing = (None, float(ps[0]), float(ps[1]))
    return _scan_from(path, fmt, data, first, datasets, name, dims=dims, spacing=spacing, affine=affine,
                      colour=colour)


def read(path: Path, name: str | None = None, fmt: str = "dicom") -> Scan:
    """Read a DICOM file or a folder holding one series (``name`` picks a series by UID, number or description)."""
    return _read_folder(path, name, fmt) if Path(path).is_dir() else _read_file(path, name, fmt)


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------
def _ds(x: float) -> str:
    """``x`` as a DICOM decimal string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(x))


def _ds_value(x: float) -> float:
    """``x`` as the value a DS element will hold."""
    return float(_ds(x))


def quantise(v: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 pixels and (slope, intercept), exactly representable as DS, with ``v ~ stored * slope + intercept``."""
    v = np.nan_to_num(np.asarray(v, dtype=np.float64))
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if np.all(v == np.rint(v)) and lo >= -32768 and hi <= 32767:
        return v.astype(np.int16), 1.0, 0.0
    if hi > lo:
        slope = _ds_value((hi - lo) / 65530.0)
        if slope <= 0:
            slope = _ds_value(abs(hi - lo) / 65530.0 * 1.001) or 1e-12
        intercept = _ds_value((hi + lo) / 2.0)
    else:
        slope, intercept = 1.0, _ds_value(lo)
    stored = np.clip(np.rint((v - intercept) / slope), -32768, 32767).astype(np.int16)
    return stored, slope, intercept


def _drop_private(ds):
    """Remove invdiff's private block (creator and elements) from ``ds``."""
    try:
        block = ds.private_block(_PRIVATE_GROUP, _CREATOR)
    except KeyError:
        return
    start = block.block_start
    for tag in [t for t in ds.keys() if t.group == _PRIVATE_GROUP and start <= t.elem <= start + 0xFF]:
        del ds[tag]
    del ds[(_PRIVATE_GROUP, start >> 8)]


def _new_dataset(scan: Scan):
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    a = scan.attrs
    ds.SOPClassUID = _SECONDARY_CAPTURE
    ds.PatientID = str(a.get("PatientID", ""))
    ds.PatientName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = str(a.get("StudyInstanceUID") or generate_uid())
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = str(a.get("Modality", "OT"))
    ds.SeriesNumber = ""
    ds.ConversionType = "WSD"
    if a.get("SeriesDescription"):
        ds.SeriesDescription = str(a["SeriesDescription"])[:64]
    return ds


def _plan(scan: Scan, path: Path):
    """(stack (n, rows, cols) float64, per-file geometry list, pixel spacing) for writing ``scan`` as DICOM."""
    a = to_numpy(scan.data)
    if a.dtype.kind == "c":
        raise ScanError(f"{path}: DICOM cannot hold complex data; write .h5, .npy or .npz instead")
    if a.ndim < 2:
        raise ScanError(f"{path}: DICOM holds images; got a {a.ndim}-D array")
    nd = a.ndim
    r_ax, c_ax = norm_axes(scan.image_axes, nd)
    if r_ax == c_ax:
        raise ScanError(f"{path}: image axes {scan.image_axes} must be two different axes")
    others = [i for i in range(nd) if i not in (r_ax, c_ax)]
    stack = np.transpose(a, [*others, r_ax, c_ax]).reshape(-1, a.shape[r_ax], a.shape[c_ax]).astype(np.float64)
    geo = [None] * stack.shape[0]
    ps = None
    sp = list(scan.spacing or ())
    if len(sp) == nd and sp[r_ax] and sp[c_ax]:
        ps = [float(sp[r_ax]), float(sp[c_ax])]
    step = None
    if scan.affine is not None:
        aff = np.asarray(scan.affine, dtype=np.float64)
        if scan.attrs.get("affine_space", "RAS") != "LPS":
            from .nifti import FLIP

            aff = FLIP @ aff
        axes = spatial_axes(scan.dims, nd)
        if r_ax in axes and c_ax in axes:
            coldir, rowdir = aff[:3, axes.index(r_ax)], aff[:3, axes.index(c_ax)]
            nr, nc = float(np.linalg.norm(coldir)), float(np.linalg.norm(rowdir))
            if nr > 0 and nc > 0:
                iop = [*(rowdir / nc), *(coldir / nr)]
                ps = [nr, nc]
                slice_axes = [i for i in axes if i not in (r_ax, c_ax)]
                if slice_axes and slice_axes[0] in others:
                    step = float(np.linalg.norm(aff[:3, axes.index(slice_axes[0])]))
                for k, idx in enumerate(np.ndindex(*[a.shape[i] for i in others])):
                    full = dict(zip(others, idx))
                    vec = [full.get(ax, 0) for ax in axes] + [0] * (3 - len(axes))
                    geo[k] = (iop, (aff @ np.asarray([*vec, 1.0]))[:3])
    return stack, geo, ps, step, [*others, r_ax, c_ax]


def _files(pydicom, scan: Scan, path: Path, *, name: str | None, results: bool):
    """The pydicom datasets (one per image of the stack) for ``scan``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stack, geo, ps, step, perm = _plan(scan, path)
    n = stack.shape[0]
    templates = [t for t in (scan.attrs.get("_dicom") or []) if isinstance(t, pydicom.Dataset)]
    # the meta describes the stack as stored: image axes last (the geometry is in the DICOM tags)
    nd = scan.data.ndim
    spacing = scan.spacing
    stored = scan.replace(data=scan.data.permute(perm), dims=tuple(scan.dims[i] for i in perm) if scan.dims else None,
                          spacing=tuple(spacing[i] for i in perm) if spacing and len(spacing) == nd else None,
                          image_axes=(-2, -1), affine=None)
    meta = scan_meta(stored, path)
    series_uid = generate_uid()
    out = []
    for k in range(n):
        if templates:
            ds = copy.deepcopy(templates[k] if len(templates) == n else templates[0])
        else:
            ds = _new_dataset(scan)
        for t in _PIXEL_TAGS:
            if t in ds:
                del ds[t]
        _drop_private(ds)
        if "SOPClassUID" not in ds or "Enhanced" in getattr(ds.SOPClassUID, "name", ""):
            ds.SOPClassUID = _SECONDARY_CAPTURE
        stored, slope, intercept = quantise(stack[k])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stack.shape[1], stack.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        if scan.units and scan.units != "HU":
            ds.RescaleType = str(scan.units)[:64]
        lo, hi = float(stack[k].min()), float(stack[k].max())
        ds.WindowCenter, ds.WindowWidth = _ds((lo + hi) / 2), _ds(max(hi - lo, 1.0))
        if ps is not None:
            ds.PixelSpacing = [_ds(ps[0]), _ds(ps[1])]
        if geo[k] is not None:
            iop, ipp = geo[k]
            ds.ImageOrientationPatient = [_ds(v) for v in iop]
            ds.ImagePositionPatient = [_ds(v) for v in ipp]
            if step:
                ds.SpacingBetweenSlices = _ds(step)
        elif templates and len(templates) != n:
            for t in ("ImagePositionPatient", "ImageOrientationPatient"):
                if t in ds:
                    del ds[t]
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        if results:
            desc = _text(ds.get("SeriesDescription"))
            ds.SeriesDescription = (f"{desc} " if desc else "")[: 64 - len(f"invdiff {name}")] + f"invdiff {name}"
            ds.DerivationDescription = f"invdiff posterior {name}"[:1024]
        block = ds.private_block(_PRIVATE_GROUP, _CREATOR, create=True)
        block.add_new(0x00, "UT", to_json(meta))
        ds.PixelData = stored.astype("<i2").tobytes()
        ds["PixelData"].VR = "OW"
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = ds.SOPClassUID
        fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = fm
        ds.preamble = b"\0" * 128
        out.append(ds)
    return out


def _save(pydicom, ds, target: Path):
    if int(pydicom.__version__.split(".")[0]) < 3:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(target), write_like_original=False)
    else:
        ds.save_as(str(target), enforce_file_format=True)


def _write_job(pydicom, path: Path, datasets: list, folder: bool) -> Job:
    def run(tmp: Path):
        if folder:
            width = max(4, len(str(len(datasets))))
            for k, ds in enumerate(datasets):
                _save(pydicom, ds, tmp / f"{k + 1:0{width}d}.dcm")
        else:
            _save(pydicom, datasets[0], tmp)

    return (path, folder, run)


def write_jobs(path: Path, scan: Scan, *, results: bool = False) -> list[Job]:
    """A 2-D image -> one file at ``path``; a stack -> a folder ``path`` of ``0001.dcm``, ``0002.dcm``, ..."""
    pydicom = _pydicom("writing")
    datasets = _files(pydicom, scan, path, name=scan.name, results=results)
    return [_write_job(pydicom, path, datasets, scan.data.ndim > 2)]


def results_jobs(targets: dict, arrays: dict, like: Scan, path: Path) -> list[Job]:
    """One DICOM file (2-D) or series folder (stack, samples) per result, derived from like's DICOM templates."""
    arrays = result_arrays(path, arrays, like)
    jobs = []
    for name, a in arrays.items():
        jobs += write_jobs(targets[name], result_scan(like, name, a), results=True)  # result_scan names it
    return jobs


def describe(path: Path) -> dict:
    """Files, series, modality, transfer syntax and pixel layout of a DICOM file or folder."""
    path = Path(path)
    files = dicom_files(path) if path.is_dir() else [path]
    headers = [_dcmread(f, pixels=False) for f in files]
    series: dict[str, list] = {}
    for h in headers:
        series.setdefault(_series_key(h), []).append(h)
    notes = []
    if path.is_dir():
        notes.append(f"{len(files)} DICOM files, {len(series)} series")
    for uid, hs in series.items():
        h = hs[0]
        notes.append(f"series {uid}: {_text(h.get('Modality')) or '?'} "
                     f"'{_text(h.get('SeriesDescription'))}', {len(hs)} file(s), "
                     f"{getattr(_ts(h), 'name', '?')}")
    h = headers[0]
    frames = int(getattr(h, "NumberOfFrames", 1) or 1)
    shape = (len(files),) if path.is_dir() else ((frames,) if frames > 1 else ())
    shape = shape + (int(h.get("Rows", 0) or 0), int(h.get("Columns", 0) or 0))
    bits = f"{h.get('BitsStored', '?')}-bit {'signed' if h.get('PixelRepresentation', 0) else 'unsigned'}"
    if "RescaleSlope" in h or "RescaleIntercept" in h:
        notes.append(f"modality LUT: value = stored * {h.get('RescaleSlope', 1)} + {h.get('RescaleIntercept', 0)}")
    iop = _geometry(h)[0]
    if iop is not None:
        notes.append(f"orientation: rows run toward {_axis_label(iop[3:])}, columns toward {_axis_label(iop[:3])} "
                     "(LPS patient coordinates)")
    return {"format": "DICOM (pydicom)" + (" series folder" if path.is_dir() else ""),
            "arrays": [("pixel data", shape, bits)], "notes": notes, "label": "pixel data"}


def _axis_label(v) -> str:
    labels = (("R", "L"), ("A", "P"), ("F", "H"))  # LPS: +x left, +y posterior, +z head
    i = int(np.argmax(np.abs(v)))
    return labels[i][1 if v[i] > 0 else 0]
