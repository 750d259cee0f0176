"""The trade-off benchmark's comparison at equal KL: interpolation on a measured curve."""

import pytest

from bench.tradeoff import interpolate_at


def test_interpolates_between_the_two_points_that_bracket_the_kl() -> None:
    curve = [(0.04, 60.0), (0.01, 30.0), (0.1, 90.0)]  # unsorted on purpose
    assert interpolate_at(0.02, curve) == pytest.approx(40.0)
    assert interpolate_at(0.07, curve) == pytest.approx(75.0)
    assert interpolate_at(0.04, curve) == pytest.approx(60.0)


def test_outside_the_measured_range_is_unknown_not_extrapolated() -> None:
    curve = [(0.01, 30.0), (0.1, 90.0)]
    assert interpolate_at(0.005, curve) is None
    assert interpolate_at(0.2, curve) is None
    assert interpolate_at(0.05, [(0.05, 10.0)]) == 10.0  # a measured point needs no neighbours
