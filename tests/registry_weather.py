"""Weather-field operators for the contract suite (small global grids, some stations across the wrap)."""

import torch

from invdiff.operators import GaussianNoise
from invdiff.operators.weather import CoarseGrid, StationObservations, TimeSubsampling

# a 15-degree global grid with both poles: 13 latitudes, 24 longitudes
LAT_ASC = torch.linspace(-90.0, 90.0, 13, dtype=torch.float64)
LON_360 = torch.arange(0.0, 360.0, 15.0, dtype=torch.float64)
LON_180 = torch.arange(-180.0, 180.0, 15.0, dtype=torch.float64)


def _stations(n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, generator=g, dtype=torch.float64) * 170.0 - 85.0
    lon = torch.rand(n, generator=g, dtype=torch.float64) * 360.0 - 180.0
    wrap = torch.tensor([[10.0, 352.0], [-33.0, -3.5], [89.0, 359.9]], dtype=torch.float64)  # between 345 and 0
    return torch.cat([torch.stack([lat, lon], 1), wrap])


def weather_stations_ascending():
    return StationObservations(LAT_ASC, LON_360, _stations(), noise=GaussianNoise(0.5))


def weather_stations_descending_lon180():
    return StationObservations(LAT_ASC.flip(0), LON_180, _stations(seed=1), noise=GaussianNoise(0.2))


def weather_stations_channels():
    return StationObservations(LAT_ASC, LON_360, _stations(5), in_shape=(3, 13, 24))


def weather_coarse_grid():
    return CoarseGrid(4, torch.linspace(88.5, -88.5, 60, dtype=torch.float64)[:16], torch.arange(0, 360, 22.5),
                      noise=GaussianNoise(0.1))


def weather_coarse_grid_trim_cos():
    return CoarseGrid((3, 4), LAT_ASC, LON_360, weighting="cos", remainder="trim",
                      noise=GaussianNoise(torch.linspace(0.1, 0.4, 6).reshape(1, 6)))


def weather_time_subsampling():
    return TimeSubsampling(7, state_shape=(4, 5), every=3, offset=1, noise=GaussianNoise(0.3))


def weather_time_subsampling_times():
    return TimeSubsampling(6, state_shape=(2, 3, 3), times=[5, 0, 2], noise=GaussianNoise(0.3))


def weather_stations_after_time_subsampling():
    times = TimeSubsampling(6, state_shape=(13, 24), every=2)
    return StationObservations(LAT_ASC, LON_360, _stations(), in_shape=(times.n_observed, 13, 24),
                               noise=GaussianNoise(0.5)) @ times


def weather_coarse_after_time_subsampling():
    times = TimeSubsampling(5, state_shape=(12, 24), times=[1, 4])
    return CoarseGrid(3, LAT_ASC[:12], LON_360, in_shape=(2, 12, 24), noise=GaussianNoise(0.1)) @ times


OPERATORS = {
    "weather_stations_ascending": weather_stations_ascending,
    "weather_stations_descending_lon180": weather_stations_descending_lon180,
    "weather_stations_channels": weather_stations_channels,
    "weather_coarse_grid": weather_coarse_grid,
    "weather_coarse_grid_trim_cos": weather_coarse_grid_trim_cos,
    "weather_time_subsampling": weather_time_subsampling,
    "weather_time_subsampling_times": weather_time_subsampling_times,
    "weather_stations_after_time_subsampling": weather_stations_after_time_subsampling,
    "weather_coarse_after_time_subsampling": weather_coarse_after_time_subsampling,
}
