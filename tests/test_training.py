"""EDM training: the preconditioning and loss against closed forms, loss decrease, exact resume, checkpoints."""

import json
import math

import pytest
import torch

from invdiff.priors import UNetPrior
from invdiff.training import TrainConfig, edm_loss, prior_for_data, train

NET = {"width": 8, "mults": (1, 2), "num_blocks": 1}


def _toy_data(n=256, seed=0):
    """Smooth random 16x16 images: blurred noise plus a random offset, values about [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 16, 16, generator=g)
    k = torch.ones(1, 1, 5, 5) / 25
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="circular"), k)
    return 0.5 + 0.3 * x / x.std() + 0.1 * torch.randn(n, 1, 1, 1, generator=g)


def test_untrained_prior_is_the_isotropic_gaussian_denoiser():
    """The output layer starts at zero, so D(x, s) = m + c_skip (x - m): exactly E[x0 | x] for
    x0 ~ N(m, sd^2 I), the EDM preconditioning's design."""
    prior = UNetPrior((1, 16, 16), sigma_data=0.3, data_mean=0.4, **NET).double()
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    for s in (0.01, 0.3, 5.0):
        exact = 0.4 + 0.3**2 / (0.3**2 + s**2) * (x - 0.4)
        sigma = torch.tensor(s, dtype=torch.float64)  # a float64 tensor keeps its precision in expand_sigma
        assert torch.allclose(prior.denoise(x, sigma), exact, atol=1e-12)


def test_edm_loss_is_one_for_the_optimal_gaussian_denoiser():
    """lambda(s) * E|D - x0|^2 = (s^2 + sd^2)/(s sd)^2 * s^2 sd^2/(s^2 + sd^2) = 1 at every s: with the
    untrained (Gaussian-optimal) prior on N(m, sd^2 I) data, the loss is 1 within its Monte Carlo error."""
    g = torch.Generator().manual_seed(0)
    prior = UNetPrior((1, 16, 16), sigma_data=0.3, data_mean=0.4, **NET).double()
    n = 256
    for s in (0.02, 0.3, 10.0):
        x = 0.4 + 0.3 * torch.randn(n, 1, 16, 16, generator=g, dtype=torch.float64)
        noise = torch.randn(n, 1, 16, 16, generator=g, dtype=torch.float64)
        with torch.no_grad():
            per_image = torch.stack([edm_loss(prior, x[i : i + 1], torch.tensor([s], dtype=torch.float64),
                                              noise[i : i + 1]) for i in range(n)])
        se = float(per_image.std() / math.sqrt(len(per_image)))
        assert abs(float(per_image.mean()) - 1.0) < 5 * se + 1e-9, (s, float(per_image.mean()), se)
    # a denoiser that ignores the data's mean is off by (m / sd)^2-ish: the check has power
    off = UNetPrior((1, 16, 16), sigma_data=0.3, data_mean=0.0, **NET).double()
    x = 0.4 + 0.3 * torch.randn(64, 1, 16, 16, generator=g, dtype=torch.float64)
    assert float(edm_loss(off, x, torch.full((64,), 0.3, dtype=torch.float64), torch.randn_like(x)).detach()) > 1.5


def test_prior_for_data_statistics():
    data = _toy_data()
    prior = prior_for_data(data, **NET)
    assert prior.data_mean == pytest.approx(float(data.double().mean()), rel=1e-6)
    assert prior.sigma_data == pytest.approx(float(data.double().std()), rel=1e-3)
    flat = (data.double() - data.double().mean()).reshape(len(data), -1)
    top = float(torch.linalg.eigvalsh(flat.T @ flat / len(data))[-1])
    assert prior.sigma_max == pytest.approx(5 * math.sqrt(top), rel=1e-3)


def test_training_decreases_the_loss_and_beats_the_untrained_denoiser():
    data = _toy_data()
    cfg = TrainConfig(steps=150, batch_size=16, lr=2e-3, warmup=10, ema_halflife=20, checkpoint_every=1000)
    prior, history = train(data, cfg, progress=False, net_config=NET)
    first, last = sum(history[:20]) / 20, sum(history[-20:]) / 20
    assert last < 0.8 * first, (first, last)
    # held-out denoising error at sigma = 0.2: better than the isotropic Gaussian denoiser it started as
    test = _toy_data(64, seed=1)
    g = torch.Generator().manual_seed(2)
    noisy = test + 0.2 * torch.randn(test.shape, generator=g)
    fresh = prior_for_data(data, **NET)
    with torch.no_grad():
        trained_err = float(((prior.denoise(noisy, 0.2) - test) ** 2).mean())
        fresh_err = float(((fresh.denoise(noisy, 0.2) - test) ** 2).mean())
    assert trained_err < 0.7 * fresh_err, (trained_err, fresh_err)


def test_training_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(_toy_data(16), TrainConfig(steps=2, batch_size=4), progress=False, net_config=NET)
    assert torch.equal(torch.rand(3), expected)


def test_resume_is_exact_and_checkpoints_load(tmp_path):
    data = _toy_data(128)
    cfg = TrainConfig(steps=24, batch_size=8, lr=1e-3, warmup=4, checkpoint_every=12)
    full, h_full = train(data, cfg, out=tmp_path / "full", progress=False, net_config=NET)
    half_cfg = TrainConfig(steps=12, batch_size=8, lr=1e-3, warmup=4, checkpoint_every=12)
    train(data, half_cfg, out=tmp_path / "half", progress=False, net_config=NET)
    resumed, h_res = train(data, cfg, out=tmp_path / "half", resume=tmp_path / "half", progress=False)
    assert h_res == h_full
    assert all(torch.equal(a, b) for a, b in zip(full.parameters(), resumed.parameters()))
    loaded = UNetPrior.load(tmp_path / "full.safetensors")
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(loaded.denoise(x, 0.1), full.denoise(x, 0.1))
    card = json.loads((tmp_path / "full.json").read_text())
    assert card["training"]["steps"] == 24 and card["training"]["recipe"]["seed"] == 0
    assert card["config"]["net"]["width"] == 8


def test_training_errors(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        train(torch.rand(10, 16, 16), TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        train(torch.full((4, 1, 16, 16), float("nan")), TrainConfig(steps=1), progress=False)
    with pytest.raises(FileNotFoundError, match="state"):
        train(_toy_data(8), TrainConfig(steps=1), resume=tmp_path / "none", progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        UNetPrior.load(tmp_path / "missing")
