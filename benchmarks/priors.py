"""Evidence for the bundled priors: denoising vs a Gaussian prior, sample grids, one reconstruction per modality.

For each bundled prior (``invdiff.priors.available()``):

1. Denoising error on held-out images (the recipe's ``test`` split) at noise levels on a log grid from 0.01 to
   10 times the data scale ``sigma_data``: the learned prior's MSE against the exact denoiser of a Gaussian
   prior fitted (maximum likelihood, ridge 1e-4) to the same training images.
2. A PNG grid: 16 unconditional samples (Heun ODE, 32 steps) beside 16 real test images.
3. A reconstruction on 16 held-out images with DPS (4 posterior samples each, 100 steps): PSNR of the
   posterior mean vs the classical baseline, SSIM, and the per-pixel coverage of the truth by the 90% interval
   mean +- 1.645 std (a Gaussian approximation; 4 samples give a noisy std).

    OMP_NUM_THREADS=2 python benchmarks/priors.py                       # every bundled prior
    OMP_NUM_THREADS=2 python benchmarks/priors.py ct-phantom-64         # one
    OMP_NUM_THREADS=2 python benchmarks/priors.py --quick ct-phantom-64 # 4 images, 2 samples: a smoke run

Writes ``invdiff/priors/bundled/<name>-samples.png`` and ``<name>-reconstruction.png`` and adds the numbers
to the prior's JSON card under ``"evidence"``; prints markdown tables for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import invdiff
from invdiff import metrics
from invdiff.priors import available, load
from invdiff.training import recipe_data

BUNDLED = Path(invdiff.__file__).parent / "priors" / "bundled"
SIGMA_FACTORS = np.logspace(-2, 1, 7)  # x sigma_data


def denoising_table(prior, gauss, test, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    x = test.to(torch.float64)
    for f in SIGMA_FACTORS:
        s = float(f * prior.sigma_data)
        noisy = x + s * torch.randn(x.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            learned = torch.cat([prior.denoise(noisy[i:i + 32].float(), s).double() for i in range(0, len(x), 32)])
            gd = gauss.denoise(noisy, s)
        rows.append({"sigma": s, "sigma_over_sigma_data": float(f), "mse_learned": float(((learned - x) ** 2).mean()),
                     "mse_gaussian": float(((gd - x) ** 2).mean()), "mse_identity": s**2})
    return rows


# -- the reconstruction problems --------------------------------------------------------------------------------
def problem(name: str, prior, train_stats):
    """(operator, baseline(y) -> image, description) for the modality of ``name``; images are (1, 64, 64)."""
    from invdiff.operators import GaussianNoise, Reshape

    if name == "ct-phantom-64":
        from invdiff.operators import ParallelBeamCT

        ct = ParallelBeamCT((64, 64), 16, noise=GaussianNoise(0.2))
        op = ct @ Reshape((1, 64, 64), (64, 64))
        return op, (lambda y: ct.fbp(y, filter="hann").reshape(1, 64, 64)), \
            "CT, 16 parallel-beam views over [0, pi), noise std 0.2 on line integrals (values up to ~30); baseline FBP (Hann)"
    if name == "mri-brain-64":
        from invdiff.operators import MRI, RealToComplex
        from invdiff.operators.mri import equispaced_mask

        mask = equispaced_mask((64, 64), 0.08, 4, seed=0)
        mri = MRI(mask, noise=GaussianNoise(0.01))
        op = mri @ RealToComplex((64, 64)) @ Reshape((1, 64, 64), (64, 64))
        return op, (lambda y: mri.pinv(y).real.reshape(1, 64, 64)), \
            "MRI, single coil, 4x equispaced columns (8% centre), complex noise std 0.01; baseline zero-filled"
    if name == "ultrasound-bmode-64":
        from invdiff.operators import ScanlineSubsampling

        op = ScanlineSubsampling((1, 64, 64), 16, noise=GaussianNoise(0.02))
        cols = op.lines.numpy()

        def interp(y):
            yy = y.reshape(64, -1).numpy()
            out = np.stack([np.interp(np.arange(64), cols, row) for row in yy])
            return torch.from_numpy(out).reshape(1, 64, 64).to(y.dtype)

        return op, interp, "ultrasound, 16 of 64 scan lines (4x), noise std 0.02; baseline linear interpolation across lines"
    if name == "natural-gray-64":
        from invdiff.operators import Blur
        from invdiff.operators.blur import gaussian_kernel

        op = Blur(gaussian_kernel(2.0), (1, 64, 64), noise=GaussianNoise(0.02))
        K = op.transfer.to(torch.complex128)
        power = train_stats["power"]  # mean power spectrum of the centred training images

        def wiener(y):
            Y = torch.fft.rfft2(y.to(torch.float64) - train_stats["mean"])
            X = K.conj() * Y / (K.abs() ** 2 + 0.02**2 * 64 * 64 / power)
            return (torch.fft.irfft2(X, s=(64, 64)) + train_stats["mean"]).to(y.dtype)

        return op, wiener, "deblurring, Gaussian blur 2 px (circular), noise std 0.02; baseline Wiener filter with the training power spectrum"
    if name == "kolmogorov-64":
        from scipy.interpolate import griddata

        from invdiff.operators import Inpainting
        from invdiff.operators.blur import random_mask

        mask = random_mask((64, 64), 1 / 64, seed=0)
        op = Inpainting(mask, (1, 64, 64), noise=GaussianNoise(0.05 * prior.sigma_data))
        pts = torch.nonzero(mask).numpy()
        grid = np.stack(np.meshgrid(np.arange(64), np.arange(64), indexing="ij"), -1).reshape(-1, 2)

        def interp(y):
            v = y.reshape(-1).numpy()
            lin = griddata(pts, v, grid, method="linear")
            near = griddata(pts, v, grid, method="nearest")
            return torch.from_numpy(np.where(np.isnan(lin), near, lin)).reshape(1, 64, 64).to(y.dtype)

        return op, interp, "weather, 64 stations on the 64x64 grid (1 in 64 points), noise 5% of sigma_data; baseline linear interpolation"
    raise ValueError(name)


ZETAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def train_stats(train):
    """Mean and mean power spectrum of the centred training images (for the Wiener baseline)."""
    mean = float(train.mean())
    return {"mean": mean, "power": (torch.fft.rfft2(train[:, 0].double() - mean).abs() ** 2).mean(0)}


def tune_zeta(name, prior, op, *, steps=100, n_val=3):
    """DPS's step size, chosen on 3 validation images (the test split with seed 7, not the evaluation images):
    the zeta in ZETAS whose 2-sample posterior mean has the best PSNR. Returns (zeta, {zeta: psnr})."""
    val = recipe_data(name, "test", n=n_val, seed=7)
    g = torch.Generator().manual_seed(3)
    rng = float(val.max() - val.min())
    ys = [op.measure(x, generator=g) for x in val]
    scores = {}
    for z in ZETAS:
        ps = [metrics.psnr(invdiff.sample(prior, op, y, "dps", n=2, steps=steps, seed=i, zeta=z).mean.float(), x,
                           data_range=rng) for i, (x, y) in enumerate(zip(val, ys))]
        scores[z] = float(np.mean(ps))
    return max(scores, key=scores.get), scores


def reconstruct(prior, op, baseline, desc, test, *, n_images=16, n_samples=4, steps=100, zeta=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = float(test.min()), float(test.max())
    data_range = hi - lo
    out = {"problem": desc, "method": f"dps, {steps} steps, {n_samples} samples, zeta {zeta}", "images": []}
    figs = []
    t0 = time.perf_counter()
    for i in range(n_images):
        x = test[i]
        y = op.measure(x, generator=g)
        base = baseline(y).to(torch.float32)
        post = invdiff.sample(prior, op, y, "dps", n=n_samples, steps=steps, seed=seed + i,
                              **({} if zeta is None else {"zeta": zeta}))
        mean = post.mean.to(torch.float32)
        # 90% interval mean +- 1.645 std (Gaussian approximation: with a handful of samples, empirical 5% and
        # 95% quantiles would be the extreme samples)
        sd = post.std.to(torch.float32)
        cover = float(((x - mean).abs() <= 1.645 * sd).float().mean())
        out["images"].append({"psnr_baseline": metrics.psnr(base, x, data_range=data_range),
                              "psnr_posterior_mean": metrics.psnr(mean, x, data_range=data_range),
                              "ssim_baseline": metrics.ssim(base[0], x[0], data_range=data_range),
                              "ssim_posterior_mean": metrics.ssim(mean[0], x[0], data_range=data_range),
                              "coverage90": cover})
        if i < 4:
            figs.append((x[0], base[0], mean[0], post.std.to(torch.float32)[0]))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    for k in ("psnr_baseline", "psnr_posterior_mean", "ssim_baseline", "ssim_posterior_mean", "coverage90"):
        out[k] = float(np.mean([r[k] for r in out["images"]]))
    out["psnr_gain_db"] = out["psnr_posterior_mean"] - out["psnr_baseline"]
    return out, figs, (lo, hi)


def sample_grid(prior, test, path, n=16, seed=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invdiff.samplers import unconditional

    with torch.no_grad():
        s = unconditional(prior, n, steps=32, seed=seed, batch_size=16)
    lo, hi = float(test.min()), float(test.max())
    fig, axes = plt.subplots(4, 8, figsize=(12, 6.4))
    for k, ax in enumerate(axes.flat):
        row, col = divmod(k, 8)
        img = test[row * 4 + col] if col < 4 else s[row * 4 + col - 4]
        ax.imshow(img[0].numpy(), cmap="gray", vmin=lo, vmax=hi)
        ax.set_axis_off()
    axes[0, 0].set_title("real (held out)", loc="left")
    axes[0, 4].set_title("samples of the prior", loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def reconstruction_figure(figs, rng, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(figs), 4, figsize=(8, 2.1 * len(figs)))
    for r, (x, b, m, s) in enumerate(figs):
        for c, (img, lab) in enumerate(((x, "truth"), (b, "baseline"), (m, "posterior mean"), (s, "posterior std"))):
            ax = axes[r, c]
            ax.imshow(img.numpy(), cmap="gray" if c < 3 else "magma", **({"vmin": rng[0], "vmax": rng[1]} if c < 3 else {}))
            ax.set_axis_off()
            if r == 0:
                ax.set_title(lab)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="bundled prior names (default: all)")
    parser.add_argument("--quick", action="store_true", help="4 images, 2 samples, 20 steps")
    parser.add_argument("--zeta", type=float, default=None, help="DPS step size (default: the sampler's)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch the bundled cards")
    parser.add_argument("--prior", help="evaluate this checkpoint instead of the bundled prior (one name only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    names = args.names or list(available())
    if args.prior and len(names) != 1:
        parser.error("--prior needs exactly one recipe name")
    for name in names:
        t0 = time.perf_counter()
        prior = load(args.prior or name).float()
        from invdiff.demo import fit_gaussian_prior

        test = recipe_data(name, "test", n=256)
        train = recipe_data(name, "train")  # generated once: the Gaussian, the baseline's statistics
        gauss = fit_gaussian_prior(train, ridge=1e-4)
        op, baseline, desc = problem(name, prior, train_stats(train[:2000]))
        den = denoising_table(prior, gauss, test)
        wins = all(r["mse_learned"] < r["mse_gaussian"] for r in den)
        print(f"\n### {name}\n\nDenoising MSE on 256 held-out images (learned vs Gaussian fitted to the same "
              f"training data); learned better at every sigma: {wins}\n")
        print("| sigma / sigma_data | sigma | learned | Gaussian | ratio |\n|---|---|---|---|---|")
        for r in den:
            print(f"| {r['sigma_over_sigma_data']:.3g} | {r['sigma']:.4g} | {r['mse_learned']:.3e} | "
                  f"{r['mse_gaussian']:.3e} | {r['mse_learned'] / r['mse_gaussian']:.3f} |")
        kw = dict(n_images=4, n_samples=2, steps=20) if args.quick else {}
        zeta, scores = (args.zeta, {}) if args.zeta is not None or args.quick else tune_zeta(name, prior, op)
        if scores:
            print("\nDPS zeta on 3 validation images (PSNR of a 2-sample mean): "
                  + ", ".join(f"{z:g}: {v:.2f}" for z, v in scores.items()))
        rec, figs, rng = reconstruct(prior, op, baseline, desc, test, zeta=zeta, **kw)
        rec["zeta_validation"] = {str(z): v for z, v in scores.items()}
        print(f"\nReconstruction ({rec['problem']}; {rec['method']}; {len(rec['images'])} held-out images, "
              f"{rec['seconds']} s)\n")
        print("| | baseline | posterior mean | gain |\n|---|---|---|---|")
        print(f"| PSNR (dB) | {rec['psnr_baseline']:.2f} | {rec['psnr_posterior_mean']:.2f} | {rec['psnr_gain_db']:+.2f} |")
        print(f"| SSIM | {rec['ssim_baseline']:.3f} | {rec['ssim_posterior_mean']:.3f} | |")
        print(f"| 90% interval coverage | | {rec['coverage90']:.3f} | |")
        if not (args.no_write or args.quick or args.prior):
            sample_grid(prior, test, BUNDLED / f"{name}-samples.png")
            reconstruction_figure(figs, rng, BUNDLED / f"{name}-reconstruction.png", rec["problem"])
            card_path = BUNDLED / f"{name}.json"
            card = json.loads(card_path.read_text())
            card["evidence"] = {"denoising": den, "learned_beats_gaussian_at_every_sigma": wins,
                                "reconstruction": {k: v for k, v in rec.items() if k != "images"},
                                "command": f"OMP_NUM_THREADS=2 python benchmarks/priors.py {name}"}
            card_path.write_text(json.dumps(card, indent=2))
        print(f"\n({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
