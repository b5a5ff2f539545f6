"""Big state messages in parts: no snapshot, delta or ``values`` message over ``Server.max_state_bytes``.

The default bound, 1,000,000 bytes, stays under the 1 MiB default ``max_size`` of Python
``websockets`` (the client a reader of ``docs/protocol.md`` writes first). Measured on the
10k-machine factory (50k entries): a JSON snapshot of everything is 1.06 MB and a merged JSON
delta covering everything as big; binary snapshots are 0.65 MB and go whole.

A message whose encoding is larger comes as ``k`` messages of the same kind with the same
``seq``, ``tick``, times, ``reason``/``merged``, each holding a slice of the entries (scalar and
vec3 entries split alike, in entry order). JSON messages carry ``part`` (0 … k-1) and ``parts``
(k; 1 for a whole message); binary frames flag their kind byte (:data:`_binary.LATER_PART`: not
the first part, :data:`_binary.MORE_PARTS`: not the last). The parts of one message are sent one
after another, nothing else from the state stream between them; replies that follow state (a
``step``/``pause`` ack) come after the last part.

A client applies each part's entries as it arrives ("these entries have these values"); a
snapshot's first part clears what it knew, and the message counts as applied — its ``seq`` is the
client's, a ``resume`` may name it — once the last part is in. A compact ``values`` message too
big to go whole is sent in parts with indices (never the index-free full form, whose order is the
last snapshot's).
"""

from __future__ import annotations

import math
from typing import Callable, Union

from ._binary import HEADER_SIZE
from ._state import Parts, encode_state, encode_values

#: the default bound (bytes per state message): under the 1 MiB ``max_size`` of Python websockets
DEFAULT_MAX_STATE_BYTES = 1_000_000
#: the smallest bound a server accepts (a part holds at least a few hundred entries)
MIN_MAX_STATE_BYTES = 4096

#: one message, or the parts of one message in order
Payload = Union[str, bytes, list]


def split(parts: Parts, k: int) -> list[Parts]:
    """``parts`` as ``k`` consecutive slices (scalar and vec3 entries split alike)."""
    n, m = len(parts.indices), len(parts.vec3_indices)
    out = []
    for j in range(k):
        a, b, c, d = n * j // k, n * (j + 1) // k, m * j // k, m * (j + 1) // k
        out.append(Parts(parts.indices[a:b], parts.values[a:b], parts.quality[a:b], parts.vec3_indices[c:d], parts.vec3_values[c:d],
                         parts.vec3_quality[c:d]))
    return out


def _in_parts(encode: Callable[[Parts, int, int], Union[str, bytes]], parts: Parts, size: int, limit: int) -> list:
    """Encode ``parts`` in as many parts as it takes for each to fit ``limit`` (``size``: the whole's)."""
    k = max(2, math.ceil(size * 1.05 / limit))
    while True:
        k = min(k, max(1, parts.count))
        out = [encode(p, j, k) for j, p in enumerate(split(parts, k))]
        if k >= parts.count or all(len(x) <= limit for x in out):
            return out
        k *= 2


def state_payload(kind: str, encoding: str, parts: Parts, seq: int, tick: int, sim_time: float, wall_time: float, *, merged: int = 1,
                  reason: str = "subscribe", limit: int = DEFAULT_MAX_STATE_BYTES) -> Payload:
    """A snapshot or delta (:func:`~twinstage.bridge._state.encode_state`), in parts when over ``limit`` bytes (0: no limit)."""

    def enc(p: Parts, part: int, n: int) -> Union[str, bytes]:
        return encode_state(kind, encoding, p, seq, tick, sim_time, wall_time, merged=merged, reason=reason, part=part, n_parts=n)

    if encoding == "binary":  # its size is known before encoding
        size = HEADER_SIZE + 13 * len(parts.indices) + 29 * len(parts.vec3_indices)
        if not limit or size <= limit or parts.count < 2:
            return enc(parts, 0, 1)
        return _in_parts(enc, parts, size, limit)
    whole = enc(parts, 0, 1)
    if not limit or len(whole) <= limit or parts.count < 2:
        return whole
    return _in_parts(enc, parts, len(whole), limit)


def values_payload(parts: Parts, seq: int, tick: int, sim_time: float, wall_time: float, merged: int, *, full: bool,
                   limit: int = DEFAULT_MAX_STATE_BYTES) -> Payload:
    """A compact ``values`` message (:func:`~twinstage.bridge._state.encode_values`); larger than ``limit``:
    in parts, each with its entries' indices."""
    whole = encode_values(parts, seq, tick, sim_time, wall_time, merged, full=full)
    if not limit or len(whole) <= limit or parts.count < 2:
        return whole
    size = len(whole) + (8 * parts.count if full else 0)  # the indices the parts carry

    def enc(p: Parts, part: int, n: int) -> str:
        return encode_values(p, seq, tick, sim_time, wall_time, merged, full=False, part=part, n_parts=n)

    return _in_parts(enc, parts, size, limit)


def too_big(payload: Payload, limit: int) -> bool:
    """A whole message over ``limit`` (a delta encoded elsewhere, e.g. by the fan-out hub, before the bound was applied)."""
    return bool(limit) and not isinstance(payload, list) and len(payload) > limit


def as_list(payload: Payload) -> list:
    return payload if isinstance(payload, list) else [payload]
