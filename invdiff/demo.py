r"""``invdiff demo``: a small, exact reconstruction on data the package's dependencies ship.

The problem: a 48x48 crop of scikit-image's ``camera`` photograph, blurred by a Gaussian of 1.5 px and observed
with white noise of standard deviation 0.02. The prior: a Gaussian fitted to 30,000 random 48x48 patches of
OTHER bundled photographs (the test image is held out). With a Gaussian prior and a linear Gaussian operator
the posterior is Gaussian and known exactly (:meth:`invdiff.priors.Gaussian.exact_posterior`), so the demo
draws exact posterior samples and reports how the posterior mean and spread compare with the truth.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur_matrix", "fit_gaussian_prior", "run_demo"]

TRAIN_IMAGES = ("moon", "coins", "brick", "astronaut", "coffee", "chelsea", "clock", "page")


def gaussian_blur_matrix(size: int, blur_sigma: float) -> torch.Tensor:
    """Dense ``(size*size, size*size)`` matrix of a normalised Gaussian blur with zero boundary."""
    r = max(1, int(3 * blur_sigma + 0.5))
    g = torch.arange(-r, r + 1, dtype=torch.float64)
    k1 = torch.exp(-0.5 * (g / blur_sigma) ** 2)
    k = torch.outer(k1, k1)
    k = (k / k.sum()).reshape(1, 1, 2 * r + 1, 2 * r + 1)
    eye = torch.eye(size * size, dtype=torch.float64).reshape(-1, 1, size, size)
    cols = F.conv2d(eye, k, padding=r).reshape(size * size, -1)  # row j = A e_j
    return cols.transpose(0, 1).contiguous()


def fit_gaussian_prior(patches: torch.Tensor, ridge: float = 1e-4):
    """The maximum-likelihood Gaussian of ``(n, 1, s, s)`` patches, covariance ridged by ``ridge``."""
    from invdiff.priors import Gaussian

    X = patches.reshape(patches.shape[0], -1).to(torch.float64)
    mean = X.mean(0)
    Xc = X - mean
    cov = Xc.transpose(0, 1) @ Xc / X.shape[0] + ridge * torch.eye(X.shape[1], dtype=torch.float64)
    return Gaussian(mean.reshape(patches.shape[1:]), cov)


def run_demo(*, seed: int = 0, n_samples: int = 64, size: int = 48, noise_std: float = 0.02,
             blur_sigma: float = 1.5, n_patches: int = 30_000, png: Path | None = None, log=print) -> dict:
    """Run the demo; returns the metrics and writes the figure to ``png`` (if given). See the module docstring."""
    from invdiff import metrics
    from invdiff.datasets import NaturalPatches, natural_image
    from invdiff.operators import GaussianNoise, MatrixOperator
    from invdiff.posterior import Posterior

    t0 = time.perf_counter()
    log(f"fitting a Gaussian prior to {n_patches:,} {size}x{size} patches of {len(TRAIN_IMAGES)} photographs ...")
    prior = fit_gaussian_prior(NaturalPatches(size, n_patches, images=TRAIN_IMAGES, seed=seed).patches)
    cam = natural_image("camera")
    r0, c0 = 136, 238  # the cameraman's face and the camera: a held-out test crop
    truth = cam[r0 : r0 + size, c0 : c0 + size].reshape(1, size, size).to(torch.float64)

    op = MatrixOperator(gaussian_blur_matrix(size, blur_sigma), noise=GaussianNoise(noise_std),
                        in_shape=(1, size, size), out_shape=(1, size, size))
    gen = torch.Generator().manual_seed(seed)
    y = op.measure(truth, generator=gen)
    log(f"measurement: Gaussian blur {blur_sigma} px + noise {noise_std}; computing the exact posterior ...")
    t1 = time.perf_counter()
    post_dist = prior.exact_posterior(op, y)
    samples = post_dist.sample(n_samples, generator=gen)
    post = Posterior.from_samples(samples, nfe=0, seconds=time.perf_counter() - t1,
                                  diagnostics={"method": "exact Gaussian posterior"})
    exact_std = post_dist.std
    rows = {
        "measurement": (metrics.psnr(y.clamp(0, 1), truth, data_range=1.0), metrics.ssim(y, truth, data_range=1.0)),
        "posterior mean": (metrics.psnr(post.mean, truth, data_range=1.0),
                           metrics.ssim(post.mean, truth, data_range=1.0)),
    }
    result = {
        "psnr_measurement": float(rows["measurement"][0]),
        "ssim_measurement": float(rows["measurement"][1]),
        "psnr_mean": float(rows["posterior mean"][0]),
        "ssim_mean": float(rows["posterior mean"][1]),
        "coverage90": float(metrics.coverage(post.samples, truth, 0.9)),
        "mean_std": float(exact_std.mean()),
        "n_samples": n_samples,
        "seconds": time.perf_counter() - t0,
    }
    log("")
    log(f"{'':16s} {'PSNR (dB)':>10s} {'SSIM':>7s}")
    for name, (p, s) in rows.items():
        log(f"{name:16s} {float(p):10.2f} {float(s):7.3f}")
    log(f"90% credible intervals cover {100 * result['coverage90']:.1f}% of the true pixels "
        f"({n_samples} samples); mean posterior std {result['mean_std']:.4f}")
    if png is not None:
        _figure(png, truth, y, post, exact_std)
    log(f"done in {result['seconds']:.1f} s")
    return result


def _figure(path: Path, truth, y, post, exact_std) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("truth (held out)", truth[0], "gray", (0, 1)),
        ("measurement: blur + noise", y[0], "gray", (0, 1)),
        ("posterior mean", post.mean[0], "gray", (0, 1)),
        ("one posterior sample", post.samples[0, 0], "gray", (0, 1)),
        ("posterior std (exact)", exact_std[0], "magma", (0, float(exact_std.max()))),
        ("|mean - truth|", (post.mean - truth).abs()[0], "magma", (0, 3 * float(exact_std.max()))),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
    for ax, (title, im, cmap, (lo, hi)) in zip(axes, panels):
        h = ax.imshow(im.detach().cpu().numpy(), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        if cmap != "gray":
            fig.colorbar(h, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle("invdiff demo: exact Gaussian posterior for deblurring (samples, mean and spread)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
