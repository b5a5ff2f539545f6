"""StateTable: the hot twin state as numpy structure-of-arrays."""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping, Set as AbstractSet
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Iterable, Sequence

import numpy as np

from ..units import format_unit
from ._decls import Declaration, DeclarationColumns, StateError
from ._frame import Change, Frame, Quality


def _unit_suffix(unit: str) -> str:
    """`` °C`` for a message; nothing for a dimensionless value."""
    u = format_unit(unit)
    return f" {u}" if u else ""


_PRIM, _VALUE = attrgetter("prim"), attrgetter("value")
_TEMPLATE = attrgetter("name", "type", "unit", "min", "max", "role", "drives", "description")
DTYPES = {"float": np.float64, "int": np.int64, "bool": np.bool_, "vec3": np.float64}
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


@dataclass(frozen=True)
class Channel:
    """All values of one twin attribute name across the prims that declare it.

    Rows are in stage order. ``prim_index[row]`` is the row's prim in
    :attr:`StateTable.prims`; ``offset`` is the channel's first entry in the flat
    entry numbering (``offset + row``) that sinks and the bridge use.
    """

    name: str
    type: str
    unit: str
    prim_index: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    role: np.ndarray  # object array of role strings per row
    drives: tuple[str, ...]
    description: tuple[str, ...]
    offset: int

    def __len__(self) -> int:
        return len(self.prim_index)


class StateTable:
    """Structure-of-arrays over all twin prims × attributes.

    ``table[name]`` is the live numpy array of channel ``name`` (float64, int64,
    bool, or float64 (n, 3) for vec3); models write into it in place. One channel
    has one type and one unit: a scene that declares ``twin:temperature`` in
    ``degC`` on one prim and ``K`` on another is rejected when the table is built.
    """

    def __init__(self, prims: Sequence[str], declarations: Iterable[Declaration]):
        was = gc.isenabled()
        gc.disable()  # many small acyclic objects: no gen-2 passes over a growing heap meanwhile
        try:
            self._build(prims, declarations)
        finally:
            if was:
                gc.enable()

    def _build(self, prims: Sequence[str], declarations: Iterable[Declaration]) -> None:
        self.prims: tuple[str, ...] = tuple(prims)
        self.prim_index: dict[str, int] = {p: i for i, p in enumerate(self.prims)}
        if len(self.prim_index) != len(self.prims):
            raise StateError("duplicate prim paths in state table")
        cols = declarations if isinstance(declarations, DeclarationColumns) else self._columns(declarations)
        pis = self._table_prims(cols)
        T = cols.templates
        tname = [t[0] for t in T]
        names = sorted({tname[t] for t in np.flatnonzero(np.bincount(cols.template_of, minlength=len(T))).tolist()})
        code = np.asarray([names.index(n) if n in names else -1 for n in tname], np.int64)[cols.template_of] if len(names) > 1 else None
        self.channels: dict[str, Channel] = {}
        self._values: dict[str, np.ndarray] = {}
        self._quality: dict[str, np.ndarray] = {}
        offset = 0
        # channel by channel with numpy passes over the columns: at 100k assets × 5 channels a
        # Python loop over the declarations was most of building the table
        for k, name in enumerate(names):
            sel = np.flatnonzero(code == k) if code is not None else np.arange(len(cols))
            idx = pis[sel]
            if len(idx) > 1 and not (idx[1:] > idx[:-1]).all():  # not already in stage order (or a duplicate)
                order = np.argsort(idx, kind="stable")
                idx, sel = idx[order], sel[order]
                if (idx[1:] == idx[:-1]).any():
                    raise StateError(f"twin:{name} declared twice on one prim")
            tsel = cols.template_of[sel]
            first = T[int(tsel[0])]
            for field in (1, 2):  # type, unit
                other = np.asarray([t[field] != first[field] for t in T], bool)[tsel]
                if other.any():
                    r = int(np.argmax(other))
                    a, b, at, bt = first[field], T[int(tsel[r])][field], self.prims[idx[0]], self.prims[idx[r]]
                    if field == 1:
                        raise StateError(f"twin:{name} is {a} on {at} but {b} on {bt}: one channel has one type")
                    raise StateError(f"twin:{name} is in {a!r} on {at} but {b!r} on {bt}: one channel has one unit")
            n = len(sel)
            if (tsel == tsel[0]).all():  # the usual case: one template per channel
                lo, hi = np.full(n, first[3], dtype=np.float64), np.full(n, first[4], dtype=np.float64)
                role = np.full(n, first[5], dtype=object)
                drives, description = (first[6],) * n, (first[7],) * n
            else:
                lo, hi = np.array([t[3] for t in T], np.float64)[tsel], np.array([t[4] for t in T], np.float64)[tsel]
                role = np.array([t[5] for t in T], object)[tsel]
                drives = tuple(np.array([t[6] for t in T], object)[tsel].tolist())
                description = tuple(np.array([t[7] for t in T], object)[tsel].tolist())
            dtype = DTYPES[first[1]]
            vals_obj = cols.values[sel].tolist()
            if first[1] == "vec3":
                vals = np.array([tuple(v) for v in vals_obj], dtype=dtype).reshape(n, 3)
            else:
                vals = np.array(vals_obj, dtype=dtype)
            idx = idx.astype(np.int32)
            idx.flags.writeable = False
            self.channels[name] = Channel(name=name, type=first[1], unit=first[2], prim_index=idx, lo=lo, hi=hi, role=role,
                                          drives=tuple(drives), description=tuple(description), offset=offset)
            offset += n
            self._values[name] = vals
            self._quality[name] = np.zeros(n, dtype=np.uint8)
        self.n_entries = offset
        self._prev = {k: v.copy() for k, v in self._values.items()}
        self._prev_quality = {k: q.copy() for k, q in self._quality.items()}

    def _columns(self, declarations: Iterable[Declaration]) -> DeclarationColumns:
        """Declaration objects as columns over this table's prims (templates interned)."""
        decls = declarations if isinstance(declarations, (list, tuple)) else list(declarations)
        pis = list(map(self.prim_index.get, map(_PRIM, decls)))
        if None in pis:
            raise StateError(f"{decls[pis.index(None)].prim}: declaration for a prim that is not in the table")
        ids: dict[tuple, int] = {}
        setdefault = ids.setdefault
        tof = [setdefault(t, len(ids)) for t in map(_TEMPLATE, decls)]
        return DeclarationColumns(list(ids), self.prims, pis, tof, list(map(_VALUE, decls)))

    def _table_prims(self, cols: DeclarationColumns) -> np.ndarray:
        """Each declaration's prim as an index into :attr:`prims`."""
        if cols.prims is self.prims or (len(cols.prims) == len(self.prims) and tuple(cols.prims) == self.prims):
            return cols.prim_of
        lut = np.fromiter((self.prim_index.get(p, -1) for p in cols.prims), np.int64, len(cols.prims))
        pis = lut[cols.prim_of]
        if len(pis) and (pis < 0).any():
            raise StateError(f"{cols.prims[int(cols.prim_of[int(np.argmax(pis < 0))])]}: declaration for a prim that is not in the table")
        return pis

    def _row_of(self, name: str, pi: int) -> int | None:
        """Row of prim index ``pi`` in channel ``name`` (binary search over its sorted ``prim_index``), or None."""
        idx = self.channels[name].prim_index
        r = int(np.searchsorted(idx, pi))
        return r if r < len(idx) and idx[r] == pi else None

    # -- access -------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._values[name]
        except KeyError:
            raise StateError(f"no twin attribute named {name!r} in this twin (have: {', '.join(sorted(self._values))})") from None

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def quality(self, name: str) -> np.ndarray:
        self[name]
        return self._quality[name]

    def row(self, prim: str, name: str) -> int:
        """Row of ``prim``'s ``twin:<name>`` in its channel."""
        pi = self.prim_index.get(prim)
        if pi is None:
            raise StateError(f"{prim}: not a twin prim of this twin")
        if name not in self._values:
            raise StateError(f"{prim}: has no twin attribute {name!r} (no prim of this twin declares it; {prim} has: {', '.join(self.attributes(prim))})")
        r = self._row_of(name, pi)
        if r is None:
            raise StateError(f"{prim}: has no twin attribute {name!r} (has: {', '.join(self.attributes(prim))})")
        return r

    def rows(self, name: str, prim_indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows of channel ``name`` for the given prim indices (vectorised lookup; all must exist)."""
        ch = self.channels.get(name)
        if ch is None:
            raise StateError(f"no twin attribute named {name!r} in this twin")
        pos = np.searchsorted(ch.prim_index, prim_indices)
        pos = np.clip(pos, 0, max(len(ch) - 1, 0))
        bad = len(ch) == 0 or ch.prim_index[pos] != np.asarray(prim_indices)
        if np.any(bad):
            missing = np.asarray(prim_indices)[np.atleast_1d(bad)] if len(ch) else np.asarray(prim_indices)
            raise StateError(f"{self.prims[int(missing[0])]}: has no twin attribute {name!r}")
        return pos.astype(np.int64)

    def attributes(self, prim: str) -> list[str]:
        pi = self.prim_index.get(prim)
        if pi is None:
            raise StateError(f"{prim}: not a twin prim of this twin")
        return [n for n in self.channels if self._row_of(n, pi) is not None]

    def get(self, prim: str, name: str) -> Any:
        r = self.row(prim, name)
        v = self._values[name][r]
        return tuple(float(c) for c in v) if self.channels[name].type == "vec3" else v.item()

    def validate(self, prim: str, name: str, value: Any) -> Any:
        """Check ``value`` against the attribute's type and limits; return it as stored."""
        r = self.row(prim, name)
        ch = self.channels[name]
        where = f"{prim}.twin:{name}"
        if ch.type == "vec3":
            # A string is iterable ("123" would read as 1, 2, 3) and a mapping or set
            # iterates its keys: none of them is 3 numbers.
            if isinstance(value, (str, bytes, Mapping, AbstractSet)):
                raise StateError(f"{where}: expected 3 numbers, got {type(value).__name__} {value!r}")
            try:
                items = list(value)
            except TypeError:
                raise StateError(f"{where}: expected 3 numbers, got {value!r}") from None
            if len(items) != 3:
                raise StateError(f"{where}: expected 3 numbers, got {len(items)}")
            comps = []
            for c in items:
                if isinstance(c, np.generic):
                    c = c.item()
                if isinstance(c, bool) or not isinstance(c, (int, float)):
                    raise StateError(f"{where}: expected 3 numbers, got {value!r}")
                try:
                    comps.append(float(c))
                except OverflowError:
                    raise StateError(f"{where}: {c!r} is too large for a float") from None
            if not all(math.isfinite(c) for c in comps):
                raise StateError(f"{where}: values must be finite, got {value!r}")
            return np.array(comps)
        if isinstance(value, np.generic):
            value = value.item()
        if ch.type == "bool":
            if not isinstance(value, bool):
                raise StateError(f"{where}: expected a bool, got {type(value).__name__} {value!r}")
            return value
        if ch.type == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
                raise StateError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
            v = int(value)
            if not _INT64_MIN <= v <= _INT64_MAX:  # would fail (OverflowError) only when the tick applies it
                raise StateError(f"{where}: {v} does not fit a 64-bit integer")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise StateError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
            try:
                v = float(value)
            except OverflowError:  # an int beyond the float range
                raise StateError(f"{where}: {value!r} is too large for a float") from None
            if not math.isfinite(v):
                raise StateError(f"{where}: value must be finite, got {value!r}")
        if not ch.lo[r] <= v <= ch.hi[r]:
            raise StateError(f"{where}: {v} is outside its limits [{ch.lo[r]}, {ch.hi[r]}]{_unit_suffix(ch.unit)}")
        return v

    def entry(self, index: int) -> tuple[str, str]:
        """``(prim, attribute)`` of flat entry ``index``."""
        for ch in self.channels.values():
            if ch.offset <= index < ch.offset + len(ch):
                return self.prims[int(ch.prim_index[index - ch.offset])], ch.name
        raise StateError(f"entry {index} out of range 0..{self.n_entries - 1}")

    # -- tick support ---------------------------------------------------------
    def sanitize(self) -> list[str]:
        """Replace non-finite float values with the previous ones, flagged BAD. Returns the channels affected.

        BAD describes the value it is on: a value that is finite again (the model
        recovered) has its BAD flag cleared, like OUT_OF_RANGE once back in limits.
        """
        hit = []
        bad_flag = np.uint8(Quality.BAD)
        for name, ch in self.channels.items():
            if ch.type not in ("float", "vec3"):
                continue
            vals = self._values[name]
            ok = np.isfinite(vals)
            if ch.type == "vec3":
                ok = ok.all(axis=1)
            q = self._quality[name]
            if ok.all():  # the common case: one in-place pass instead of a masked update
                q &= ~bad_flag
                continue
            q[ok] &= ~bad_flag
            if not ok.all():
                bad = ~ok
                vals[bad] = self._prev[name][bad]
                self._quality[name][bad] |= np.uint8(Quality.BAD)
                hit.append(name)
        return hit

    def diff(self, tick: int, sim_time: float, wall_time: float) -> Frame:
        """Build the Frame of everything changed since the last diff, then remember the state."""
        changes: dict[str, Change] = {}
        for name, vals in self._values.items():
            prev = self._prev[name]
            q = self._quality[name]
            prev_q = self._prev_quality[name]
            neq = vals != prev
            if neq.ndim == 2:
                neq = neq.any(axis=1)
            neq |= q != prev_q
            if not neq.any():  # a channel nothing touched: no index arrays, no gathers
                continue
            rows = np.flatnonzero(neq)
            if len(rows) == len(neq):  # every row changed: plain copies instead of fancy indexing
                values, quality = vals.copy(), q.copy()
                prev[...] = values
                prev_q[...] = quality
            else:
                values, quality = vals[rows], q[rows]  # gathered once, used twice
                prev[rows] = values
                prev_q[rows] = quality
            changes[name] = Change.make(rows, values, quality)
        return Frame.make(tick, sim_time, wall_time, changes)

    def snapshot(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._values.items()}

    def entry_table(self) -> list[dict[str, Any]]:
        """One record per flat entry: index, prim, attribute, type, unit."""
        out = []
        for ch in self.channels.values():
            for r, pi in enumerate(ch.prim_index.tolist()):
                out.append({"index": ch.offset + r, "prim": self.prims[pi], "attribute": ch.name, "type": ch.type, "unit": ch.unit})
        return out
