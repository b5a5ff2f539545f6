"""Units: every twin attribute declares one; values are converted on the way in.

Backed by pint (imported lazily: importing twinstage stays cheap). Unit strings
are pint expressions (``degC``, ``bar``, ``L/min``, ``m/s``, ``g0`` for standard gravity ...), ``1`` for a
dimensionless value. Mismatched or unknown units raise :class:`UnitError`, which
names where the unit came from.
"""

from __future__ import annotations

import functools
import math
import re
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


#: unit symbols as a person writes them (pint's spelling → display)
_DISPLAY = {"degC": "°C", "degF": "°F", "degree_Celsius": "°C", "degree_Fahrenheit": "°F", "delta_degC": "Δ°C", "delta_degF": "Δ°F",
            "kelvin": "K", "g0": "g", "g_0": "g", "g_n": "g", "gravity": "g", "standard_gravity": "g", "percent": "%",
            "deg": "°", "degree": "°", "ohm": "Ω", "micrometer": "µm", "um": "µm", "liter": "L", "litre": "L"}
_DIMENSIONLESS = {"", "1", "dimensionless"}
_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z_0-9]*|\*\*\s*-?\d+|\^\s*-?\d+|\s*\*\s*|.", re.S)


@functools.lru_cache(maxsize=512)
def format_unit(unit: str | None) -> str:
    """A unit string as a person writes it: ``degC`` → ``°C``, ``g0`` → ``g``, ``m/s**2`` → ``m/s²``,
    ``percent`` → ``%``; a dimensionless unit (``1``, ``dimensionless``, empty) → ``""``.

    For display only (messages, tables, the browser client): the declared unit string is
    what is stored and converted; this never changes what a unit means.
    """
    if unit is None:
        return ""
    text = str(unit).strip()
    if text in _DIMENSIONLESS:
        return ""
    out = []
    for tok in _TOKEN.findall(text):
        if tok.startswith("**") or tok.startswith("^"):
            out.append(tok.lstrip("*^").strip().translate(_SUPERSCRIPT))
        elif tok.strip() == "*":
            out.append("·")
        else:
            out.append(_DISPLAY.get(tok, tok))
    return "".join(out)


def with_unit(value: Any, unit: str | None) -> str:
    """``"4.0 °C"``, or just ``"4.0"`` for a dimensionless value."""
    u = format_unit(unit)
    return f"{value} {u}" if u else f"{value}"


def split_quantity(value: Any) -> tuple[Any, str | None]:
    """``(magnitude, unit)`` of a pint Quantity or a ``(value, "unit")`` tuple, else ``(value, None)``."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        return value[0], value[1]
    mag = getattr(value, "magnitude", None)
    units = getattr(value, "units", None)
    if mag is not None and units is not None:
        return mag, str(units)
    return value, None
