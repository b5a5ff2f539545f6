"""The engine's *sources* stage: telemetry sources, row ownership, the inbox and alignment."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..state import StateTable
from ..telemetry._align import FEED_FLAGS, FeedAlign
from ..telemetry._reasons import _Texts
from ..telemetry._source_align import Aligner
from ..telemetry._source import Inbox, Source, TelemetryError

_KEEP_NOT_FEED = np.uint8(~FEED_FLAGS & 0xFF)
LAG_WINDOW = 1024  #: samples per source over which stats() gives the ingest lag's p50/p99


class _LagWindow:
    """The last :data:`LAG_WINDOW` per-sample ingest lags of one source (a ring)."""

    def __init__(self) -> None:
        self.buf = np.zeros(LAG_WINDOW)
        self.n = 0

    def add(self, lags: np.ndarray) -> None:
        lags = lags[np.isfinite(lags)][-LAG_WINDOW:]
        k = len(lags)
        if not k:
            return
        i = self.n % LAG_WINDOW
        first = min(k, LAG_WINDOW - i)
        self.buf[i:i + first] = lags[:first]
        self.buf[:k - first] = lags[first:]
        self.n += k

    def quantiles(self) -> tuple[float, float] | None:
        if not self.n:
            return None
        p50, p99 = np.percentile(self.buf[:min(self.n, LAG_WINDOW)], (50, 99))
        return float(p50), float(p99)


def _dense(rows: np.ndarray) -> np.ndarray | slice:
    """A run of consecutive rows as a slice (writes without gathers), else the rows."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


class Feeds:
    """Every source added to one engine.

    A row is fed by one source only (:meth:`add` refuses a second, naming both); the
    rows fed are what models must leave alone (:attr:`fed`, a bool mask per channel).
    Each tick :meth:`collect` polls replay sources for the tick's sim-time window,
    drains the inbox of live sources, flags overflow and aligns every source onto the
    tick; :meth:`write` puts the aligned values into the table (before the models, and
    again after them so no model overwrites a measurement) and :meth:`flag` their
    quality (after the engine's own quality checks).
    """

    def __init__(self, table: StateTable, *, inbox_samples: int = 1_000_000):
        self.table = table
        self.inbox = Inbox(inbox_samples)
        self.sources: dict[str, Source] = {}
        self.aligners: dict[str, Aligner] = {}
        self.owner: dict[str, np.ndarray] = {}
        self.fed: dict[str, np.ndarray] = {}
        self._owner_names: list[str] = []
        self._polled: dict[str, float] = {}
        self._horizon: dict[str, float] = {}
        self._texts = _Texts()
        self._writes: list[tuple[str, np.ndarray, slice, FeedAlign]] = []
        self._lags: dict[str, _LagWindow] = {}
        self.errors: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.sources)

    def add(self, src: Source, sim_time: float) -> None:
        name = getattr(src, "name", "") or type(src).__name__
        if name in self.sources:
            raise TelemetryError(f"a source named {name!r} is already added; give each source its own name")
        kind = getattr(src, "kind", "")
        if kind not in ("replay", "live"):
            raise TelemetryError(f"source {name!r}: kind must be 'replay' or 'live', not {kind!r}")
        table = self.table
        src.bind(table)
        feeds = {ch: np.asarray(rows, dtype=np.int64) for ch, rows in src.feeds().items()}
        settings: dict[tuple[str, int], Any] = {}
        for r in getattr(src, "resolved", None) or ():
            settings[(r.channel, r.row)] = r.binding
        horizon = 0.0
        specs = []
        for ch, rows in feeds.items():
            if ch not in table.channels:
                raise TelemetryError(f"source {name!r}: feeds twin:{ch}, which this twin does not have")
            n = len(table.channels[ch])
            if len(rows) and (rows.min() < 0 or rows.max() >= n):
                raise TelemetryError(f"source {name!r}: feeds rows outside twin:{ch} (0..{n - 1})")
            if len(np.unique(rows)) != len(rows):
                raise TelemetryError(f"source {name!r}: feeds a row of twin:{ch} twice (two bindings to one attribute?)")
            own = self.owner.get(ch)
            if own is not None and (own[rows] >= 0).any():
                r = int(rows[own[rows] >= 0][0])
                other = self._owner_names[int(own[r])]
                raise TelemetryError(f"{self._where(ch, r)} is already fed by source {other!r}; source {name!r} cannot feed it too (a row has one source)")
            if table.channels[ch].type not in ("float", "int"):
                raise TelemetryError(f"source {name!r}: twin:{ch} is {table.channels[ch].type}; telemetry feeds float or int attributes")
            bs = [settings.get((ch, int(r))) for r in rows.tolist()]
            mode = [b.align if b else "hold" for b in bs]
            period = [b.period if b else 0.0 for b in bs]
            stale = [b.stale_after if b else 3.0 for b in bs]
            for b in bs:
                if b is not None and b.align == "linear" and b.period > 0:
                    horizon = max(horizon, b.period * b.stale_after)
            specs.append((ch, rows, n, table[ch], mode, period, stale))
        sid = len(self._owner_names)
        self._owner_names.append(name)
        for ch, rows in feeds.items():
            own = self.owner.setdefault(ch, np.full(len(table.channels[ch]), -1, dtype=np.int32))
            own[rows] = sid
            self.fed[ch] = own >= 0
        self.sources[name] = src
        self.aligners[name] = Aligner(name, kind == "live", FeedAlign(specs, self._texts))
        self._polled[name] = -math.inf
        self._horizon[name] = horizon
        self._lags[name] = _LagWindow()
        anchor = getattr(src, "anchor", None)
        if callable(anchor):
            anchor(sim_time)
        self._update_writes()
        src.start(self.inbox)

    def _update_writes(self) -> None:
        self._writes = [(ch, _dense(al.feed.rows_of[ch]), sl, al.feed) for al in self.aligners.values() for ch, sl in al.feed.slices.items()]

    def _where(self, ch: str, row: int) -> str:
        return f"{self.table.prims[int(self.table.channels[ch].prim_index[row])]}.twin:{ch}"

    def remove(self, name: str) -> None:
        src = self.sources.pop(name)
        al = self.aligners.pop(name)
        self._lags.pop(name, None)
        sid = self._owner_names.index(name)
        for ch in al.channels:
            own = self.owner[ch]
            own[own == sid] = -1
            self.fed[ch] = own >= 0
            self.table.quality(ch)[al.feed.rows_of[ch]] &= _KEEP_NOT_FEED
        self._update_writes()
        src.close()

    # -- per tick --------------------------------------------------------------------------------
    def collect(self, t0: float, t1: float, wall: float) -> None:
        """Poll replay sources for sim window ``(t0, t1]`` (plus a look-ahead for linear
        bindings), drain the inbox, align everything onto sim time ``t1`` / wall ``wall``.

        Ingest lag, per sample: arrival wall time minus its event time mapped to the wall. A
        live source's event times are UNIX times (the mapping is the identity; the source's
        clock offset is not subtracted, so a skewed source clock shows up as lag). A replay
        sample's event time is sim time: it is due at the tick that reaches it, so its lag is
        how far the tick that takes it is past it (``t1 - event``; samples read ahead for linear
        bindings count 0)."""
        for name, src in self.sources.items():
            if src.kind != "replay":
                continue
            al = self.aligners[name]
            hi = t1 + self._horizon[name]
            lo = self._polled[name]
            if hi > lo:
                try:
                    lag = self._lags[name]
                    for s in src.poll(lo, hi):
                        self._foreign(name, al.ingest(s), s)
                        et = s.event_time
                        lag.add(np.maximum(t1 - et, 0.0))
                except Exception as exc:  # a failing source must not stop the tick
                    self.errors.append(f"source {name!r}: poll failed: {exc!r}")
                self._polled[name] = hi
        batches, overflowed = self.inbox.drain()
        by_source = self.aligners
        for s in batches:
            al = by_source.get(s.source)
            if al is None:
                al = self._find(s.channel, s.rows)
            if al is None:
                self.errors.append(f"telemetry for twin:{s.channel} from {s.source or 'an unnamed source'!r}: no source added feeds those rows; dropped {len(s)} samples")
                continue
            self._foreign(al.name, al.ingest(s), s)
            if al.live and len(s):
                self._lags[al.name].add(s.arrival_time - s.event_time)
        for ch, rows, src_name in overflowed:
            al = by_source.get(src_name) or self._find(ch, rows)
            if al is not None:
                al.overflow(ch, rows)
        for al in self.aligners.values():
            al.align(t1, wall)

    def _find(self, ch: str, rows: np.ndarray) -> Aligner | None:
        own = self.owner.get(ch)
        if own is None or not len(rows):
            return None
        r = np.asarray(rows[:1], dtype=np.int64)
        if r[0] < 0 or r[0] >= len(own) or own[r[0]] < 0:
            return None
        return self.aligners.get(self._owner_names[int(own[r[0]])])

    def _foreign(self, name: str, n: int, s: Any) -> None:
        if n:
            self.errors.append(f"source {name!r}: {n} samples for twin:{s.channel} rows it does not feed; dropped")

    def write(self) -> None:
        table = self.table
        for ch, rows, sl, fa in self._writes:
            table[ch][rows] = fa.out[sl]

    def flag(self) -> None:
        table = self.table
        for ch, rows, sl, fa in self._writes:
            q = table.quality(ch)
            q[rows] = (q[rows] & _KEEP_NOT_FEED) | fa.quality[sl]

    # -- queries ---------------------------------------------------------------------------------
    def lookup(self, ch: str, row: int) -> tuple[FeedAlign, int] | None:
        own = self.owner.get(ch)
        if own is None or own[row] < 0:
            return None
        fa = self.aligners[self._owner_names[int(own[row])]].feed
        return fa, int(fa.lookups[ch][row])

    def owner_of(self, ch: str, row: int) -> str | None:
        own = self.owner.get(ch)
        return None if own is None or own[row] < 0 else self._owner_names[int(own[row])]

    def freshness(self) -> dict[str, np.ndarray]:
        """Age in seconds of the last good sample per row of every fed channel (NaN: not fed; inf: none yet)."""
        return self._per_row("age")

    def sample_times(self) -> dict[str, np.ndarray]:
        """Sim time of the newest sample consumed, good or bad, per row of every fed channel
        (NaN: not fed; -inf: none yet): a value that grew since the last tick is a new sample."""
        return self._per_row("t_seen")

    def _per_row(self, field: str) -> dict[str, np.ndarray]:
        """One per-sample array of every source's feed, scattered onto the channels' rows (NaN: not fed)."""
        out: dict[str, np.ndarray] = {}
        for al in self.aligners.values():
            fa = al.feed
            for ch, sl in fa.slices.items():
                a = out.setdefault(ch, np.full(len(self.table.channels[ch]), np.nan))
                a[fa.rows_of[ch]] = getattr(fa, field)[sl]
        return out

    def stats(self) -> dict[str, Any]:
        per = {}
        for name, src in self.sources.items():
            st: dict[str, Any] = dict(self.aligners[name].counts())
            st["clock_offset_s"] = self.aligners[name].offset
            q = self._lags[name].quantiles()
            if q is not None:  # ingest lag (s) over the last LAG_WINDOW samples
                st["lag_s"], st["lag_p99_s"] = q
            try:
                st.update({f"source_{k}": v for k, v in (src.stats() or {}).items()})
            except Exception as exc:
                st["stats_error"] = repr(exc)
            per[name] = st
        return {"sources": per, "inbox": {"accepted": self.inbox.accepted_samples, "dropped_batches": self.inbox.dropped_batches,
                                          "dropped_samples": self.inbox.dropped_samples}}

    def close(self) -> None:
        for name in list(self.sources):
            try:
                self.sources[name].close()
            except Exception as exc:
                self.errors.append(f"closing source {name!r} failed: {exc!r}")
