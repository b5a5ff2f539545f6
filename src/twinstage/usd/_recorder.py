"""Recording runs to USD: columnar time samples, in one file or in chunks stitched by value clips.

A recording is a root USD layer (``.usdc`` is compact; ``.usda`` is readable) that
sublayers the scene by a relative path and holds, under ``/<root>/TwinState``, the
layout (the prim list, rows and unit per channel) and the provenance; its samples are
one array time sample per channel per recorded tick (time code = tick number,
``timeCodesPerSecond`` = tick rate). Live values sit in the session layer of the
running stage, never in the recording.

Chunked (the default, :data:`CHUNKED`) the samples live in *chunks*:
``<stem>_<ext>.chunks/NNNNNN.usdc``, each a small layer with the ticks since the
previous save, named by USD value-clip metadata on the root's TwinState prim, so
any USD tool plays the whole run (``Usd.Stage.Open(rec)``: the clips compose) and
:class:`~twinstage.usd._recording.Recording` reads the chunks directly. A save then
writes the open chunk (the new ticks only) and the small root, and drops the chunk
from memory: it costs the data recorded since the last save, not the whole history,
and memory stays bounded by two chunks. ``chunked=False`` keeps the samples in the root
itself, set on the tick thread, and each save rewrites the whole file.
Chunked, the tick thread only copies each changed channel into the open chunk's
numpy buffers (:class:`~twinstage.usd._chunks.ChunkTape`); a periodic save seals the
chunk and a writer thread builds its Sdf layer from the buffers and writes it (then
a copy of the root naming it), so the tick thread goes on recording meanwhile; the
next save and :meth:`Recorder.close` wait for that write first. The root in memory
(what ``Sdf.Layer.FindOrOpen`` gives this process's readers) names a chunk once the
chunk is on disk.

Crash safety: every file is written to a temp file that is fsynced and renamed over
its target, chunk before root, and ``endTimeCode`` is updated before each save, so
a kill leaves a root that names only complete chunks and whose time range is
exactly what it holds; stale temp files and an earlier recording's chunks are
removed on start.

Saves come every ``save_every_s`` seconds of wall time (stretched to keep them
under 5 % of the run) and, if ``chunk_ticks`` is given, whenever the open chunk
holds that many ticks. Chunked with ``reproducible=True`` they come only every
``chunk_ticks`` recorded ticks (by default as many as ``save_every_s`` of sim time
holds, capped by :attr:`Recorder.CHUNK_BYTES`), so chunk boundaries, and with them the bytes of every file, depend on the
run alone.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from pxr import Sdf, Usd, UsdGeom, Vt

from ..state import Frame, StateTable
from ._chunks import BlockPool, ChunkTape, build_chunk_layer, chunk_template
from ._recfiles import chunk_dir, clean_stale_temp_files, export_atomically, now, temp_path, to_vt_dict
from ._stage import StageError
from ._writer import QUALITY_ARRAY, VT_ARRAYS, state_prim_path, write_column_layout

__all__ = ["CHUNKED", "Recorder", "Recording", "chunk_dir", "clean_stale_temp_files"]

_export_atomically = export_atomically  # module-level, so a test can make writes fail

#: whether recordings are chunked by default: the tick thread only copies arrays, the writer
#: thread builds and writes each chunk (bench/record.py: at or below rerun-sdk's per-tick
#: logging on a 60 Hz run); ``Recorder(path, chunked=False)`` keeps every sample in one file.
CHUNKED = True


class Recorder:
    """A Frame sink writing every ``every``-th tick's full state as array time samples."""

    writes_stage = False
    #: at most this share of wall time goes to periodic saves (the interval grows with their cost)
    MAX_SAVE_SHARE = 0.05
    #: chunked, a chunk holds at most about this many bytes of samples (but at least a quarter
    #: second of ticks): what is left to write at :meth:`close` (and lost by a kill) stays small
    CHUNK_BYTES = 16 << 20

    def __init__(self, path: str | os.PathLike[str], *, save_every_s: float = 2.0, every: int = 1, reproducible: bool = False,
                 chunk_ticks: int | None = None, chunked: bool | None = None):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".usd", ".usda", ".usdc"):
            raise StageError(f"{self.path}: a recording must be .usd, .usda or .usdc")
        if every < 1:
            raise ValueError("every must be >= 1")
        if chunk_ticks is not None and chunk_ticks < 1:
            raise ValueError("chunk_ticks must be >= 1")
        self.save_every_s = save_every_s
        self.last_save_s = 0.0
        #: leave wall-clock times (start, end) and the command line out of the provenance,
        #: so the same scene, seed and inputs give the same files, byte for byte
        self.reproducible = reproducible
        self.every = every
        self.chunk_ticks = chunk_ticks
        self._explicit_chunks = chunk_ticks is not None
        #: chunks stitched by value clips (saves cost the new ticks), or every sample in the
        #: one file (each save rewrites the whole file); None: :data:`CHUNKED`
        self.chunked = CHUNKED if chunked is None else bool(chunked)
        self.first_tick: int | None = None
        self.last_tick: int | None = None
        self.saves = 0
        self.layer: Sdf.Layer | None = None

    def start(self, twin: Any) -> None:
        self.bind(twin.stage, twin.table, rate=1.0 / twin.clock.dt, provenance=twin.provenance())

    def bind(self, stage: Usd.Stage, table: StateTable, *, rate: float, provenance: dict[str, Any] | None = None) -> None:
        self.table = table
        target = self.path.resolve()
        for used in stage.GetUsedLayers():  # recording over the scene would wipe a base layer
            if used.realPath and Path(used.realPath).resolve() == target:
                raise StageError(f"{self.path}: is a layer of the scene ({used.identifier}); record to a separate file")
        layer = Sdf.Layer.Find(str(self.path))
        if layer is not None and "twinstage" not in layer.customLayerData:  # e.g. the scene of another open stage
            raise StageError(f"{self.path}: is open as a layer that is not a twinstage recording; record to a separate file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_files(self.path)
        if self.path.exists():
            self.path.unlink()
        self.chunks_dir = chunk_dir(self.path)
        if self.chunks_dir.is_dir():  # an earlier recording's chunks (or a killed save's temp files)
            for p in self.chunks_dir.iterdir():
                if p.is_file() and (p.suffix == ".usdc" or p.name.startswith(".")):
                    p.unlink()
        if self.chunked:
            self.chunks_dir.mkdir(exist_ok=True)
        elif self.chunks_dir.is_dir() and not any(self.chunks_dir.iterdir()):
            self.chunks_dir.rmdir()
        if layer is not None:  # still registered from an earlier recording in this process
            layer.Clear()
        else:  # not CreateNew: it writes an empty layer, which reads as no recording at all
            layer = Sdf.Layer.New(Sdf.FileFormat.FindByExtension(self.path.suffix.lower().lstrip(".")), str(self.path))
        if layer is None:
            raise StageError(f"{self.path}: cannot create recording")
        self.layer = layer
        scene = stage.GetRootLayer()
        if not scene.anonymous and scene.realPath:
            rel = os.path.relpath(scene.realPath, self.path.parent.resolve())
            layer.subLayerPaths.append(rel if rel.startswith(".") else f"./{rel}")
        default = stage.GetDefaultPrim()
        if default:
            layer.defaultPrim = default.GetName()
        layer.pseudoRoot.SetInfo("upAxis", UsdGeom.GetStageUpAxis(stage))
        layer.pseudoRoot.SetInfo("metersPerUnit", UsdGeom.GetStageMetersPerUnit(stage))
        layer.timeCodesPerSecond = rate
        layer.framesPerSecond = rate
        if self.chunk_ticks is None:
            self.chunk_ticks = self._default_chunk_ticks(table, rate)
        self.provenance = dict(provenance or {})
        if self.reproducible:
            self.provenance.pop("command", None)
            self.provenance["reproducible"] = True
            scene_file = self.provenance.get("scene")
            if isinstance(scene_file, str) and os.path.isabs(scene_file):  # where the run happened is not part of it
                self.provenance["scene"] = os.path.relpath(scene_file, self.path.parent.resolve())
        else:
            self.provenance.setdefault("start", now())
        self.path_in_layer = state_prim_path(stage)
        self._specs = write_column_layout(layer, self.path_in_layer, table)
        self._vt = {name: VT_ARRAYS[ch.type][0] for name, ch in table.channels.items()}
        self._paths = {name: (s[0].path, s[1].path) for name, s in self._specs.items() if name is not None}
        self._tick_path, self._time_path = (s.path for s in self._specs[None])
        self._sampled = [(s.path, s.typeName) for pair in self._specs.values() for s in pair]
        self._arrays: dict[str, tuple[Any, Any]] = {}  # one file: last recorded (values, quality) Vt arrays per channel
        self._changed: set[str] = set()
        self._n = 0  # ticks recorded since the last save
        #: sealed chunks on disk: (file name, first tick) each
        self._sealed: list[tuple[str, float]] = []
        block = max(1, min(self.chunk_ticks, 32))
        self._pool = BlockPool(table, list(self._paths), block, max_idle=2 * -(-min(self.chunk_ticks, 1 << 20) // block))
        self._tape: ChunkTape | None = None  # the open chunk (chunked)
        self._job: threading.Thread | None = None  # the background write of a sealed chunk and the root
        self._job_result: dict[str, Any] = {}
        self._retry: tuple[ChunkTape | Sdf.Layer, str, float, int] | None = None  # a chunk whose write failed
        self._sealed_last: int | None = None  # the last tick the sealed chunks hold
        self._root_failed = False  # the background root write failed: the next save writes it first
        if self.chunked:
            export_atomically(self._new_chunk_layer(), self.chunks_dir / "manifest.usdc")  # which attributes the chunks hold
        # Write the layout (prims, channels, units, provenance) at once, so the file
        # reads as a (still empty) recording even if the run dies before its first
        # periodic save.
        self.save()

    def _default_chunk_ticks(self, table: StateTable, rate: float) -> int:
        """Ticks per chunk: ``save_every_s`` of sim time, chunked capped by :attr:`CHUNK_BYTES`
        (10k assets × 5 float channels: ~0.45 MB a tick, so 37 ticks rather than 120 at 60 Hz)."""
        per_s = rate / self.every
        ticks = max(1, int(round(self.save_every_s * per_s))) if self.save_every_s < float("inf") else 1 << 62
        if self.chunked:
            tick_bytes = sum(table[n].nbytes + table.quality(n).nbytes for n in table.channels) + 16
            ticks = min(ticks, max(int(self.CHUNK_BYTES // tick_bytes), int(round(0.25 * per_s)), 1))
        return ticks

    def _new_chunk_layer(self) -> Sdf.Layer:
        return chunk_template(self.layer, self.path_in_layer, self._sampled)

    def consume(self, frame: Frame) -> None:
        # Channels that changed since the last recorded sample (values or quality; skipped
        # ticks count too). An unchanged channel re-uses the previous sample's arrays.
        self._changed.update(frame.changes)
        if frame.tick % self.every:
            return
        t = float(frame.tick)
        if self.chunked:  # a copy into the open chunk's buffers; the Sdf layer is built at save
            if self._tape is None:
                self._tape = ChunkTape(list(self._paths), self._pool)
            self._tape.add(t, frame.tick, frame.sim_time, self.table, self._changed)
        else:
            self._sample_into_root(t, frame)
        self._changed.clear()
        self._n += 1
        if self.first_tick is None:
            self.first_tick = frame.tick
            self.layer.startTimeCode = t
        self.last_tick = frame.tick
        if self.reproducible and self.chunked:  # chunk boundaries by tick count only: the same run, the same files
            due = self._n >= self.chunk_ticks
        elif self.chunked:  # a full chunk is written in the background: seal it whatever the wall time
            due = self._n >= self.chunk_ticks or time.monotonic() - self._last_save >= self.save_interval_s
        else:
            due = (self._n >= self.chunk_ticks and self._explicit_chunks) or time.monotonic() - self._last_save >= self.save_interval_s
        if due:
            self.save(background=True)

    def _sample_into_root(self, t: float, frame: Frame) -> None:
        """One file: the tick's arrays as time samples of the root layer. VtArrays share their
        buffer, so an unchanged channel re-uses the previous sample's arrays (no copy, no memory)."""
        layer, changed, arrays = self.layer, self._changed, self._arrays
        for name, (vpath, qpath) in self._paths.items():
            a = arrays.get(name)
            if a is None or name in changed:
                a = arrays[name] = (self._vt[name](self.table[name]), QUALITY_ARRAY[0](self.table.quality(name)))
            layer.SetTimeSample(vpath, t, a[0])
            layer.SetTimeSample(qpath, t, a[1])
        layer.SetTimeSample(self._tick_path, t, frame.tick)
        layer.SetTimeSample(self._time_path, t, frame.sim_time)

    @property
    def save_interval_s(self) -> float:
        """Seconds between periodic saves: ``save_every_s``, stretched so saves take at
        most ``MAX_SAVE_SHARE`` of the run (``save_every_s=0`` saves every tick, whatever it costs)."""
        if self.save_every_s <= 0:
            return 0.0
        return max(self.save_every_s, self.last_save_s / self.MAX_SAVE_SHARE)

    def _chunk_name(self, k: int) -> str:
        return f"{k:06d}.usdc"

    def _update_root(self, chunks: list[tuple[str, float]], layer: Sdf.Layer | None = None, last: int | None = None) -> None:
        """Time range, provenance and the clip metadata naming ``chunks`` on the root layer (or
        ``layer``); ``last`` is the last tick they hold (default: the last recorded)."""
        layer = layer or self.layer
        last = self.last_tick if last is None else last
        if last is not None:
            layer.endTimeCode = float(last)
        prov = dict(self.provenance)
        if not self.reproducible:
            prov["end"] = now()
        prov["recordedTicks"] = [self.first_tick if self.first_tick is not None else -1, last if last is not None else -1]
        layer.customLayerData = {"twinstage": to_vt_dict(prov)}
        ps = layer.GetPrimAtPath(self.path_in_layer)
        rel = f"./{self.chunks_dir.name}"
        if chunks:
            ps.SetInfo("clips", {
                "default": {
                    "assetPaths": Sdf.AssetPathArray([Sdf.AssetPath(f"{rel}/{name}") for name, _ in chunks]),
                    "primPath": str(self.path_in_layer),
                    "active": Vt.Vec2dArray([(first, float(k)) for k, (_, first) in enumerate(chunks)]),
                    "manifestAssetPath": Sdf.AssetPath(f"{rel}/manifest.usdc"),
                }
            })
        elif ps.HasInfo("clips"):
            ps.ClearInfo("clips")

    def save(self, *, background: bool = False) -> None:
        """Write the open chunk (the ticks since the last save), then the root; seal the chunk.

        ``background=True`` (chunked periodic saves) hands the sealed chunk's buffers and the
        root to a writer thread, which builds the chunk's layer and writes both (``Layer.Export``
        releases the GIL); the next save or :meth:`close` waits for it first.
        """
        t0 = time.monotonic()
        self._write_atomically(background=background and self.chunked)
        self.saves += 1
        self._last_save = time.monotonic()
        # The ticks a kill can lose are those since the last save (save_interval_s at most).
        self.last_save_s = self._last_save - t0

    def _write_chunk(self, chunk: ChunkTape | Sdf.Layer, name: str) -> Sdf.Layer:
        """Build the layer of a sealed tape (once: a failed write keeps the layer for the retry) and export it."""
        if isinstance(chunk, ChunkTape):
            layer = build_chunk_layer(chunk, self._new_chunk_layer(), self._paths, self._vt, self._tick_path, self._time_path)
            chunk.release()
        else:
            layer = chunk
        try:
            _export_atomically(layer, self.chunks_dir / name)
        except BaseException as exc:
            exc.chunk_layer = layer  # type: ignore[attr-defined]
            raise
        return layer

    def _wait(self) -> None:
        """Wait for the background write; a chunk (or root) it failed to write is written again now (raising if it fails)."""
        job, self._job = self._job, None
        if job is not None:
            job.join()
            res, self._job_result = self._job_result, {}
            if "error" in res:
                self._retry = (*res["chunk"], res["last"])
            else:
                self._sealed.append(res["chunk"][1:])
                self._sealed_last = res["last"]
                self._update_root(self._sealed, last=self._sealed_last)
                self._root_failed = "root_error" in res
        if self._retry is not None:
            chunk, name, first, last = self._retry
            try:
                self._write_chunk(chunk, name)
            except BaseException as exc:
                self._retry = (getattr(exc, "chunk_layer", chunk), name, first, last)
                raise
            self._sealed.append((name, first))
            self._sealed_last = last
            self._retry = None
            self._root_failed = True  # the root on disk does not name it yet
        if self._root_failed:  # the root on disk names what is on disk, and no tick more
            self._update_root(self._sealed, last=self._sealed_last)
            _export_atomically(self.layer, self.path, temp_path(self.path))
            self._root_failed = False

    def _write_atomically(self, background: bool = False) -> None:
        """Chunk first, root second, each exported to a temp file, fsynced and renamed over its
        target: a failure leaves the previous root (naming only complete chunks) as it was, and
        the chunk stays in memory for the next save to write again."""
        self._wait()
        chunks = list(self._sealed)
        tape = self._tape
        if self.chunked and tape is not None and tape.n:
            name, first, last = self._chunk_name(len(self._sealed)), float(tape.first), tape.ticks[-1]
            self._tape, self._n = None, 0
            if background:
                # The writer exports a copy of the root that names the new chunk; the root in memory
                # (what this process's readers find) names it once the chunk is on disk (next save).
                root = Sdf.Layer.CreateAnonymous("twinstage-root" + self.path.suffix)
                root.TransferContent(self.layer)
                self._update_root(chunks + [(name, first)], root, last)
                self._job_result = res = {"chunk": (tape, name, first), "last": last}
                self._job = threading.Thread(target=self._write_in_background, args=(res, root, temp_path(self.path)),
                                             name="twinstage-recorder", daemon=True)
                self._job.start()
                return
            try:
                self._write_chunk(tape, name)
            except BaseException as exc:
                self._retry = (getattr(exc, "chunk_layer", tape), name, first, last)
                raise
            chunks.append((name, first))
            self._sealed, self._sealed_last = chunks, last
        self._update_root(chunks)
        _export_atomically(self.layer, self.path, temp_path(self.path))
        if not self.chunked:
            self._n = 0

    def _write_in_background(self, res: dict[str, Any], root: Sdf.Layer, tmp: Path) -> None:
        tape, name, first = res["chunk"]
        try:
            self._write_chunk(tape, name)
        except BaseException as exc:  # noqa: BLE001 - reported by the next save, which writes it again
            res["chunk"] = (getattr(exc, "chunk_layer", tape), name, first)
            res["error"] = exc
            return
        try:  # a failed root write loses nothing: the next save writes the root first
            _export_atomically(root, self.path, tmp)
        except BaseException as exc:  # noqa: BLE001
            res["root_error"] = exc

    def close(self) -> None:
        if getattr(self, "layer", None) is not None:
            self.save()


from ._recording import Recording  # noqa: E402,F401 - the reader lives beside the writer
