"""Weather operators: station interpolation against scipy, periodic wrap, coarse grids against numpy loops and
spherical areas, closed-form likelihood steps against dense algebra, and time subsampling / composition."""

import math

import numpy as np
import pytest
import scipy.interpolate
import torch

from invdiff.operators import GaussianNoise, LinearOperator, compose
from invdiff.operators.weather import CoarseGrid, StationObservations, TimeSubsampling
from invdiff.testing import check_operator

# a 5 x 7.5 degree regional-in-latitude, global-in-longitude grid: 28 x 48
LAT = np.linspace(-60.0, 75.0, 28)
LON = np.arange(0.0, 360.0, 7.5)


def _field(shape, gen):
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _stations(n, gen, lon_lo=0.0, lon_hi=LON[-1], lat_lo=LAT[0], lat_hi=LAT[-1]):
    u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    return torch.stack([lat_lo + (lat_hi - lat_lo) * u[:, 0], lon_lo + (lon_hi - lon_lo) * u[:, 1]], 1)


def _rgi(lat, lon, field, stations):
    interp = scipy.interpolate.RegularGridInterpolator((lat, lon), np.asarray(field), method="linear")
    return interp(np.asarray(stations))


# -- StationObservations --------------------------------------------------------------------------------------
def test_stations_match_scipy_away_from_the_wrap(gen):
    """Bilinear values equal scipy's linear RegularGridInterpolator; the station longitude convention is irrelevant."""
    st = _stations(200, gen)
    st = torch.cat([st, torch.tensor([[LAT[3], LON[5]], [LAT[-1], LON[0]], [LAT[0], LON[-1]]])])  # grid nodes, corners
    x = _field((28, 48), gen)
    ref = _rgi(LAT, LON, x, st)
    y = StationObservations(LAT, LON, st)(x)
    assert np.abs(y.numpy() - ref).max() < 1e-13
    st180 = st.clone()
    st180[:, 1] = torch.where(st[:, 1] >= 180, st[:, 1] - 360, st[:, 1])  # same stations in [-180, 180)
    assert torch.allclose(StationObservations(LAT, LON, st180)(x), y, atol=1e-13, rtol=0)
    assert torch.equal(y[-3:], torch.stack([x[3, 5], x[-1, 0], x[0, -1]]))  # nodes are reproduced exactly


def test_stations_wrap_equals_hand_periodised_grid(gen):
    """A station between the last longitude (352.5) and 360 interpolates with the first column."""
    st = _stations(50, gen, lon_lo=LON[-1], lon_hi=360.0)
    st = torch.cat([st, torch.tensor([[10.0, -1.0], [-20.0, 359.999], [0.0, 720.0 - 3.75]])])  # other conventions
    x = _field((28, 48), gen)
    lon_ext = np.append(LON, 360.0)
    x_ext = torch.cat([x, x[:, :1]], 1)
    ref = _rgi(LAT, lon_ext, x_ext, torch.stack([st[:, 0], torch.remainder(st[:, 1], 360.0)], 1))
    op = StationObservations(LAT, LON, st)
    assert op.periodic
    assert np.abs(op(x).numpy() - ref).max() < 1e-13
    # weights really span the seam: 3.75 degrees west of 360 is halfway between columns 47 and 0
    cols = op.index[-1] % 48
    half = torch.full((2,), 0.5, dtype=torch.float64)
    assert set(cols.tolist()) == {47, 0} and torch.allclose(op.weights[-1].reshape(2, 2).sum(0), half)


def test_stations_descending_latitude_equals_flipped_ascending(gen):
    st = torch.cat([_stations(60, gen), _stations(10, gen, lon_lo=352.5, lon_hi=360.0)])
    x = _field((2, 28, 48), gen)
    asc = StationObservations(LAT, LON, st, in_shape=(28, 48))
    desc = StationObservations(LAT[::-1].copy(), LON, st)
    assert torch.allclose(desc(x.flip(-2)), asc(x), atol=1e-14, rtol=0)
    y = _field((2, 70), gen)
    assert torch.allclose(desc.adjoint(y), asc.adjoint(y).flip(-2), atol=1e-14, rtol=0)


def test_stations_longitude_convention_of_the_grid(gen):
    """A [-180, 180) grid with the field rolled by half a turn gives the same station values as the [0, 360) grid."""
    st = torch.cat([_stations(60, gen, lon_lo=-180.0, lon_hi=180.0), torch.tensor([[5.0, 176.0], [5.0, -178.0]])])
    x = _field((28, 48), gen)
    y360 = StationObservations(LAT, LON, st)(x)
    y180 = StationObservations(LAT, LON - 180.0, st)(torch.roll(x, 24, dims=-1))
    assert torch.allclose(y180, y360, atol=1e-13, rtol=0)


def test_stations_reproduce_fields_linear_in_latitude_and_constants(gen):
    """Bilinear interpolation is exact for constants and for fields linear in latitude (periodic in longitude),
    at every station including those across the seam; each row of A has at most 4 entries summing to 1."""
    st = torch.cat([_stations(100, gen, lon_lo=-180.0, lon_hi=180.0), _stations(20, gen, lon_lo=352.5, lon_hi=360.0)])
    op = StationObservations(LAT, LON, st)
    field = 3.0 + 0.2 * torch.as_tensor(LAT)[:, None].expand(28, 48)
    assert torch.allclose(op(field), 3.0 + 0.2 * st[:, 0], atol=1e-12, rtol=0)
    A = op.to_matrix(torch.float64)
    assert torch.allclose(A.sum(1), torch.ones(120, dtype=torch.float64), atol=1e-14)
    assert int((A != 0).sum(1).max()) <= 4 and bool((A >= 0).all())


def test_stations_adjoint_is_the_dense_transpose_and_lead_dims_act_per_slice(gen):
    st = torch.cat([_stations(15, gen), torch.tensor([[0.0, 359.0], [0.0, 359.0]])])  # a repeated station
    op2d = StationObservations(LAT, LON, st)
    op = StationObservations(LAT, LON, st, in_shape=(2, 3, 28, 48))
    A = op2d.to_matrix(torch.float64)
    x = _field((4, 2, 3, 28, 48), gen)
    y = _field((4, 2, 3, 17), gen)
    assert torch.allclose(op(x), (x.reshape(4, 2, 3, -1) @ A.T), atol=1e-13)
    assert torch.allclose(op.adjoint(y), (y @ A).reshape(4, 2, 3, 28, 48), atol=1e-13)
    loop = torch.stack([torch.stack([op2d(x[0, c, v]) for v in range(3)]) for c in range(2)])
    assert torch.equal(op(x[0]), loop)
    # float32 input computes in float32 and agrees with float64 to single precision
    y32 = op(x.float())
    assert y32.dtype == torch.float32 and torch.allclose(y32.double(), op(x), atol=1e-5)


def test_stations_regional_grid(gen):
    """A longitude sector is not periodic: stations inside match scipy, stations east of it raise."""
    lon = np.arange(-30.0, 40.0, 2.5)
    st = _stations(40, gen, lon_lo=-30.0, lon_hi=lon[-1])
    x = _field((28, lon.size), gen)
    op = StationObservations(LAT, lon, st)
    assert not op.periodic
    assert np.abs(op(x).numpy() - _rgi(LAT, lon, x, st)).max() < 1e-13
    with pytest.raises(ValueError, match="east of this regional grid"):
        StationObservations(LAT, lon, [[0.0, 50.0]])
    with pytest.raises(ValueError, match="periodic=True needs a global grid"):
        StationObservations(LAT, lon, [[0.0, 0.0]], periodic=True)


def test_stations_errors():
    with pytest.raises(ValueError, match="outside the grid's latitude range"):
        StationObservations(LAT, LON, [[10.0, 5.0], [80.0, 5.0]])
    gaussian_like = np.degrees(np.arcsin(np.linspace(-0.9, 0.9, 20)))
    with pytest.raises(ValueError, match="regular grid"):
        StationObservations(gaussian_like, LON, [[0.0, 5.0]])
    with pytest.raises(ValueError, match="strictly increasing or decreasing"):
        StationObservations(np.array([0.0, 10.0, 10.0, 20.0]), LON, [[0.0, 5.0]])
    with pytest.raises(ValueError, match="repeats the first"):
        StationObservations(LAT, np.arange(0.0, 367.5, 7.5), [[0.0, 5.0]])
    with pytest.raises(ValueError, match="shape \\(n, 2\\)"):
        StationObservations(LAT, LON, [[0.0, 5.0, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        StationObservations(LAT, LON, [[0.0, float("nan")]])
    with pytest.raises(ValueError, match="must end with the grid's"):
        StationObservations(LAT, LON, [[0.0, 5.0]], in_shape=(3, 48, 28))
    with pytest.raises(ValueError, match=r"\[-90, 90\]"):
        StationObservations(np.linspace(-100, 100, 11), LON, [[0.0, 5.0]])
    op = StationObservations(LAT, LON, [[0.0, 5.0]])
    with pytest.raises(ValueError, match="expected shape"):
        op.adjoint(torch.zeros(3))
    with pytest.raises(ValueError, match="expected shape"):
        op(torch.zeros(48, 28))


# -- CoarseGrid -----------------------------------------------------------------------------------------------
def _loop_coarse(x, lat, fy, fx, weighting):
    """numpy reference: weighted block means with a_i = band area (clipped at the poles) or cos(lat)."""
    x = np.asarray(x)
    H, W = x.shape
    d = abs(lat[1] - lat[0])
    out = np.zeros((H // fy, W // fx))
    for I in range(H // fy):
        for J in range(W // fx):
            num = den = 0.0
            for i in range(I * fy, (I + 1) * fy):
                if weighting == "cos":
                    a = math.cos(math.radians(lat[i]))
                else:
                    top, bot = min(lat[i] + d / 2, 90.0), max(lat[i] - d / 2, -90.0)
                    a = math.sin(math.radians(top)) - math.sin(math.radians(bot))
                for j in range(J * fx, (J + 1) * fx):
                    num += a * x[i, j]
                    den += a
            out[I, J] = num / den
    return out


@pytest.mark.parametrize("weighting", ["area", "cos"])
def test_coarse_grid_matches_numpy_loop(weighting, gen):
    lat = np.linspace(87.5, -87.5, 36)  # cell centres, north to south
    lon = np.arange(-180.0, 180.0, 5.0)
    x = _field((36, 72), gen)
    op = CoarseGrid((3, 4), lat, lon, weighting=weighting)
    ref = _loop_coarse(x, lat, 3, 4, weighting)
    assert np.abs(op(x).numpy() - ref).max() < 1e-13
    assert np.allclose(op.lat_coarse.numpy(), lat.reshape(12, 3).mean(1), atol=1e-12)
    assert np.allclose(op.lon_coarse.numpy(), lon.reshape(18, 4).mean(1), atol=1e-12)


def test_coarse_grid_keeps_constants_and_the_global_area_mean(gen):
    """A constant maps to itself; the area-weighted global mean is preserved, with every cell's area (fine and
    coarse, pole caps included) computed from its edges on the unit sphere, where all areas sum to 4 pi."""
    lat = np.linspace(90.0, -90.0, 25)  # 7.5 degree grid including both poles
    lon = np.arange(0.0, 360.0, 7.5)
    op = CoarseGrid((5, 4), lat, lon, in_shape=(2, 25, 48))
    c = torch.tensor([280.0, -3.5], dtype=torch.float64)[:, None, None]
    assert torch.allclose(op(c.expand(2, 25, 48)), c.expand(2, 5, 12), atol=1e-12, rtol=0)

    def band_area(north, south, dlon):
        return math.radians(dlon) * (math.sin(math.radians(north)) - math.sin(math.radians(south)))

    fine = np.array([band_area(min(p + 3.75, 90), max(p - 3.75, -90), 7.5) for p in lat])
    coarse = np.array([band_area(min(lat[5 * I] + 3.75, 90), max(lat[5 * I + 4] - 3.75, -90), 30.0) for I in range(5)])
    assert abs(fine.sum() * 48 - 4 * math.pi) < 1e-12 and abs(coarse.sum() * 12 - 4 * math.pi) < 1e-12
    x = _field((2, 25, 48), gen)
    fine_mean = (x.numpy() * fine[:, None]).sum((-2, -1)) / (fine.sum() * 48)
    coarse_mean = (op(x).numpy() * coarse[:, None]).sum((-2, -1)) / (coarse.sum() * 12)
    assert np.abs(coarse_mean - fine_mean).max() < 1e-14


def test_coarse_grid_remainder_policy(gen):
    lat = np.linspace(90.0, -90.0, 13)
    lon = np.arange(0.0, 360.0, 15.0)
    with pytest.raises(ValueError, match="remainder='trim'"):
        CoarseGrid(4, lat, lon)
    op = CoarseGrid(4, lat, lon, remainder="trim")
    cropped = CoarseGrid(4, lat[:12], lon)
    x = _field((3, 13, 24), gen)
    assert torch.allclose(op(x), cropped(x[:, :12]), atol=1e-14, rtol=0)
    back = op.adjoint(_field((3, 3, 6), gen))
    assert back.shape == (3, 13, 24) and torch.equal(back[:, 12], torch.zeros(3, 24, dtype=torch.float64))
    assert check_operator(op)["adjoint"] < 1e-12


def _dense_posterior_mean(A, std, y, z, rho):
    W = torch.diag(1.0 / torch.broadcast_to(std, y.shape).reshape(-1) ** 2)
    P = A.T @ W @ A + torch.eye(A.shape[1], dtype=A.dtype) / rho**2
    return torch.linalg.solve(P, A.T @ W @ y.reshape(-1) + z.reshape(-1) / rho**2)


def _coarse_small():
    return CoarseGrid((2, 3), np.linspace(80.0, -70.0, 4), np.arange(0.0, 360.0, 60.0),
                      noise=GaussianNoise(torch.tensor([[0.1], [0.3]])))


def _time_small():
    return TimeSubsampling(6, state_shape=(2, 2), times=[4, 1, 2], noise=GaussianNoise(0.2))


@pytest.mark.parametrize("factory", [_coarse_small, _time_small])
def test_closed_form_pinv_and_prox_match_dense_algebra(factory, gen):
    op = factory()
    A = op.to_matrix(torch.float64)
    std = op.noise.std.to(torch.float64)
    y = _field((2,) + op.out_shape, gen)
    z = _field((2,) + op.in_shape, gen)
    assert torch.allclose(op.pinv(y).reshape(2, -1), y.reshape(2, -1) @ torch.linalg.pinv(A).T, atol=1e-12)
    gram = A @ A.T
    assert torch.allclose(gram, torch.diag(gram.diagonal()), atol=1e-15)  # rows do not overlap
    rhos = torch.tensor([0.3, 2.0], dtype=torch.float64)
    x = op.prox_likelihood(z, y, rhos)
    for b in range(2):
        ref = _dense_posterior_mean(A, std, y[b], z[b], float(rhos[b]))
        assert torch.allclose(x[b].reshape(-1), ref, atol=1e-12)
    generic = LinearOperator.prox_likelihood(op, z, y, rhos, tol=1e-13, max_iter=500)
    assert torch.allclose(generic, x, atol=1e-9)


def test_coarse_grid_sample_conditional_is_the_exact_gaussian(gen):
    """Mean and covariance of 20000 draws within 5 standard errors of the dense-algebra posterior."""
    op = _coarse_small()
    A = op.to_matrix(torch.float64)
    std = torch.broadcast_to(op.noise.std.to(torch.float64), op.out_shape).reshape(-1)
    y, z, rho, N = _field(op.out_shape, gen), _field(op.in_shape, gen), 0.7, 20_000
    P = A.T @ torch.diag(1 / std**2) @ A + torch.eye(24, dtype=torch.float64) / rho**2
    cov = torch.linalg.inv(P)
    mean = cov @ (A.T @ (y.reshape(-1) / std**2) + z.reshape(-1) / rho**2)
    X = op.sample_conditional(z.expand(N, 4, 6), y, rho, generator=gen).reshape(N, -1)
    assert ((X.mean(0) - mean).abs() / (cov.diagonal() / N).sqrt()).max() < 5
    var = cov.diagonal()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    assert ((torch.cov(X.T) - cov).abs() / se_cov).max() < 5


def test_coarse_grid_errors():
    lat, lon = np.linspace(-45, 45, 4), np.arange(0.0, 360.0, 90.0)
    for bad in (0, 2.5, (2, 0), (1, 2, 3), True):
        with pytest.raises(ValueError, match="factor must be"):
            CoarseGrid(bad, lat, lon)
    with pytest.raises(ValueError, match="weighting"):
        CoarseGrid(2, lat, lon, weighting="none")
    with pytest.raises(ValueError, match="remainder"):
        CoarseGrid(2, lat, lon, remainder="pad")
    with pytest.raises(ValueError, match="larger than"):
        CoarseGrid(8, lat, lon, remainder="trim")
    with pytest.raises(ValueError, match="zero total cos-latitude weight"):
        CoarseGrid((1, 2), np.linspace(-90, 90, 5), lon, weighting="cos")
    with pytest.raises(ValueError, match="must end with the grid's"):
        CoarseGrid(2, lat, lon, in_shape=(4, 4, 2))


# -- TimeSubsampling and composition --------------------------------------------------------------------------
def test_time_subsampling_selects_and_adjoint_scatters(gen):
    x = _field((3, 10, 2, 5), gen)
    op = TimeSubsampling(10, state_shape=(2, 5), every=3, offset=2)
    assert op.times.tolist() == [2, 5, 8] and op.n_observed == 3
    assert np.array_equal(op(x).numpy(), x.numpy()[:, 2::3])
    op_t = TimeSubsampling(10, state_shape=(2, 5), times=torch.tensor([7, 0, 3]))
    assert np.array_equal(op_t(x).numpy(), x.numpy()[:, [7, 0, 3]])
    y = _field((3, 3, 2, 5), gen)
    ref = np.zeros((3, 10, 2, 5))
    for k, t in enumerate([7, 0, 3]):
        ref[:, t] = y[:, k].numpy()
    assert np.array_equal(op_t.adjoint(y).numpy(), ref)
    assert torch.equal(op_t.pinv(y), op_t.adjoint(y))  # S S^T = I
    scalar = TimeSubsampling(4, state_shape=(), every=2)
    assert scalar.in_shape == (4,) and torch.equal(scalar(torch.arange(4.0)), torch.tensor([0.0, 2.0]))


def test_stations_after_time_subsampling_equals_the_loop(gen):
    """Composite trajectory -> station series: forward, adjoint and contract against a per-time loop."""
    lat, lon = np.linspace(90.0, -90.0, 13), np.arange(-180.0, 180.0, 15.0)
    st = torch.tensor([[51.5, -0.1], [-33.9, 151.2], [64.1, -21.9], [0.0, 179.0], [-89.0, -175.0]],
                      dtype=torch.float64)
    times = TimeSubsampling(8, state_shape=(13, 24), every=3)
    spatial = StationObservations(lat, lon, st, in_shape=(times.n_observed, 13, 24), noise=GaussianNoise(0.5))
    op = spatial @ times
    assert op.in_shape == (8, 13, 24) and op.out_shape == (3, 5) and op.noise is spatial.noise
    per_time = StationObservations(lat, lon, st)
    x = _field((2, 8, 13, 24), gen)
    loop = torch.stack([torch.stack([per_time(x[b, t]) for t in (0, 3, 6)]) for b in range(2)])
    assert torch.allclose(op(x), loop, atol=1e-14, rtol=0)
    y = _field((2, 3, 5), gen)
    back = torch.zeros(2, 8, 13, 24, dtype=torch.float64)
    for k, t in enumerate((0, 3, 6)):
        back[:, t] = per_time.adjoint(y[:, k])
    assert torch.allclose(op.adjoint(y), back, atol=1e-14, rtol=0)
    assert check_operator(op)["adjoint"] < 1e-12
    # a fully observed trajectory also works with the time dim as a batch dim
    assert torch.equal(per_time(x[0]), torch.stack([per_time(x[0, t]) for t in range(8)]))
    coarse = CoarseGrid(3, lat[:12], lon, in_shape=(3, 12, 24)) @ TimeSubsampling(8, state_shape=(12, 24), every=3)
    assert torch.allclose(coarse(x[:, :, :12]), CoarseGrid(3, lat[:12], lon)(x[:, ::3, :12]), atol=1e-14, rtol=0)


def test_time_subsampling_errors():
    with pytest.raises(ValueError, match="exactly one of"):
        TimeSubsampling(5, state_shape=(2,))
    with pytest.raises(ValueError, match="exactly one of"):
        TimeSubsampling(5, state_shape=(2,), every=2, times=[0])
    with pytest.raises(ValueError, match="distinct"):
        TimeSubsampling(5, state_shape=(2,), times=[1, 1])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        TimeSubsampling(5, state_shape=(2,), times=[0, 5])
    with pytest.raises(ValueError, match="integer time indices"):
        TimeSubsampling(5, state_shape=(2,), times=[0.5])
    with pytest.raises(ValueError, match="every must be"):
        TimeSubsampling(5, state_shape=(2,), every=0)
    with pytest.raises(ValueError, match="offset"):
        TimeSubsampling(5, state_shape=(2,), every=2, offset=5)
    with pytest.raises(ValueError, match="n_times"):
        TimeSubsampling(0, state_shape=(2,), every=1)
    times = TimeSubsampling(6, state_shape=(13, 24), every=2)  # 3 observed times
    wrong = StationObservations(np.linspace(90, -90, 13), np.arange(0.0, 360.0, 15.0), [[0.0, 0.0]],
                                in_shape=(2, 13, 24))
    with pytest.raises(ValueError, match="shapes must match"):
        compose(wrong, times)
