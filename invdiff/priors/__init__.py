"""Priors in EDM (variance-exploding) coordinates: ``denoise(x, sigma) = E[x0 | x0 + sigma * eps = x]``.

The analytic :class:`Gaussian` and :class:`GaussianMixture` have exact denoisers and exact posteriors under
linear Gaussian measurements; every sampler is tested against them.
"""

from .base import Prior, expand_sigma
from .gaussian import Gaussian, GaussianMixture
from .unet import UNet, UNetPrior

__all__ = ["Prior", "Gaussian", "GaussianMixture", "UNet", "UNetPrior", "expand_sigma", "load", "available"]


def _bundled_dir():
    from pathlib import Path

    return Path(__file__).parent / "bundled"


def available() -> dict:
    """The bundled priors: ``{name: card}`` (their JSON cards), loadable by :func:`load` with no network."""
    import json

    d = _bundled_dir()
    out = {}
    for card in sorted(d.glob("*.json")) if d.is_dir() else []:
        if card.with_suffix(".safetensors").is_file():
            out[card.stem] = json.loads(card.read_text())
    return out


def load(name_or_path, *, map_location="cpu") -> UNetPrior:
    """Load a bundled prior by name (see :func:`available`) or a checkpoint written by ``UNetPrior.save`` /
    ``invdiff train`` (the ``.safetensors`` or ``.json`` path, or their common stem). Needs no network.

    Raises:
        ValueError: an unknown name (the message lists the bundled ones).
        FileNotFoundError: a path without its ``.safetensors`` + ``.json`` pair.
    """
    from pathlib import Path

    name = str(name_or_path)
    bundled = _bundled_dir() / name
    if bundled.with_suffix(".safetensors").is_file():
        return UNetPrior.load(bundled, map_location=map_location)
    path = Path(name)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    if stem.with_suffix(".safetensors").is_file() or stem.with_suffix(".json").is_file():
        return UNetPrior.load(stem, map_location=map_location)
    names = ", ".join(available()) or "none bundled"
    raise ValueError(f"no prior named {name!r} and no checkpoint at that path; bundled priors: {names}")
