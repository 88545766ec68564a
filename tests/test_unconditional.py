"""The unconditional Heun ODE sampler against an exact Gaussian prior."""

import torch

from invdiff.priors import Gaussian
from invdiff.samplers import unconditional


def test_heun_ode_samples_a_gaussian_prior():
    """4000 samples: mean within 4 standard errors, covariance entries within 5% of the largest (MC error of
    a covariance from 4000 draws is about 2.2%); halving the steps to 4 gives a visibly worse covariance."""
    g = torch.Generator().manual_seed(0)
    L = torch.randn(6, 6, generator=g, dtype=torch.float64)
    C = L @ L.T / 6 + 0.1 * torch.eye(6, dtype=torch.float64)
    prior = Gaussian(torch.randn(6, generator=g, dtype=torch.float64), C, sigma_max=80.0)
    x = unconditional(prior, 4000, steps=32, dtype=torch.float64, batch_size=1000)
    z = (x.mean(0) - prior.mean) / (C.diagonal() / 4000).sqrt()
    assert z.abs().max() < 4
    assert (torch.cov(x.T) - C).abs().max() / C.abs().max() < 0.05
    coarse = unconditional(prior, 4000, steps=3, dtype=torch.float64, batch_size=1000)
    assert (torch.cov(coarse.T) - C).abs().max() / C.abs().max() > 0.1
    # sample k does not depend on n or the batch size (up to batched-arithmetic rounding)
    assert torch.allclose(unconditional(prior, 3, steps=4, dtype=torch.float64, batch_size=2)[2],
                          unconditional(prior, 5, steps=4, dtype=torch.float64, batch_size=5)[2], atol=1e-12)
