"""SQL historian (PostgreSQL / TimescaleDB, psycopg 3): replay a time window, read calibration windows.

The schema a TimescaleDB user has (one narrow table, a hypertable or not)::

    CREATE TABLE telemetry (time timestamptz NOT NULL, tag text NOT NULL,
                            value double precision, quality smallint);  -- or quality text

``quality`` is optional. As ``text``: ``good``/``uncertain``/``bad`` (any case; NULL =
good; anything else → BAD "unknown quality"). As an integer: the OPC DA quality byte
(≥ 192 good, 64–191 uncertain, < 64 bad; NULL = good). A NULL ``value`` enters as BAD
"missing value", a NaN/±inf one as BAD "non-finite"; rows with a NULL ``time`` cannot be
placed and are counted (``stats()["null_time_rows"]``) and logged, never silently used.

The window is fetched in one ``COPY … TO STDOUT (FORMAT BINARY)`` whose rows are fixed
width, so the whole window becomes numpy arrays with one ``frombuffer`` — no Python
loop per row. Rows come back ordered by time, so rows stored out of order ("backwards
time") replay in event order; duplicates are kept in a stable order.

:class:`SqlSource` (``kind="replay"``) maps data time onto sim time like a file replay:
``sim = sim_start + (t - origin) / speed`` with ``origin`` the first sample in the
window and ``sim_start`` the twin's sim time when the source is added (``anchor``),
unless given. A SQL table has no row order, so rows come back ordered by ``time``:
there is no LATE from a historian. ``poll(t0, t1)`` slices each channel's preloaded arrays with ``searchsorted``.
:func:`read_window` returns raw per-tag series for calibration.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from ..state import Quality
from ._binding import Binding
from ._payload import Router
from ._source import Inbox, Samples, TelemetryError

log = logging.getLogger(__name__)

_ROW = np.dtype([("n", ">i2"), ("l0", ">i4"), ("t", ">f8"), ("l1", ">i4"), ("k", ">i4"), ("l2", ">i4"), ("v", ">f8"), ("l3", ">i4"), ("q", ">i2")])
_SIG = b"PGCOPY\n\xff\r\n\x00"
# quality codes from the query → flags and reasons
_FLAGS = np.array([0, Quality.UNCERTAIN, Quality.BAD, Quality.BAD, Quality.BAD], np.uint8)
_WHY = ["", "uncertain quality", "bad quality", "unknown quality", "missing value (NULL)"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class Series(NamedTuple):
    """One tag's samples: UNIX seconds, values (NaN where missing) and Quality flags."""

    time: np.ndarray
    value: np.ndarray
    quality: np.ndarray


def _ts(x) -> dt.datetime | None:
    if x is None:
        return None
    if isinstance(x, dt.datetime):
        return x if x.tzinfo else x.replace(tzinfo=dt.timezone.utc)
    if isinstance(x, str):
        return _ts(dt.datetime.fromisoformat(x))
    return dt.datetime.fromtimestamp(float(x), dt.timezone.utc)


def _where(dsn: str) -> str:
    return re.sub(r"password=\S+", "password=***", dsn)


def _fetch(dsn: str, tags: Sequence[str], start, end, table: str) -> tuple[np.ndarray, int]:
    """The window as a structured array (t, k = tag index, v, q code) ordered by time; plus NULL-time rows."""
    import psycopg
    from psycopg import sql

    if not _IDENT.match(table):
        raise TelemetryError(f"historian table {table!r}: expected [schema.]name")
    ident = sql.Identifier(*table.split("."))
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise TelemetryError(f"historian {_where(dsn)}: cannot connect ({str(exc).strip()[:200]})") from None
    with conn:
        try:
            cols = dict(conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,)).fetchall())
        except psycopg.errors.UndefinedTable:
            raise TelemetryError(f"historian {_where(dsn)}: no table {table!r}") from None
        missing = {"time", "tag", "value"} - set(cols)
        if missing:
            raise TelemetryError(f"historian table {table}: missing column(s) {', '.join(sorted(missing))} (need time, tag, value[, quality])")
        qt = cols.get("quality")
        if qt is None:
            qexpr = sql.SQL("0")
        elif qt in ("text", "character varying") or qt.startswith(("character", "varchar")):
            qexpr = sql.SQL("CASE WHEN quality IS NULL OR lower(quality) = 'good' THEN 0 WHEN lower(quality) = 'uncertain' THEN 1 "
                            "WHEN lower(quality) = 'bad' THEN 2 ELSE 3 END")
        elif qt in ("smallint", "integer", "bigint"):
            qexpr = sql.SQL("CASE WHEN quality IS NULL OR quality >= 192 THEN 0 WHEN quality >= 64 THEN 1 ELSE 2 END")
        else:
            raise TelemetryError(f"historian table {table}: quality column is {qt}; expected text or an integer")
        cond = [sql.SQL("tag = ANY({})").format(sql.Literal(list(tags)))]
        if start is not None:
            cond.append(sql.SQL("time >= {}").format(sql.Literal(_ts(start))))
        if end is not None:
            cond.append(sql.SQL("time < {}").format(sql.Literal(_ts(end))))
        where = sql.SQL(" AND ").join(cond)
        q = sql.SQL(
            "COPY (SELECT extract(epoch FROM time)::float8, array_position({tags}::text[], tag)::int4 - 1, "
            "coalesce(value, 'NaN'::float8), (CASE WHEN value IS NULL THEN 4 ELSE {q} END)::int2 "
            "FROM {t} WHERE time IS NOT NULL AND {w} ORDER BY time, tag) TO STDOUT (FORMAT BINARY)"
        ).format(tags=sql.Literal(list(tags)), q=qexpr, t=ident, w=where)
        buf = bytearray()
        with conn.cursor() as cur:
            with cur.copy(q) as copy:
                for chunk in copy:
                    buf += chunk
            null_time = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE time IS NULL AND {}").format(ident, cond[0])).fetchone()[0]
    if not buf.startswith(_SIG):
        raise TelemetryError(f"historian {table}: unexpected COPY stream")
    hlen = 19 + int.from_bytes(buf[15:19], "big")
    body = bytes(buf[hlen:-2])
    if len(body) % _ROW.itemsize:
        raise TelemetryError(f"historian {table}: COPY stream of {len(body)} bytes is not whole rows")
    rows = np.frombuffer(body, _ROW)
    if len(rows) and not ((rows["n"] == 4).all() and (rows["l0"] == 8).all() and (rows["l1"] == 4).all() and (rows["l2"] == 8).all() and (rows["l3"] == 2).all()):
        raise TelemetryError(f"historian {table}: unexpected field layout in the COPY stream")
    out = np.empty(len(rows), [("t", "f8"), ("k", "i8"), ("v", "f8"), ("q", "u1")])
    out["t"], out["k"], out["v"], out["q"] = rows["t"], rows["k"], rows["v"], rows["q"]
    return out, int(null_time)


def read_window(dsn: str, tags: Sequence[str], start=None, end=None, *, table: str = "telemetry") -> dict[str, Series]:
    """Every sample of ``tags`` with ``start <= time < end`` (UNIX seconds, datetime or ISO text), per tag, time-ordered."""
    tags = list(dict.fromkeys(tags))
    rows, _ = _fetch(dsn, tags, start, end, table)
    order = np.argsort(rows["k"], kind="stable")
    bounds = np.searchsorted(rows["k"][order], np.arange(len(tags) + 1))
    out = {}
    for i, tag in enumerate(tags):
        r = rows[order[bounds[i]:bounds[i + 1]]]
        q = _FLAGS[r["q"]] | np.where(np.isfinite(r["v"]), 0, Quality.BAD).astype(np.uint8)
        out[tag] = Series(r["t"].copy(), r["v"].copy(), q)
    return out


class SqlSource:
    """Replay of a historian window (see the module docstring); deterministic, polled on the tick thread."""

    kind = "replay"

    def __init__(self, dsn: str, bindings: Sequence[Binding], *, table: str = "telemetry", start=None, end=None,
                 origin=None, speed: float = 1.0, sim_start: float | None = None, name: str = ""):
        if not (speed > 0 and np.isfinite(speed)):
            raise TelemetryError(f"historian replay: speed must be > 0, got {speed!r}")
        self.dsn, self.table, self.window, self.speed = dsn, table, (start, end), float(speed)
        self.origin = None if origin is None else _ts(origin).timestamp()
        self.sim_start = sim_start
        self._sim0 = 0.0 if sim_start is None else float(sim_start)
        self.name = name or f"sql:{table}"
        self.router = Router(self.name, "sql", bindings)
        self._chan: dict[str, tuple[np.ndarray, ...]] = {}
        self._stats = {"rows": 0.0, "bad_samples": 0.0, "null_time_rows": 0.0, "empty_tags": 0.0, "polled": 0.0}
        self.warnings: list[str] = []

    def bind(self, table) -> None:
        self.router.bind(table)
        self.load()

    @property
    def resolved(self):
        return self.router.resolved

    def anchor(self, sim_time: float) -> None:
        """Called by the engine when added: ``origin`` lands at ``sim_start``, or at ``sim_time`` when not given."""
        sim0 = float(sim_time) if self.sim_start is None else float(self.sim_start)
        shift, self._sim0 = sim0 - self._sim0, sim0
        self._chan = {ch: (a[0] + shift, *a[1:]) for ch, a in self._chan.items()}

    def describe(self) -> str:
        lo, hi = self.window
        return (f"sql:{_where(self.dsn)} table {self.table} [{_ts(lo) or '-inf'}, {_ts(hi) or '+inf'}) "
                f"({int(self._stats['rows'])} rows; data time {self.origin} s = sim {self._sim0:g} s, speed {self.speed:g})")

    def load(self) -> None:
        r = self.router
        tags = list(dict.fromkeys(b.key for b in r.bindings))
        rows, null_time = _fetch(self.dsn, tags, *self.window, self.table)
        self._stats["rows"], self._stats["null_time_rows"] = float(len(rows)), float(null_time)
        if null_time:
            self.warnings.append(f"{self.table}: {null_time} row(s) of the bound tags have a NULL time and were not replayed")
        if self.origin is None:
            self.origin = float(rows["t"][0]) if len(rows) else 0.0
        order = np.argsort(rows["k"], kind="stable")
        sk = rows["k"][order]
        tag_ix = {t: i for i, t in enumerate(tags)}
        parts: dict[str, list] = {}
        for bi, b in enumerate(r.bindings):
            k = tag_ix[b.key]
            lo, hi = np.searchsorted(sk, [k, k + 1])
            if lo == hi:
                self.warnings.append(f"{b.where}: no rows for tag {b.key!r} in the window")
                self._stats["empty_tags"] += 1
            sel = rows[order[lo:hi]]
            parts.setdefault(r.channels[int(r.chan[bi])], []).append((sel, bi))
        for w in self.warnings:
            log.warning("%s: %s", self.name, w)
        self._chan = {}
        for ch, lst in parts.items():
            t = np.concatenate([s["t"] for s, _ in lst])
            bi = np.concatenate([np.full(len(s), b, np.int64) for s, b in lst])
            raw = np.concatenate([s["v"] for s, _ in lst])
            code = np.concatenate([s["q"] for s, _ in lst])
            o = np.argsort(t, kind="stable")
            t, bi, raw, code = t[o], bi[o], raw[o], code[o]
            vals = raw * r.a[bi] + r.b[bi]
            q = _FLAGS[code] | np.where(np.isfinite(vals), 0, Quality.BAD).astype(np.uint8)
            self._stats["bad_samples"] += float(np.count_nonzero(q & Quality.BAD))
            self._chan[ch] = (self._sim0 + (t - self.origin) / self.speed, r.row[bi], vals, q, bi, code, t)

    def feeds(self):
        return self.router.feeds()

    def start(self, inbox: Inbox) -> None:  # replay: nothing runs off the tick thread
        return None

    def poll(self, t0: float, t1: float) -> Iterable[Samples]:
        """Samples with sim time in ``(t0, t1]``, one batch per channel; event time is sim time."""
        out = []
        for ch, (st, rows, vals, q, bi, code, _) in self._chan.items():
            i0, i1 = np.searchsorted(st, [t0, t1], side="right")
            if i1 <= i0:
                continue
            qs = q[i0:i1]
            reason = self._reason(bi[i0:i1], code[i0:i1], vals[i0:i1], qs) if qs.any() else ""
            out.append(Samples(ch, rows[i0:i1], vals[i0:i1], st[i0:i1], qs, source=self.name, reason=reason))
        self._stats["polled"] += sum(len(s) for s in out)
        return out

    def _reason(self, bi, code, vals, q) -> str:
        bad = q != 0
        why = set()
        for b, c, v in zip(bi[bad][:100], code[bad][:100], vals[bad][:100]):
            text = _WHY[int(c)] if c else ("non-finite" if not np.isfinite(v) else "")
            if text:
                why.add(f"{text} (tag {self.router.bindings[int(b)].key})")
        return "; ".join(sorted(why)[:8])

    def close(self) -> None:
        self._chan = {}

    def stats(self) -> dict[str, float]:
        return dict(self._stats)
