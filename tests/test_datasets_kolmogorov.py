"""Kolmogorov flow: the solver against exact solutions and invariants, and the dataset's seeding and caching."""

import math

import numpy as np
import pytest
import torch

from invdiff.datasets.kolmogorov import KolmogorovFlow, KolmogorovSolver, coarsen, energy_spectrum


def _grid(N):
    x = 2 * math.pi * torch.arange(N, dtype=torch.float64) / N
    return x[None, :], x[:, None]  # x varies along columns, y along rows


def _spectral_grad(f):
    N = f.shape[-1]
    kx = torch.fft.rfftfreq(N, 1.0 / N, dtype=torch.float64)[None, :]
    ky = torch.fft.fftfreq(N, 1.0 / N, dtype=torch.float64)[:, None]
    fh = torch.fft.rfft2(f)
    return torch.fft.irfft2(1j * kx * fh, s=(N, N)), torch.fft.irfft2(1j * ky * fh, s=(N, N))


# ------------------------------------------------------------------------------------------- exact solutions
def test_laminar_state_is_the_closed_form_and_stays_steady():
    solver = KolmogorovSolver(32, reynolds=1000.0, wavenumber=4, drag=0.1, dt=0.01)
    w = solver.laminar(dtype=torch.float64)
    _, y = _grid(32)
    U = 1.0 / (4**2 / 1000.0 + 0.1)  # A / (nu k^2 + drag) = 8.62
    u, v = solver.velocity(w)
    assert torch.allclose(u, (U * torch.sin(4 * y)).expand(32, 32), atol=1e-12)
    assert v.abs().max() < 1e-12
    w_t = solver.step(w, steps=500)  # 5 time units
    assert (w_t - w).abs().max() / w.abs().max() < 1e-12


def test_perturbed_laminar_flow_returns_to_it_at_low_reynolds():
    solver = KolmogorovSolver(32, reynolds=10.0, wavenumber=4, drag=0.1, dt=0.04)
    lam = solver.laminar(dtype=torch.float64)
    w = lam + solver.random_state(2, speed=1.0, seed=3, dtype=torch.float64)
    dist = [(w - lam).norm()]
    for _ in range(6):
        w = solver.step(w, steps=50)  # 2 time units
        dist.append((w - lam).norm())
    dist = torch.stack(dist)
    assert (dist[1:] < dist[:-1]).all()
    # the slowest mode (|k| = 1) decays at nu + drag = 0.2 per time unit: e^{-2.4} ~ 0.09 over 12 units
    assert dist[-1] / dist[0] < 0.1


@pytest.mark.parametrize("drag", [0.0, 0.1])
def test_taylor_green_vortex_decays_at_the_exact_viscous_rate(drag):
    nu, k, t = 0.01, 2, 3.0
    solver = KolmogorovSolver(32, reynolds=1 / nu, drag=drag, amplitude=0.0, dt=0.05)
    x, y = _grid(32)
    w0 = 2 * k * torch.cos(k * x) * torch.cos(k * y)  # psi = cos kx cos ky / k: u . grad(w) = 0
    w = solver.step(w0, steps=solver.steps_for(t))
    expected = w0 * math.exp(-(2 * nu * k**2 + drag) * t)
    assert (w - expected).abs().max() / expected.abs().max() < 1e-12
    # a mode whose advection does not vanish identically on the grid: two wavevectors of equal |k|^2 = 13
    w0 = torch.sin(2 * x) * torch.sin(3 * y) + 0.5 * torch.cos(3 * x + 2 * y)
    w = solver.step(w0, steps=solver.steps_for(t))
    assert (w - w0 * math.exp(-(13 * nu + drag) * t)).abs().max() < 1e-12


# ------------------------------------------------------------------------------------------------ invariants
def test_mean_vorticity_stays_zero_and_velocity_is_divergence_free_with_curl_omega():
    solver = KolmogorovSolver(32, reynolds=1000.0, dt=0.02)
    w = solver.step(solver.random_state(3, speed=2.0, seed=1, dtype=torch.float64) + 5.0, steps=50)
    assert w.mean(dim=(-2, -1)).abs().max() < 1e-12  # the added mean is removed, and none is created
    u, v = solver.velocity(w)
    ux, uy = _spectral_grad(u)
    vx, vy = _spectral_grad(v)
    scale = ux.abs().max()
    assert (ux + vy).abs().max() / scale < 1e-12
    assert (vx - uy - w).abs().max() / w.abs().max() < 1e-12  # curl u = omega on the retained modes


def test_inviscid_unforced_galerkin_flow_conserves_energy_and_enstrophy():
    solver = KolmogorovSolver(32, reynolds=float("inf"), drag=0.0, amplitude=0.0, dt=0.005)
    w0 = solver.random_state(2, speed=1.0, seed=7, dtype=torch.float64)
    w0 = solver.step(w0, steps=0)  # project onto the dealiased modes
    w = solver.step(w0, steps=200)  # 1 time unit, ~one eddy turnover
    _, E0 = energy_spectrum(w0)
    k, E = energy_spectrum(w)
    assert (w - w0).norm() / w0.norm() > 0.1  # the flow really evolved
    assert torch.allclose(E.sum(-1), E0.sum(-1), rtol=1e-8)
    assert torch.allclose((w**2).mean(dim=(-2, -1)), (w0**2).mean(dim=(-2, -1)), rtol=1e-8)


def test_energy_spectrum_sums_to_the_kinetic_energy():
    solver = KolmogorovSolver(32, dt=0.02)
    w = solver.random_state(2, speed=1.5, seed=2, dtype=torch.float64)
    u, v = solver.velocity(w)
    k, E = energy_spectrum(w)
    assert torch.allclose(E.sum(-1), 0.5 * (u**2 + v**2).mean(dim=(-2, -1)), rtol=1e-12)
    assert torch.allclose(E.sum(-1), torch.full((2,), 0.5 * 1.5**2, dtype=torch.float64), rtol=1e-12)
    assert 3 <= int(E.mean(0).argmax()) <= 5  # random_state's spectrum peaks at k = 4


def test_time_step_convergence_is_fourth_order():
    solver_ref = KolmogorovSolver(32, reynolds=200.0, dt=0.005)
    w0 = solver_ref.random_state(1, speed=1.0, seed=5, dtype=torch.float64)
    T = 0.8
    ref = solver_ref.step(w0, steps=solver_ref.steps_for(T))
    dts = [0.08, 0.04, 0.02]
    errs = []
    for dt in dts:
        s = KolmogorovSolver(32, reynolds=200.0, dt=dt)
        errs.append(float((s.step(w0, steps=s.steps_for(T)) - ref).abs().max()))
    order = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert 3.7 < order < 4.4, (order, errs)


def test_flow_at_reynolds_1000_becomes_turbulent_but_stays_finite_and_resolved():
    solver = KolmogorovSolver(128)  # the dataset's fine grid and default step
    w = solver.step(solver.random_state(1, seed=11), steps=solver.steps_for(8.0))
    assert torch.isfinite(w).all()
    lam = solver.laminar()
    assert (w - lam).norm() > 0.8 * lam.norm()  # far from the (unstable) laminar state
    k, E = energy_spectrum(w.double())
    E = E[0] / E[0].sum()
    assert E[4] < 0.5  # energy left the forcing shell (measured 0.11-0.25 over 8 seeds) ...
    assert (E > 1e-3).sum() >= 8  # ... and spreads over many shells (measured 10-11)
    assert E[35:].sum() < 3e-4  # ~5 decades below the peak at the 2/3 cut-off (42): resolved (measured <1e-4)
    u, v = solver.velocity(w)
    assert 0.3 < float(0.5 * (u**2 + v**2).mean()) < 3.0
    std = float((coarsen(w, 64) / KolmogorovFlow.scale).std())
    assert 0.75 < std < 1.25  # the dataset's fixed scale standardises the coarse vorticity (measured 0.94-1.08)


# --------------------------------------------------------------------------------------------------- dataset
SMALL = dict(size=16, grid=32, spinup=2.0, interval=0.2)


def test_dataset_is_determined_by_its_seed_and_the_splits_are_disjoint():
    a = KolmogorovFlow(8, seed=0, trajectories=4, **SMALL)
    b = KolmogorovFlow(8, seed=0, trajectories=4, **SMALL)
    c = KolmogorovFlow(8, seed=1, trajectories=4, **SMALL)
    test = KolmogorovFlow(8, seed=0, split="test", trajectories=4, **SMALL)
    assert torch.equal(a.images, b.images)
    typical = a.images.flatten(1).norm(dim=1).mean()
    for other in (c, test):
        assert torch.cdist(a.images.flatten(1), other.images.flatten(1)).min() > 0.5 * typical
    assert a.images.dtype == torch.float32 and a.value_range is None


def test_item_order_and_trajectory_windows_follow_the_documented_layout():
    B = 3
    states = KolmogorovFlow(2 * B, trajectories=B, **SMALL).images  # item i: record i // B of flow i % B
    first = KolmogorovFlow(B, trajectories=B, **SMALL).images
    assert torch.equal(states[:B], first)  # a longer dataset extends a shorter one
    traj = KolmogorovFlow(B, length=2, trajectories=B, **SMALL).images  # (B, 2, 1, 16, 16)
    assert torch.equal(traj[:, 0], states[:B]) and torch.equal(traj[:, 1], states[B:])
    # records of one flow are 0.2 apart: close, but not equal
    gap = (traj[:, 1] - traj[:, 0]).flatten(1).norm(dim=1) / traj[:, 0].flatten(1).norm(dim=1)
    assert (gap > 1e-3).all() and (gap < 0.5).all()


def test_coarsening_is_the_block_mean():
    w = torch.arange(16.0).reshape(4, 4)
    assert torch.equal(coarsen(w, 2), torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    ds = KolmogorovFlow(2, trajectories=2, **SMALL)
    assert ds.images.mean(dim=(-2, -1)).abs().max() < 1e-5  # zero circulation survives the block mean


def test_cache_is_written_only_when_asked_and_checked_on_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    KolmogorovFlow(2, trajectories=2, **SMALL)
    assert list(tmp_path.iterdir()) == []
    for name in ("flow.pt", "flow.npz"):
        path = tmp_path / name
        made = KolmogorovFlow(2, trajectories=2, cache=path, **SMALL)
        assert path.exists()
        loaded = KolmogorovFlow(2, trajectories=2, cache=path, **SMALL)
        assert torch.equal(made.images, loaded.images)
        with pytest.raises(ValueError, match="other arguments"):
            KolmogorovFlow(2, trajectories=2, seed=1, cache=path, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.npz", "flow.pt"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(split="valid"), "split"),
    (dict(size=24), "divisor"),
    (dict(interval=0.15, dt=0.1), "whole multiple"),
    (dict(length=0), "length"),
    (dict(cache="flow.h5"), ".pt or .npz"),
])
def test_dataset_rejects_bad_arguments(kwargs, match):
    args = dict(SMALL, **kwargs)
    with pytest.raises(ValueError, match=match):
        KolmogorovFlow(2, **args)


def test_solver_rejects_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        KolmogorovSolver(31)
    with pytest.raises(ValueError, match="wavenumber"):
        KolmogorovSolver(12, wavenumber=4)
    with pytest.raises(ValueError, match="grid is 32"):
        KolmogorovSolver(32).step(torch.zeros(2, 16, 16))
