"""Live-telemetry payloads and routing: bytes → parsed values → :class:`Samples`.

Shared by the MQTT and OPC UA sources. Two halves:

* :func:`parse_payload` turns one message into a :class:`Parsed` block (keys ×
  times of raw values, event times and quality codes) or raises
  :class:`PayloadError` with the reason. It never raises anything else, whatever the
  bytes (a hypothesis test feeds it garbage).
* :class:`Router` holds a source's resolved bindings as flat arrays (channel, row and
  the affine unit conversion ``a·x + b`` of every binding) and turns routed raw values
  into one :class:`Samples` per channel, flagging non-finite values BAD.

Payloads accepted (event time ``ts`` in UNIX seconds; missing → arrival time):

* a plain number as text: ``1.25`` (``nan``/``inf`` are accepted and flagged BAD);
* a JSON object: ``{"value": 1.2, "ts": 1700000000.5, "quality": "good"}``
  (quality ``good``/``uncertain``/``bad`` or 0/1/2; ``value`` null → BAD "missing");
* a JSON batch: ``{"ts": [t0, t1, …], "values": {"key": [v0, v1, …], …}}`` (or a
  scalar ``ts`` with scalar values), optionally ``"quality": {"key": "bad"}``;
* the binary batch (:func:`encode_batch`), little-endian, for 10k values at 10 Hz::

      magic   4 bytes  b"TSB1"
      n_keys  uint32   number of keys (columns)
      n_times uint32   number of time points (rows)
      flags   uint32   bit 0: a quality block follows the values
      klen    uint32   length of the key block in bytes
      keys    klen     UTF-8 keys joined by "\\n"
      pad     0–7      zero bytes up to a multiple of 8 from the start
      ts      n_times × float64
      values  n_times × n_keys × float64 (time-major)
      quality n_times × n_keys × uint8 (0 good, 1 uncertain, 2 bad), if flag bit 0

  A receiver caches the key block (it rarely changes), so a batch costs one
  ``frombuffer`` and one vectorised conversion, not a Python loop per value.

Batch keys are signal names as bindings know them (for MQTT: topic names, so a
binding on ``plant/m1/temp`` is fed by a message on that topic or by a batch entry
with that key).
"""

from __future__ import annotations

import math
import re
import struct
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..state import Quality
from ._binding import Binding, Resolved, resolve
from ._source import Samples, TelemetryError

MAGIC = b"TSB1"
# a plain-text number: decimal/scientific, or nan/inf (flagged BAD later); not float()'s
# "1_000", hex or padding tricks
_NUMBER = re.compile(rb"^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|nan|inf|infinity)$", re.IGNORECASE)
_HEADER = struct.Struct("<4sIIII")
QCODES = {"good": 0, "uncertain": 1, "bad": 2}
# quality code → Quality flags
QFLAGS = np.array([0, int(Quality.UNCERTAIN), int(Quality.BAD)], dtype=np.uint8)


class PayloadError(ValueError):
    """A payload that cannot be read; the message says why (the caller adds the topic)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """``values[t, k]`` is key ``keys[k]`` at ``ts[t]``; ``quality`` holds 0/1/2 codes."""

    keys: tuple[str, ...]
    ts: np.ndarray  # float64 (n_times,)
    values: np.ndarray  # float64 (n_times, n_keys)
    quality: np.ndarray  # uint8 (n_times, n_keys)
    key_block: bytes = b""  # binary batches: the raw key block (a cache key)


def encode_batch(keys: Sequence[str], ts, values, quality=None) -> bytes:
    """The binary batch: ``values`` shaped (len(ts), len(keys)); ``quality`` codes 0/1/2 or None."""
    ts = np.ascontiguousarray(ts, dtype="<f8").reshape(-1)
    vals = np.ascontiguousarray(values, dtype="<f8").reshape(len(ts), len(keys))
    kb = "\n".join(keys).encode()
    if any("\n" in k for k in keys):
        raise ValueError("keys may not contain newlines")
    head = _HEADER.pack(MAGIC, len(keys), len(ts), 0 if quality is None else 1, len(kb)) + kb
    head += b"\0" * (-len(head) % 8)
    tail = b"" if quality is None else np.ascontiguousarray(quality, dtype=np.uint8).reshape(vals.shape).tobytes()
    return head + ts.tobytes() + vals.tobytes() + tail


def _num(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise PayloadError(f"{what} must be a number, got {type(x).__name__}")
    try:
        return float(x)
    except OverflowError:
        raise PayloadError(f"{what} is out of range") from None


def _qcode(q, what: str) -> int:
    if q is None:
        return 0
    if isinstance(q, str) and q.lower() in QCODES:
        return QCODES[q.lower()]
    if isinstance(q, int) and not isinstance(q, bool) and q in (0, 1, 2):
        return q
    raise PayloadError(f"{what}: quality must be good/uncertain/bad or 0/1/2, got {q!r}")


def _ts(x, what: str = "ts") -> float:
    t = _num(x, what)
    if not math.isfinite(t):
        raise PayloadError(f"{what} is not finite")
    return t


def _binary(payload: bytes, known: Mapping[bytes, int]) -> Parsed:
    if len(payload) < _HEADER.size:
        raise PayloadError("binary batch shorter than its header")
    _, nk, nt, flags, klen = _HEADER.unpack_from(payload)
    start = _HEADER.size + klen
    start += -start % 8
    need = start + 8 * nt + 8 * nt * nk + (nt * nk if flags & 1 else 0)
    if flags & ~1:
        raise PayloadError(f"binary batch: unknown flags {flags:#x}")
    if len(payload) != need:
        raise PayloadError(f"binary batch: {len(payload)} bytes, header says {need}")
    keys: tuple[str, ...] = ()
    for kb in known:  # already decoded and checked for an earlier batch: the caller routes by block.
        if len(kb) == klen and known[kb] == nk and payload.startswith(kb, _HEADER.size):  # memcmp, no copy, no hashing
            break
    else:
        kb = payload[_HEADER.size:_HEADER.size + klen]
        try:
            keys = tuple(kb.decode().split("\n")) if nk else ()
        except UnicodeDecodeError as exc:
            raise PayloadError(f"binary batch: key block is not UTF-8 ({exc.reason})") from None
        if len(keys) != nk:
            raise PayloadError(f"binary batch: {len(keys)} keys in the key block, header says {nk}")
    ts = np.frombuffer(payload, "<f8", nt, start).astype(np.float64, copy=False)  # read-only views into the payload
    if not np.isfinite(ts).all():
        raise PayloadError("binary batch: a timestamp is not finite")
    vals = np.frombuffer(payload, "<f8", nt * nk, start + 8 * nt).reshape(nt, nk).astype(np.float64, copy=False)
    if flags & 1:
        q = np.frombuffer(payload, np.uint8, nt * nk, start + 8 * nt + 8 * nt * nk).reshape(nt, nk)
        if q.size and int(q.max()) > 2:
            raise PayloadError("binary batch: quality codes must be 0, 1 or 2")
    else:
        q = const(0, (nt, nk), np.uint8)
    return Parsed(keys, ts, vals, q, bytes(kb))


def _json_batch(doc: dict, arrival: float) -> Parsed:
    values = doc["values"]
    if not isinstance(values, dict):
        raise PayloadError("batch 'values' must be an object of key → value(s)")
    qual = doc.get("quality") or {}
    if not isinstance(qual, dict):
        raise PayloadError("batch 'quality' must be an object of key → quality")
    ts_in = doc.get("ts", arrival)
    scalar = not isinstance(ts_in, list)
    ts = np.array([_ts(ts_in)] if scalar else [_ts(t, "ts[]") for t in ts_in], dtype=np.float64)
    keys = tuple(values)
    out = np.empty((len(ts), len(keys)), np.float64)
    q = np.zeros((len(ts), len(keys)), np.uint8)
    for k, (key, v) in enumerate(values.items()):
        col = [v] if scalar else v
        if not isinstance(col, list) or len(col) != len(ts):
            raise PayloadError(f"batch key {key!r}: expected {len(ts)} value(s)")
        for t, x in enumerate(col):
            if x is None:
                out[t, k], q[t, k] = math.nan, 2
            else:
                out[t, k] = _num(x, f"batch key {key!r}")
        q[:, k] = np.maximum(q[:, k], _qcode(qual.get(key), f"batch key {key!r}"))
    return Parsed(keys, ts, out, q)


def parse_payload(topic: str, payload: bytes, *, arrival: float | None = None, max_bytes: int = 16 << 20,
                  known_blocks: Mapping[bytes, int] | None = None) -> Parsed:
    """One message → :class:`Parsed`; raises :class:`PayloadError` only.

    ``known_blocks``: binary key blocks the caller has already routed (a few, each with its
    number of keys); a batch
    whose key block equals one of them (compared in place) gets that very object as
    ``key_block`` and empty ``keys`` — no copy, decode or hash of a 200 kB block per
    message."""
    arrival = time.time() if arrival is None else arrival
    payload = bytes(payload)
    if len(payload) > max_bytes:
        raise PayloadError(f"oversized payload ({len(payload)} bytes > {max_bytes})")
    if payload[:4] == MAGIC:
        return _binary(payload, known_blocks or {})
    text = payload.strip()
    if not text:
        raise PayloadError("empty payload")
    if text[:1] not in (b"{", b"["):
        if len(text) > 64 or not _NUMBER.match(text):
            raise PayloadError(f"not a number, JSON object or batch: {text[:32]!r}")
        v = float(text)
        return Parsed((topic,), np.array([arrival]), np.array([[v]]), np.zeros((1, 1), np.uint8))
    import orjson

    try:
        doc = orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError, OverflowError) as exc:
        raise PayloadError(f"malformed JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"JSON payload must be an object, got {type(doc).__name__}")
    if "values" in doc:
        return _json_batch(doc, arrival)
    if "value" not in doc:
        raise PayloadError("JSON payload has neither 'value' nor 'values'")
    q = _qcode(doc.get("quality"), "payload")
    v = doc["value"]
    if v is None:
        v, q = math.nan, 2
    v = _num(v, "value")
    t = _ts(doc["ts"]) if doc.get("ts") is not None else arrival
    return Parsed((topic,), np.array([t]), np.array([[v]]), np.array([[q]], np.uint8))


def _affine(r: Resolved) -> tuple[float, float]:
    b = float(r.apply(np.array([0.0]))[0])
    return float(r.apply(np.array([1.0]))[0]) - b, b


@dataclass(frozen=True, slots=True)
class Plan:
    """Pre-gathered per-binding arrays for one routing (e.g. one batch key block): the hot path
    is then ``raw * a + b`` and one Samples per channel group (``None`` = all in one channel)."""

    idx: np.ndarray
    a: np.ndarray
    b: np.ndarray
    rows: np.ndarray
    groups: tuple[tuple[str, np.ndarray | None], ...]
    identity: bool


def const(x, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A read-only stride-0 array of ``shape`` filled with ``x`` (no allocation; ~1 µs, where
    ``np.broadcast_to`` costs ~10 µs of Python)."""
    a = np.ndarray(shape, dtype, np.array([x], dtype), 0, (0,) * len(shape))
    a.flags.writeable = False
    return a


def _ro(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class Router:
    """A source's bindings as flat arrays, and raw values → :class:`Samples`."""

    def __init__(self, source: str, kind: str, bindings: Sequence[Binding]):
        self.source, self.kind = source, kind
        self.bindings = list(bindings)
        if not self.bindings:
            raise TelemetryError(f"{source}: no bindings")
        for b in self.bindings:
            if b.kind != kind:
                raise TelemetryError(f"{b.where}: a {kind} source cannot serve a {b.kind} binding")
        self.resolved: list[Resolved] = []

    def bind(self, table) -> None:
        resolved = [resolve(table, b) for b in self.bindings]
        seen: dict[tuple[str, int], Binding] = {}
        for r in resolved:
            other = seen.setdefault((r.channel, r.row), r.binding)
            if other is not r.binding:
                raise TelemetryError(f"{r.binding.where}: {r.binding.prim}.twin:{r.channel} is already fed by {other.where} (one binding per attribute)")
        self.resolved = resolved
        names = sorted({r.channel for r in self.resolved})
        self.channels = names
        cid = {c: i for i, c in enumerate(names)}
        self.chan = np.array([cid[r.channel] for r in self.resolved], np.int64)
        self.row = np.array([r.row for r in self.resolved], np.int64)
        ab = np.array([_affine(r) for r in self.resolved], np.float64).reshape(-1, 2)
        self.a, self.b = ab[:, 0].copy(), ab[:, 1].copy()

    @property
    def bound(self) -> bool:
        return bool(self.resolved)

    def feeds(self) -> dict[str, np.ndarray]:
        out: dict[str, list[int]] = {}
        for r in self.resolved:
            out.setdefault(r.channel, []).append(r.row)
        return {c: np.sort(np.array(rows, np.int64)) for c, rows in out.items()}

    def plan(self, idx: np.ndarray) -> Plan:
        idx = np.asarray(idx, np.int64)
        a, b, rows, ch = self.a[idx], self.b[idx], self.row[idx], self.chan[idx]
        if len(ch) and (ch == ch[0]).all():
            groups: tuple = ((self.channels[int(ch[0])], None),)
        else:
            groups = tuple((self.channels[int(c)], _ro(np.flatnonzero(ch == c))) for c in np.unique(ch))
        ident = bool((a == 1.0).all() and (b == 0.0).all())
        return Plan(_ro(idx), _ro(a), _ro(b), _ro(rows), groups, ident)

    def emit(self, plan: Plan, raw: np.ndarray, ts: float, qcode: np.ndarray, *, arrival: float, why: str = "") -> list[Samples]:
        """One time point through a cached :class:`Plan`; flagged or non-finite values take :meth:`samples`."""
        n = len(plan.idx)
        vals = raw if plan.identity else raw * plan.a + plan.b
        if qcode.any() or not math.isfinite(vals.sum()):  # one pass, no temporary; a false alarm (overflow) only costs time
            return self.samples(plan.idx, np.asarray(raw, np.float64), np.full(n, ts), qcode, arrival=arrival, why=why)
        # one time point and good quality: stride-0 views, no 80 kB allocations per batch (freeing
        # those on the tick thread and faulting them in again here cost more than the parse)
        et, q = const(ts, (n,), np.float64), const(0, (n,), np.uint8)
        src = self.source
        return [Samples(ch, plan.rows, vals, et, q, arrival, src, "") if g is None else Samples(ch, plan.rows[g], vals[g], et[g], q[g], arrival, src, "")
                for ch, g in plan.groups]

    def samples(self, idx: np.ndarray, raw: np.ndarray, ts: np.ndarray, qcode: np.ndarray, *, arrival: float, why: str = "") -> list[Samples]:
        """Binding indices ``idx`` with raw values → one Samples per channel (values in the attribute's unit)."""
        vals = raw * self.a[idx] + self.b[idx]
        q = QFLAGS[qcode]
        bad = ~np.isfinite(vals)
        reasons = []
        if bad.any():
            q = q | np.where(bad, np.uint8(Quality.BAD), np.uint8(0))
            keys = sorted({self.bindings[int(i)].key for i in idx[bad & (qcode != 2)][:50]})
            if keys:
                reasons.append(f"non-finite value ({', '.join(keys[:3])})")
        if (qcode == 2).any() or (qcode == 1).any():
            keys = sorted({self.bindings[int(i)].key for i in idx[qcode > 0][:50]})
            reasons.append(f"{why or 'quality flagged by the source'} ({', '.join(keys[:3])})")
        reason = "; ".join(reasons)
        ch = self.chan[idx]
        if len(ch) and (ch == ch[0]).all():
            groups = [(int(ch[0]), slice(None))]
        else:
            groups = [(int(c), ch == c) for c in np.unique(ch)]
        return [
            Samples(self.channels[c], self.row[idx[m]], vals[m], ts[m], q[m], arrival, self.source, reason if q[m].any() else "")
            for c, m in groups
        ]
