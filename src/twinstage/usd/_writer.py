"""USD sinks for live state: per-prim attribute writes and columnar arrays.

Both write into the twin's *live layer*, an anonymous layer in the stage's
session layer stack, so base asset layers are never modified by a run.

Measured here (usd-core 26.11, 2 cores, see ``bench/writer.py`` and
``docs/performance.md``): one attribute write costs ~2–6 µs from Python. On a
layer a stage observes, USD's change processing adds ~1.3–1.4× over the same
writes on a layer no stage has open (about 1 µs per changed attribute plus
~30 µs per change block), whatever the block size from 256 to 4096; a single
block of 100k writes is slower still. Blocks of 256 keep the budget check fine
grained, so that is the default ``block``. The writer's own Python work (dirty
bookkeeping, gathering specs and values a segment of several blocks at a time)
stays within ~5–10 % of a bare loop of ``spec.default = v``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pxr import Sdf, Usd, Vt

from ..state import Frame, StateTable
from ._schema import VALUE_TYPES
from ._session import root_prim_before_open
from ._stage import open_stage

#: numpy → Vt array constructors per twin type, and the array value type names
VT_ARRAYS = {
    "float": (Vt.DoubleArray.FromNumpy, Sdf.ValueTypeNames.DoubleArray),
    "int": (Vt.Int64Array.FromNumpy, Sdf.ValueTypeNames.Int64Array),
    "bool": (Vt.BoolArray.FromNumpy, Sdf.ValueTypeNames.BoolArray),
    "vec3": (Vt.Vec3dArray.FromNumpy, Sdf.ValueTypeNames.Double3Array),
}
QUALITY_ARRAY = (Vt.UCharArray.FromNumpy, Sdf.ValueTypeNames.UCharArray)
STATE_PRIM = "TwinState"
COLUMN_NS = "twinstate"


def state_prim_path(stage: Usd.Stage) -> Sdf.Path:
    """Where columnar state lives: ``/<defaultPrim>/TwinState`` (or under the first root prim)."""
    root = stage.GetDefaultPrim()
    if not root:
        roots = stage.GetPseudoRoot().GetChildren()
        root = roots[0] if roots else None
    base = root.GetPath() if root else Sdf.Path.absoluteRootPath
    return base.AppendChild(STATE_PRIM)


def create_live_layer(stage: Usd.Stage) -> Sdf.Layer:
    """An anonymous layer inserted as the strongest sublayer of the session layer.

    It comes with an (empty) ``over`` for the columnar state prim: adding a prim spec
    once the layer is on the stage resyncs the parent's whole subtree (~0.2 s at 100k
    assets), while the :class:`ColumnarWriter` turning this ``over`` into a ``def``
    later touches that one prim. An ``over`` nothing defines is not a stage prim that
    ``Traverse`` visits. Inserting the layer resyncs the whole stage (~1 s at 100k
    assets): :func:`open_live_stage` avoids that for a stage it opens.
    """
    layer = _new_live_layer(state_prim_path(stage))
    stage.GetSessionLayer().subLayerPaths.insert(0, layer.identifier)
    return layer


def _new_live_layer(state_path: Sdf.Path) -> Sdf.Layer:
    layer = Sdf.Layer.CreateAnonymous("twinstage-live.usda")
    Sdf.CreatePrimInLayer(layer, state_path)
    return layer


def open_live_stage(path: str | os.PathLike[str], *, load: str = "all") -> tuple[Usd.Stage, Sdf.Layer]:
    """:func:`~twinstage.usd.open_stage` (same checks and errors) plus a live layer, already the session
    layer's strongest sublayer when the stage is composed (no resync of the whole stage to insert it).

    Where the root layer alone cannot say where the state prim goes
    (:func:`._session.root_prim_before_open`), the layer is inserted after opening
    (:func:`create_live_layer`).
    """
    made: list[Sdf.Layer] = []

    def session(root: Sdf.Layer) -> Sdf.Layer | None:
        base = root_prim_before_open(root)
        if base is None:
            return None
        made.append(_new_live_layer(base.AppendChild(STATE_PRIM)))
        layer = Sdf.Layer.CreateAnonymous(Path(root.identifier).stem + "-session.usda")
        layer.subLayerPaths.append(made[0].identifier)
        return layer

    stage = open_stage(path, load=load, session=session)
    if not made or list(stage.GetSessionLayer().subLayerPaths) != [made[0].identifier]:
        return stage, create_live_layer(stage)
    live = made[0]
    want = state_prim_path(stage)
    if live.GetPrimAtPath(want) is None:  # root_prim_before_open guessed wrong: move the over (a resync)
        live.Clear()
        Sdf.CreatePrimInLayer(live, want)
    return stage, live


def _scalar_setter(kind: str):
    if kind == "vec3":
        # iterating a Vt array yields Gf.Vec3d from C++: ~7x faster than Gf.Vec3d(*v) per row
        return lambda vals: list(Vt.Vec3dArray.FromNumpy(np.ascontiguousarray(vals, dtype=np.float64)))
    return lambda vals: vals.tolist()


class LiveWriter:
    """Per-prim live writes of changed values, within a per-tick time budget.

    Prim specs are made at :meth:`start`, an entry's attribute spec on its first
    write (then kept). Each Frame marks its entries dirty;
    :meth:`commit` writes dirty entries (their *latest* value from the table) in
    change blocks of ``block`` writes until ``budget_s`` is spent, round-robin from
    where the last tick stopped, so staleness is bounded by
    ``ceil(dirty / per-tick capacity)`` ticks and reported in :attr:`stats`.
    ``budget_s=None`` commits everything every tick.
    """

    writes_stage = True

    def __init__(self, *, budget_s: float | None = None, block: int = 256):
        if block < 1:
            raise ValueError("block must be >= 1")
        self.budget_s = budget_s
        self.block = block
        self.stats: dict[str, Any] = {"committed": 0, "pending": 0, "max_staleness_ticks": 0, "last_commit_s": 0.0, "deferred_ticks": 0}

    def start(self, twin: Any) -> None:
        self.bind(twin.stage, twin.table, twin.live_layer)

    def bind(self, stage: Usd.Stage, table: StateTable, layer: Sdf.Layer) -> None:
        """Bind to ``table``; the live layer's ``over`` prim and attribute specs are made on first write.

        An entry that never changes (a model parameter, most of a big twin) gets no
        spec at all: at 10k factory machines that is 40k of 50k specs, and the ~0.3 s
        of creating them when the twin opens; a prim none of whose entries changed
        gets no prim spec either. Drive targets are checked here.
        """
        self.table = table
        self.layer = layer
        self._names = list(table.channels)
        self._offsets = np.array([table.channels[n].offset for n in self._names] + [table.n_entries], dtype=np.int64)
        self._offset_list = self._offsets.tolist()
        self._offset_of = {n: o for n, o in zip(self._names, self._offset_list)}
        self._specs: dict[str, np.ndarray] = {}
        self._unresolved: dict[str, int] = {}
        self._drives: dict[str, np.ndarray] = {}
        self._conv = {n: _scalar_setter(table.channels[n].type) for n in self._names}
        # prim specs, like attribute specs, are made on an entry's first write (or here for a drive)
        self._prim_specs: list[Sdf.PrimSpec | None] = [None] * len(table.prims)
        with Sdf.ChangeBlock():
            for name in self._names:
                ch = table.channels[name]
                self._specs[name] = np.full(len(ch), None, dtype=object)
                self._unresolved[name] = len(ch)
                drives = None
                for r, target in enumerate(ch.drives):
                    if target:
                        if drives is None:
                            drives = np.empty(len(ch), dtype=object)
                        pi = int(ch.prim_index[r])
                        drives[r] = self._drive_spec(stage, self._prim_spec(pi), target, table.prims[pi], name)
                self._drives[name] = drives if drives is not None and any(d is not None for d in drives) else None
        n = table.n_entries
        self._dirty = np.zeros(n, dtype=bool)
        self._since = np.full(n, -1, dtype=np.int64)
        self._cursor = 0

    def _prim_spec(self, pi: int) -> Sdf.PrimSpec:
        ps = self._prim_specs[pi]
        if ps is None:
            ps = self._prim_specs[pi] = Sdf.CreatePrimInLayer(self.layer, self.table.prims[pi])
        return ps

    def _resolve(self, name: str, rows: np.ndarray) -> None:
        """Attribute specs for ``rows`` of channel ``name`` (sorted), created where missing."""
        arr = self._specs[name]
        rows = rows[np.equal(arr[rows], None)]
        if not len(rows):
            return
        ch = self.table.channels[name]
        attr_name, vtype = f"twin:{name}", VALUE_TYPES[ch.type]
        prim_specs, prim_spec = self._prim_specs, self._prim_spec
        with Sdf.ChangeBlock():
            for r, pi in zip(rows.tolist(), ch.prim_index[rows].tolist()):
                ps = prim_specs[pi] or prim_spec(pi)
                arr[r] = ps.attributes.get(attr_name) or Sdf.AttributeSpec(ps, attr_name, vtype)
        self._unresolved[name] -= len(rows)

    @staticmethod
    def _drive_spec(stage: Usd.Stage, ps: Sdf.PrimSpec, target: str, prim: str, name: str):
        attr = stage.GetPrimAtPath(prim).GetAttribute(target)
        if not attr:
            import logging

            logging.getLogger("twinstage").warning("%s.twin:%s drives %r, which the prim does not have; not mirrored", prim, name, target)
            return None
        return ps.attributes.get(target) or Sdf.AttributeSpec(ps, target, attr.GetTypeName())

    def consume(self, frame: Frame) -> None:
        offsets, dirty, since = self._offset_of, self._dirty, self._since
        for name, change in frame.changes.items():
            g = change.rows.astype(np.int64) + offsets[name]
            dirty[g] = True
            fresh = g[since[g] < 0]
            since[fresh] = frame.tick
        self.commit(frame.tick)

    def commit(self, tick: int, budget_s: float | None | str = "default") -> int:
        """Write dirty entries until the budget is spent; returns how many were written."""
        budget = self.budget_s if budget_s == "default" else budget_s
        t0 = time.perf_counter()
        deadline = t0 + budget if budget is not None else None
        idx = np.flatnonzero(self._dirty)
        total = len(idx)
        # round-robin: resume where the last tick stopped (idx[:seam] and idx[seam:] are each sorted)
        seam = total
        if self._cursor and total:
            k = int(np.searchsorted(idx, self._cursor))
            if 0 < k < total:
                idx = np.concatenate([idx[k:], idx[:k]])
                seam = total - k
        block, seg = self.block, self.block * max(1, self._SEGMENT // self.block)
        perf = time.perf_counter
        done = 0
        for s0 in range(0, total, seg):
            # values and specs are gathered a segment (several blocks) at a time, so the
            # per-write loop below runs over plain Python lists; the budget is checked per block
            s1 = min(s0 + seg, total)
            if s0 < seam < s1:
                specs, vals, dspecs = self._gather(idx[s0:seam])
                specs2, vals2, dspecs2 = self._gather(idx[seam:s1])
                if dspecs is not None or dspecs2 is not None:
                    dspecs = (dspecs or [None] * len(specs)) + (dspecs2 or [None] * len(specs2))
                specs += specs2
                vals += vals2
            else:
                specs, vals, dspecs = self._gather(idx[s0:s1])
            m = s1 - s0
            stop = False
            for k in range(0, m, block):
                if deadline is not None and done and perf() > deadline:
                    stop = True
                    break
                e = k + block if k + block < m else m
                with Sdf.ChangeBlock():
                    if dspecs is None:
                        for spec, v in zip(specs[k:e], vals[k:e]):
                            spec.default = v
                    else:
                        for spec, dspec, v in zip(specs[k:e], dspecs[k:e], vals[k:e]):
                            spec.default = v
                            if dspec is not None:
                                dspec.default = v
                done += e - k
            if stop:
                break
        if done:
            written = idx[:done]
            self._dirty[written] = False
            self._since[written] = -1
            self._cursor = int(idx[done - 1]) + 1 if done < total else 0
        pending = total - done
        st = self.stats
        st["committed"] += done
        st["pending"] = pending
        st["last_commit_s"] = time.perf_counter() - t0
        if pending:
            st["deferred_ticks"] += 1
            oldest = int(self._since[self._dirty].min())
            st["max_staleness_ticks"] = max(st["max_staleness_ticks"], tick - oldest)
        return done

    def flush(self, tick: int = 0) -> int:
        """Commit everything still pending, whatever the budget (end of a run)."""
        return self.commit(tick, budget_s=None)

    #: entries gathered per numpy pass (a multiple of ``block`` writes are then issued from lists)
    _SEGMENT = 2048

    def _gather(self, part: np.ndarray) -> tuple[list, list, list | None]:
        """Specs, values (latest, from the table) and drive specs (or None) of sorted entries ``part``."""
        offsets = self._offset_list
        if len(self._names) == 1:
            bounds = [0, len(part)]
        else:
            bounds = np.searchsorted(part, self._offsets).tolist()
        specs: list = []
        vals: list = []
        dspecs: list | None = None
        for ci, name in enumerate(self._names):
            a, b = bounds[ci], bounds[ci + 1]
            if a == b:
                continue
            off = offsets[ci]
            lo, hi = int(part[a]) - off, int(part[b - 1]) - off + 1
            sel = slice(lo, hi) if hi - lo == b - a else part[a:b] - off  # contiguous rows: a view
            n0 = len(specs)
            vals += self._conv[name](self.table[name][sel])
            if self._unresolved[name]:
                self._resolve(name, np.arange(lo, hi) if isinstance(sel, slice) else sel)
            specs += self._specs[name][sel].tolist()
            drives = self._drives[name]
            if drives is not None:
                if dspecs is None:
                    dspecs = [None] * n0
                dspecs += drives[sel].tolist()
            elif dspecs is not None:
                dspecs += [None] * (len(specs) - n0)
        return specs, vals, dspecs

    def close(self) -> None:
        pass


class ColumnarWriter:
    """The whole state as array attributes on ``/<root>/TwinState``, one per channel.

    ``twinstate:prims`` (string[]) lists the twin prims once; per channel
    ``twinstate:<name>:rows`` (int64[], once) maps rows to that list,
    ``twinstate:<name>`` holds the values and ``twinstate:<name>:quality`` the
    quality flags. Only channels that changed in a Frame are re-set (a whole
    array each, from numpy). ``twinstate:tick`` and ``twinstate:simTime`` say
    which tick the columns show.
    """

    writes_stage = True

    def start(self, twin: Any) -> None:
        self.bind(twin.stage, twin.table, twin.live_layer)

    def bind(self, stage: Usd.Stage, table: StateTable, layer: Sdf.Layer) -> None:
        self.table = table
        self.path = state_prim_path(stage)
        self._specs = write_column_layout(layer, self.path, table)
        self._quality: dict[str, np.ndarray] = {}  # the quality flags last written per channel
        self.write_all()

    def write_all(self) -> None:
        self._quality.clear()
        for name in self.table.channels:
            self._set(name)

    def _set(self, name: str) -> None:
        kind = self.table.channels[name].type
        values_spec, quality_spec = self._specs[name]
        values_spec.default = VT_ARRAYS[kind][0](self.table[name])
        # a channel's values change every tick far more often than its flags: re-set the
        # quality array only when a flag changed (a 1-byte-per-entry compare, not a copy + set)
        q = self.table.quality(name)
        last = self._quality.get(name)
        if last is None or not np.array_equal(last, q):
            quality_spec.default = QUALITY_ARRAY[0](q)
            self._quality[name] = q.copy()

    def consume(self, frame: Frame) -> None:
        with Sdf.ChangeBlock():
            for name in frame.changes:
                self._set(name)
            tick_spec, time_spec = self._specs[None]
            tick_spec.default = frame.tick
            time_spec.default = frame.sim_time

    def close(self) -> None:
        pass


def write_column_layout(layer: Sdf.Layer, path: Sdf.Path, table: StateTable) -> dict[Any, tuple[Sdf.AttributeSpec, Sdf.AttributeSpec]]:
    """Create the TwinState prim spec and its column attribute specs in ``layer``.

    Returns ``{channel: (values_spec, quality_spec), None: (tick_spec, simTime_spec)}``.
    """
    with Sdf.ChangeBlock():
        ps = Sdf.CreatePrimInLayer(layer, path)
        ps.specifier = Sdf.SpecifierDef
        ps.typeName = "Scope"
        ps.documentation = "twinstage columnar state: one array attribute per twin channel"

        def attr(name: str, vtype: Any) -> Sdf.AttributeSpec:
            return ps.attributes.get(name) or Sdf.AttributeSpec(ps, name, vtype)

        prims = attr(f"{COLUMN_NS}:prims", Sdf.ValueTypeNames.StringArray)
        prims.default = Vt.StringArray(list(table.prims))
        specs: dict[Any, tuple[Sdf.AttributeSpec, Sdf.AttributeSpec]] = {}
        for name, ch in table.channels.items():
            rows = attr(f"{COLUMN_NS}:{name}:rows", Sdf.ValueTypeNames.Int64Array)
            rows.default = Vt.Int64Array.FromNumpy(ch.prim_index.astype(np.int64))
            unit = attr(f"{COLUMN_NS}:{name}:unit", Sdf.ValueTypeNames.String)
            unit.default = ch.unit
            specs[name] = (attr(f"{COLUMN_NS}:{name}", VT_ARRAYS[ch.type][1]), attr(f"{COLUMN_NS}:{name}:quality", QUALITY_ARRAY[1]))
        specs[None] = (attr(f"{COLUMN_NS}:tick", Sdf.ValueTypeNames.Int64), attr(f"{COLUMN_NS}:simTime", Sdf.ValueTypeNames.Double))
    return specs
