r"""Kolmogorov flow: a pure-torch pseudo-spectral 2-D Navier-Stokes solver and a dataset of its vorticity.

The flow is incompressible on the periodic square :math:`[0, 2\pi)^2`, written for the vorticity
:math:`\omega = \partial_x v - \partial_y u` of the velocity :math:`\mathbf u = (u, v)`:

.. math::
    \partial_t \omega + \mathbf u \cdot \nabla \omega = \nu\, \Delta \omega - \alpha\, \omega + F, \qquad
    \mathbf u = (\partial_y \psi,\ -\partial_x \psi), \quad -\Delta \psi = \omega,

with viscosity :math:`\nu = 1/\mathrm{Re}`, linear drag :math:`\alpha` and the Kolmogorov forcing: the body force
:math:`\mathbf f = (A \sin(k_f y), 0)`, whose curl is :math:`F = -A k_f \cos(k_f y)`. The velocity comes from the
stream function, so it is divergence-free by construction, and the mean vorticity (the circulation around the
torus) is zero and stays zero. The forced, dragged equation has the **laminar steady state**

.. math::
    u = U \sin(k_f y),\quad v = 0,\quad \omega_\mathrm{lam} = -U k_f \cos(k_f y), \qquad
    U = \frac{A}{\nu k_f^2 + \alpha},

(its advection term vanishes: :math:`\omega_\mathrm{lam}` depends on :math:`y` only and :math:`v = 0`), which is
unstable at :math:`\mathrm{Re} = 1000`, :math:`k_f = 4`, :math:`\alpha = 0.1`: the flow there is turbulent.

**Grid.** A field is a tensor ``(..., N, N)`` with ``w[..., i, j]`` the value at :math:`(x_j, y_i)`,
:math:`x_j = 2\pi j / N`, :math:`y_i = 2\pi i / N` (rows are :math:`y`, columns are :math:`x`).

**Discretisation.** Fourier pseudo-spectral in space (``torch.fft.rfft2``): derivatives are exact on the
retained modes; the product :math:`\mathbf u \cdot \nabla \omega` is formed on the grid and its spectrum is cut to
:math:`|k_x|, |k_y| < N/3` (Orszag's 2/3 rule, ``dealias=True``), so the semi-discrete system is a Galerkin
truncation that conserves energy and enstrophy when :math:`\nu = \alpha = F = 0`. The Nyquist modes are always
zeroed. In time, the linear part :math:`L = -\nu |k|^2 - \alpha` is integrated exactly by an integrating factor
and the rest by classical RK4 (Lawson's integrating-factor RK4, order 4): with :math:`E = e^{Lh}`,
:math:`E_2 = e^{Lh/2}` and :math:`\mathcal N(\hat\omega) = -\widehat{\mathbf u\cdot\nabla\omega} + \hat F`,

.. math::
    a = \mathcal N(\hat\omega_n),\ b = \mathcal N\big(E_2(\hat\omega_n + \tfrac h2 a)\big),\
    c = \mathcal N\big(E_2\hat\omega_n + \tfrac h2 b\big),\ d = \mathcal N\big(E\hat\omega_n + h E_2 c\big),\\
    \hat\omega_{n+1} = E\hat\omega_n + \tfrac h6\big(E a + 2E_2(b + c) + d\big).

Viscosity and drag therefore never limit the step (a single Fourier mode without forcing decays at exactly
:math:`e^{-(\nu |k|^2 + \alpha) t}`); advection does, through RK4's stability limit on the imaginary axis,
:math:`h\, |\mathbf u|_\infty k_\max \lesssim 2.8` (:math:`k_\max \approx N/3`).

**The data set.** :class:`KolmogorovFlow` follows the setup of score-based data assimilation (Rozet & Louppe,
2023: jax-cfd's Kolmogorov flow, :math:`\mathrm{Re} = 1000`, :math:`k_f = 4`, :math:`A = 1`, drag 0.1, states
0.2 time units apart, fine grid coarsened by block averaging to 64 x 64). It differs in that its states are the
vorticity (one channel) rather than the velocity, and the fine solver is spectral at 128^2 rather than finite-volume
at 256^2 (see the class for the trade-off). Nothing is downloaded: every state is simulated from a seeded random
initial condition.

References:
    Rozet & Louppe (2023), "Score-based Data Assimilation".
    Kochkov et al. (2021), "Machine learning-accelerated computational fluid dynamics".
    Boffetta & Ecke (2012), "Two-dimensional turbulence".
    Orszag (1971), "On the elimination of aliasing in finite-difference schemes by filtering high-wavenumber
    components".
    Lawson (1967), "Generalized Runge-Kutta processes for stable systems with large Lipschitz constants".
    Canuto, Hussaini, Quarteroni & Zang (2006), "Spectral Methods: Fundamentals in Single Domains".
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["KolmogorovSolver", "KolmogorovFlow", "energy_spectrum", "coarsen"]


def _check_field(w: torch.Tensor, grid: int | None = None) -> None:
    if not isinstance(w, torch.Tensor) or w.ndim < 2 or w.shape[-1] != w.shape[-2]:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"expected a vorticity tensor (..., N, N) on a square grid, got {shape}")
    if grid is not None and w.shape[-1] != grid:
        raise ValueError(f"this solver's grid is {grid} x {grid}, got a field of shape {tuple(w.shape)}; "
                         f"build a KolmogorovSolver(grid={w.shape[-1]}) or coarsen the field first")
    if w.is_complex() or not w.is_floating_point():
        raise ValueError(f"expected a real floating-point vorticity, got dtype {w.dtype}")


class KolmogorovSolver:
    r"""Pseudo-spectral integrating-factor RK4 solver of the forced, dragged 2-D vorticity equation (final class).

    See the module docstring for the equation, grid convention and scheme. Fields are batched over any leading
    dims, float32 or float64, on any device (the wavenumber tables follow the field's device and dtype).

    Args:
        grid: ``N``, grid points per side of :math:`[0, 2\pi)^2` (even, at least 8).
        reynolds: :math:`\mathrm{Re}`, the viscosity is :math:`\nu = 1/\mathrm{Re}` (``float('inf')`` for none).
        wavenumber: forcing wavenumber :math:`k_f` (a positive integer below ``N/3`` so the forcing is resolved).
        drag: linear drag coefficient :math:`\alpha \ge 0`.
        dt: the time step :math:`h`; default ``1.28 / N`` (``0.01`` at ``N = 128``, 20 steps per 0.2 time units).
            At :math:`\mathrm{Re} = 1000` the speed stayed below 5 in our runs, so :math:`h |\mathbf u|_\infty
            k_\max \lesssim 2.1 < 2.8`; at ``N = 128`` the default step ran stably for 30 time units (and for 41
            in each of 64 flows), ``1.25 x`` it for 12, ``2 x`` it blew up within 6 time units.
        dealias: apply the 2/3 rule to the advection term.
        amplitude: forcing amplitude :math:`A` (``0`` for unforced flow).

    Examples:
        >>> solver = KolmogorovSolver(grid=32, reynolds=100.0, dt=0.01)
        >>> w = solver.laminar(dtype=torch.float64)
        >>> bool(torch.allclose(solver.step(w, steps=10), w, atol=1e-12))
        True
    """

    def __init__(self, grid: int = 128, *, reynolds: float = 1000.0, wavenumber: int = 4, drag: float = 0.1,
                 dt: float | None = None, dealias: bool = True, amplitude: float = 1.0):
        if int(grid) != grid or grid < 8 or grid % 2:
            raise ValueError(f"grid must be an even integer >= 8, got {grid}")
        grid = int(grid)
        if not reynolds > 0:
            raise ValueError(f"reynolds must be positive (float('inf') for inviscid flow), got {reynolds}")
        if int(wavenumber) != wavenumber or not 1 <= wavenumber < grid / 3:
            raise ValueError(f"wavenumber must be an integer in [1, grid/3) = [1, {grid / 3:.1f}), got {wavenumber}")
        if not drag >= 0:
            raise ValueError(f"drag must be >= 0, got {drag}")
        if dt is None:
            dt = 1.28 / grid
        if not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a positive finite number, got {dt}")
        if not math.isfinite(amplitude):
            raise ValueError(f"amplitude must be finite, got {amplitude}")
        self.grid = grid
        self.reynolds = float(reynolds)
        self.viscosity = 0.0 if math.isinf(reynolds) else 1.0 / float(reynolds)
        self.wavenumber = int(wavenumber)
        self.drag = float(drag)
        self.dt = float(dt)
        self.dealias = bool(dealias)
        self.amplitude = float(amplitude)
        self._tables: dict = {}

    # ---------------------------------------------------------------------------------------------- tables
    def _table(self, device, dtype) -> dict:
        """Wavenumbers, masks, integrating factors and forcing spectrum for one device and real dtype."""
        key = (torch.device(device), dtype)
        if key not in self._tables:
            N, h = self.grid, self.dt
            ky = torch.fft.fftfreq(N, 1.0 / N, dtype=torch.float64)
            kx = torch.fft.rfftfreq(N, 1.0 / N, dtype=torch.float64)
            KY, KX = torch.meshgrid(ky, kx, indexing="ij")
            k2 = KX**2 + KY**2
            keep = (KX.abs() < N / 2) & (KY.abs() < N / 2)  # drop the Nyquist row and column
            if self.dealias:
                keep &= (KX.abs() < N / 3) & (KY.abs() < N / 3)
            inv_k2 = torch.where(k2 > 0, 1.0 / k2.clamp_min(1.0), torch.zeros_like(k2))
            L = -self.viscosity * k2 - self.drag
            y = 2 * math.pi * torch.arange(N, dtype=torch.float64) / N
            F = -self.amplitude * self.wavenumber * torch.cos(self.wavenumber * y)[:, None].expand(N, N)
            ctype = torch.complex128 if dtype == torch.float64 else torch.complex64
            cast = dict(device=device)
            self._tables[key] = dict(
                ikx=(1j * KX * keep).to(ctype).to(**cast),
                iky=(1j * KY * keep).to(ctype).to(**cast),
                inv_k2=inv_k2.to(dtype).to(**cast),
                keep=keep.to(dtype).to(**cast),
                E=torch.exp(L * h).to(dtype).to(**cast),
                E2=torch.exp(L * h / 2).to(dtype).to(**cast),
                F=(torch.fft.rfft2(F) * keep).to(ctype).to(**cast),
            )
        return self._tables[key]

    # ---------------------------------------------------------------------------------------------- maths
    def _advection_rhs(self, wh: torch.Tensor, t: dict) -> torch.Tensor:
        r""":math:`\mathcal N(\hat\omega) = -\widehat{\mathbf u\cdot\nabla\omega}` (dealiased) :math:`+ \hat F`."""
        psi = wh * t["inv_k2"]
        spec = torch.stack((t["iky"] * psi, -t["ikx"] * psi, t["ikx"] * wh, t["iky"] * wh))
        u, v, wx, wy = torch.fft.irfft2(spec, s=(self.grid, self.grid))
        adv = torch.fft.rfft2(u * wx + v * wy)
        return t["F"] - adv * t["keep"]

    def _step_hat(self, wh: torch.Tensor, t: dict) -> torch.Tensor:
        """One integrating-factor RK4 step in Fourier space (the equations of the module docstring)."""
        h, E, E2 = self.dt, t["E"], t["E2"]
        a = self._advection_rhs(wh, t)
        b = self._advection_rhs(E2 * (wh + 0.5 * h * a), t)
        c = self._advection_rhs(E2 * wh + 0.5 * h * b, t)
        d = self._advection_rhs(E * wh + h * (E2 * c), t)
        return E * wh + (h / 6.0) * (E * a + 2.0 * E2 * (b + c) + d)

    def _to_hat(self, w: torch.Tensor, t: dict) -> torch.Tensor:
        wh = torch.fft.rfft2(w) * t["keep"]
        wh[..., 0, 0] = 0  # zero mean vorticity
        return wh

    def _from_hat(self, wh: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(wh, s=(self.grid, self.grid))

    # ---------------------------------------------------------------------------------------------- public
    def step(self, w: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """Advance vorticity ``w`` ``(..., N, N)`` by ``steps`` time steps (``steps * dt`` time units).

        The input's mean and its modes outside the retained set (Nyquist, and beyond 2/3 with ``dealias``) are
        removed first; the result has the input's shape, dtype and device.
        """
        _check_field(w, self.grid)
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps}")
        t = self._table(w.device, w.dtype)
        wh = self._to_hat(w, t)
        for _ in range(int(steps)):
            wh = self._step_hat(wh, t)
        return self._from_hat(wh)

    def steps_for(self, duration: float) -> int:
        """The number of steps covering ``duration`` time units; it must be a whole multiple of ``dt``."""
        steps = round(duration / self.dt)
        if steps < 0 or abs(steps * self.dt - duration) > 1e-6 * max(duration, self.dt):
            raise ValueError(f"duration {duration} is not a non-negative whole multiple of dt = {self.dt}; "
                             f"choose dt = duration / k for an integer k")
        return steps

    def trajectory(self, w: torch.Tensor, length: int, interval: float) -> torch.Tensor:
        """States ``(..., length, N, N)`` at times ``interval, 2 interval, ..., length * interval`` after ``w``.

        ``interval`` must be a whole multiple of ``dt`` (see :meth:`steps_for`).
        """
        _check_field(w, self.grid)
        if int(length) != length or length < 1:
            raise ValueError(f"length must be a positive integer, got {length}")
        k = self.steps_for(interval)
        t = self._table(w.device, w.dtype)
        wh = self._to_hat(w, t)
        out = []
        for _ in range(int(length)):
            for _ in range(k):
                wh = self._step_hat(wh, t)
            out.append(self._from_hat(wh))
        return torch.stack(out, dim=-3)

    def velocity(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The velocity ``(u, v)``, each ``(..., N, N)``, of vorticity ``w``: :math:`u = \partial_y\psi`,
        :math:`v = -\partial_x\psi`, :math:`-\Delta\psi = \omega` (spectrally, on the retained modes)."""
        _check_field(w, self.grid)
        t = self._table(w.device, w.dtype)
        psi = self._to_hat(w, t) * t["inv_k2"]
        u, v = torch.fft.irfft2(torch.stack((t["iky"] * psi, -t["ikx"] * psi)), s=(self.grid, self.grid))
        return u, v

    def laminar(self, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        r"""The laminar steady state :math:`\omega_\mathrm{lam} = -A k_f \cos(k_f y) / (\nu k_f^2 + \alpha)`
        on the grid, ``(N, N)``. It needs :math:`\nu k_f^2 + \alpha > 0`."""
        rate = self.viscosity * self.wavenumber**2 + self.drag
        if rate <= 0:
            raise ValueError("the laminar state needs viscosity or drag (nu k_f^2 + drag > 0)")
        y = 2 * math.pi * torch.arange(self.grid, dtype=torch.float64) / self.grid
        w = -self.amplitude * self.wavenumber * torch.cos(self.wavenumber * y) / rate
        return w[:, None].expand(self.grid, self.grid).to(dtype=dtype, device=device).contiguous()

    def random_state(self, n: int, *, peak: float = 4.0, speed: float = 1.0, seed: int | tuple[int, ...] = 0,
                     dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        r"""``n`` random vorticity fields ``(n, N, N)``: a Gaussian field with energy spectrum
        :math:`E(k) \propto k^4 e^{-2 (k/k_p)^2}` (peak at :math:`k_p` = ``peak``), each scaled to an rms
        velocity of ``speed``, holding only the modes the solver keeps. ``seed`` is a non-negative int or a
        tuple of them; field ``b`` depends only on ``(seed, b)`` (the ``b``-th child of
        ``numpy.random.SeedSequence``), not on ``n``.
        """
        seeds = tuple(seed) if isinstance(seed, (tuple, list)) else (seed,)
        if not seeds or any(int(s) != s or s < 0 for s in seeds):
            raise ValueError(f"seed must be a non-negative integer or a tuple of them, got {seed!r}")
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        if not (peak > 0 and speed >= 0):
            raise ValueError(f"peak must be positive and speed non-negative, got peak={peak}, speed={speed}")
        N = self.grid
        kmag = torch.sqrt(torch.fft.fftfreq(N, 1.0 / N, dtype=torch.float64)[:, None] ** 2
                          + torch.fft.rfftfreq(N, 1.0 / N, dtype=torch.float64)[None, :] ** 2)
        # a shell holds ~2 pi k modes of energy |omega_hat|^2 / (2 k^2) each, so |omega_hat|^2 ~ k E(k)
        amp = kmag**2.5 * torch.exp(-((kmag / peak) ** 2))
        fields = []
        for child in np.random.SeedSequence([*map(int, seeds), 0x4B6F6C6D]).spawn(int(n)):
            noise = torch.from_numpy(np.random.default_rng(child).standard_normal((N, N)))
            fields.append(torch.fft.irfft2(torch.fft.rfft2(noise) * amp, s=(N, N)))
        w = self.step(torch.stack(fields), steps=0)  # zero mean, only the retained (dealiased) modes
        w = w.to(dtype=dtype, device=device)
        u, v = self.velocity(w)
        rms = (u**2 + v**2).mean(dim=(-2, -1), keepdim=True).sqrt()
        return w * (speed / rms.clamp_min(torch.finfo(w.dtype).tiny))


def energy_spectrum(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Shell-summed kinetic-energy spectrum of vorticity fields ``w`` ``(..., N, N)`` on :math:`[0, 2\pi)^2`.

    :math:`E(k) = \sum_{k - 1/2 \le |\mathbf k| < k + 1/2} \tfrac12 |\hat\omega_\mathbf{k}|^2 / |\mathbf k|^2`
    with :math:`\hat\omega` normalised so that (Parseval) ``E.sum(-1)`` is the mean kinetic energy
    :math:`\langle \tfrac12 |\mathbf u|^2 \rangle` of the zero-mean field.

    Returns:
        ``(k, E)``: integer shell wavenumbers ``(K,)`` and the spectrum ``(..., K)``, ``K = floor(N / sqrt 2) + 2``.

    Examples:
        >>> x = 2 * torch.pi * torch.arange(16) / 16
        >>> w = 2 * torch.sin(x)[None, :] * torch.sin(x)[:, None]  # Taylor-Green: |k| = sqrt 2, <|u|^2>/2 = 1/4
        >>> k, E = energy_spectrum(w.double())
        >>> int(E.argmax()), round(float(E.sum()), 6)
        (1, 0.25)
    """
    _check_field(w)
    N = w.shape[-1]
    wh = torch.fft.rfft2(w) / N**2
    ky = torch.fft.fftfreq(N, 1.0 / N, dtype=torch.float64, device=w.device)
    kx = torch.fft.rfftfreq(N, 1.0 / N, dtype=torch.float64, device=w.device)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    weight = torch.full_like(kx, 2.0)  # the columns 1 .. N/2 - 1 stand for their conjugate columns too
    weight[0] = 1.0
    weight[-1] = 1.0
    dens = 0.5 * wh.abs().to(torch.float64) ** 2 * torch.where(k2 > 0, 1.0 / k2.clamp_min(1.0), 0.0) * weight
    shell = torch.round(k2.sqrt()).long()
    K = int(N / math.sqrt(2)) + 2
    E = torch.zeros(*w.shape[:-2], K, dtype=torch.float64, device=w.device)
    E.index_add_(-1, shell.flatten(), dens.flatten(-2))
    return torch.arange(K, device=w.device), E.to(w.dtype)


def coarsen(w: torch.Tensor, size: int) -> torch.Tensor:
    """Block-average fields ``(..., N, N)`` to ``(..., size, size)`` (``N`` a multiple of ``size``): each coarse
    cell is the mean over its ``N/size`` x ``N/size`` fine cells, so means (circulation) are preserved."""
    _check_field(w)
    N = w.shape[-1]
    if size < 1 or N % size:
        raise ValueError(f"the grid {N} must be a multiple of size {size}")
    r = N // size
    return w.reshape(*w.shape[:-2], size, r, size, r).mean(dim=(-3, -1))


_SPLITS = {"train": 0, "test": 1}


class KolmogorovFlow(Dataset):
    r"""Standardised vorticity of turbulent Kolmogorov flow, states ``(1, size, size)`` or trajectories
    ``(length, 1, size, size)``, float32 (final class).

    **Simulation.** ``trajectories`` independent flows (default ``min(n, 64)``) start from random fields
    (:meth:`KolmogorovSolver.random_state`: energy peaked at wavenumber 4, rms speed 1), run ``spinup`` time
    units onto the turbulent attractor with :class:`KolmogorovSolver` on a ``grid`` x ``grid`` mesh, then are
    recorded every ``interval`` time units (the first record at ``spinup + interval``). Item ``i`` is window
    ``i // trajectories`` of flow ``i % trajectories``; windows hold ``length`` consecutive records and follow
    each other without gap or overlap, so with ``length=1`` the states of one flow are ``interval`` apart and a
    longer data set extends a shorter one with the same ``trajectories``. Neighbouring states are strongly
    correlated: measured correlation of the standardised vorticity 0.85 at lag 0.2, 0.37 at lag 1, 0.19 at
    lag 2 (the 0.2 spacing is that of score-based data assimilation, made for trajectory windows); thin out
    or raise ``interval`` when training on states. Initial conditions are drawn from
    ``numpy.random.SeedSequence((seed, split, flow))``, so ``split="test"`` never shares a flow with
    ``"train"`` (nor another ``seed``), and being chaotic their states never come close.

    **Coarsening and units.** The fine vorticity is block-averaged to ``size`` x ``size`` (the mean of each
    ``grid/size`` x ``grid/size`` block, as score-based data assimilation coarsens; it keeps the zero mean) and
    divided by the fixed :attr:`scale` = 4.5, the measured stationary standard deviation of the 64 x 64
    block-averaged vorticity (4.55 over 2,048 states of 64 flows at ``grid=128``; the stored images have std
    1.01, and 1.00 over 10,000 states, steady from the first record on, so ``spinup=10`` reaches the
    statistically stationary state). Vorticity is unbounded, so :attr:`value_range` is ``None``; measured, 99 %
    of image values lie in (-3.05, 3.0) and 99.9 % in (-4.15, 4.15), the extreme was 5.7. Multiply by
    :attr:`scale` to get the vorticity in the units of the equation (domain :math:`2\pi`, forcing amplitude 1).

    **Grid trade-off.** The default fine grid is 128 (2/3-rule cut-off at 42). At ``Re = 1000`` its energy
    spectrum falls ~5 decades below the peak by the cut-off (shells >= 35 hold < 1e-4 of the energy): resolved.
    256 costs ~12 x more per time unit (4 x the points, half the step) and adds only wavenumbers above 42,
    finer than the 64 x 64 states hold (up to 32); 64 (cut-off 21) runs ~8 x faster, but its spectrum tail
    stands only ~1e-3 below the peak (under-resolved: fine for tests, not for training data).

    **Cost** (one CPU core, float32, ``grid=128``, ``dt=0.01``): about 0.065 s per flow and time unit (flows
    run in groups of 4 on the CPU, all at once on CUDA). Measured: 2,000 states (64 flows, spin-up 10 then 32
    records: 16.4 time units each) in 65 s; 10,000 states (157 records each, 41.4 time units) in 170 s, with
    image std 1.00 and no instability. The same code runs on a CUDA ``device``.

    Args:
        n: number of items.
        size: side of the coarse states (a divisor of ``grid``).
        seed: seeds the initial conditions.
        split: ``"train"`` or ``"test"``: disjoint flows for the same ``seed``.
        grid: fine grid of the solver (even).
        reynolds: Reynolds number (viscosity ``1 / reynolds``); forcing wavenumber 4, drag 0.1 as in the paper.
        spinup: time units simulated before recording (a whole multiple of ``dt``).
        interval: time units between records (a whole multiple of ``dt``).
        length: records per item; ``1`` gives states ``(1, size, size)``, more gives ``(length, 1, size, size)``.
        trajectories: number of independent flows (default ``min(n, 64)``); each gives ``ceil(n / trajectories)``
            items.
        dt: solver step; default the largest of ``interval / m`` (``m`` a whole number) not above
            ``1.28 / grid``.
        cache: optional ``.pt`` or ``.npz`` path: loaded if it exists (its recorded arguments must match these),
            else written after generation (atomically). Nothing is written when it is ``None`` (the default).
        device: where to simulate (``"cuda"`` works); the images are returned on the CPU.

    The states are a deterministic function of all the arguments for a given torch build and device. The flow
    is chaotic, so a rounding difference (CPU vs CUDA, another FFT library) grows into different states with the
    same statistics after a few time units.

    Attributes:
        images: all items, ``(n, 1, size, size)`` or ``(n, length, 1, size, size)``, standardised vorticity.
        scale: the vorticity per unit of the stored images (a class constant).
        value_range: ``None`` (vorticity is unbounded; see above).
        solver: the :class:`KolmogorovSolver` that generated the data.

    References:
        Rozet & Louppe (2023), "Score-based Data Assimilation".
        Kochkov et al. (2021), "Machine learning-accelerated computational fluid dynamics".

    Examples:
        >>> ds = KolmogorovFlow(4, size=16, grid=32, spinup=1.0, trajectories=2)
        >>> ds[0].shape, len(ds), ds.images.dtype
        (torch.Size([1, 16, 16]), 4, torch.float32)
        >>> KolmogorovFlow(2, size=16, grid=32, spinup=1.0, length=3).images.shape
        torch.Size([2, 3, 1, 16, 16])
    """

    #: vorticity per unit of the stored images: the stationary std of the 64 x 64 block-averaged vorticity at Re 1000
    scale: float = 4.5
    #: vorticity is unbounded
    value_range = None

    def __init__(self, n: int, size: int = 64, *, seed: int = 0, split: str = "train", grid: int = 128,
                 reynolds: float = 1000.0, spinup: float = 10.0, interval: float = 0.2, length: int = 1,
                 trajectories: int | None = None, dt: float | None = None, cache: str | os.PathLike | None = None,
                 device=None):
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        if int(size) != size or size < 1 or grid % size:
            raise ValueError(f"size must be a positive divisor of grid={grid}, got {size}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, _SPLITS))}, got {split!r}")
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be a positive number of time units, got {interval}")
        if not (spinup >= 0 and math.isfinite(spinup)):
            raise ValueError(f"spinup must be a non-negative number of time units, got {spinup}")
        if int(length) != length or length < 1:
            raise ValueError(f"length must be a positive integer, got {length}")
        trajectories = min(int(n), 64) if trajectories is None else trajectories
        if int(trajectories) != trajectories or trajectories < 1:
            raise ValueError(f"trajectories must be a positive integer, got {trajectories}")
        if dt is None:
            dt = interval / math.ceil(interval / (1.28 / grid) - 1e-9)
        self.solver = KolmogorovSolver(grid, reynolds=reynolds, wavenumber=4, drag=0.1, dt=dt)
        self.solver.steps_for(interval)  # interval and spinup must be whole multiples of dt
        self.solver.steps_for(spinup)
        self.n, self.size, self.seed, self.split = int(n), int(size), int(seed), split
        self.grid, self.interval, self.length = int(grid), float(interval), int(length)
        self.spinup, self.trajectories = float(spinup), int(trajectories)
        config = dict(n=self.n, size=self.size, seed=self.seed, split=split, grid=self.grid,
                      reynolds=float(reynolds), spinup=self.spinup, interval=self.interval, length=self.length,
                      trajectories=self.trajectories, dt=float(dt), scale=float(self.scale))
        self.config = config
        path = None if cache is None else Path(cache)
        if path is not None and path.suffix not in (".pt", ".npz"):
            raise ValueError(f"cache must be a .pt or .npz path, got {str(path)!r}")
        if path is not None and path.exists():
            self.images = self._load(path, config)
        else:
            self.images = self._generate(device)
            if path is not None:
                self._save(path, config, self.images)

    def _generate(self, device) -> torch.Tensor:
        solver, B, T = self.solver, self.trajectories, self.length
        windows = math.ceil(self.n / B)
        w0 = solver.random_state(B, seed=(self.seed, _SPLITS[self.split]), device=device)
        # flows are independent: on the CPU small groups stay in cache (4 flows run ~1.5 x faster per flow than 64)
        group = B if w0.is_cuda else 4
        records = []
        for w in w0.split(group):
            w = solver.step(w, solver.steps_for(self.spinup))
            # records at spinup + interval, ..., spinup + windows * T * interval
            fine = solver.trajectory(w, windows * T, self.interval)
            records.append(coarsen(fine, self.size).cpu())
        states = torch.cat(records) / self.scale  # (B, windows * T, size, size)
        if not torch.isfinite(states).all():
            raise RuntimeError(f"the simulation became unstable (non-finite vorticity); lower dt (was {solver.dt})")
        states = states.reshape(B, windows, T, self.size, self.size).transpose(0, 1)
        states = states.reshape(B * windows, T, 1, self.size, self.size)[: self.n].to(torch.float32)
        return states[:, 0].contiguous() if T == 1 else states.contiguous()

    @staticmethod
    def _load(path: Path, config: dict) -> torch.Tensor:
        if path.suffix == ".npz":
            with np.load(path) as f:
                stored, images = json.loads(str(f["config"])), torch.from_numpy(f["images"])
        else:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            stored, images = blob["config"], blob["images"]
        if stored != config:
            diff = {k: (stored.get(k), v) for k, v in config.items() if stored.get(k) != v}
            raise ValueError(f"cache {str(path)!r} was made with other arguments (stored, requested): {diff}; "
                             f"delete it or pass another path")
        return images

    @staticmethod
    def _save(path: Path, config: dict, images: torch.Tensor) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
        try:
            if path.suffix == ".npz":
                np.savez(tmp, images=images.numpy(), config=np.array(json.dumps(config)))
            else:
                torch.save({"config": config, "images": images}, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]
