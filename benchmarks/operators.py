"""Forward and adjoint milliseconds per operator, beside the reference libraries that are importable.

Median of ``--repeats`` calls after two warm-up calls, float32, batch 1, CPU, ``torch.set_num_threads`` =
``OMP_NUM_THREADS``. Run it on an otherwise idle machine: with busy cores, OpenMP's spinning idle threads
make small multithreaded calls (FFTs, sparse products) tens of milliseconds slower; ``OMP_WAIT_POLICY=PASSIVE``
avoids those stalls at a cost of ~0.1 ms per call (the test suite sets it). References run on the same data in the library's own precision (scikit-image and scipy
compute in float64). A reference column is empty when no reference exists or it is not installed (astra, sigpy
and torchkbnufft are optional and looked for; none is a dependency). scikit-image's ``iradon`` is listed in the
adjoint column for orientation only: it is filtered back-projection, not the adjoint of ``radon``.

    OMP_NUM_THREADS=2 python benchmarks/operators.py              # the table in benchmarks/README.md
    OMP_NUM_THREADS=2 python benchmarks/operators.py --only ct    # one modality
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time

import numpy as np
import torch


def make_timeit(repeats: int):
    def timeit(fn) -> float:
        fn()
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    return timeit


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def bench_blur(timeit):
    import scipy.ndimage
    import scipy.signal

    from invdiff.operators.blur import Blur, Inpainting, SuperResolution, gaussian_kernel, motion_blur_kernel, random_mask

    rows = []
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 256, generator=g)
    xn = x.numpy().astype(np.float64)
    k = gaussian_kernel(3.0)
    for name, op, ref_name, ref in (
        ("Blur gaussian 19x19, circular", Blur(k, (256, 256)), "scipy.ndimage.convolve(wrap)",
         lambda: scipy.ndimage.convolve(xn, k.numpy(), mode="wrap")),
        ("Blur motion 61x61, reflect", Blur(motion_blur_kernel(61), (256, 256), boundary="reflect"),
         "scipy.signal.fftconvolve (no boundary)", lambda: scipy.signal.fftconvolve(xn, motion_blur_kernel(61).numpy(), "same")),
    ):
        y = op(x)
        rows.append((name, "256x256", timeit(lambda: op(x)), timeit(lambda: op.adjoint(y)), ref_name, timeit(ref), None))
    sr = SuperResolution(4, (3, 256, 256))
    x3 = torch.rand(3, 256, 256, generator=g)
    y3 = sr(x3)
    rows.append(("SuperResolution x4", "3x256x256", timeit(lambda: sr(x3)), timeit(lambda: sr.adjoint(y3)), "", None, None))
    ip = Inpainting(random_mask((256, 256), 0.3, seed=0), (3, 256, 256))
    yi = ip(x3)
    rows.append(("Inpainting 30% random", "3x256x256", timeit(lambda: ip(x3)), timeit(lambda: ip.adjoint(yi)), "", None, None))
    return rows


def bench_ct(timeit):
    from skimage.data import shepp_logan_phantom
    from skimage.transform import iradon, radon, resize

    from invdiff.operators.ct import FanBeamCT, ParallelBeamCT

    rows = []
    img = resize(shepp_logan_phantom(), (128, 128), anti_aliasing=True)
    x = torch.tensor(img, dtype=torch.float32)
    theta = np.arange(180.0)
    t0 = time.perf_counter()
    op = ParallelBeamCT((128, 128), 180)
    build = time.perf_counter() - t0
    y = op(x)
    sino = radon(img, theta, circle=False)
    rows.append((f"ParallelBeamCT sparse (build {build:.2f} s)", "128x128, 180 views", timeit(lambda: op(x)),
                 timeit(lambda: op.adjoint(y)), "skimage radon / iradon*", timeit(lambda: radon(img, theta, circle=False)),
                 timeit(lambda: iradon(sino, theta, circle=False, output_size=128))))
    free = ParallelBeamCT((128, 128), 180, storage="matrix_free")
    rows.append(("ParallelBeamCT matrix-free", "128x128, 180 views", timeit(lambda: free(x)),
                 timeit(lambda: free.adjoint(y)), "", None, None))
    rows.append(("ParallelBeamCT.fbp (ramp)", "128x128, 180 views", timeit(lambda: op.fbp(y)), None,
                 "skimage iradon", timeit(lambda: iradon(sino, theta, circle=False, output_size=128)), None))
    x256 = torch.rand(256, 256)
    op256 = ParallelBeamCT((256, 256), 60)
    y256 = op256(x256)
    rows.append(("ParallelBeamCT sparse-view", "256x256, 60 views", timeit(lambda: op256(x256)),
                 timeit(lambda: op256.adjoint(y256)), "skimage radon",
                 timeit(lambda: radon(x256.double().numpy(), np.arange(60) * 3.0, circle=False)), None))
    fan = FanBeamCT((128, 128), 360, 300.0, 600.0)
    yf = fan(x)
    rows.append(("FanBeamCT flat detector", "128x128, 360 views", timeit(lambda: fan(x)),
                 timeit(lambda: fan.adjoint(yf)), "", None, None))
    if _has("astra"):  # optional reference
        import astra

        vol = astra.create_vol_geom(128, 128)
        proj = astra.create_proj_geom("parallel", 1.0, op.n_detectors, op.angles.numpy())
        pid = astra.create_projector("linear", proj, vol)
        rows.append(("  astra (linear, CPU)", "128x128, 180 views", None, None, "astra create_sino",
                     timeit(lambda: astra.create_sino(img, pid)), None))
    return rows


def bench_mri(timeit):
    """fastMRI knee size (320 x 320), complex64; sigpy as reference when importable."""
    from invdiff.operators.mri import MRI, NonCartesianMRI, radial_trajectory, random_mask, simulate_coil_maps

    H = W = 320
    x = torch.randn(H, W, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    mask = random_mask(W, 0.08, 4, seed=0)
    sp = None
    if _has("sigpy"):
        import sigpy as sp
        import sigpy.mri as spmri
    rows = []
    for desc, op in [("MRI single-coil, 1-D mask R=4", MRI(mask, shape=(H, W))),
                     ("MRI SENSE 8 coils, 1-D mask R=4", MRI(mask, simulate_coil_maps(8, (H, W))))]:
        y = op(x)
        fwd, adj = timeit(lambda: op(x)), timeit(lambda: op.adjoint(y))
        ref, rf, ra = "", None, None
        if sp is not None:
            xn, yn, mn = x.numpy(), y.numpy(), mask.expand(H, W).numpy().astype("float32")
            if op.coil_maps is None:
                A = sp.linop.Multiply((H, W), mn) * sp.linop.FFT((H, W), center=True)
            else:
                A = spmri.linop.Sense(op.coil_maps.numpy(), weights=mn)
            ref, rf, ra = "sigpy", timeit(lambda: A(xn)), timeit(lambda: A.H(yn))
        rows.append((desc, f"{H}x{W}", fwd, adj, ref, rf, ra))
    if _has("finufft"):
        op = NonCartesianMRI(radial_trajectory(128, 2 * W), (H, W))
        y = op(x)
        ref, rf, ra = "", None, None
        if _has("torchkbnufft"):
            import torchkbnufft as tkbn

            omega = radial_trajectory(128, 2 * W).reshape(-1, 2).T.contiguous().float()  # (2, K): (k_y, k_x)
            fwd_op, adj_op = tkbn.KbNufft(im_size=(H, W)), tkbn.KbNufftAdjoint(im_size=(H, W))
            xb, yb = x[None, None], y.reshape(1, 1, -1)
            ref, rf, ra = "torchkbnufft", timeit(lambda: fwd_op(xb, omega)), timeit(lambda: adj_op(yb, omega))
        rows.append(("NonCartesianMRI, 128 radial spokes x 640 (finufft)", f"{H}x{W}",
                     timeit(lambda: op(x)), timeit(lambda: op.adjoint(y)), ref, rf, ra))
    return rows


def bench_ultrasound(timeit):
    from invdiff.operators.ultrasound import PlaneWaveRF, ScanlineSubsampling

    rows = []
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 256, generator=g)
    op = ScanlineSubsampling((256, 256), 64)
    y = op(x)
    rows.append(("ScanlineSubsampling 64 of 256 lines", "256x256", timeit(lambda: op(x)),
                 timeit(lambda: op.adjoint(y)), "", None, None))
    x = torch.randn(128, 128, generator=g)
    for E in (64, 128):
        op = PlaneWaveRF((128, 128), angles=(-0.1, 0.0, 0.1), n_elements=E)
        y = op(x)
        rows.append((f"PlaneWaveRF 3 angles, {E} elements, {op.n_samples} samples", "128x128",
                     timeit(lambda: op(x)), timeit(lambda: op.adjoint(y)), "", None, None))
    return rows


def bench_nonlinear(timeit):
    from invdiff.operators.nonlinear import PhaseRetrieval

    op = PhaseRetrieval((256, 256))
    x = torch.rand(256, 256)
    v = torch.rand(op.out_shape)
    return [("PhaseRetrieval x2 oversampling (vjp)", "256x256", timeit(lambda: op(x)), timeit(lambda: op.vjp(x, v)),
             "numpy abs(fft2(pad))", timeit(lambda: np.abs(np.fft.fft2(np.pad(x.numpy(), 128)))), None)]


def bench_weather(timeit):
    import scipy.interpolate

    from invdiff.operators.weather import CoarseGrid, StationObservations, TimeSubsampling

    rows = []
    g = torch.Generator().manual_seed(0)
    lat = np.linspace(90.0, -90.0, 721)  # 0.25 deg ERA5 grid, north to south
    lon = np.arange(0.0, 360.0, 0.25)
    u = torch.rand(5000, 2, generator=g, dtype=torch.float64)
    st = torch.stack([180.0 * u[:, 0] - 90.0, 360.0 * u[:, 1] - 180.0], 1)
    op = StationObservations(lat, lon, st)
    x = torch.randn(721, 1440, generator=g)
    y = op(x)
    interp = scipy.interpolate.RegularGridInterpolator(  # hand-periodised, ascending copy
        (lat[::-1].copy(), np.append(lon, 360.0)),
        np.concatenate([x.numpy()[::-1], x.numpy()[::-1, :1]], 1), method="linear")
    pts = np.stack([st[:, 0].numpy(), np.mod(st[:, 1].numpy(), 360.0)], 1)
    rows.append(("StationObservations, 5000 stations", "721x1440", timeit(lambda: op(x)),
                 timeit(lambda: op.adjoint(y)), "scipy RegularGridInterpolator", timeit(lambda: interp(pts)), None))
    cg = CoarseGrid(4, lat[:720], lon)
    xc = torch.randn(720, 1440, generator=g)
    yc = cg(xc)
    rows.append(("CoarseGrid x4 (area-weighted)", "720x1440", timeit(lambda: cg(xc)), timeit(lambda: cg.adjoint(yc)),
                 "", None, None))
    ts = TimeSubsampling(24, state_shape=(181, 360), every=6)
    xt = torch.randn(24, 181, 360, generator=g)
    yt = ts(xt)
    rows.append(("TimeSubsampling every 6th of 24", "24x181x360", timeit(lambda: ts(xt)),
                 timeit(lambda: ts.adjoint(yt)), "", None, None))
    return rows


SECTIONS = {"blur": bench_blur, "ct": bench_ct, "mri": bench_mri, "ultrasound": bench_ultrasound, "nonlinear": bench_nonlinear, "weather": bench_weather}


def _fmt(v):
    return "" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only these modalities")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    timeit = make_timeit(args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print(f"torch {torch.__version__}, {threads} threads, OMP_WAIT_POLICY {policy}, load average {load:.2f} at "
          f"start, float32, median of {args.repeats}; ms")
    print()
    print("| operator | size | forward | adjoint | reference | ref forward | ref adjoint |")
    print("|---|---|---|---|---|---|---|")
    for name in args.only or list(SECTIONS):
        for row in SECTIONS[name](timeit):
            desc, size, fwd, adj, ref, rf, ra = row
            print(f"| {desc} | {size} | {_fmt(fwd)} | {_fmt(adj)} | {ref} | {_fmt(rf)} | {_fmt(ra)} |", flush=True)
    missing = [m for m in ("astra", "sigpy", "torchkbnufft") if not _has(m)]
    if missing:
        print(f"\nnot installed, so not compared: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
