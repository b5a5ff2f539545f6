"""Units: every twin attribute declares one; values are converted on the way in.

Backed by pint (imported lazily: importing twinstage stays cheap). Unit strings
are pint expressions (``degC``, ``bar``, ``L/min``, ``m/s``, ``g0`` for standard gravity ...), ``1`` for a
dimensionless value. Mismatched or unknown units raise :class:`UnitError`, which
names where the unit came from.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

#: aliases for unit spellings found in telemetry and CAD tools that pint reads otherwise
_ALIASES = {"°C": "degC", "°F": "degF", "%": "percent", "1": "dimensionless"}


class UnitError(ValueError):
    """A unit is unknown or does not match the one it must convert to."""


@functools.lru_cache(maxsize=1)
def _registry() -> Any:
    import pint

    ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    return ureg


def _normalise(unit: str) -> str:
    unit = unit.strip()
    return _ALIASES.get(unit, unit)


@functools.lru_cache(maxsize=512)
def _parse(unit: str) -> Any:
    ureg = _registry()
    try:
        return ureg.Unit(_normalise(unit))
    except Exception as exc:  # pint raises several types for bad input
        raise UnitError(f"unknown unit {unit!r}: {exc}") from None


def check_unit(unit: str, where: str = "") -> None:
    """Raise :class:`UnitError` if ``unit`` is empty or not a unit pint understands."""
    prefix = f"{where}: " if where else ""
    if not isinstance(unit, str) or not unit.strip():
        raise UnitError(f"{prefix}no unit declared (use '1' for a dimensionless value)")
    try:
        _parse(unit)
    except UnitError as exc:
        raise UnitError(f"{prefix}{exc}") from None


@functools.lru_cache(maxsize=512)
def _affine(src: str, dst: str) -> tuple[float, float]:
    ureg = _registry()
    a, b = _parse(src), _parse(dst)
    if a.dimensionality != b.dimensionality:
        raise UnitError(f"unit {src!r} ({a.dimensionality}) cannot convert to {dst!r} ({b.dimensionality})")
    q0 = ureg.Quantity(0.0, a).to(b).magnitude
    q1 = ureg.Quantity(1.0, a).to(b).magnitude
    return float(q1 - q0), float(q0)


def converter(src: str, dst: str, where: str = "") -> Callable[[Any], Any]:
    """A function converting values (floats or numpy arrays) from ``src`` to ``dst``.

    Every supported conversion is affine (scale and offset), so the function is
    vectorised and cheap.
    """
    try:
        scale, offset = _affine(src, dst)
    except UnitError as exc:
        raise UnitError(f"{where}: {exc}" if where else str(exc)) from None
    if scale == 1.0 and offset == 0.0:
        return lambda v: v
    return lambda v: v * scale + offset


def convert(value: float, src: str, dst: str, where: str = "") -> float:
    out = converter(src, dst, where)(value)
    if isinstance(out, float) and not math.isfinite(out):
        raise UnitError(f"{where}: conversion of {value!r} {src} to {dst} is not finite")
    return out


def split_quantity(value: Any) -> tuple[Any, str | None]:
    """``(magnitude, unit)`` of a pint Quantity or a ``(value, "unit")`` tuple, else ``(value, None)``."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        return value[0], value[1]
    mag = getattr(value, "magnitude", None)
    units = getattr(value, "units", None)
    if mag is not None and units is not None:
        return mag, str(units)
    return value, None
