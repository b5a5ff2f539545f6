"""twinstage.units: unit checks and affine converters (pint underneath)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstage.units import UnitError, check_unit, convert, converter, split_quantity


@pytest.mark.parametrize("unit", ["degC", "K", "degF", "L/min", "m**3/s", "m³/s", "bar", "Pa", "g0", "m/s**2", "m/s²", "W", "K/W", "1", "%", "°C"])
def test_check_unit_accepts_known_units(unit):
    check_unit(unit)  # no exception


@pytest.mark.parametrize("unit", ["", "   "])
def test_check_unit_rejects_a_missing_unit(unit):
    with pytest.raises(UnitError, match="no unit declared"):
        check_unit(unit, where="/Plant/Oven.twin:temperature")


def test_check_unit_rejects_non_strings():
    with pytest.raises(UnitError):
        check_unit(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("unit", ["furlongz", "degCC", "m/s/zz"])
def test_unknown_unit_is_a_unit_error_naming_unit_and_place(unit):
    with pytest.raises(UnitError) as exc:
        check_unit(unit, where="/Plant/Oven.twin:temperature")
    assert unit in str(exc.value)
    assert "/Plant/Oven.twin:temperature" in str(exc.value)


def test_unknown_unit_in_converter_is_a_unit_error():
    with pytest.raises(UnitError, match="furlongz"):
        converter("furlongz", "m")
    with pytest.raises(UnitError, match="furlongz"):
        converter("m", "furlongz")


@pytest.mark.parametrize(
    "src, dst, value, expected",
    [
        ("degC", "K", 0.0, 273.15),
        ("degC", "K", 25.0, 298.15),
        ("K", "degC", 0.0, -273.15),
        ("degF", "degC", 77.0, 25.0),
        ("degF", "degC", 32.0, 0.0),
        ("degC", "degF", 100.0, 212.0),
        ("degF", "K", -459.67, 0.0),
        ("K", "degF", 373.15, 212.0),
        ("L/min", "m**3/s", 60.0, 1e-3),
        ("L/min", "m³/s", 125.2, 125.2e-3 / 60.0),
        ("m**3/s", "L/min", 1.0, 60000.0),
        ("bar", "Pa", 1.0, 1e5),
        ("bar", "Pa", 0.111, 11100.0),
        ("Pa", "bar", 250.0, 0.0025),
        ("g0", "m/s**2", 1.0, 9.80665),
        ("g0", "m/s²", 0.213, 0.213 * 9.80665),
        ("m/s**2", "g0", 9.80665, 1.0),
        ("°C", "K", 10.0, 283.15),
        ("%", "1", 50.0, 0.5),
        ("degC", "degC", 12.5, 12.5),
    ],
)
def test_converter_values(src, dst, value, expected):
    f = converter(src, dst)
    assert f(value) == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert convert(value, src, dst) == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_converter_is_vectorised():
    f = converter("degC", "K")
    out = f(np.array([-273.15, 0.0, 100.0]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.0, 273.15, 373.15], atol=1e-9)
    g = converter("L/min", "m**3/s")
    np.testing.assert_allclose(g(np.array([0.0, 60.0, 120.0])), [0.0, 1e-3, 2e-3], rtol=1e-12)


@pytest.mark.parametrize(
    "src, dst",
    [("bar", "degC"), ("degC", "bar"), ("L/min", "Pa"), ("g0", "m/s"), ("K", "W"), ("1", "m"), ("m/s**2", "L/min")],
)
def test_incompatible_units_name_both(src, dst):
    with pytest.raises(UnitError) as exc:
        converter(src, dst, where="/Testbed/Pump.twin:pressure")
    msg = str(exc.value)
    assert repr(src) in msg and repr(dst) in msg
    assert "/Testbed/Pump.twin:pressure" in msg
    with pytest.raises(UnitError):
        convert(1.0, src, dst)


def test_split_quantity():
    assert split_quantity((77.0, "degF")) == (77.0, "degF")
    assert split_quantity(3.0) == (3.0, None)
    assert split_quantity((1.0, 2.0)) == ((1.0, 2.0), None)
    from twinstage.units import _registry

    q = _registry().Quantity(2.5, "bar")
    mag, unit = split_quantity(q)
    assert mag == 2.5
    assert converter(unit, "Pa")(mag) == pytest.approx(2.5e5)


_PAIRS = [("degC", "K"), ("degC", "degF"), ("K", "degF"), ("L/min", "m**3/s"), ("bar", "Pa"), ("g0", "m/s**2"), ("degF", "degC")]
_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(pair=st.sampled_from(_PAIRS), x=_finite)
def test_round_trip(pair, x):
    src, dst = pair
    there = converter(src, dst)(x)
    back = converter(dst, src)(there)
    assert math.isfinite(there)
    assert back == pytest.approx(x, rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(pair=st.sampled_from(_PAIRS), xs=st.lists(_finite, min_size=1, max_size=20))
def test_vectorised_equals_scalar(pair, xs):
    f = converter(*pair)
    arr = f(np.array(xs))
    for a, x in zip(arr.tolist(), xs):
        assert a == pytest.approx(f(x), rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(a=_finite, b=_finite)
def test_temperature_conversion_preserves_differences_and_order(a, b):
    f = converter("degC", "degF")
    assert f(b) - f(a) == pytest.approx(1.8 * (b - a), rel=1e-9, abs=1e-6)
    if a < b:
        assert f(a) <= f(b)  # monotonic (strict only up to rounding)
