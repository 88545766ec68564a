"""The bundled priors load offline, fit the size budget, carry their card, and denoise sensibly."""

import socket

import pytest
import torch

from invdiff.priors import available, load
from invdiff.priors.unet import UNetPrior

BUNDLED = available()


def test_bundled_priors_fit_the_budget():
    import invdiff

    folder = __import__("pathlib").Path(invdiff.__file__).parent / "priors" / "bundled"
    sizes = {p.name: p.stat().st_size for p in folder.glob("*.safetensors")}
    assert all(s <= 8 * 2**20 for s in sizes.values()), sizes
    assert sum(sizes.values()) <= 40 * 2**20


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_prior_loads_offline_and_denoises(name, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    prior = load(name)
    assert isinstance(prior, UNetPrior) and prior.shape == (1, 64, 64)
    card = BUNDLED[name]
    for key in ("name", "data", "licence", "command", "training"):
        assert key in card, key
    assert card["training"]["steps"] >= 1000
    # denoising a held-out-like image at sigma = sigma_data beats doing nothing by a wide margin
    from invdiff.training import recipe_data

    x = recipe_data(name, "test", n=8, seed=123)
    g = torch.Generator().manual_seed(0)
    s = prior.sigma_data
    noisy = x + s * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        err = float(((prior.denoise(noisy, s) - x) ** 2).mean())
    assert err < 0.25 * s**2, (err, s**2)


def test_unknown_prior_name_lists_the_bundled_ones():
    with pytest.raises(ValueError, match="bundled priors"):
        load("no-such-prior")
