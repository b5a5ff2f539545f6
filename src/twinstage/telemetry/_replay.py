"""CSV and Parquet replay sources: recorded telemetry fed to the twin tick by tick.

``ReplaySource(path, bindings)`` reads the whole table up front (vectorised,
``_replay_io``), resolves every binding (column → prim attribute, unit, scale,
offset) at :meth:`~ReplaySource.bind`, converts each bound column to its
attribute's unit once, and then answers :meth:`~ReplaySource.poll` with slices:
``searchsorted`` over the time axis, no Python loop per row.

**Data time → sim time** (the one rule): the table's first timestamp is sim time
``start`` (default: the twin's sim time when the source is added, so a replay added
at the start of a run has its first row at sim 0), and one data second is one sim
second. Replay speed is the clock's business, not the source's:
``twinstage.open(scene, realtime=True, speed=10)`` plays it at ×10 wall time,
``realtime=False`` as fast as the CPU allows — the sim-time result is the same.

Bad cells (empty field, text in a numeric column, NaN/inf) become samples flagged
BAD with a reason naming the file, column and line; rows whose timestamp goes
backwards are flagged LATE (out of order) and not applied; duplicate timestamps are
passed on (the aligner keeps the last, counted). Everything else wrong with the file
is a :class:`TelemetryError` naming file and line.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..state import Quality, StateTable
from ._binding import Binding, Resolved, resolve
from ._replay_io import BACKWARDS, PROBLEMS, TableData, read_table
from ._source import Inbox, Samples, TelemetryError

_BAD = np.uint8(Quality.BAD)
_LATE = np.uint8(Quality.LATE)


class ReplaySource:
    """Replay a CSV (SKAB ``;`` format or plain, separator sniffed) or Parquet file.

    ``bindings`` map column names (``Binding.key``) to prim attributes. ``sep``,
    ``time_column`` and ``time_unit`` override what is detected; ``start`` is the sim
    time of the first row (default: the twin's sim time when added).
    """

    kind = "replay"

    def __init__(self, path: str | os.PathLike[str], bindings: Sequence[Binding], *, name: str | None = None, sep: str | None = None,
                 time_column: str | None = None, time_unit: str | None = None, start: float | None = None, fmt: str | None = None):
        self.path = str(path)
        self.bindings = list(bindings)
        if not self.bindings:
            raise TelemetryError(f"{self.path}: a replay source needs at least one binding")
        self._file = Path(self.path).name
        self.name = name or f"replay:{self._file}"
        self.start_at = start
        keys = list(dict.fromkeys(b.key for b in self.bindings))
        self.data: TableData = read_table(self.path, fmt=fmt, sep=sep, time_column=time_column, time_unit=time_unit, columns=keys)
        missing = [b for b in self.bindings if b.key not in self.data.columns]
        if missing:
            raise TelemetryError(f"{self.path}: {missing[0].where}: no column {missing[0].key!r} in the file "
                                 f"(columns: {', '.join(map(repr, self._all_columns()))})")
        self.order = np.argsort(self.data.time, kind="stable")
        t = self.data.time
        run_max = np.maximum.accumulate(t) if len(t) else t
        self.backwards = np.r_[False, t[1:] < run_max[:-1]] if len(t) else np.zeros(0, bool)
        self.data_time = t[self.order]
        self.t_first = float(self.data_time[0]) if len(t) else 0.0
        self.sim_time = self.data_time - self.t_first + (start or 0.0)
        self.resolved: list[Resolved] = []
        self._groups: list[dict[str, Any]] = []
        self.polled = 0

    def _all_columns(self) -> list[str]:
        if self.data.fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(self.path).names)
        with open(self.path, "rb") as f:
            head = f.readline().decode("utf-8", "replace").strip()
        from ._replay_io import sniff_separator

        try:
            return head.split(sniff_separator(self.path, head.encode()))
        except TelemetryError:
            return [head]

    def describe(self) -> str:
        h = hashlib.sha256(Path(self.path).read_bytes()).hexdigest()[:16]
        return f"{self.data.fmt}:{self.path} ({len(self.data)} rows, sha256 {h}, first row at sim {self.sim_time[0] if len(self.sim_time) else 0:g} s)"

    # -- Source protocol ----------------------------------------------------------------------------
    def bind(self, table: StateTable) -> None:
        self.resolved = [resolve(table, b) for b in self.bindings]
        by_ch: dict[str, list[Resolved]] = {}
        for r in self.resolved:
            by_ch.setdefault(r.channel, []).append(r)
        self._groups = []
        for ch, rs in by_ch.items():
            rs.sort(key=lambda r: r.row)
            rows = np.array([r.row for r in rs], dtype=np.int64)
            if len(np.unique(rows)) != len(rows):
                dup = [r for r in rs if (rows == r.row).sum() > 1][0]
                raise TelemetryError(f"{self.path}: two bindings feed {dup.binding.prim}.twin:{ch}")
            n = len(self.order)
            vals = np.empty((n, len(rs)))  # time-major: a poll window is one contiguous block
            qual = np.zeros((n, len(rs)), dtype=np.uint8)
            code = np.zeros((n, len(rs)), dtype=np.uint8)
            back = self.backwards[self.order]
            for k, r in enumerate(rs):
                with np.errstate(all="ignore"):
                    vals[:, k] = r.apply(self.data.columns[r.binding.key][self.order])
                c = self.data.problems.get(r.binding.key)
                if c is not None:
                    code[:, k] = c[self.order]
                code[back, k] = BACKWARDS
            qual[(code != 0) & (code != BACKWARDS)] = _BAD
            qual[code == BACKWARDS] = _LATE
            self._groups.append({"channel": ch, "rows": rows, "values": vals, "quality": qual, "code": code,
                                 "keys": [r.binding.key for r in rs], "any_code": bool(code.any())})

    def feeds(self) -> dict[str, np.ndarray]:
        return {g["channel"]: g["rows"] for g in self._groups}

    def anchor(self, sim_time: float) -> None:
        """Called by the engine when added: the first row lands at ``start`` or at ``sim_time``."""
        origin = self.start_at if self.start_at is not None else sim_time
        self.sim_time = self.data_time - self.t_first + origin

    def start(self, inbox: Inbox) -> None:
        pass

    def poll(self, t0: float, t1: float) -> Iterable[Samples]:
        i0 = int(np.searchsorted(self.sim_time, t0, side="right"))
        i1 = int(np.searchsorted(self.sim_time, t1, side="right"))
        if i1 <= i0:
            return ()
        m = i1 - i0
        et = self.sim_time[i0:i1]
        out = []
        for g in self._groups:
            k = len(g["rows"])
            if m == 1:  # one row of data per poll (data no faster than ticks): views, no copies
                rows, values, q = g["rows"], g["values"][i0], g["quality"][i0]
                times = np.full(k, et[0])
            else:  # (row, time) order, as the aligner wants it
                rows = np.repeat(g["rows"], m)
                values = g["values"][i0:i1].T.ravel()
                q = g["quality"][i0:i1].T.ravel()
                times = np.tile(et, k)
            code = g["code"][i0:i1] if g["any_code"] else None
            if code is None or not code.any():
                out.append(Samples(g["channel"], rows, values, times, q, 0.0, self.name))
                continue
            # flagged cells stay in the batch (BAD or LATE); each says why: problem, column, line
            flat = code[0] if m == 1 else code.T.ravel()
            cell = np.flatnonzero(flat != 0)  # (on a bool mask: 5x faster than on uint8)
            pair = flat[cell].astype(np.int64) * k + (cell if m == 1 else cell // m)  # (problem, column)
            pairs, first = np.unique(pair, return_index=True)
            lines = self.data.lines[self.order[i0:i1]]
            when = (np.zeros(len(cell), np.int64) if m == 1 else cell % m)[first]
            reasons = [""] + [f"{PROBLEMS[int(p // k)]} in column {g['keys'][int(p % k)]!r} ({self._file} line {int(lines[int(w)])})"
                              for p, w in zip(pairs.tolist(), when.tolist())]
            index = np.zeros(len(flat), np.int32)
            index[cell] = np.searchsorted(pairs, pair) + 1
            out.append(Samples(g["channel"], rows, values, times, q, 0.0, self.name, "", index, tuple(reasons)))
        self.polled += m
        return out

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, float]:
        n = len(self.data)
        probs = sum(int(np.count_nonzero(g["code"])) for g in self._groups)
        return {"rows": float(n), "rows_polled": float(self.polled), "flagged_cells": float(probs), "backwards_rows": float(self.backwards.sum())}


def bindings_by_asset_id(twin: Any, columns: Iterable[str], *, kind: str = "csv", align: str = "hold", period: float = 0.0,
                         stale_after: float = 3.0) -> list[Binding]:
    """Bind columns to the twin prims whose ``twin:assetId`` is the column name.

    Each such prim must declare exactly one twin attribute with role ``measured``
    (a sensor's reading); the column is taken to be in that attribute's unit. The
    pump testbed's sensors carry SKAB's column names as asset ids, so a SKAB file
    binds with no mapping at all.
    """
    table = twin.table
    by_id = {a.asset_id: path for path, a in twin.assets.items() if getattr(a, "asset_id", "")}
    out = []
    for col in columns:
        path = by_id.get(col)
        if path is None:
            continue
        measured = [n for n in table.attributes(path) if table.channels[n].role[table.row(path, n)] == "measured"]
        if len(measured) != 1:
            raise TelemetryError(f"column {col!r} matches {path} by twin:assetId, which declares {len(measured)} measured attributes (need exactly 1)")
        out.append(Binding(path, measured[0], kind, col, unit="", period=period, align=align, stale_after=stale_after))
    return out
