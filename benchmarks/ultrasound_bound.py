"""How much can any prior gain on the ultrasound evidence problem? Bounds for 4x scan-line subsampling.

The evidence problem of ``ultrasound-bmode-64`` (``benchmarks/priors.py``): 16 of 64 scan lines observed with
noise std 0.02 on 16 held-out ``BModeImages``; baseline linear interpolation across lines. This script prints,
on the same 16 images and measurements:

* ``linear interpolation``: the baseline.
* ``Gaussian posterior mean``: the exact posterior mean under the Gaussian prior the evidence compares with
  (fitted to the 20,000 training images, ridge 1e-4): the best linear estimator, up to the fit.
* ``oracle: true echogenicity + observed lines``: an estimator no reconstruction can beat by much, since it is
  told the speckle-free echogenicity map ``E`` of each test image and predicts every unobserved pixel by
  ``E[b | E]`` (the display value averaged over 256 speckle draws on ``E``), keeping the measured lines. It
  ignores only the speckle's correlation with the observed lines, which is 0.27 at one line's distance and
  -0.02 at two.

and does the same for a simulator with the lateral point-spread function wider than the axial one (as in real
probes) to show the other side: there the lines are so correlated that interpolation is nearly optimal.

    OMP_NUM_THREADS=2 python benchmarks/ultrasound_bound.py      # about 40 s
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

from invdiff import metrics
from invdiff.datasets import BModeImages
from invdiff.demo import fit_gaussian_prior
from invdiff.datasets.ultrasound import bmode_display, speckle_envelope

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from priors import problem  # noqa: E402  (benchmarks/priors.py: the evidence's operator and baseline)


def evaluate(psf_sigma, *, n_train=20_000, n_test=16, oracle=True):
    """Mean PSNR of each estimator on the evidence's test images (``recipe_data``'s test split: seed 1) made with
    ``psf_sigma``; the operator and the interpolation baseline are ``benchmarks/priors.py``'s."""
    op, interp, _ = problem("ultrasound-bmode-64", None, None)
    train = BModeImages(n_train, 64, seed=0, split="train", psf_sigma=psf_sigma).images
    test = BModeImages(n_test, 64, seed=1, split="test", psf_sigma=psf_sigma)
    mu, cov = fit_gaussian_prior(train, ridge=1e-4).moments()  # the evidence's Gaussian
    mu = mu.reshape(-1)
    cols = op.lines
    idx = torch.arange(64 * 64).reshape(64, 64)[:, cols].reshape(-1)  # row-major (depth, line): y's order
    chol = torch.linalg.cholesky(cov[idx][:, idx] + 0.02**2 * torch.eye(len(idx), dtype=torch.float64))
    g, gs = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)  # g: as priors.reconstruct
    rows = {"linear interpolation": [], "Gaussian posterior mean": []}
    if oracle:
        rows["oracle: true echogenicity + observed lines"] = []
    for i in range(n_test):
        x = test.images[i]
        y = op.measure(x, generator=g)
        gauss = mu + cov[:, idx] @ torch.cholesky_solve((y.reshape(-1).double() - mu[idx])[:, None], chol)[:, 0]
        rows["linear interpolation"].append(float(metrics.psnr(interp(y), x, data_range=1.0)))
        rows["Gaussian posterior mean"].append(float(metrics.psnr(gauss.reshape(1, 64, 64).clamp(0, 1).float(), x,
                                                                  data_range=1.0)))
        if oracle:
            E = test.echogenicity[i].expand(256, 1, 64, 64).contiguous()
            est = bmode_display(speckle_envelope(E, gs, psf_sigma=psf_sigma)).mean(0)
            est[..., cols] = y
            rows["oracle: true echogenicity + observed lines"].append(float(metrics.psnr(est, x, data_range=1.0)))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def main() -> int:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    t0 = time.perf_counter()
    print("Ultrasound, 16 of 64 scan lines (4x), noise std 0.02, 16 held-out images: mean PSNR (dB) and gain over "
          "linear interpolation\n")
    print("| simulator (PSF std, axial x lateral, pixels) | estimator | PSNR | gain |\n|---|---|---|---|")
    for psf, oracle in (((1.5, 0.75), True), ((1.0, 2.0), False)):
        res = evaluate(psf, oracle=oracle)
        base = res["linear interpolation"]
        for k, v in res.items():
            print(f"| {psf[0]} x {psf[1]}{' (bundled prior)' if psf == (1.5, 0.75) else ''} | {k} | {v:.2f} | "
                  f"{v - base:+.2f} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
