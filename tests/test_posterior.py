"""The Posterior result type."""

import pytest
import torch

from invdiff import Posterior


def test_from_samples_summarises(gen):
    s = torch.randn(500, 2, 3, generator=gen, dtype=torch.float64) * 2 + 1
    post = Posterior.from_samples(s, nfe=7, seconds=0.5, diagnostics={"ess": torch.ones(3)})
    assert torch.equal(post.mean, s.mean(0)) and torch.equal(post.std, s.std(0))
    assert post.n == 500 and post.nfe == 7 and "ess" in post.diagnostics
    lo, hi = post.interval(0.9)
    inside = ((s >= lo) & (s <= hi)).double().mean()
    assert 0.88 < float(inside) < 0.92
    assert "n=500" in repr(post)


def test_single_sample_has_zero_std():
    post = Posterior.from_samples(torch.ones(1, 4))
    assert torch.equal(post.std, torch.zeros(4))


def test_nan_samples_raise():
    s = torch.zeros(3, 2)
    s[1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="1 of 3 posterior samples"):
        Posterior.from_samples(s)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="mean must have shape"):
        Posterior(torch.zeros(3, 2), torch.zeros(3), torch.zeros(2))
