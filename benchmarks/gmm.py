"""The Gaussian-mixture posterior benchmark of MCGdiff (Cardoso et al. 2023), reused by FPS and DDSMC.

Prior: 25 unit-covariance components, means on a 5x5 grid of spacing 8 repeated over coordinate pairs
((8i, 8j, 8i, 8j, ...), i, j in -2..2), weights chi2_1 draws normalised. Operator: the SVD of a d_y x d Gaussian
matrix with its singular values replaced by sorted U(0, 1) draws; noise std U(0, 1) times the largest singular
value; x* drawn from the prior. The exact posterior is a Gaussian mixture (GaussianMixture.exact_posterior).

Metric: sliced Wasserstein (1,000 directions) between the sampler's draws and as many exact-posterior draws;
mean and 95% interval (t-interval over seeds). The floor is exact-vs-exact (two independent exact sets), the
ceiling prior-vs-exact. Also the coverage of x* by 90% central credible intervals (mean over coordinates and
seeds). Hyperparameters are the fixed settings below, the same in every cell. The samplers run in float32 on
a float32 copy of the prior; exact references are computed in float64.

    OMP_NUM_THREADS=2 python benchmarks/gmm.py                      # the full table (README numbers)
    OMP_NUM_THREADS=2 python benchmarks/gmm.py --quick              # 3 seeds, small cells: a smoke run
    OMP_NUM_THREADS=2 python benchmarks/gmm.py --particles-sweep    # SMC's SW as particles grow
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time

import numpy as np
import scipy.stats
import torch

import invdiff
from invdiff import metrics
from invdiff.operators import GaussianNoise, MatrixOperator
from invdiff.priors import GaussianMixture

SETTINGS = {  # method -> (steps, options); fixed for every cell
    "smc": (100, {"particles": 4000}),
    "split-gibbs": (10, {"chains": 8000, "sweeps": 1}),
    "dps": (100, {}),
    "red-diff": (100, {}),
    "daps": (25, {"ode_steps": 4}),
    "ddrm": (50, {}),
}


def make_problem(d: int, d_y: int, seed: int):
    """The prior, operator, x* and y of one benchmark instance (float64)."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.arange(-2, 3, dtype=torch.float64) * 8
    pairs = torch.cartesian_prod(grid, grid)  # (25, 2)
    means = pairs.repeat(1, d // 2)
    weights = torch.from_numpy(scipy.stats.chi2.rvs(1, size=25, random_state=seed)).to(torch.float64)
    prior = GaussianMixture(means, weights / weights.sum(), 1.0)
    G = torch.randn(d_y, d, generator=g, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    s = torch.sort(torch.rand(d_y, generator=g, dtype=torch.float64), descending=True).values
    A = U @ torch.diag(s) @ Vh
    std = float(torch.rand(1, generator=g, dtype=torch.float64)) * float(s.max())
    op = MatrixOperator(A, noise=GaussianNoise(std))
    x_star = prior.sample(1, generator=g)[0]
    y = op.measure(x_star, generator=g)
    return prior, op, x_star, y


def t_interval(values):
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    half = scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


class SlicedWassersteinTo:
    """``metrics.sliced_wasserstein(x, ref)`` (p = 2) with one set of directions for every ``x``: the reference's
    sorted projections are made once per problem, which halves the metric's cost (it was an eighth of a d = 800
    task), and every method is scored on the same directions."""

    def __init__(self, ref, n_proj, generator):
        ref = metrics._flat_samples(ref, "ref")
        self.theta = metrics._directions(ref.shape[1], n_proj, generator)
        self.ref = metrics._sorted_projections(ref, self.theta)

    def __call__(self, x) -> float:
        px = metrics._sorted_projections(metrics._flat_samples(x, "x"), self.theta)
        return float(metrics._wasserstein_1d_sorted(px, self.ref, 2.0).mean().sqrt())


def run_task(task):
    """One (d, d_y, seed): SW of every method, the floor and the ceiling, coverage and seconds."""
    d, d_y, seed, methods, n_samples, n_proj, threads = task
    torch.set_num_threads(threads)
    prior, op, x_star, y = make_problem(d, d_y, seed)
    post = prior.exact_posterior(op, y)
    g = torch.Generator().manual_seed(10_000 + seed)
    sw = SlicedWassersteinTo(post.sample(n_samples, generator=g), n_proj, g)
    out = {"floor": sw(post.sample(n_samples, generator=g)), "ceiling": sw(prior.sample(n_samples, generator=g))}
    prior32 = copy.deepcopy(prior).to(torch.float32)  # samplers run in float32; references stay float64
    for m in methods:
        steps, opts = SETTINGS[m]
        res = invdiff.sample(prior32, op, y, m, n=n_samples, steps=steps, seed=seed, **opts)
        samples = res.samples.to(torch.float64)
        out[m] = (sw(samples), float(metrics.coverage(samples, x_star, 0.9)), res.seconds)
    return (d, d_y, seed), out


def run_all(tasks, jobs, log):
    """Run tasks in ``jobs`` worker processes (one torch thread each) or in this process."""
    results = {}

    def collect(done):
        for key, out in done:
            results[key] = out
            log(f"  d={key[0]} d_y={key[1]} seed={key[2]}: " + " ".join(
                f"{k} {v if isinstance(v, float) else v[0]:.3f}" for k, v in out.items()))

    if jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(jobs) as pool:
            collect(pool.imap_unordered(run_task, tasks))
    else:
        collect(map(run_task, tasks))
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[8, 80, 800])
    p.add_argument("--dys", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=0,
                   help="problems are seeds first-seed, ..., first-seed + seeds - 1 (other problems of the kind)")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--projections", type=int, default=1000)
    p.add_argument("--methods", nargs="+", default=list(SETTINGS))
    p.add_argument("--quick", action="store_true", help="3 seeds, d in {8, 80}, d_y in {1, 4}")
    p.add_argument("--particles-sweep", action="store_true", help="SMC's SW vs particles at d=80, d_y=2")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    if a.seeds < 1 or a.first_seed < 0:
        p.error(f"need --seeds >= 1 and --first-seed >= 0, got {a.seeds} and {a.first_seed}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if a.verbose else (lambda s: None)
    if a.particles_sweep:
        return particles_sweep(a, log)
    if a.quick:
        a.seeds, a.dims, a.dys = 3, [8, 80], [1, 4]
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    t0 = time.perf_counter()
    threads = 1 if a.jobs > 1 else torch.get_num_threads()
    # the costliest tasks first, so the workers finish together
    tasks = [(d, dy, s, a.methods, a.samples, a.projections, threads)
             for d in sorted(a.dims, reverse=True) for dy in a.dys for s in seeds]
    results = run_all(tasks, a.jobs, log)
    table, coverage_all, seconds_all = {}, {m: [] for m in a.methods}, {m: [] for m in a.methods}
    for d in a.dims:
        for d_y in a.dys:
            outs = [results[(d, d_y, s)] for s in seeds]
            table[(d, d_y)] = {"exact (floor)": t_interval([o["floor"] for o in outs]),
                               "prior (ceiling)": t_interval([o["ceiling"] for o in outs]),
                               **{m: t_interval([o[m][0] for o in outs]) for m in a.methods}}
            for m in a.methods:
                coverage_all[m] += [o[m][1] for o in outs]
                seconds_all[m] += [o[m][2] for o in outs]
    total = time.perf_counter() - t0
    cells = list(table)
    names = ["exact (floor)", *a.methods, "prior (ceiling)"]
    print(f"Sliced Wasserstein to the exact posterior ({a.samples} draws, {a.projections} directions), "
          f"mean +- 95% interval over {len(seeds)} seeds"
          + (f" ({seeds[0]}-{seeds[-1]})" if seeds[0] else "") + "\n")
    print("| method | " + " | ".join(f"d={d}, d_y={dy}" for d, dy in cells) + " |")
    print("|---|" + "---|" * len(cells))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{table[c][name][0]:.3f} ± {table[c][name][1]:.3f}" for c in cells) + " |")
    print("\n| method | steps, options | 90% coverage of x* (mean) | seconds per run (median) |")
    print("|---|---|---|---|")
    for m in a.methods:
        steps, opts = SETTINGS[m]
        o = ", ".join(f"{k}={v}" for k, v in opts.items())
        print(f"| {m} | {steps}{', ' + o if o else ''} | {np.mean(coverage_all[m]):.3f} | "
              f"{np.median(seconds_all[m]):.2f} |")
    print(f"\ntotal wall time {total / 60:.1f} min with {a.jobs} worker process(es)")


def particles_sweep(a, log):
    d, d_y = 80, 2
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    print(f"SMC: sliced Wasserstein to the exact posterior vs particles per run (d={d}, d_y={d_y}, "
          f"{a.samples} draws, {len(seeds)} seeds)\n")
    print("| particles per run | runs | SW (mean ± 95%) | final ESS (median) |")
    print("|---|---|---|---|")
    floor = []
    for seed in seeds:
        prior, op, _, y = make_problem(d, d_y, seed)
        post = prior.exact_posterior(op, y)
        g = torch.Generator().manual_seed(10_000 + seed)
        ref = post.sample(a.samples, generator=g)
        floor.append(float(metrics.sliced_wasserstein(post.sample(a.samples, generator=g), ref, a.projections, g)))
    m, h = t_interval(floor)
    print(f"| exact draws (floor) | - | {m:.3f} ± {h:.3f} | - |")
    for P in (10, 50, 250, 1000, 4000, 16000):
        sw, ess = [], []
        for seed in seeds:
            prior, op, _, y = make_problem(d, d_y, seed)
            g = torch.Generator().manual_seed(10_000 + seed)
            ref = prior.exact_posterior(op, y).sample(a.samples, generator=g)
            res = invdiff.sample(prior, op, y, "smc", n=a.samples, steps=SETTINGS["smc"][0], seed=seed, particles=P)
            sw.append(float(metrics.sliced_wasserstein(res.samples, ref, a.projections, g)))
            ess.append(res.diagnostics["final_ess"])
        m, h = t_interval(sw)
        print(f"| {P} | {math.ceil(a.samples / P)} | {m:.3f} ± {h:.3f} | {np.median(ess):.0f} |")


if __name__ == "__main__":
    main()
