"""Noise schedules: end points, monotonicity, the EDM formula, and exact VP <-> VE conversions."""

import math

import pytest
import torch

from invdiff import schedules


def test_karras_grid_is_the_edm_formula():
    s = schedules.karras_sigmas(18, 0.002, 80.0, rho=7.0)
    assert len(s) == 19 and s[-1] == 0
    assert float(s[0]) == pytest.approx(80.0) and float(s[-2]) == pytest.approx(0.002)
    assert (s[1:] < s[:-1]).all()
    i = 5
    ref = (80.0 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert float(s[i]) == pytest.approx(ref, rel=1e-12)
    # rho = 1 is uniform spacing
    u = schedules.karras_sigmas(5, 1.0, 5.0, rho=1.0, append_zero=False)
    assert torch.allclose(u, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))


def test_loglinear_grid_has_equal_log_steps():
    s = schedules.loglinear_sigmas(10, 0.01, 100.0, append_zero=False)
    steps = torch.diff(torch.log(s))
    assert torch.allclose(steps, steps[0].expand(9)) and float(s[0]) == pytest.approx(100.0)


def test_vp_linear_matches_the_ddpm_product():
    betas = schedules.vp_linear_betas(1000)
    abar = schedules.alphas_cumprod_from_betas(betas)
    ref = math.prod(1 - (1e-4 + (0.02 - 1e-4) * k / 999) for k in range(500))
    assert float(abar[499]) == pytest.approx(ref, rel=1e-10)
    sig = schedules.vp_sigmas(abar)
    assert (sig[1:] > sig[:-1]).all()
    assert float(sig[-1]) == pytest.approx(math.sqrt((1 - float(abar[-1])) / float(abar[-1])))


def test_cosine_schedule_matches_its_closed_form_where_unclipped():
    abar = schedules.vp_cosine_alphas_cumprod(1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 250, 500, 900):
        assert float(abar[t - 1]) == pytest.approx(f(t) / f(0), rel=1e-9)
    assert float(abar[-1]) > 0  # the clipping keeps the last step finite


def test_vp_and_ve_coordinates_agree():
    """x_t = sqrt(abar) x0 + sqrt(1-abar) eps  <=>  x_t / sqrt(abar) = x0 + sigma eps, sigma = sqrt((1-abar)/abar)."""
    abar = schedules.vp_cosine_alphas_cumprod(100)
    sigma = schedules.vp_sigmas(abar)
    assert torch.allclose(schedules.sigma_to_alpha_cumprod(sigma), abar, rtol=1e-12)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    t = 40
    xt = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * eps
    assert torch.allclose(xt / abar[t].sqrt(), x0 + sigma[t] * eps, atol=1e-12)


def test_sigma_to_timestep_inverts_the_table():
    abar = schedules.alphas_cumprod_from_betas(schedules.vp_linear_betas(1000))
    sig = schedules.vp_sigmas(abar)
    idx = torch.tensor([0, 17, 500, 999])
    assert torch.allclose(schedules.sigma_to_timestep(sig[idx], abar), idx.to(torch.float64), atol=1e-9)
    mid = torch.sqrt(sig[10] * sig[11])  # geometric midpoint: halfway in log sigma
    assert float(schedules.sigma_to_timestep(mid, abar)) == pytest.approx(10.5, abs=1e-9)


def test_schedule_validation():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        schedules.karras_sigmas(10, 5.0, 1.0)
    with pytest.raises(ValueError, match="positive integer"):
        schedules.karras_sigmas(0, 0.1, 1.0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        schedules.sigma_to_timestep(1.0, torch.tensor([0.5, 0.9]))
