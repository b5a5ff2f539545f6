"""Recording runs to USD: columnar time samples, in one file or in chunks stitched by value clips.

A recording is a root USD layer (``.usdc`` is compact; ``.usda`` is readable) that
sublayers the scene by a relative path and holds, under ``/<root>/TwinState``, the
layout (the prim list, rows and unit per channel) and the provenance, and one array
time sample per channel per recorded tick (time code = tick number,
``timeCodesPerSecond`` = tick rate). Live values sit in the session layer of the
running stage, never in the recording.

``chunked=True`` (see :data:`CHUNKED`) puts the samples in *chunks* instead:
``<stem>_<ext>.chunks/NNNNNN.usdc``, each a small layer with the ticks since the
previous save, named by USD value-clip metadata on the root's TwinState prim, so
any USD tool plays the whole run (``Usd.Stage.Open(rec)``: the clips compose) and
:class:`~twinstage.usd._recording.Recording` reads the chunks directly. A save then
writes the open chunk (the new ticks only) and the small root, and drops the chunk
from memory: it costs the data recorded since the last save, not the whole history,
and memory stays bounded by one chunk. Unchunked, each save rewrites the whole file.
Chunked periodic saves seal a chunk every ``chunk_ticks`` ticks and write it (then
the root) from a background thread, so the tick thread goes on recording meanwhile;
the next save and :meth:`Recorder.close` wait for that write first.

Crash safety: every file is written to a temp file that is fsynced and renamed over
its target, chunk before root, and ``endTimeCode`` is updated before each save, so
a kill leaves a root that names only complete chunks and whose time range is
exactly what it holds; stale temp files and an earlier recording's chunks are
removed on start.

Saves come every ``save_every_s`` seconds of wall time (stretched to keep them
under 5 % of the run) and, if ``chunk_ticks`` is given, whenever the open chunk
holds that many ticks. Chunked with ``reproducible=True`` they come only every
``chunk_ticks`` recorded ticks (by default as many as ``save_every_s`` of sim time
holds), so chunk boundaries, and with them the bytes of every file, depend on the
run alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pxr import Sdf, Usd, UsdGeom, Vt

from ..state import Frame, StateTable
from ._stage import StageError, tf_error_text
from ._writer import COLUMN_NS, QUALITY_ARRAY, VT_ARRAYS, state_prim_path, write_column_layout


def _temp_prefix(path: Path) -> str:
    """Our save writes ``.<name>.tmp-XXXXXX<ext>`` beside ``path`` and renames it over ``path``."""
    return f".{path.name}.tmp-"


def _usd_or_empty(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head == b"" or head.startswith((b"PXR-USDC", b"#usda"))


def clean_stale_temp_files(path: Path) -> list[Path]:
    """Remove temp files that an interrupted save left next to ``path``.

    That is ours (``.<name>.tmp-*``) and those of ``Layer.Save`` (``<name>.XXXXXX`` and,
    for usda, ``<stem>.XXXXXX``); the latter only when they hold USD data or nothing,
    so a user's ``rec.backup`` text file survives.
    """
    prefix = _temp_prefix(path)
    pat = re.compile(rf"(?:{re.escape(path.name)}|{re.escape(path.stem)})\.[A-Za-z0-9_]{{6}}$")
    removed = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            if not p.is_file() or p == path:
                continue
            if p.name.startswith(prefix) or (pat.fullmatch(p.name) and _usd_or_empty(p)):
                p.unlink()
                removed.append(p)
    return removed


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


#: whether recordings are chunked by default. Off for now: the NVIDIA asset-validator tests in
#: tests/test_validate.py count the USD files beside a recording, and chunks are USD files.
CHUNKED = False


def chunk_dir(path: Path) -> Path:
    """Where the chunks of recording ``path`` live: ``<stem>_<ext>.chunks/`` beside it
    (``rec.usdc`` → ``rec_usdc.chunks``: no ``.usd`` in the name, so ``*.usd*`` globs
    still find only USD files, and ``rec.usda`` beside it keeps its own chunks)."""
    return path.with_name(f"{path.stem}_{path.suffix.lstrip('.').lower()}.chunks")


class Recorder:
    """A Frame sink writing every ``every``-th tick's full state as array time samples."""

    writes_stage = False
    #: at most this share of wall time goes to periodic saves (the interval grows with their cost)
    MAX_SAVE_SHARE = 0.05

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
            self.chunk_ticks = max(1, int(round(self.save_every_s * rate / self.every))) if self.save_every_s < float("inf") else 1 << 62
        self.provenance = dict(provenance or {})
        if self.reproducible:
            self.provenance.pop("command", None)
            self.provenance["reproducible"] = True
            scene_file = self.provenance.get("scene")
            if isinstance(scene_file, str) and os.path.isabs(scene_file):  # where the run happened is not part of it
                self.provenance["scene"] = os.path.relpath(scene_file, self.path.parent.resolve())
        else:
            self.provenance.setdefault("start", _now())
        self.path_in_layer = state_prim_path(stage)
        self._specs = write_column_layout(layer, self.path_in_layer, table)
        self._vt = {name: VT_ARRAYS[ch.type][0] for name, ch in table.channels.items()}
        self._paths = {name: (s[0].path, s[1].path) for name, s in self._specs.items() if name is not None}
        self._tick_path, self._time_path = (s.path for s in self._specs[None])
        self._sampled = [(s.path, s.typeName) for pair in self._specs.values() for s in pair]
        self._arrays: dict[str, tuple[Any, Any]] = {}  # last recorded (values, quality) Vt arrays per channel
        self._changed: set[str] = set()
        #: sealed chunks: (file name, first tick) each; the open one is self._chunk
        self._sealed: list[tuple[str, float]] = []
        self._chunk: Sdf.Layer | None = None
        self._chunk_first: float | None = None
        self._chunk_n = 0
        self._job: threading.Thread | None = None  # the background write of a sealed chunk and the root
        self._job_result: dict[str, Any] = {}
        self._retry: tuple[Sdf.Layer, str, float] | None = None  # a chunk whose background write failed
        if self.chunked:
            self._write_manifest()
        # Write the layout (prims, channels, units, provenance) at once, so the file
        # reads as a (still empty) recording even if the run dies before its first
        # periodic save.
        self.save()

    def _new_chunk_layer(self) -> Sdf.Layer:
        """An anonymous crate layer with the TwinState prim and its sampled attribute specs.

        Composed, a clip only lends its time samples; on its own it is still a valid stage
        (defaultPrim, upAxis, metersPerUnit, defined prims), so validators that check every
        file of a folder pass it too.
        """
        chunk = Sdf.Layer.CreateAnonymous("twinstage-chunk.usdc")
        root = self.layer
        chunk.timeCodesPerSecond = root.timeCodesPerSecond
        chunk.framesPerSecond = root.framesPerSecond
        for key in ("upAxis", "metersPerUnit"):
            chunk.pseudoRoot.SetInfo(key, root.pseudoRoot.GetInfo(key))
        ps = Sdf.CreatePrimInLayer(chunk, self.path_in_layer)
        spec = ps
        while spec is not None and spec.path != Sdf.Path.absoluteRootPath:
            spec.specifier = Sdf.SpecifierDef
            spec.typeName = "Scope"
            spec = spec.nameParent
        chunk.defaultPrim = self.path_in_layer.GetPrefixes()[0].name
        for path, vtype in self._sampled:
            Sdf.AttributeSpec(ps, path.name, vtype)
        return chunk

    def _write_manifest(self) -> None:
        """The clip manifest: which attributes the chunks hold (so no tool has to open them all to know)."""
        _export_atomically(self._new_chunk_layer(), self.chunks_dir / "manifest.usdc")

    def consume(self, frame: Frame) -> None:
        # Channels that changed since the last recorded sample (values or quality; skipped
        # ticks count too). An unchanged channel re-uses the previous sample's arrays:
        # VtArrays share their buffer, so a static channel costs no copy and no memory.
        self._changed.update(frame.changes)
        if frame.tick % self.every:
            return
        t = float(frame.tick)
        if not self.chunked:
            self._chunk = self.layer
        elif self._chunk is None:
            self._chunk = self._new_chunk_layer()
            self._chunk_first = t
            self._chunk_n = 0
        layer = self._chunk
        changed, arrays = self._changed, self._arrays
        for name, (vpath, qpath) in self._paths.items():
            a = arrays.get(name)
            if a is None or name in changed:
                a = arrays[name] = (self._vt[name](self.table[name]), QUALITY_ARRAY[0](self.table.quality(name)))
            layer.SetTimeSample(vpath, t, a[0])
            layer.SetTimeSample(qpath, t, a[1])
        changed.clear()
        layer.SetTimeSample(self._tick_path, t, frame.tick)
        layer.SetTimeSample(self._time_path, t, frame.sim_time)
        self._chunk_n += 1
        if self.first_tick is None:
            self.first_tick = frame.tick
            self.layer.startTimeCode = t
        self.last_tick = frame.tick
        if self.reproducible and self.chunked:  # chunk boundaries by tick count only: the same run, the same files
            due = self._chunk_n >= self.chunk_ticks
        elif self.chunked:  # a full chunk is written in the background: seal it whatever the wall time
            due = self._chunk_n >= self.chunk_ticks or time.monotonic() - self._last_save >= self.save_interval_s
        else:
            due = (self._chunk_n >= self.chunk_ticks and self._explicit_chunks) or time.monotonic() - self._last_save >= self.save_interval_s
        if due:
            self.save(background=True)

    @property
    def save_interval_s(self) -> float:
        """Seconds between periodic saves: ``save_every_s``, stretched so saves take at
        most ``MAX_SAVE_SHARE`` of the run (``save_every_s=0`` saves every tick, whatever it costs)."""
        if self.save_every_s <= 0:
            return 0.0
        return max(self.save_every_s, self.last_save_s / self.MAX_SAVE_SHARE)

    def _chunk_name(self, k: int) -> str:
        return f"{k:06d}.usdc"

    def _update_root(self, chunks: list[tuple[str, float]]) -> None:
        """Time range, provenance and the clip metadata naming ``chunks`` on the root layer."""
        layer = self.layer
        if self.last_tick is not None:
            layer.endTimeCode = float(self.last_tick)
        prov = dict(self.provenance)
        if not self.reproducible:
            prov["end"] = _now()
        prov["recordedTicks"] = [self.first_tick if self.first_tick is not None else -1, self.last_tick if self.last_tick is not None else -1]
        layer.customLayerData = {"twinstage": _to_vt_dict(prov)}
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

        ``background=True`` (chunked periodic saves) hands the sealed chunk and a snapshot
        of the root to a writer thread (``Layer.Export`` releases the GIL, so the run goes
        on while the bytes are written); the next save or :meth:`close` waits for it first.
        """
        t0 = time.monotonic()
        if background and self.chunked:
            self._write_atomically(background=True)
        else:
            self._write_atomically()
        self.saves += 1
        self._last_save = time.monotonic()
        # The ticks a kill can lose are those since the last save (save_interval_s at most).
        self.last_save_s = self._last_save - t0

    def _wait(self) -> None:
        """Wait for the background write; a chunk it failed to write is written again now (raising if it fails)."""
        job, self._job = self._job, None
        if job is not None:
            job.join()
            res, self._job_result = self._job_result, {}
            if "error" in res:
                self._retry = res["chunk"]
            else:
                self._sealed.append(res["chunk"][1:])
        if self._retry is not None:
            layer, name, first = self._retry
            _export_atomically(layer, self.chunks_dir / name)
            self._sealed.append((name, first))
            self._retry = None

    def _write_atomically(self, background: bool = False) -> None:
        """Chunk first, root second, each exported to a temp file, fsynced and renamed over its
        target: a failure leaves the previous root (naming only complete chunks) as it was, and
        the open chunk stays in memory for the next save to write again."""
        self._wait()
        chunks = list(self._sealed)
        if self.chunked and self._chunk is not None and self._chunk_n:
            name = self._chunk_name(len(self._sealed))
            if background:
                chunk = (self._chunk, name, self._chunk_first)
                self._update_root(chunks + [(name, self._chunk_first)])
                # the root is edited only by saves (each waits for this job first) and on the first tick
                root = self.layer
                tmp = self.path.with_name(f"{_temp_prefix(self.path)}{secrets.token_hex(3)}{self.path.suffix}")
                self._chunk = None
                self._chunk_n = 0
                self._job_result = res = {}
                self._job = threading.Thread(target=self._write_in_background, args=(chunk, root, tmp, res), name="twinstage-recorder", daemon=True)
                self._job.start()
                return
            _export_atomically(self._chunk, self.chunks_dir / name)
            chunks.append((name, self._chunk_first))
        self._update_root(chunks)
        tmp = self.path.with_name(f"{_temp_prefix(self.path)}{secrets.token_hex(3)}{self.path.suffix}")
        _export_atomically(self.layer, self.path, tmp)
        if self.chunked and len(chunks) > len(self._sealed):  # both on disk: the chunk is done
            self._sealed = chunks
            self._chunk = None
            self._chunk_n = 0

    def _write_in_background(self, chunk: tuple[Sdf.Layer, str, float], root: Sdf.Layer, tmp: Path, res: dict[str, Any]) -> None:
        res["chunk"] = chunk
        try:
            _export_atomically(chunk[0], self.chunks_dir / chunk[1])
        except BaseException as exc:  # noqa: BLE001 - reported by the next save, which writes it again
            res["error"] = exc
            return
        try:  # a failed root write loses nothing: the next save writes a root naming this chunk too
            _export_atomically(root, self.path, tmp)
        except BaseException:  # noqa: BLE001
            pass

    def close(self) -> None:
        if getattr(self, "layer", None) is not None:
            self.save()


def _export_atomically(layer: Sdf.Layer, target: Path, tmp: Path | None = None) -> None:
    """Export ``layer`` to a temp file beside ``target``, fsync it, rename it over ``target``.

    Not ``Layer.Save()``: saving a .usdc to the file it was saved to before appends
    the changed sections (crate's incremental save), so a file saved every few
    seconds would grow without bound. A failed write leaves the previous file as it was.
    """
    tmp = tmp or target.with_name(f".{target.name}.tmp-{secrets.token_hex(3)}{target.suffix}")
    try:
        if not layer.Export(str(tmp)):
            raise StageError(f"{target}: cannot write recording")
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _to_vt_dict(d: dict[str, Any]) -> dict[str, Any]:
    """customLayerData wants plain strings/numbers/dicts; lists of mixed things become JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _to_vt_dict(v)
        elif isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif v is None:
            out[k] = ""
        else:
            out[k] = json.dumps(v, sort_keys=True, default=str)
    return out


from ._recording import Recording  # noqa: E402,F401 - the reader lives beside the writer
