"""A recording's open chunk as numpy buffers on the tick thread; its Sdf layer built off it.

The tick thread's share of recording a tick is a copy of each changed channel (values
and quality) into a preallocated block; a channel that did not change re-uses the slot
of its previous tick (so it costs no copy, and its samples in the chunk share one Vt
array, as before). Blocks come from a :class:`BlockPool` that keeps them once a chunk is
written, so later chunks copy into warm pages instead of faulting fresh ones in.

:func:`build_chunk_layer` turns a sealed :class:`ChunkTape` into the chunk's Sdf layer
(``Vt.*Array.FromNumpy`` + ``SetTimeSample`` per channel per tick) — the work the
recorder's writer thread does before it exports the layer. Measured (10k rows × 5
channels, 60 Hz, 60-tick chunks, 2 cores): copying a tick takes ~0.06 ms on the tick
thread; building the layer holds the GIL for ~0.1 ms per tick, so the builder gives the
GIL up after every tick (``time.sleep(0)``), which cut the tick thread's p99 from ~9.6 ms
to ~0.8 ms when a build overlapped a tick.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from pxr import Sdf

from ..state import StateTable
from ._writer import QUALITY_ARRAY


class BlockPool:
    """Reusable ``(block_ticks, rows[, 3])`` value blocks and ``(block_ticks, rows)`` quality
    blocks per channel. ``take`` runs on the tick thread, ``give`` on the writer thread:
    list append/pop are atomic under the GIL. At most ``max_idle`` idle blocks are kept per
    channel (the recorder asks for two chunks' worth: one filling, one being written)."""

    def __init__(self, table: StateTable, names: list[str], block_ticks: int, max_idle: int):
        self.block_ticks = block_ticks
        self.max_idle = max_idle
        self._shape = {n: (table[n].shape, table[n].dtype, table.quality(n).shape, table.quality(n).dtype) for n in names}
        self._idle: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in names}
        self.allocated = 0  # blocks made so far (the rest were re-used)

    def take(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self._idle[name].pop()
        except IndexError:
            vs, vd, qs, qd = self._shape[name]
            b = self.block_ticks
            self.allocated += 1
            return np.empty((b, *vs), dtype=vd), np.empty((b, *qs), dtype=qd)

    def give(self, name: str, blocks: list[tuple[np.ndarray, np.ndarray]]) -> None:
        idle = self._idle[name]
        room = self.max_idle - len(idle)
        if room > 0:
            idle.extend(blocks[:room])


class ChunkTape:
    """The recorded ticks of one chunk, as copies of the table's channels in pooled blocks."""

    def __init__(self, names: list[str], pool: BlockPool):
        self.names = names
        self.pool = pool
        self.n = 0
        self.first: float | None = None
        self.times: list[float] = []
        self.ticks: list[int] = []
        self.sim_times: list[float] = []
        #: per channel, the slot holding each recorded tick's arrays (equal slots: unchanged)
        self.slots: dict[str, list[int]] = {n: [] for n in names}
        self._blocks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in names}
        self._used = dict.fromkeys(names, 0)

    def add(self, t: float, tick: int, sim_time: float, table: StateTable, changed: set[str]) -> None:
        """Record the table as it is now at time code ``t``; only channels in ``changed`` (and every
        channel on the chunk's first tick) are copied."""
        b = self.pool.block_ticks
        for name in self.names:
            sl = self.slots[name]
            if sl and name not in changed:
                sl.append(sl[-1])
                continue
            s = self._used[name]
            k, r = divmod(s, b)
            blocks = self._blocks[name]
            if k == len(blocks):
                blocks.append(self.pool.take(name))
            vb, qb = blocks[k]
            np.copyto(vb[r], table[name])
            np.copyto(qb[r], table.quality(name))
            self._used[name] = s + 1
            sl.append(s)
        if self.first is None:
            self.first = t
        self.times.append(t)
        self.ticks.append(int(tick))
        self.sim_times.append(float(sim_time))
        self.n += 1

    def arrays(self, name: str, slot: int) -> tuple[np.ndarray, np.ndarray]:
        k, r = divmod(slot, self.pool.block_ticks)
        vb, qb = self._blocks[name][k]
        return vb[r], qb[r]

    def release(self) -> None:
        """Hand the blocks back to the pool (the tape's arrays are not to be read after this)."""
        for name, blocks in self._blocks.items():
            self.pool.give(name, blocks)
        self._blocks = {n: [] for n in self.names}


def chunk_template(root: Sdf.Layer, state_path: Sdf.Path, sampled: list[tuple[Sdf.Path, Any]]) -> Sdf.Layer:
    """An anonymous crate layer with the TwinState prim and its sampled attribute specs.

    Composed, a clip only lends its time samples; on its own it is still a valid stage
    (defaultPrim, upAxis, metersPerUnit, defined prims), so validators that check every
    file of a folder pass it too.
    """
    chunk = Sdf.Layer.CreateAnonymous("twinstage-chunk.usdc")
    chunk.timeCodesPerSecond = root.timeCodesPerSecond
    chunk.framesPerSecond = root.framesPerSecond
    for key in ("upAxis", "metersPerUnit"):
        chunk.pseudoRoot.SetInfo(key, root.pseudoRoot.GetInfo(key))
    ps = Sdf.CreatePrimInLayer(chunk, state_path)
    spec = ps
    while spec is not None and spec.path != Sdf.Path.absoluteRootPath:
        spec.specifier = Sdf.SpecifierDef
        spec.typeName = "Scope"
        spec = spec.nameParent
    chunk.defaultPrim = state_path.GetPrefixes()[0].name
    for path, vtype in sampled:
        Sdf.AttributeSpec(ps, path.name, vtype)
    return chunk


def build_chunk_layer(tape: ChunkTape, layer: Sdf.Layer, paths: dict[str, tuple[Sdf.Path, Sdf.Path]],
                      vt: dict[str, Callable[[np.ndarray], Any]], tick_path: Sdf.Path, time_path: Sdf.Path) -> Sdf.Layer:
    """Write ``tape``'s ticks into ``layer`` (from :func:`chunk_template`) as time samples:
    values and quality per channel, then tick and sim time, tick by tick."""
    to_quality = QUALITY_ARRAY[0]
    last: dict[str, tuple[int, Any, Any]] = {}
    for k, t in enumerate(tape.times):
        for name, (vpath, qpath) in paths.items():
            s = tape.slots[name][k]
            prev = last.get(name)
            if prev is None or prev[0] != s:
                v, q = tape.arrays(name, s)
                prev = last[name] = (s, vt[name](v), to_quality(q))
            layer.SetTimeSample(vpath, t, prev[1])
            layer.SetTimeSample(qpath, t, prev[2])
        layer.SetTimeSample(tick_path, t, tape.ticks[k])
        layer.SetTimeSample(time_path, t, tape.sim_times[k])
        time.sleep(0)  # let a tick thread waiting for the GIL run (see the module docstring)
    return layer
