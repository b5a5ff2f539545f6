"""What a :class:`~twinstage.state.StateTable` is built from: attribute declarations, as objects or as columns.

:class:`Declaration` is one attribute of one prim. A reader that makes many of them from
a few templates (100k assets × 5 channels share one template per channel) keeps them as
:class:`DeclarationColumns` instead: templates plus per-declaration prim, template and
value. It reads like a tuple of Declaration (made on access, equal to that tuple), and
the table builds its channels from the columns without making the objects, which at
100k assets was ~2.5 s of opening a twin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np


class StateError(ValueError):
    """A state access or update is invalid; the message names prim and attribute."""


@dataclass(frozen=True)
class Declaration:
    """Input to :class:`StateTable`: one attribute of one prim."""

    prim: str
    name: str
    type: str
    value: Any
    unit: str = ""
    min: float = -math.inf
    max: float = math.inf
    role: str = "state"
    drives: str = ""
    description: str = ""


def declaration_maker(name: str, type: str, unit: str = "", min: float = -math.inf, max: float = math.inf,  # noqa: A002
                      role: str = "state", drives: str = "", description: str = ""):
    """``make(prim, value)``: Declarations that share everything but prim and value.

    The same objects ``Declaration(prim, name, ...)`` makes (equal, same hash and
    repr), about 3.5× cheaper: a frozen dataclass's ``__init__`` pays one
    ``object.__setattr__`` per field, which at 100k assets × 5 channels is ~1.4 s of
    opening a twin. Readers that build many declarations from a few templates use it.
    """
    base = {"prim": "", "name": name, "type": type, "value": None, "unit": unit, "min": min, "max": max,
            "role": role, "drives": drives, "description": description}
    new, set_ = object.__new__, object.__setattr__

    def make(prim: str, value: Any) -> Declaration:
        d = new(Declaration)
        set_(d, "__dict__", {**base, "prim": prim, "value": value})
        return d

    return make


def make_declarations(templates: Sequence[tuple], prims: Sequence[str], prim_of: Iterable[int], template_of: Iterable[int],
                      values: Iterable[Any]) -> list[Declaration]:
    """``Declaration(prims[p], *templates[t][:2], v, *templates[t][2:])`` for each ``(p, t, v)``,
    the way :func:`declaration_maker` makes them, in one loop (no call per declaration).

    ``templates``: ``(name, type, unit, min, max, role, drives, description)`` tuples.
    """
    bases = [{"prim": "", "name": n, "type": ty, "value": None, "unit": u, "min": lo, "max": hi, "role": r, "drives": dr, "description": de}
             for n, ty, u, lo, hi, r, dr, de in templates]
    new, set_ = object.__new__, object.__setattr__
    out: list[Declaration] = []
    append = out.append
    for p, t, v in zip(prim_of, template_of, values):
        d = new(Declaration)
        set_(d, "__dict__", {**bases[t], "prim": prims[p], "value": v})
        append(d)
    return out


class DeclarationColumns(Sequence):
    """Declarations as columns, read like a tuple of :class:`Declaration`.

    ``templates``: ``(name, type, unit, min, max, role, drives, description)`` tuples;
    per declaration ``prim_of`` (index into ``prims``), ``template_of`` (index into
    ``templates``) and ``values``. Indexing, slicing and iteration make Declarations
    (iteration makes them all once, then keeps them); equal to the tuple of those.
    """

    def __init__(self, templates: Iterable[tuple], prims: Sequence[str], prim_of: Any, template_of: Any, values: Sequence[Any]):
        self.templates = tuple(tuple(t) for t in templates)
        self.prims = prims
        self.prim_of = np.asarray(prim_of, dtype=np.int64).reshape(-1)
        self.template_of = np.asarray(template_of, dtype=np.int64).reshape(-1)
        n = len(self.prim_of)
        if len(self.template_of) != n or len(values) != n:
            raise ValueError(f"declaration columns differ in length: {n} prims, {len(self.template_of)} templates, {len(values)} values")
        if isinstance(values, np.ndarray) and values.dtype == object and values.ndim == 1:
            self.values = values
        else:  # element by element: a tuple value stays one object (np.array would make it a row)
            self.values = np.fromiter(values, dtype=object, count=n)
        if n and not (0 <= int(self.prim_of.min()) and int(self.prim_of.max()) < len(prims)):
            raise ValueError(f"declaration columns: a prim index outside 0..{len(prims) - 1}")
        if n and not (0 <= int(self.template_of.min()) and int(self.template_of.max()) < len(self.templates)):
            raise ValueError(f"declaration columns: a template index outside 0..{len(self.templates) - 1}")
        self._all: tuple[Declaration, ...] | None = None

    def _make(self, sel: Any) -> list[Declaration]:
        return make_declarations(self.templates, self.prims, self.prim_of[sel].tolist(), self.template_of[sel].tolist(), self.values[sel].tolist())

    def as_tuple(self) -> tuple[Declaration, ...]:
        if self._all is None:
            self._all = tuple(self._make(slice(None)))
        return self._all

    def __len__(self) -> int:
        return len(self.prim_of)

    def __getitem__(self, i: Any) -> Any:
        if self._all is not None:
            return self._all[i]
        if isinstance(i, slice):
            return tuple(self._make(i))
        n = len(self)
        j = i + n if -n <= i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"declaration index {i} out of range ({n} declarations)")
        return self._make(slice(j, j + 1))[0]

    def __iter__(self):
        return iter(self.as_tuple())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (DeclarationColumns, tuple)):
            return self is other or (len(self) == len(other) and self.as_tuple() == tuple(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        return f"DeclarationColumns({len(self)} declarations of {len(self.templates)} templates)"

    def __reduce__(self) -> tuple:
        return (DeclarationColumns, (self.templates, self.prims, self.prim_of, self.template_of, self.values))
