"""JSON in and out: strict parsing of client text, compact dumping of server messages.

Client text is hostile until parsed: :func:`parse_json` turns every way ordinary bad
input can fail (NaN/Infinity literals, numbers that overflow a double, nesting deep
enough to exhaust the parser's recursion limit, huge integers) into a ``ValueError``,
so the server answers ``bad_json`` instead of logging an internal error.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

try:  # optional: ~30x faster JSON for big deltas; the stdlib path gives the same messages
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

#: the request id of a message that is not valid JSON, when its text still shows one
_ID_RE = re.compile(r'"id"\s*:\s*("(?:[^"\\\n]|\\.){0,128}")')


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]}{'…' if len(text) > 40 else ''} is out of range (not finite)")
    return v


def _bounded_int(text: str) -> int:
    v = int(text)  # beyond 4300 digits Python itself raises ValueError
    try:
        float(v)
    except OverflowError:
        raise ValueError(f"integer {text[:40]}… ({len(text)} digits) is out of range of a double") from None
    return v


def parse_json(text: str | bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no numbers beyond a double, bounded nesting (ValueError otherwise)."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def recover_id(text: Any) -> str:
    """The ``"id": "..."`` a message that failed to parse carries, or "" (best effort: the first one in the text)."""
    if not isinstance(text, str):
        return ""
    m = _ID_RE.search(text[:65536])
    if m is None:
        return ""
    try:
        v = json.loads(m.group(1))
    except ValueError:
        return ""
    return v if isinstance(v, str) else ""


def dumps(obj: Any) -> str:
    """Compact JSON text (numpy arrays allowed)."""
    if _orjson is not None:
        return _orjson.dumps(obj, option=_orjson.OPT_SERIALIZE_NUMPY).decode()
    return json.dumps(obj, separators=(",", ":"), default=_default)


def _default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot encode {type(o).__name__}")


def wire(model: Any) -> str:
    """A pydantic message as compact JSON text, camelCase keys."""
    return dumps(model.model_dump(by_alias=True, mode="json"))
