"""Mode-weight error on one cell of the Gaussian-mixture benchmark: a quicker, less noisy gauge than SW.

On the MCGdiff mixture (``gmm.py``) the samplers' error at d = 800 is all in how much mass each mode gets. This
script gives each draw to its most responsible posterior component and prints the total variation between those mode
fractions and the exact mixture weights, mean and 95% interval over seeds, beside the same for as many exact
draws (the floor). Steps and options default to the table's (``gmm.SETTINGS``); ``--option`` overrides one. One
SMC setting over 40 seeds takes about 2 minutes with 2 workers.

    OMP_NUM_THREADS=2 python benchmarks/gmm_modes.py                                    # smc, d=800, d_y=1
    OMP_NUM_THREADS=2 python benchmarks/gmm_modes.py --option particles=8000 --steps 200
    OMP_NUM_THREADS=2 python benchmarks/gmm_modes.py --dtype float64                    # the sampler in float64
    OMP_NUM_THREADS=2 python benchmarks/gmm_modes.py --method split-gibbs
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch

import invdiff
from invdiff.cli import _options

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gmm import SETTINGS, make_problem, t_interval  # noqa: E402


def mode_tv(samples: torch.Tensor, post) -> float:
    """Total variation between the draws' component fractions (each draw to its most responsible component of
    ``post``) and the exact weights of ``post``."""
    k = post.responsibilities(samples.to(post.means.dtype)).argmax(-1)
    frac = torch.bincount(k, minlength=post.K).to(torch.float64) / len(k)
    return 0.5 * float((frac - post.weights.to(torch.float64)).abs().sum())


def run_task(task):
    d, d_y, seed, method, steps, opts, n, dtype = task
    torch.set_num_threads(1)
    prior, op, _, y = make_problem(d, d_y, seed)
    post = prior.exact_posterior(op, y)
    floor = mode_tv(post.sample(n, generator=torch.Generator().manual_seed(10_000 + seed)), post)
    res = invdiff.sample(copy.deepcopy(prior).to(getattr(torch, dtype)), op, y, method, n=n, steps=steps, seed=seed,
                         **opts)
    return seed, mode_tv(res.samples, post), floor, res.seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=int, default=800)
    p.add_argument("--dy", type=int, default=1)
    p.add_argument("--seeds", type=int, default=40)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--method", default="smc", choices=list(SETTINGS))
    p.add_argument("--steps", type=int, default=None, help="default: the table's")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampler option as in 'invdiff reconstruct', over the table's options")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="the sampler's precision")
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args(argv)
    try:
        opts = {**SETTINGS[a.method][1], **_options(a.option)}
    except ValueError as e:
        p.error(str(e))
    if a.steps is None:
        a.steps = SETTINGS[a.method][0]
    tasks = [(a.d, a.dy, s, a.method, a.steps, opts, a.samples, a.dtype) for s in range(a.seeds)]
    t0 = time.perf_counter()
    if a.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(a.jobs) as pool:
            out = sorted(pool.map(run_task, tasks))
    else:
        out = [run_task(t) for t in tasks]
    tv, floor = t_interval([o[1] for o in out]), t_interval([o[2] for o in out])
    setting = ", ".join(f"{k}={v}" for k, v in opts.items())
    print(f"Mode-weight total variation to the exact posterior (d={a.d}, d_y={a.dy}, {a.samples} draws, "
          f"{a.seeds} seeds, sampler in {a.dtype})\n")
    print("| draws | mode-weight TV (mean ± 95%) | worst seed | seconds per run (median) |")
    print("|---|---|---|---|")
    print(f"| exact (floor) | {floor[0]:.4f} ± {floor[1]:.4f} | {max(o[2] for o in out):.3f} | - |")
    worst = max(out, key=lambda o: o[1])
    print(f"| {a.method}, {a.steps} steps{', ' + setting if setting else ''} | {tv[0]:.4f} ± {tv[1]:.4f} | "
          f"{worst[1]:.3f} (seed {worst[0]}) | {np.median([o[3] for o in out]):.2f} |")
    print(f"\nwall time {(time.perf_counter() - t0) / 60:.1f} min with {a.jobs} worker process(es)")


if __name__ == "__main__":
    main()
