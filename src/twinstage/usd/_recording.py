"""Reading recordings: one file of time samples, or a root stitched from chunks by value clips.

A chunked recording (what :class:`~twinstage.usd._recorder.Recorder` writes) is a
root layer holding the layout (prims, rows, units), the provenance and, on
``/<root>/TwinState``, USD value-clip metadata (``clips["default"]``) whose
``assetPaths`` are the chunk layers in ``<stem>_<ext>.chunks/`` and whose ``active``
pairs say from which time on each chunk holds the samples. Any USD tool composes
the whole run from that; :class:`Recording` reads the chunks directly with Sdf.
An older recording with its samples in the root layer itself reads the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pxr import Sdf, Usd

from ._stage import StageError, tf_error_text
from ._writer import COLUMN_NS

CLIP_SET = "default"


def _open_layer(path: Path, what: str) -> Sdf.Layer:
    try:
        layer = Sdf.Layer.FindOrOpen(str(path))
    except Exception as exc:
        raise StageError(f"{path}: cannot open {what} ({tf_error_text(exc)[:300]})") from None
    if layer is None:
        raise StageError(f"{path}: cannot open {what}")
    return layer


class Recording:
    """Read a recording written by :class:`Recorder`: ticks, sim times, channel arrays."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            raise StageError(f"{self.path}: no such recording")
        self.root = _open_layer(self.path, "recording")
        self.provenance = dict(self.root.customLayerData.get("twinstage", {}))
        state = None
        for prim in self.root.rootPrims:
            child = prim.nameChildren.get("TwinState") if prim.nameChildren else None
            if child is not None:
                state = child
                break
        if state is None:
            raise StageError(f"{self.path}: holds no twinstage recording (no <root>/TwinState prim)")
        self.state_path = state.path
        attrs = state.attributes
        prims = attrs.get(f"{COLUMN_NS}:prims")
        if prims is None:
            raise StageError(f"{self.path}: {state.path} has no {COLUMN_NS}:prims")
        self.prims = tuple(prims.default)
        self.channels: dict[str, np.ndarray] = {}
        self.units: dict[str, str] = {}
        for a in attrs:
            name = a.name
            if name.endswith(":rows"):
                ch = name[len(COLUMN_NS) + 1 : -len(":rows")]
                self.channels[ch] = np.array(a.default, dtype=np.int64)
                u = attrs.get(f"{COLUMN_NS}:{ch}:unit")
                self.units[ch] = u.default if u is not None else ""
        self.rate = self.root.timeCodesPerSecond
        self._tick_path = state.path.AppendProperty(f"{COLUMN_NS}:tick")
        #: (layer, times) per chunk, in time order; one entry (the root) for an unchunked recording
        self.chunks: list[tuple[Sdf.Layer, np.ndarray]] = self._chunks(state)
        self.times = np.concatenate([t for _, t in self.chunks]) if self.chunks else np.zeros(0)
        self._merged: Sdf.Layer | None = None

    def _chunks(self, state: Sdf.PrimSpec) -> list[tuple[Sdf.Layer, np.ndarray]]:
        end = self.root.endTimeCode if self.root.HasEndTimeCode() else np.inf
        clips = state.GetInfo("clips") if state.HasInfo("clips") else {}
        clip = clips.get(CLIP_SET) if clips else None
        if not clip:
            times = np.array(self.root.ListTimeSamplesForPath(self._tick_path), dtype=float)
            return [(self.root, times[times <= end])]
        paths = list(clip.get("assetPaths", []))
        active = [tuple(a) for a in clip.get("active", [])]
        if len(active) != len(paths) or any(not (0 <= int(i) < len(paths)) for _, i in active):
            raise StageError(f"{self.path}: clips of {state.path} are inconsistent ({len(paths)} assetPaths, {len(active)} active entries)")
        starts = [s for s, _ in active] + [np.inf]
        out = []
        for k, (start, index) in enumerate(active):
            asset = paths[int(index)]
            rel = asset.path if hasattr(asset, "path") else str(asset)
            chunk_path = (self.path.parent / rel).resolve() if not os.path.isabs(rel) else Path(rel)
            if not chunk_path.exists():
                raise StageError(f"{self.path}: chunk {rel} is missing ({chunk_path})")
            layer = _open_layer(chunk_path, f"chunk {rel} of recording {self.path.name}")
            t = np.array(layer.ListTimeSamplesForPath(self._tick_path), dtype=float)
            out.append((layer, t[(t >= start) & (t < starts[k + 1]) & (t <= end)]))
        return out

    @property
    def ticks(self) -> np.ndarray:
        return self.times.astype(np.int64)

    @property
    def time_range(self) -> tuple[float, float]:
        return self.root.startTimeCode, self.root.endTimeCode

    def query(self, path: Sdf.Path | str, t: float) -> Any:
        """The sample of property ``path`` (of the TwinState prim) at time ``t``, or None."""
        path = Sdf.Path(path) if isinstance(path, str) else path
        for layer, times in self.chunks:
            if len(times) and times[0] <= t <= times[-1]:
                return layer.QueryTimeSample(path, t)
        return None

    def _column(self, prop: str) -> list[Any]:
        p = self.state_path.AppendProperty(prop)
        return [layer.QueryTimeSample(p, t) for layer, times in self.chunks for t in times.tolist()]

    def sim_times(self) -> np.ndarray:
        return np.array(self._column(f"{COLUMN_NS}:simTime"), dtype=float)

    def channel(self, name: str, quality: bool = False) -> np.ndarray:
        """All recorded values of channel ``name``: shape (ticks, rows[, 3])."""
        if name not in self.channels:
            raise StageError(f"{self.path}: no channel {name!r} (have {', '.join(sorted(self.channels))})")
        suffix = ":quality" if quality else ""
        return np.array([np.asarray(v) for v in self._column(f"{COLUMN_NS}:{name}{suffix}")])

    def series(self, prim: str, name: str) -> np.ndarray:
        """Recorded values of one prim's ``twin:<name>`` over time."""
        try:
            pi = self.prims.index(prim)
        except ValueError:
            raise StageError(f"{self.path}: {prim} is not a recorded prim") from None
        rows = np.flatnonzero(self.channels[name] == pi) if name in self.channels else []
        if len(rows) == 0:
            raise StageError(f"{self.path}: {prim} has no recorded attribute {name!r}")
        return self.channel(name)[:, rows[0]]

    @property
    def layer(self) -> Sdf.Layer:
        """One layer with the layout and *every* sample (for code that reads a recording with
        ``Sdf.Layer`` calls). Chunked recordings are merged into an anonymous layer on first
        use, which holds the whole run in memory: prefer :meth:`query` and :meth:`channel`."""
        if len(self.chunks) == 1 and self.chunks[0][0] is self.root:
            return self.root
        if self._merged is None:
            merged = Sdf.Layer.CreateAnonymous(self.path.stem + "-merged.usdc")
            merged.TransferContent(self.root)
            ps = merged.GetPrimAtPath(self.state_path)
            if ps is not None and ps.HasInfo("clips"):
                ps.ClearInfo("clips")
            with Sdf.ChangeBlock():
                for layer, times in self.chunks:
                    spec = layer.GetPrimAtPath(self.state_path)
                    if spec is None:
                        continue
                    for a in spec.attributes:
                        if merged.GetAttributeAtPath(a.path) is None:
                            Sdf.AttributeSpec(ps, a.name, a.typeName)
                        for t in times.tolist():
                            v = layer.QueryTimeSample(a.path, t)
                            if v is not None:
                                merged.SetTimeSample(a.path, t, v)
            self._merged = merged
        return self._merged

    def export_per_prim(self, out: str | os.PathLike[str]) -> Path:
        """Write the recording as per-prim ``twin:<name>`` time samples (plus mirrored
        ``drives`` attributes such as ``xformOp:translate``) for tools that animate
        prims (Omniverse, usdview). The output sublayers the scene like the recording."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.unlink()
        root = self.root
        layer = Sdf.Layer.CreateNew(str(out))
        for sub in root.subLayerPaths:
            src = (self.path.parent / sub).resolve()
            rel = os.path.relpath(src, out.parent.resolve())
            layer.subLayerPaths.append(rel if rel.startswith(".") else f"./{rel}")
        for key in ("upAxis", "metersPerUnit"):
            if root.pseudoRoot.HasInfo(key):
                layer.pseudoRoot.SetInfo(key, root.pseudoRoot.GetInfo(key))
        layer.defaultPrim = root.defaultPrim
        layer.timeCodesPerSecond = root.timeCodesPerSecond
        layer.framesPerSecond = root.framesPerSecond
        layer.startTimeCode = root.startTimeCode
        layer.endTimeCode = root.endTimeCode
        layer.customLayerData = dict(root.customLayerData)
        stage = Usd.Stage.Open(str(self.path))
        times = self.times.tolist()
        with Sdf.ChangeBlock():
            for name, rows in self.channels.items():
                data = self.channel(name)
                vspec = root.GetAttributeAtPath(self.state_path.AppendProperty(f"{COLUMN_NS}:{name}"))
                elem = vspec.typeName.scalarType
                for r, pi in enumerate(rows.tolist()):
                    prim_path = Sdf.Path(self.prims[pi])
                    ps = Sdf.CreatePrimInLayer(layer, prim_path)
                    targets = [(f"twin:{name}", elem)]
                    drives = stage.GetPrimAtPath(prim_path).GetAttribute(f"twin:{name}:drives") if stage else None
                    dv = drives.Get() if drives else ""
                    if dv:
                        driven = stage.GetPrimAtPath(prim_path).GetAttribute(dv)
                        if driven:
                            targets.append((dv, driven.GetTypeName()))
                    for attr_name, vtype in targets:
                        spec = ps.attributes.get(attr_name) or Sdf.AttributeSpec(ps, attr_name, vtype)
                        for ti, t in enumerate(times):
                            v = data[ti, r]
                            layer.SetTimeSample(spec.path, t, tuple(v.tolist()) if np.ndim(v) else v.item())
        layer.Save()
        return out
