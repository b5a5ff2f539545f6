"""The binary state frame (encoding "binary"): snapshots and deltas as little-endian arrays.

Layout (all little-endian; the f64 arrays start 8-byte aligned so a browser can
view them in place with ``new Float64Array(buffer, 48, n)``)::

    offset  type          field
    0       char[4]       magic "TWB1"
    4       u8            kind: 1 = delta, 2 = snapshot; + 0x40 a later part, + 0x80 more parts follow
    5       u8            snapshot reason (0 subscribe, 1 resume, 2 behind); 0 for deltas
    6       u16           merged: frames merged into this delta (saturates at 65535)
    8       u32           n: scalar entries
    12      u32           m: vec3 entries
    16      u64           seq
    24      u64           tick
    32      f64           simTime
    40      f64           wallTime
    48      f64[n]        values (bool as 0/1)
    ..      f64[3m]       vec3 values (x, y, z per entry)
    ..      u32[n]        indices
    ..      u32[m]        vec3 indices
    ..      u8[n]         quality
    ..      u8[m]         vec3 quality

Size: 48 + 13 n + 29 m bytes. A message too big for the server's bound comes in parts
(:mod:`._split`): the same header fields in each, a slice of the entries, and the kind byte's
flags saying which part is the first (no 0x40) and which the last (no 0x80).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"TWB1"
HEADER = struct.Struct("<4sBBHIIQQdd")
HEADER_SIZE = HEADER.size  # 48
DELTA, SNAPSHOT = 1, 2
LATER_PART, MORE_PARTS = 0x40, 0x80  #: kind-byte flags of a message in parts: not its first part; not its last
REASONS = ("subscribe", "resume", "behind")
#: the layout above as data (for the JSON Schema's ``x-binary-frame`` and for tests)
LAYOUT = {
    "byteOrder": "little-endian",
    "header": [
        {"offset": 0, "type": "char[4]", "field": "magic", "value": "TWB1"},
        {"offset": 4, "type": "u8", "field": "kind",
         "value": "1 = delta, 2 = snapshot; + 0x40 (64): a later part of a message in parts; + 0x80 (128): more parts of it follow"},
        {"offset": 5, "type": "u8", "field": "reason", "value": "snapshot reason: 0 subscribe, 1 resume, 2 behind; 0 for deltas"},
        {"offset": 6, "type": "u16", "field": "merged", "value": "frames merged into this delta (saturates at 65535)"},
        {"offset": 8, "type": "u32", "field": "n", "value": "scalar entries"},
        {"offset": 12, "type": "u32", "field": "m", "value": "vec3 entries"},
        {"offset": 16, "type": "u64", "field": "seq"},
        {"offset": 24, "type": "u64", "field": "tick"},
        {"offset": 32, "type": "f64", "field": "simTime"},
        {"offset": 40, "type": "f64", "field": "wallTime"},
    ],
    "body": [
        {"type": "f64[n]", "field": "values", "value": "bool as 0/1; starts at byte 48 (8-byte aligned)"},
        {"type": "f64[3m]", "field": "vec3Values"},
        {"type": "u32[n]", "field": "indices"},
        {"type": "u32[m]", "field": "vec3Indices"},
        {"type": "u8[n]", "field": "quality"},
        {"type": "u8[m]", "field": "vec3Quality"},
    ],
    "size": "48 + 13 n + 29 m bytes",
    "parts": "a message over the server's limits.maxStateBytes comes as several frames with the same header fields and consecutive slices "
             "of the entries; apply each as it arrives (a snapshot's first part clears the known entries); it is complete after the "
             "frame without 0x80",
}


def encode(kind: int, seq: int, tick: int, sim_time: float, wall_time: float, indices: np.ndarray, values: np.ndarray, quality: np.ndarray,
           vec3_indices: np.ndarray, vec3_values: np.ndarray, vec3_quality: np.ndarray, *, merged: int = 1, reason: str = "subscribe",
           part: int = 0, parts: int = 1) -> bytes:
    """One frame; ``part``/``parts``: this is part ``part`` of a message in ``parts`` (flags in the kind byte)."""
    n, m = len(indices), len(vec3_indices)
    out = bytearray(HEADER_SIZE + 13 * n + 29 * m)
    flags = (LATER_PART if part > 0 else 0) | (MORE_PARTS if part < parts - 1 else 0)
    HEADER.pack_into(out, 0, MAGIC, kind | flags, REASONS.index(reason) if kind == SNAPSHOT else 0, min(int(merged), 65535), n, m, seq, tick,
                     sim_time, wall_time)
    buf = np.frombuffer(out, dtype=np.uint8)
    o = HEADER_SIZE
    buf[o : o + 8 * n].view("<f8")[:] = values
    o += 8 * n
    buf[o : o + 24 * m].view("<f8")[:] = np.asarray(vec3_values, dtype=np.float64).reshape(-1)
    o += 24 * m
    buf[o : o + 4 * n].view("<u4")[:] = indices
    o += 4 * n
    buf[o : o + 4 * m].view("<u4")[:] = vec3_indices
    o += 4 * m
    buf[o : o + n] = quality
    o += n
    buf[o : o + m] = vec3_quality
    return bytes(out)


@dataclass
class BinaryFrame:
    kind: str  # "delta" or "snapshot"
    reason: str
    merged: int
    seq: int
    tick: int
    sim_time: float
    wall_time: float
    indices: np.ndarray
    values: np.ndarray
    quality: np.ndarray
    vec3_indices: np.ndarray
    vec3_values: np.ndarray  # (m, 3)
    vec3_quality: np.ndarray
    first: bool = True  #: the first (or only) part of its message
    last: bool = True  #: the last (or only) part: the message is complete


class BinaryFormatError(ValueError):
    pass


def decode(data: bytes) -> BinaryFrame:
    """Parse a binary state frame (raises :class:`BinaryFormatError` on a malformed one)."""
    if len(data) < HEADER_SIZE:
        raise BinaryFormatError(f"binary frame of {len(data)} bytes is shorter than its {HEADER_SIZE}-byte header")
    magic, kind_byte, reason, merged, n, m, seq, tick, sim_time, wall_time = HEADER.unpack_from(data, 0)
    kind = kind_byte & ~(LATER_PART | MORE_PARTS)
    if magic != MAGIC or kind not in (DELTA, SNAPSHOT):
        raise BinaryFormatError(f"not a twinstage binary frame (magic {magic!r}, kind {kind})")
    if len(data) != HEADER_SIZE + 13 * n + 29 * m:
        raise BinaryFormatError(f"binary frame of {len(data)} bytes, header says {HEADER_SIZE + 13 * n + 29 * m}")
    o = HEADER_SIZE
    values = np.frombuffer(data, "<f8", n, o)
    o += 8 * n
    vec3 = np.frombuffer(data, "<f8", 3 * m, o).reshape(m, 3)
    o += 24 * m
    idx = np.frombuffer(data, "<u4", n, o)
    o += 4 * n
    vidx = np.frombuffer(data, "<u4", m, o)
    o += 4 * m
    q = np.frombuffer(data, np.uint8, n, o)
    vq = np.frombuffer(data, np.uint8, m, o + n)
    return BinaryFrame("delta" if kind == DELTA else "snapshot", REASONS[reason] if kind == SNAPSHOT and reason < 3 else "", merged, seq, tick,
                       sim_time, wall_time, idx, values, q, vidx, vec3, vq, not kind_byte & LATER_PART, not kind_byte & MORE_PARTS)


def peek(data: bytes) -> tuple[int, int, float]:
    """(seq, tick, wallTime) of a binary frame without decoding the arrays (benchmarks)."""
    _, _, _, _, _, _, seq, tick, _, wall = HEADER.unpack_from(data, 0)
    return seq, tick, wall
