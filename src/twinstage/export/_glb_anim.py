"""Bake motion into a glTF animation: TRS channels of the nodes whose world transform changes over time.

Motion comes from a twin recording (per-prim time samples composed over the scene) or from
time-sampled transforms authored in the source USD file; deforming meshes (time-sampled
points) are not baked (their first sample is exported).
"""

from __future__ import annotations

import numpy as np
from pxr import Usd, UsdGeom

from ..geometry import SceneGeometry
from ._gltf import GltfBuilder, decompose

#: glTF animations are sampled data: cap the keys per channel (evenly spaced over the time range)
MAX_KEYS = 2000


def moving_objects(stage: Usd.Stage, geo: SceneGeometry) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Sample times and, per object whose world transform changes, its (times, 10) TRS series."""
    times = _sample_times(stage)
    if len(times) < 2:
        return times, {}
    candidates = []
    for i, obj in enumerate(geo.objects):
        prim = stage.GetPrimAtPath(obj.path)
        p = prim
        varying = False
        while p and not p.IsPseudoRoot():
            xf = UsdGeom.Xformable(p)
            if xf and xf.TransformMightBeTimeVarying():
                varying = True
                break
            p = p.GetParent()
        if varying:
            candidates.append((i, prim))
    if not candidates:
        return times, {}
    trs = np.zeros((len(times), len(candidates), 10))
    for k, t in enumerate(times):
        cache = UsdGeom.XformCache(Usd.TimeCode(float(t)))
        for j, (_, prim) in enumerate(candidates):
            m = np.array(cache.GetLocalToWorldTransform(prim), dtype=np.float64).reshape(4, 4)
            tr, q, s, _ = decompose(m)
            if k and np.dot(q, trs[k - 1, j, 3:7]) < 0:
                q = -q  # keep quaternions on one hemisphere: no spins through interpolation
            trs[k, j] = np.concatenate([tr, q, s])
    out = {}
    for j, (i, _) in enumerate(candidates):
        if np.abs(trs[:, j] - trs[0, j]).max() > 1e-9:
            out[i] = trs[:, j]
    return times, out


def bake_animation(b: GltfBuilder, stage: Usd.Stage, times: np.ndarray, series: dict[int, np.ndarray], nodes: dict[int, int],
                   name: str) -> None:
    tcps = stage.GetTimeCodesPerSecond() or 24.0
    secs = ((times - times[0]) / tcps).astype(np.float32)
    channels, samplers = [], []
    time_acc = None
    for i, trs in sorted(series.items()):
        if i not in nodes:
            continue
        for path, sl in (("translation", slice(0, 3)), ("rotation", slice(3, 7)), ("scale", slice(7, 10))):
            values = trs[:, sl]
            if np.abs(values - values[0]).max() < 1e-9:
                continue
            if time_acc is None:
                time_acc = b.accessor(secs, target=None, minmax=True)
            out = values if path != "rotation" else values / np.linalg.norm(values, axis=1, keepdims=True)
            samplers.append({"input": time_acc, "output": b.accessor(out, target=None), "interpolation": "LINEAR"})
            channels.append({"sampler": len(samplers) - 1, "target": {"node": nodes[i], "path": path}})
    if channels:
        b.doc.setdefault("animations", []).append({"name": name, "channels": channels, "samplers": samplers,
                                                   "extras": {"timeCodesPerSecond": tcps, "startTimeCode": float(times[0])}})


def _sample_times(stage: Usd.Stage) -> np.ndarray:
    start, end = stage.GetStartTimeCode(), stage.GetEndTimeCode()
    if not stage.HasAuthoredTimeCodeRange() or not end > start:
        return np.zeros(0)
    n = int(round(end - start)) + 1
    if n > MAX_KEYS:
        return np.linspace(start, end, MAX_KEYS)
    return np.arange(n, dtype=np.float64) + start
