r"""Weather-field forward models: station observations, coarse grids and time subsampling.

The fields live on a regular latitude/longitude grid, latitudes :math:`\varphi_i = \varphi_0 + i\,\Delta\varphi`
(``i = 0..H-1``, either order: ERA5 stores them north to south) and longitudes
:math:`\lambda_j = \lambda_0 + j\,\Delta\lambda` (``j = 0..W-1``, increasing eastward, in ``[-180, 180)`` or
``[0, 360)``, all in degrees). A field is a tensor ``(..., H, W)`` with ``x[..., i, j]`` the value at
:math:`(\varphi_i, \lambda_j)`; the io layer maps an xarray ``DataArray`` (dims such as ``time``, ``level``,
``latitude``, ``longitude``, its coordinates giving ``lat`` and ``lon``) onto these plain tensors.

All three operators are averages or selections with weights summing to one, so they are **unit-preserving**: the
measurement carries the field's units (K, m/s, Pa, ...). Each is linear with an exact adjoint, and leading dims
named by ``in_shape`` (channels/variables, observed times) are carried through slice by slice.

:class:`StationObservations` — bilinear interpolation to stations :math:`(\varphi, \lambda)`. With the longitude
offset :math:`s = (\lambda - \lambda_0) \bmod 360` and :math:`j = \lfloor s / \Delta\lambda \rfloor`,
:math:`u = s/\Delta\lambda - j`, and likewise :math:`i, v` along latitude,

.. math::
    y = (1-v)(1-u)\,x_{i,j} + (1-v)\,u\,x_{i,j+1} + v\,(1-u)\,x_{i+1,j} + v\,u\,x_{i+1,j+1},

where on a global grid (:math:`W\Delta\lambda = 360`) the column :math:`j+1` is taken modulo :math:`W`: a station
between the last and the first longitude interpolates across the date line (or the prime meridian). The matrix has
four entries per row; its adjoint scatter-adds :math:`y_k` times the same four weights onto the grid.

:class:`CoarseGrid` — area-weighted averages over non-overlapping :math:`f_\varphi \times f_\lambda` blocks
(first-order conservative remapping onto a nested coarse grid),

.. math::
    y_{IJ} = \frac{\sum_{i \in I} \sum_{j \in J} a_i\, x_{ij}}{f_\lambda \sum_{i \in I} a_i}, \qquad
    a_i = \sin\big(\min(\varphi_i + |\Delta\varphi|/2,\ 90^\circ)\big)
        - \sin\big(\max(\varphi_i - |\Delta\varphi|/2,\ -90^\circ)\big),

:math:`a_i` being proportional to the spherical area of row :math:`i`'s cells (:math:`\propto \cos\varphi_i` off
the poles; ``weighting="cos"`` uses :math:`\cos\varphi_i` itself). The blocks do not overlap, so
:math:`AA^\top` is diagonal, :math:`(AA^\top)_{IJ,IJ} = \sum_{i\in I} a_i^2 / (f_\lambda (\sum_{i\in I} a_i)^2)`,
and the pseudo-inverse and the Gaussian likelihood step are closed forms (Woodbury identity):

.. math::
    A^+ y = A^\top (AA^\top)^{-1} y, \qquad
    \operatorname{prox}(z) = z + \rho^2 A^\top\big[(y - Az) \oslash (\sigma_y^2 + \rho^2\,\mathrm{diag}(AA^\top))\big].

The exact conditional sample (perturb-and-MAP, :meth:`LinearOperator.sample_conditional`) then needs no solver.

:class:`TimeSubsampling` — for trajectories ``(T, *state)`` keep the states at times :math:`t_1, \dots, t_K`
(every ``k``-th, or a given list). :math:`SS^\top = I_K`, so the same closed forms hold with
:math:`\mathrm{diag}(AA^\top) = 1`.

Composition for data assimilation: build the spatial operator with the observed times as a leading dim and
compose, ``StationObservations(lat, lon, stations, in_shape=(K, H, W)) @ TimeSubsampling(T, state_shape=(H, W),
every=k)`` (``K = len(range(0, T, k))``, also ``TimeSubsampling.n_observed``); the composite maps a trajectory
``(..., T, H, W)`` to station series ``(..., K, n)`` and has the exact adjoint :math:`S^\top B^\top`. A time dim
left as a batch dim (``x`` of shape ``(T, H, W)`` into an ``(H, W)`` operator) also works for a fully observed
trajectory.

References:
    Rozet & Louppe (2023), "Score-based Data Assimilation".
    Hersbach et al. (2020), "The ERA5 global reanalysis".
    Jones (1999), "First- and second-order conservative remapping schemes for grids in spherical coordinates".
    Rasp et al. (2020), "WeatherBench: a benchmark data set for data-driven weather forecasting".
    Papandreou & Yuille (2010), "Gaussian sampling by local perturbations".
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from invdiff.linalg import batch_scalar, real_dtype

from .base import LinearOperator, cast_like
from .noise import NoiseModel

__all__ = ["StationObservations", "CoarseGrid", "TimeSubsampling"]

_REGULAR_RTOL = 1e-3  # allowed spread of the grid spacing, relative to the spacing (float32 coordinates pass)


# -- grid validation ------------------------------------------------------------------------------------------
def _coords(values, name: str, owner: str) -> np.ndarray:
    """A 1-D float64 numpy copy of a coordinate vector (list, numpy array or tensor)."""
    if isinstance(values, torch.Tensor):
        arr = values.detach().cpu().to(torch.float64).numpy().copy()
    else:  # numpy (possibly read-only, e.g. xarray coordinates) or a list: copy without going through torch
        arr = np.array(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"{owner}: {name} must be a 1-D vector of at least 2 grid coordinates, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{owner}: {name} contains NaN or Inf")
    return arr


def _regular_step(offsets: np.ndarray, name: str, owner: str) -> float:
    """The constant spacing of ``offsets``; raise unless strictly monotone and regular."""
    steps = np.diff(offsets)
    step = (offsets[-1] - offsets[0]) / (offsets.size - 1)
    if not ((steps > 0).all() or (steps < 0).all()):
        raise ValueError(f"{owner}: {name} must be strictly increasing or decreasing, without repeats")
    if np.abs(steps - step).max() > _REGULAR_RTOL * abs(step):
        raise ValueError(
            f"{owner}: {name} must be a regular grid; its spacing varies from {steps.min():.6g} to {steps.max():.6g} "
            "degrees. Regrid the field to a regular latitude/longitude grid first"
        )
    return float(step)


def _latitude(lat, owner: str) -> tuple[np.ndarray, float]:
    lat = _coords(lat, "lat", owner)
    if np.abs(lat).max() > 90:
        raise ValueError(f"{owner}: latitudes must lie in [-90, 90] degrees, got values up to {np.abs(lat).max():.6g}")
    return lat, _regular_step(lat, "lat", owner)


def _longitude(lon, owner: str) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Longitudes, eastward offsets from ``lon[0]`` in ``[0, 360)``, the spacing, and whether the grid is global."""
    lon = _coords(lon, "lon", owner)
    offsets = np.mod(lon - lon[0], 360.0)
    if not (np.diff(offsets) > 0).all():
        raise ValueError(
            f"{owner}: lon must increase eastward within one turn (values in [-180, 180) or [0, 360)); flip a "
            "westward grid with x.flip(-1), and drop a last column that repeats the first one at +360 degrees"
        )
    step = _regular_step(offsets, "lon", owner)
    span = lon.size * step
    if span > 360.0 + _REGULAR_RTOL * step:
        raise ValueError(f"{owner}: {lon.size} longitudes spaced {step:.6g} degrees cover more than 360 degrees")
    return lon, offsets, step, abs(span - 360.0) <= _REGULAR_RTOL * step


def _field_shape(in_shape, H: int, W: int, owner: str) -> tuple[int, ...]:
    if in_shape is None:
        return (H, W)
    shape = (int(in_shape),) if isinstance(in_shape, int) else tuple(int(s) for s in in_shape)
    if len(shape) < 2 or shape[-2:] != (H, W):
        raise ValueError(
            f"{owner}: in_shape must end with the grid's (len(lat), len(lon)) = ({H}, {W}), e.g. (C, {H}, {W}) "
            f"for C variables or (K, {H}, {W}) for K observed times; got {shape}"
        )
    return shape


# -- operators whose A A^T is diagonal ------------------------------------------------------------------------
class _DiagonalGramOperator(LinearOperator):
    r"""Base of linear maps with diagonal :math:`AA^\top` (non-overlapping rows): closed-form pinv and prox.

    Subclasses implement ``_gram_diag(like)``: :math:`\mathrm{diag}(AA^\top)` as a positive tensor
    broadcastable to ``out_shape``, in ``like``'s precision and on its device.
    """

    def _gram_diag(self, like: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def pinv(self, y, **_ignored):
        r"""Minimum-norm least squares :math:`A^\top (AA^\top)^{-1} y` (exact: :math:`AA^\top` is diagonal).

        Args:
            y: measurement, shape ``(*batch, *out_shape)``.
        """
        y = self._prepare(y, self.out_shape, self.out_dtype, f"{type(self).__name__} measurement")
        return self.adjoint(y / self._gram_diag(y))

    def prox_likelihood(self, z, y, rho, **_ignored):
        r"""Closed form :math:`z + \rho^2 A^\top[(y - Az) \oslash (\sigma_y^2 + \rho^2\,\mathrm{diag}(AA^\top))]`.

        Args:
            z: coupling point, shape ``(*batch, *in_shape)``.
            y: measurement, shape ``(*batch, *out_shape)`` or ``out_shape`` (broadcast).
            rho: coupling standard deviation, a number or a tensor of ``z``'s batch shape.
        """
        z, y = self._coupling(z, y)
        std = self._gaussian_std().to(device=z.device, dtype=real_dtype(z.dtype))
        n_in, n_out = len(self.in_shape), len(self.out_shape)
        rho_in = batch_scalar(rho, z, n_in)
        rho_out = rho_in if rho_in.ndim == 0 else rho_in.reshape(rho_in.shape[: rho_in.ndim - n_in] + (1,) * n_out)
        r = (y - self(z)) / (std**2 + rho_out**2 * self._gram_diag(z))
        return z + rho_in**2 * self.adjoint(r)


# -- station observations -------------------------------------------------------------------------------------
class StationObservations(LinearOperator):
    r"""Bilinear interpolation of a lat/lon field to ``n`` stations (periodic in longitude on a global grid).

    Args:
        lat: grid latitudes in degrees, shape ``(H,)``, regular, ascending or descending.
        lon: grid longitudes in degrees, shape ``(W,)``, regular and increasing eastward, in ``[-180, 180)`` or
            ``[0, 360)`` (a grid starting anywhere, e.g. rolled, is fine).
        stations: station positions, shape ``(n, 2)``: latitude, longitude in degrees (any longitude convention:
            it is taken modulo 360). Every station must lie within the grid's latitude range.
        in_shape: shape of one input, ``(*lead, H, W)`` (default ``(H, W)``): leading dims such as variables or
            observed times are interpolated slice by slice, giving ``out_shape = (*lead, n)``.
        periodic: whether columns wrap around the globe (default: when ``W * spacing == 360``). With
            ``periodic=False`` a station east of the last longitude is an error.
        noise: the station noise model, e.g. ``GaussianNoise(0.5)`` in the field's units.

    Units are preserved (the weights of each station sum to one). ``op.index`` ``(n, 4)`` and ``op.weights``
    ``(n, 4)`` hold the flat grid indices (``i * W + j``) and bilinear weights of every station.

    Raises:
        ValueError: for a non-regular or non-monotone grid, or a station outside the latitude range (or
            outside the longitude range of a regional grid).

    Examples:
        >>> import torch
        >>> from invdiff.operators import GaussianNoise
        >>> from invdiff.operators.weather import StationObservations
        >>> lat = torch.linspace(90, -90, 7)                  # 30 degree grid, north to south
        >>> lon = torch.arange(0, 360, 45.0)
        >>> op = StationObservations(lat, lon, [[45.0, -22.5], [0.0, 90.0]], noise=GaussianNoise(0.5))
        >>> field = torch.ones(7, 8) * 280.0                  # a constant 280 K field
        >>> op(field)
        tensor([280., 280.])
        >>> op.weights[0]                                     # halfway between 315 and 0 degrees east
        tensor([0.2500, 0.2500, 0.2500, 0.2500], dtype=torch.float64)
    """

    def __init__(self, lat, lon, stations, *, in_shape=None, periodic: bool | None = None,
                 noise: NoiseModel | None = None):
        owner = "StationObservations"
        lat, dlat = _latitude(lat, owner)
        lon, offsets, dlon, is_global = _longitude(lon, owner)
        periodic = is_global if periodic is None else bool(periodic)
        if periodic and not is_global:
            raise ValueError(
                f"{owner}: periodic=True needs a global grid, but {lon.size} longitudes spaced {dlon:.6g} degrees "
                f"cover {lon.size * dlon:.6g} of 360 degrees"
            )
        st = torch.as_tensor(stations).detach().cpu().to(torch.float64).numpy()
        if st.ndim != 2 or st.shape[1] != 2 or st.shape[0] == 0:
            raise ValueError(f"{owner}: stations must have shape (n, 2) as (latitude, longitude), got {st.shape}")
        if not np.isfinite(st).all():
            raise ValueError(f"{owner}: stations contain NaN or Inf")
        H, W = lat.size, lon.size
        in_shape = _field_shape(in_shape, H, W, owner)

        # latitude: work on the ascending copy, map back to the stored row order
        asc = lat if dlat > 0 else lat[::-1]
        tol = 1e-6 * abs(dlat)
        bad = np.flatnonzero((st[:, 0] < asc[0] - tol) | (st[:, 0] > asc[-1] + tol))
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"{owner}: {bad.size} station(s) lie outside the grid's latitude range [{asc[0]:.6g}, {asc[-1]:.6g}], "
                f"first station {k} at latitude {st[k, 0]:.6g}; drop them or use a grid that covers them"
            )
        s_lat = np.clip(st[:, 0], asc[0], asc[-1])
        i0 = np.clip(np.searchsorted(asc, s_lat, side="right") - 1, 0, H - 2)
        v = (s_lat - asc[i0]) / (asc[i0 + 1] - asc[i0])
        i1 = i0 + 1
        if dlat < 0:
            i0, i1 = H - 1 - i0, H - 1 - i1

        # longitude: eastward offset from lon[0] in [0, 360)
        s_lon = np.mod(st[:, 1] - lon[0], 360.0)
        if periodic:
            j0 = np.clip(np.searchsorted(offsets, s_lon, side="right") - 1, 0, W - 1)
            upper = np.where(j0 < W - 1, offsets[np.minimum(j0 + 1, W - 1)], 360.0)
            j1 = (j0 + 1) % W
        else:
            tol = 1e-6 * dlon
            bad = np.flatnonzero(s_lon > offsets[-1] + tol)
            if bad.size:
                k = int(bad[0])
                raise ValueError(
                    f"{owner}: {bad.size} station(s) lie east of this regional grid's last longitude "
                    f"{lon[-1]:.6g}, first station {k} at longitude {st[k, 1]:.6g}; drop them"
                )
            s_lon = np.minimum(s_lon, offsets[-1])
            j0 = np.clip(np.searchsorted(offsets, s_lon, side="right") - 1, 0, W - 2)
            j1 = j0 + 1
            upper = offsets[j1]
        u = (s_lon - offsets[j0]) / (upper - offsets[j0])

        index = np.stack([i0 * W + j0, i0 * W + j1, i1 * W + j0, i1 * W + j1], axis=1)
        weights = np.stack([(1 - v) * (1 - u), (1 - v) * u, v * (1 - u), v * u], axis=1)
        super().__init__(in_shape, in_shape[:-2] + (st.shape[0],), noise=noise)
        self.grid_shape = (H, W)
        self.periodic = periodic
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.long))
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float64))
        self.register_buffer("lat", torch.as_tensor(lat), persistent=False)
        self.register_buffer("lon", torch.as_tensor(lon), persistent=False)
        self.register_buffer("stations", torch.as_tensor(st.copy()), persistent=False)

    @property
    def n_stations(self) -> int:
        return self.out_shape[-1]

    def forward(self, x):
        H, W = self.grid_shape
        flat = x.reshape(*x.shape[:-2], H * W)
        w = cast_like(self.weights, x).to(x.device)
        return (flat[..., self.index.to(x.device)] * w).sum(-1)

    def adjoint(self, y):
        y = self._prepare(y, self.out_shape, self.out_dtype, "StationObservations measurement")
        H, W = self.grid_shape
        lead = y.shape[:-1]
        n = y.shape[-1]
        w = cast_like(self.weights, y).to(y.device)
        contrib = (y.reshape(-1, n, 1) * w).reshape(-1, 4 * n)  # (batch, 4n)
        out = torch.zeros(contrib.shape[0], H * W, dtype=y.dtype, device=y.device)
        out = out.index_add(1, self.index.to(y.device).reshape(-1), contrib)
        return out.reshape(*lead, H, W)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, periodic={self.periodic}"


# -- coarse grid ----------------------------------------------------------------------------------------------
class CoarseGrid(_DiagonalGramOperator):
    r"""Area-weighted block averages onto a coarser lat/lon grid (a downscaling / super-resolution operator).

    Args:
        factor: block size, an int or ``(f_lat, f_lon)``: ``f_lat`` rows by ``f_lon`` columns per coarse cell.
        lat: grid latitudes in degrees, shape ``(H,)``, regular, ascending or descending.
        lon: grid longitudes in degrees, shape ``(W,)``, regular and increasing eastward.
        in_shape: shape of one input, ``(*lead, H, W)`` (default ``(H, W)``); ``out_shape`` is
            ``(*lead, H // f_lat, W // f_lon)``.
        weighting: ``"area"`` (default) weights row ``i`` by its cells' spherical area (pole rows get their
            half cell); ``"cos"`` by :math:`\cos\varphi_i` (the WeatherBench latitude weights). Both agree off
            the poles.
        remainder: what to do when ``H`` or ``W`` is not a multiple of the factor: ``"error"`` (default) or
            ``"trim"``, which averages the complete blocks only; the trailing rows/columns are then unobserved
            (``A`` ignores them, ``A^T`` puts zeros there). ERA5's 721 latitudes include both poles: with
            ``"trim"`` and factor 4 the last (southernmost, north-to-south storage) row is dropped.
        noise: noise model of the coarse field, e.g. ``GaussianNoise(0.1)`` in the field's units.

    Units are preserved. ``op.lat_coarse`` ``(H // f_lat,)`` and ``op.lon_coarse`` ``(W // f_lon,)`` are the
    coarse cell centres (the block means of the fine coordinates), in the input's longitude convention.

    Examples:
        >>> import torch
        >>> from invdiff.operators.weather import CoarseGrid
        >>> lat = torch.linspace(-67.5, 67.5, 4)              # 45 degree rows, centred
        >>> op = CoarseGrid(2, lat, torch.arange(0, 360, 90.0))
        >>> op(torch.full((4, 4), 3.0))                       # a constant stays that constant
        tensor([[3., 3.],
                [3., 3.]])
        >>> op.lat_coarse
        tensor([-45.,  45.], dtype=torch.float64)
    """

    def __init__(self, factor, lat, lon, *, in_shape=None, weighting: str = "area", remainder: str = "error",
                 noise: NoiseModel | None = None):
        owner = "CoarseGrid"
        fac = (factor, factor) if isinstance(factor, (int, np.integer)) else factor
        fac = tuple(fac) if isinstance(fac, (tuple, list)) else ()
        if len(fac) != 2 or not all(isinstance(f, (int, np.integer)) and not isinstance(f, bool) and f >= 1
                                    for f in fac):
            raise ValueError(f"{owner}: factor must be a positive int or a pair (f_lat, f_lon) of them, got {factor!r}")
        fy, fx = int(fac[0]), int(fac[1])
        if weighting not in ("area", "cos"):
            raise ValueError(f"{owner}: weighting must be 'area' or 'cos', got {weighting!r}")
        if remainder not in ("error", "trim"):
            raise ValueError(f"{owner}: remainder must be 'error' or 'trim', got {remainder!r}")
        lat, dlat = _latitude(lat, owner)
        lon, offsets, dlon, _ = _longitude(lon, owner)
        H, W = lat.size, lon.size
        in_shape = _field_shape(in_shape, H, W, owner)
        if (H % fy or W % fx) and remainder == "error":
            raise ValueError(
                f"{owner}: the {H} x {W} grid is not a multiple of the {fy} x {fx} blocks; crop the field (e.g. "
                "drop one pole row of a 721-row ERA5 grid) or pass remainder='trim' to average complete blocks only"
            )
        Hc, Wc = H // fy, W // fx
        if Hc == 0 or Wc == 0:
            raise ValueError(f"{owner}: the {fy} x {fx} blocks are larger than the {H} x {W} grid")

        half = math.radians(abs(dlat)) / 2
        phi = np.radians(lat[: Hc * fy])
        if weighting == "area":
            a = np.sin(np.minimum(phi + half, np.pi / 2)) - np.sin(np.maximum(phi - half, -np.pi / 2))
        else:
            a = np.cos(phi)
            a[a < 1e-12] = 0.0  # exactly zero at the poles
        a = a.reshape(Hc, fy)
        total = a.sum(1, keepdims=True)
        if (total <= 0).any():
            raise ValueError(f"{owner}: a block of rows has zero total cos-latitude weight (pole rows only); "
                             "use weighting='area'")
        row_weights = a / (fx * total)  # (Hc, fy): weight of each fine cell in its coarse cell
        gram = fx * (row_weights**2).sum(1, keepdims=True)  # (Hc, 1): diag(A A^T) per coarse row

        lon_c = lon[0] + offsets[: Wc * fx].reshape(Wc, fx).mean(1)
        lon_c = np.mod(lon_c + 180.0, 360.0) - 180.0 if lon.min() < 0 else np.mod(lon_c, 360.0)
        super().__init__(in_shape, in_shape[:-2] + (Hc, Wc), noise=noise)
        self.factor = (fy, fx)
        self.grid_shape = (H, W)
        self.weighting = weighting
        self.register_buffer("row_weights", torch.as_tensor(row_weights))
        self.register_buffer("gram", torch.as_tensor(gram))
        self.register_buffer("lat_coarse", torch.as_tensor(lat[: Hc * fy].reshape(Hc, fy).mean(1)), persistent=False)
        self.register_buffer("lon_coarse", torch.as_tensor(lon_c), persistent=False)

    def forward(self, x):
        (fy, fx), (Hc, Wc) = self.factor, self.out_shape[-2:]
        x = x[..., : Hc * fy, : Wc * fx]
        w = cast_like(self.row_weights, x).to(x.device)
        blocks = x.reshape(*x.shape[:-2], Hc, fy, Wc, fx).sum(-1)  # (..., Hc, fy, Wc)
        return (blocks * w[:, :, None]).sum(-2)

    def adjoint(self, y):
        y = self._prepare(y, self.out_shape, self.out_dtype, "CoarseGrid measurement")
        (fy, fx), (Hc, Wc), (H, W) = self.factor, self.out_shape[-2:], self.grid_shape
        w = cast_like(self.row_weights, y).to(y.device)
        x = (y[..., :, None, :, None] * w[:, :, None, None]).expand(*y.shape[:-2], Hc, fy, Wc, fx)
        x = x.reshape(*y.shape[:-2], Hc * fy, Wc * fx)
        if (Hc * fy, Wc * fx) != (H, W):
            x = F.pad(x, (0, W - Wc * fx, 0, H - Hc * fy))
        return x

    def _gram_diag(self, like):
        return cast_like(self.gram, like).to(like.device)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}, weighting={self.weighting!r}"


# -- time subsampling -----------------------------------------------------------------------------------------
class TimeSubsampling(_DiagonalGramOperator):
    r"""Observe a trajectory ``(T, *state_shape)`` at some of its times: ``y = x[times]``, ``(K, *state_shape)``.

    Args:
        n_times: trajectory length ``T``.
        state_shape: shape of one state, e.g. ``(H, W)`` or ``(C, H, W)`` (``()`` for a scalar series).
        every: observe every ``every``-th state, starting at ``offset``: times ``offset, offset + every, ...``.
        times: or the observed time indices, shape ``(K,)``, distinct, in ``[0, T)`` (kept in the given order).
        offset: first observed time with ``every`` (default 0).
        noise: the observation noise model.

    Give exactly one of ``every`` and ``times``. Units are preserved. The time dim is the first dim of
    ``in_shape``; any dims before it are batch dims. Compose with a spatial operator built for ``K`` leading
    slices (module docstring), e.g. ``StationObservations(lat, lon, st, in_shape=(op.n_observed, H, W)) @ op``.

    Examples:
        >>> import torch
        >>> from invdiff.operators.weather import TimeSubsampling
        >>> op = TimeSubsampling(5, state_shape=(2,), every=2)
        >>> x = torch.arange(10.0).reshape(5, 2)
        >>> op(x)
        tensor([[0., 1.],
                [4., 5.],
                [8., 9.]])
        >>> op.adjoint(op(x))[:, 0]                           # unobserved times get zeros
        tensor([0., 0., 4., 0., 8.])
    """

    def __init__(self, n_times: int, *, state_shape, every: int | None = None, times=None, offset: int = 0,
                 noise: NoiseModel | None = None):
        owner = "TimeSubsampling"
        if isinstance(n_times, bool) or not isinstance(n_times, (int, np.integer)) or n_times < 1:
            raise ValueError(f"{owner}: n_times must be a positive int, got {n_times!r}")
        T = int(n_times)
        state_shape = (int(state_shape),) if isinstance(state_shape, (int, np.integer)) else tuple(
            int(s) for s in state_shape)
        if (every is None) == (times is None):
            raise ValueError(f"{owner}: give exactly one of every=k (every k-th state) or times=[t1, t2, ...]")
        if every is not None:
            if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
                raise ValueError(f"{owner}: every must be a positive int, got {every!r}")
            if not 0 <= int(offset) < T:
                raise ValueError(f"{owner}: offset must lie in [0, n_times) = [0, {T}), got {offset!r}")
            idx = torch.arange(int(offset), T, int(every))
        else:
            t = torch.as_tensor(times).detach().cpu()
            if t.ndim != 1 or t.numel() == 0 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ValueError(
                    f"{owner}: times must be a non-empty 1-D sequence of integer time indices, got {times!r}"
                )
            idx = t.to(torch.long)
            if int(idx.min()) < 0 or int(idx.max()) >= T:
                raise ValueError(f"{owner}: times must lie in [0, n_times) = [0, {T}), got {idx.tolist()}")
            if torch.unique(idx).numel() != idx.numel():
                raise ValueError(f"{owner}: times must be distinct, got {idx.tolist()}")
        super().__init__((T,) + state_shape, (idx.numel(),) + state_shape, noise=noise)
        self.state_shape = state_shape
        self.register_buffer("times", idx)

    @property
    def n_observed(self) -> int:
        """The number ``K`` of observed times (the first dim of ``out_shape``)."""
        return self.out_shape[0]

    def forward(self, x):
        return x.index_select(-len(self.in_shape), self.times.to(x.device))

    def adjoint(self, y):
        y = self._prepare(y, self.out_shape, self.out_dtype, "TimeSubsampling measurement")
        batch = y.shape[: y.ndim - len(self.out_shape)]
        out = torch.zeros(*batch, *self.in_shape, dtype=y.dtype, device=y.device)
        return out.index_add(-len(self.in_shape), self.times.to(y.device), y)

    def _gram_diag(self, like):
        return torch.ones((), dtype=real_dtype(like.dtype), device=like.device)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, times={self.times.tolist()}"
