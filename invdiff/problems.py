"""Named measurement set-ups: the operators the command line builds from ``--operator NAME:key=value,...``.

A set-up is a name and a dict of settings (JSON-able numbers, strings and lists), resolved against defaults, so
that ``invdiff simulate`` can store the exact settings in the file it writes and ``invdiff reconstruct`` can
build the same operator from the file alone. Every operator acts on one image of the prior's shape
``(1, H, W)`` in the prior's normalised intensity units (see :func:`intensity`); noise levels in the settings
are standard deviations in those units.

==============  ====================================================  =====================================
name            settings (defaults)                                   measurement
==============  ====================================================  =====================================
``mri``         ``acceleration=4, center=0.08, mask=equispaced,``     single-coil Cartesian k-space
                ``seed=0, noise=0.01``                                ``(H, W)`` complex; ``(coils, H, W)``
                                                                      with coil maps estimated from a
                                                                      multi-coil file
``ct``          ``views=16, arc=180 (degrees), noise=0.2``            parallel-beam sinogram
                                                                      ``(views, detectors)``
``blur``        ``sigma=2 (pixels), noise=0.02``                      blurred image ``(1, H, W)``
``superres``    ``factor=2, noise=0.01``                              block averages ``(1, H/f, W/f)``
``inpaint``     ``observed=0.3, seed=0, noise=0.01``                  the image, zero where unobserved
``denoise``     ``noise=0.05``                                        the noisy image
``scanlines``   ``acceleration=4, noise=0.02``                        every 4th B-mode scan line
                                                                      ``(1, H, W/4)``
``stations``    ``n=64, seed=0, noise=0.05``                          ``n`` station values ``(1, n)``
                                                                      (bilinear on a lat/lon grid)
``coarse``      ``factor=4, noise=0.05``                              area-weighted coarse grid
==============  ====================================================  =====================================

Examples:
    >>> name, settings = parse("mri:acceleration=8")
    >>> resolve(name, settings)["acceleration"], resolve(name, settings)["mask"]
    (8.0, 'equispaced')
    >>> op = build(resolve("ct", {"views": 8}), (64, 64))
    >>> tuple(op.in_shape), tuple(op.out_shape)
    ((1, 64, 64), (8, 91))
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["SETUPS", "DEFAULT_PRIOR", "parse", "resolve", "build", "baseline", "measurement_kind", "intensity",
           "describe_setups"]

# name -> (defaults, one-line help). A value's type in the defaults is the type a setting is parsed to.
SETUPS: dict[str, tuple[dict, str]] = {
    "mri": ({"acceleration": 4.0, "center": 0.08, "mask": "equispaced", "seed": 0, "noise": 0.01},
            "Cartesian MRI: undersampled k-space (mask: equispaced | random | file)"),
    "ct": ({"views": 16, "arc": 180.0, "noise": 0.2}, "parallel-beam CT: a sinogram of `views` angles over `arc` degrees"),
    "blur": ({"sigma": 2.0, "noise": 0.02}, "Gaussian blur of std `sigma` pixels (circular boundary)"),
    "superres": ({"factor": 2, "noise": 0.01}, "super-resolution: `factor` x `factor` block averages"),
    "inpaint": ({"observed": 0.3, "seed": 0, "noise": 0.01}, "inpainting: a random `observed` fraction of pixels"),
    "denoise": ({"noise": 0.05}, "denoising: the image plus Gaussian noise"),
    "scanlines": ({"acceleration": 4.0, "noise": 0.02}, "ultrasound: every `acceleration`-th B-mode scan line"),
    "stations": ({"n": 64, "seed": 0, "noise": 0.05}, "weather: `n` stations at random grid-cell positions"),
    "coarse": ({"factor": 4, "noise": 0.05}, "weather: area-weighted averages over `factor` x `factor` cells"),
}

# the bundled prior each set-up uses when --prior is not given
DEFAULT_PRIOR = {"mri": "mri-brain-64", "ct": "ct-phantom-64", "scanlines": "ultrasound-bmode-64",
                 "stations": "kolmogorov-64", "coarse": "kolmogorov-64", "blur": "natural-gray-64",
                 "superres": "natural-gray-64", "inpaint": "natural-gray-64", "denoise": "natural-gray-64"}

# settings that may hold data rather than a scalar (filled in by the command line from a file)
_DATA_KEYS = {"mri": ("columns",), "stations": ("positions",)}


def describe_setups() -> str:
    """A help paragraph listing every set-up with its defaults."""
    lines = []
    for name, (defaults, text) in SETUPS.items():
        kv = ",".join(f"{k}={v}" for k, v in defaults.items())
        lines.append(f"  {name}:{kv}\n      {text}")
    return "\n".join(lines)


def _convert(name: str, key: str, value, like):
    if isinstance(like, bool):
        if str(value).lower() in ("1", "true", "yes"):
            return True
        if str(value).lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"operator {name}: {key} must be true or false, got {value!r}")
    try:
        if isinstance(like, int):
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if isinstance(like, float):
            f = float(value)
            if not math.isfinite(f):
                raise ValueError
            return f
    except (TypeError, ValueError):
        kind = "an integer" if isinstance(like, int) else "a number"
        raise ValueError(f"operator {name}: {key} must be {kind}, got {value!r}") from None
    return str(value)


def parse(text: str) -> tuple[str, dict]:
    """Split ``"NAME:key=value,key=value"`` into the name and a dict of raw string values."""
    text = str(text).strip()
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    if name not in SETUPS:
        raise ValueError(f"unknown operator {name!r}; choose one of {', '.join(SETUPS)} (e.g. mri:acceleration=4)")
    settings = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"operator {name}: settings are key=value pairs separated by commas, got {item!r}")
        settings[key.strip().lower()] = value.strip()
    return name, settings


def resolve(name: str, given: dict | None = None, stored: dict | None = None, *, source: str = "the file") -> dict:
    """Settings from defaults, overridden by ``stored`` (from a file), then checked against ``given`` (the user's).

    A setting the user gives that differs from the stored one is an error: the file was measured with its own
    settings and reconstructing with others would silently give a wrong answer.

    Returns:
        ``{"name": name, **settings}`` with every default filled in and values of the default's type.
    """
    if name not in SETUPS:
        raise ValueError(f"unknown operator {name!r}; choose one of {', '.join(SETUPS)}")
    defaults = SETUPS[name][0]
    data_keys = _DATA_KEYS.get(name, ())
    out = {"name": name, **defaults}
    if stored:
        if stored.get("name", name) != name:
            raise ValueError(f"--operator {name} contradicts {source}, which was measured with the "
                             f"{stored.get('name')} operator")
        for k, v in stored.items():
            if k != "name":
                out[k] = v
    for k, v in (given or {}).items():
        if k not in defaults and k not in data_keys:
            raise ValueError(f"operator {name} has no setting {k!r}; its settings are: {', '.join(defaults)}")
        value = _convert(name, k, v, defaults[k]) if k in defaults else v
        if stored and k in stored and stored[k] != value and not (
                isinstance(value, float) and isinstance(stored[k], (int, float))
                and math.isclose(value, stored[k], rel_tol=1e-9)):
            raise ValueError(f"--operator {name}:{k}={v} contradicts {source}, which was measured with "
                             f"{k}={stored[k]}; drop the setting to use the file's")
        out[k] = value
    _check(out)
    return out


def _check(s: dict) -> None:
    name = s["name"]

    def positive(*keys):
        for k in keys:
            if not s[k] > 0:
                raise ValueError(f"operator {name}: {k} must be > 0, got {s[k]}")

    if "noise" in s and not s["noise"] >= 0:
        raise ValueError(f"operator {name}: noise must be >= 0, got {s['noise']}")
    if name == "mri":
        positive("acceleration")
        if s["acceleration"] < 1:
            raise ValueError(f"operator mri: acceleration must be >= 1, got {s['acceleration']}")
        if not 0 < s["center"] < 1:
            raise ValueError(f"operator mri: center (fully sampled fraction) must be in (0, 1), got {s['center']}")
        if s["mask"] not in ("equispaced", "random", "file"):
            raise ValueError(f"operator mri: mask must be equispaced, random or file, got {s['mask']!r}")
    elif name == "ct":
        positive("views", "arc")
        if s["arc"] > 360:
            raise ValueError(f"operator ct: arc must be at most 360 degrees, got {s['arc']}")
    elif name in ("superres", "coarse"):
        positive("factor")
    elif name == "blur":
        positive("sigma")
    elif name == "inpaint":
        if not 0 < s["observed"] <= 1:
            raise ValueError(f"operator inpaint: observed must be in (0, 1], got {s['observed']}")
    elif name == "scanlines":
        if s["acceleration"] < 1:
            raise ValueError(f"operator scanlines: acceleration must be >= 1, got {s['acceleration']}")
    elif name == "stations":
        positive("n")


def _noise(s: dict):
    from invdiff.operators import GaussianNoise

    # a tiny floor keeps the likelihood proper for noise=0 (samplers need a finite noise level)
    return GaussianNoise(max(float(s["noise"]), 1e-6))


def mri_columns(s: dict, W: int) -> torch.Tensor:
    """The ``(W,)`` bool phase-encode columns of MRI settings: the file's (``columns``) or a seeded mask."""
    from invdiff.operators.mri import equispaced_mask, random_mask

    if s["mask"] == "file" or "columns" in s:
        if "columns" not in s:
            raise ValueError("operator mri: mask=file needs the sampling mask from the file (a 'mask' dataset)")
        cols = torch.as_tensor(np.asarray(s["columns"], dtype=bool))
        if cols.shape != (W,):
            raise ValueError(f"operator mri: the file's mask has {cols.numel()} columns, the k-space has {W}")
        return cols
    make = equispaced_mask if s["mask"] == "equispaced" else random_mask
    return make(W, s["center"], s["acceleration"], seed=s["seed"])


def station_positions(s: dict, lat, lon) -> np.ndarray:
    """``(n, 2)`` latitude/longitude of the stations: stored ones, or ``n`` distinct random grid cells (seeded)."""
    if s.get("positions") is not None:
        return np.asarray(s["positions"], dtype=np.float64).reshape(-1, 2)
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    H, W = lat.size, lon.size
    n = int(s["n"])
    if n > H * W:
        raise ValueError(f"operator stations: n={n} is more than the {H * W} grid points")
    g = torch.Generator().manual_seed(int(s["seed"]))
    cells = torch.randperm(H * W, generator=g)[:n].numpy()
    return np.stack([lat[cells // W], lon[cells % W]], axis=-1)


def default_grid(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """A global cell-centred grid: latitudes from south to north, longitudes 0..360 east."""
    lat = -90 + (np.arange(H) + 0.5) * 180.0 / H
    lon = np.arange(W) * 360.0 / W
    return lat, lon


def build(s: dict, image_shape, *, coil_maps: torch.Tensor | None = None, lat=None, lon=None):
    """The linear operator of resolved settings ``s`` on images ``(1, H, W)``.

    Args:
        s: settings from :func:`resolve`.
        image_shape: ``(H, W)``.
        coil_maps: complex ``(coils, H, W)`` for multi-coil MRI (see
            :func:`invdiff.operators.mri.estimate_coil_maps`), else None.
        lat, lon: grid coordinates in degrees for ``stations`` / ``coarse`` (default: a global cell-centred grid).
    """
    from invdiff.operators import Reshape

    H, W = (int(image_shape[0]), int(image_shape[1]))
    name, noise = s["name"], _noise(s)
    img = (1, H, W)
    flat = Reshape(img, (H, W))
    if name == "mri":
        from invdiff.operators import MRI, RealToComplex

        mri = MRI(mri_columns(s, W), coil_maps, shape=(H, W), noise=noise)
        return mri @ RealToComplex((H, W)) @ flat
    if name == "ct":
        from invdiff.operators import ParallelBeamCT

        return ParallelBeamCT((H, W), int(s["views"]), angle_range=(0.0, math.radians(s["arc"])), noise=noise) @ flat
    if name == "blur":
        from invdiff.operators import Blur
        from invdiff.operators.blur import gaussian_kernel

        return Blur(gaussian_kernel(float(s["sigma"])), img, noise=noise)
    if name == "superres":
        from invdiff.operators import SuperResolution

        if H % s["factor"] or W % s["factor"]:
            raise ValueError(f"operator superres: factor {s['factor']} does not divide the image size {H}x{W}")
        return SuperResolution(int(s["factor"]), img, noise=noise)
    if name == "inpaint":
        from invdiff.operators import Inpainting
        from invdiff.operators.blur import random_mask

        return Inpainting(random_mask((H, W), float(s["observed"]), seed=int(s["seed"])), img, noise=noise)
    if name == "denoise":
        from invdiff.operators import Denoising

        return Denoising(img, noise=noise)
    if name == "scanlines":
        from invdiff.operators import ScanlineSubsampling

        return ScanlineSubsampling(img, max(1, round(W / s["acceleration"])), noise=noise)
    if name in ("stations", "coarse"):
        if lat is None or lon is None:
            lat, lon = default_grid(H, W)
        if len(lat) != H or len(lon) != W:
            raise ValueError(f"operator {name}: the grid has {len(lat)}x{len(lon)} points, the field {H}x{W}")
        if name == "stations":
            from invdiff.operators import StationObservations

            return StationObservations(lat, lon, station_positions(s, lat, lon), in_shape=img, noise=noise)
        from invdiff.operators import CoarseGrid

        return CoarseGrid(int(s["factor"]), lat, lon, in_shape=img, noise=noise)
    raise ValueError(f"unknown operator {name!r}")


def measurement_kind(name: str) -> str:
    """The :attr:`invdiff.io.Scan.kind` of a set-up's measurement."""
    return {"mri": "kspace", "ct": "sinogram", "stations": "stations"}.get(name, "image")


def baseline(s: dict, op, y: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The classical reconstruction users compare against, and its name: zero-filled MRI, FBP (Hann) for CT,
    the pseudo-inverse otherwise (for blur a Tikhonov-regularised inverse at the noise level)."""
    name = s["name"]
    H, W = op.in_shape[-2:]
    if name == "mri":
        return op.adjoint(y).real.reshape(1, H, W), "zero-filled"
    if name == "ct":
        ct = op.ops[0] if hasattr(op, "ops") else op
        return ct.fbp(y, filter="hann").reshape(1, H, W), "FBP (Hann)"
    if name == "blur":
        return op.pinv(y, rcond=max(float(s["noise"]), 1e-3)), "Tikhonov-regularised inverse"
    if name == "scanlines":
        # linear interpolation across the acquired lines
        lines = op.lines.to(torch.float64).numpy()
        yy = y.detach().to(torch.float64).numpy().reshape(-1, H, lines.size)
        cols = np.arange(W)
        out = np.stack([[np.interp(cols, lines, row) for row in img] for img in yy])
        return torch.from_numpy(out).to(y.dtype).reshape(1, H, W), "linear interpolation"
    return op.pinv(y).reshape(1, H, W), "pseudo-inverse"


def intensity(x: torch.Tensor, prior) -> tuple[float, float]:
    """``(offset, scale)`` that map physical values to the prior's normalised units: ``x = offset + scale * u``.

    With a stated value range ``[lo, hi]`` on the prior's card, the data's min/max go to ``lo``/``hi``;
    otherwise the data's mean and standard deviation go to the prior's ``data_mean`` and ``sigma_data``.
    """
    x = x.detach().to(torch.float64)
    if x.is_complex():
        x = x.abs()
    card = getattr(prior, "card", None) or {}
    vr = card.get("value_range")
    if vr:
        lo, hi = float(vr[0]), float(vr[1])
        xmin, xmax = float(x.min()), float(x.max())
        scale = (xmax - xmin) / (hi - lo) if xmax > xmin else 1.0
        return xmin - scale * lo, scale
    mean, std = float(x.mean()), float(x.std())
    scale = std / float(prior.sigma_data) if std > 0 else 1.0
    return mean - scale * float(getattr(prior, "data_mean", 0.0) or 0.0), scale
