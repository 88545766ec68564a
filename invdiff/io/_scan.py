"""The :class:`Scan` container and the error every reader and writer raises for a bad file."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

__all__ = ["Scan", "ScanError"]


class ScanError(ValueError):
    """A file cannot be read or written as asked. The message names the file and the problem in one line.

    It subclasses ``ValueError`` so the command line reports it as a user error (exit code 2, no traceback).
    """


@dataclasses.dataclass
class Scan:
    """One array from a file plus the metadata needed to write results back in the same format family.

    Attributes:
        data: the main array as a torch tensor, in the file's axis order: float32 for real data (float64 kept when
            the file stores float64), complex64 for k-space. NIfTI scaling and DICOM modality LUTs are applied.
        format: ``"fastmri"`` (HDF5), ``"nifti"``, ``"dicom"``, ``"netcdf"``, ``"zarr"``, ``"npy"``, ``"npz"``,
            ``"png"`` or ``"tiff"``.
        kind: what the array is: ``"image"`` (one 2-D image or a stack / volume of them), ``"kspace"``,
            ``"sinogram"``, ``"stations"`` (station observations) or ``"measurement"`` (another measured array).
        dims: one name per axis of ``data``, e.g. ``("slice", "coil", "ky", "kx")``, ``("x", "y", "z")``,
            ``("time", "lat", "lon")``, ``("slice", "row", "col")``.
        image_axes: the two axes of ``data`` that span one 2-D image (e.g. ``(0, 1)`` for NIfTI ``x, y``,
            ``(-2, -1)`` for DICOM rows/columns and k-space); other axes index slices, coils, times.
        spacing: physical spacing of every axis of ``data`` (``None`` where unknown), in ``units`` for spatial axes.
        affine: 4x4 voxel-to-world matrix (NIfTI; DICOM builds one from position/orientation/spacing), or None.
        coords: coordinate arrays by dim name (netCDF / zarr: ``lat``, ``lon``, ``time``, ...; stations: per-station
            ``station_lat`` / ``station_lon``), kept in the file's order and convention (0..360 or -180..180).
        units: units of the values (``"HU"`` for CT DICOM, a netCDF variable's ``units``), or None.
        source: the path this scan was read from (None for a scan made in memory).
        name: the dataset / variable name in the file (``"kspace"``, ``"reconstruction_rss"``, ``"vorticity"``).
        attrs: JSON-able metadata that writers store and readers give back: file attributes (fastMRI ``acquisition``,
            ``max``, ``norm``; netCDF attributes; selected DICOM tags), and invdiff's own keys ``"invdiff_operator"``
            (operator settings written by ``invdiff simulate``) and ``"invdiff_source"`` (the clean file's metadata).
        extras: other arrays of the file that belong to this scan, by name: fastMRI ``mask``,
            ``reconstruction_rss``, ``reconstruction_esc``; ``ismrmrd_header`` as a str under ``attrs``.
    """

    data: torch.Tensor
    format: str
    kind: str = "image"
    dims: tuple[str, ...] | None = None
    image_axes: tuple[int, int] = (-2, -1)
    spacing: tuple[float | None, ...] | None = None
    affine: np.ndarray | None = None
    coords: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    units: str | None = None
    source: str | None = None
    name: str | None = None
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def replace(self, **changes) -> "Scan":
        """A copy with some fields replaced (``dataclasses.replace``); ``attrs``/``coords``/``extras`` are copied."""
        base = {"attrs": dict(self.attrs), "coords": dict(self.coords), "extras": dict(self.extras)}
        base.update(changes)
        return dataclasses.replace(self, **base)

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.data.shape))
        dims = ",".join(self.dims) if self.dims else "?"
        return (f"Scan({self.format}, {self.kind}, {shape} {str(self.data.dtype).replace('torch.', '')} [{dims}]"
                f"{', ' + self.units if self.units else ''}{', from ' + str(self.source) if self.source else ''})")
