"""The Examples: in the docstrings run."""

import doctest
import importlib

import pytest

MODULES = [
    "invdiff.posterior", "invdiff.schedules", "invdiff.metrics", "invdiff.testing", "invdiff.priors.gaussian",
    "invdiff.operators.noise", "invdiff.operators.linear",
    "invdiff.operators.blur", "invdiff.operators.ct", "invdiff.operators.mri", "invdiff.operators.nonlinear", "invdiff.operators.ultrasound", "invdiff.operators.weather", "invdiff.datasets.natural", "invdiff.datasets.ct", "invdiff.datasets.ultrasound", "invdiff.datasets.mri",
    "invdiff.datasets.kolmogorov", "invdiff.samplers",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0 or name in ("invdiff.metrics",)
