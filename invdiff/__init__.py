"""invdiff: scientific inverse problems with diffusion-model priors.

Pair a forward operator (``invdiff.operators``) with a prior (``invdiff.priors``) and draw posterior samples,
with their mean, spread and calibration (``invdiff.metrics``). See the README for a tour.
"""

from . import linalg, metrics, priors, schedules
from . import operators  # noqa: E402  (installed from operators/)
from . import datasets  # noqa: E402  (installed from datasets/)
from .posterior import Posterior
from . import samplers  # noqa: E402
from .samplers import sample
from . import io  # noqa: E402  (scan files; the per-format readers import their libraries lazily)

__version__ = "0.1.0"

__all__ = ["sample", "samplers", "Posterior", "operators", "priors", "datasets", "metrics", "schedules", "linalg", "io",
           "__version__"]
