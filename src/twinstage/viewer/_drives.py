"""Transforms driven by twin channels (``twin:<name>:drives = xformOp:translate`` …): the world
matrices of moving assets, recomputed from the rows a Frame changed (numpy; the stage is read once)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._state import TwinState

log = logging.getLogger("twinstage.viewer")


class Drives:
    """Twin channels that drive transform ops (``twin:<name>:drives = xformOp:translate`` …).

    For a driven prim whose local transform is ``A · M(value) · B`` (row-vector
    USD order: ops after the driven one, the op, ops before it), world =
    ``A · M(v) · B · parentWorld``; ``A``, ``B`` and ``parentWorld`` are read from
    the stage once.
    """

    OPS = ("translate", "scale", "rotateX", "rotateY", "rotateZ")

    def __init__(self, stage: Any, state: TwinState, n_objects: int, time: Any = None):
        from pxr import Usd, UsdGeom

        self.groups: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        if stage is None:
            return
        tc = Usd.TimeCode.Default() if time is None else time
        cache = UsdGeom.XformCache(tc)
        for name, ch in state.channels.items():
            targets = [(r, d) for r, d in enumerate(ch.drives) if d and d.startswith("xformOp:")]
            if not targets:
                continue
            by_op: dict[str, list] = {}
            for r, d in targets:
                pi = int(ch.prim_index[r])
                if pi >= n_objects:
                    continue
                prim = stage.GetPrimAtPath(state.prims[pi])
                if not prim:
                    continue
                xf = UsdGeom.Xformable(prim)
                ops = xf.GetOrderedXformOps() if xf else []
                names = [op.GetOpName() for op in ops]
                if d not in names:
                    log.info("viewer: %s.twin:%s drives %s, which is not in its xformOpOrder; ignored", state.prims[pi], name, d)
                    continue
                op_type = d.split(":")[1]
                if op_type not in self.OPS:
                    log.info("viewer: %s.twin:%s drives %s; only %s are animated", state.prims[pi], name, d, ", ".join(self.OPS))
                    continue
                k = names.index(d)
                a = np.eye(4)
                for op in ops[k + 1:]:
                    a = np.array(op.GetOpTransform(tc)) @ a
                b = np.eye(4)
                for op in ops[:k]:
                    b = np.array(op.GetOpTransform(tc)) @ b
                # row-vector: local = M(op_last) … M(op_0); ops after k are applied outside → on the left
                parent = np.array(cache.GetParentToWorldTransform(prim)) if not xf.GetResetXformStack() else np.eye(4)
                by_op.setdefault(op_type, []).append((r, pi, a, b, parent))
            for op_type, items in by_op.items():
                rows = np.array([i[0] for i in items])
                objs = np.array([i[1] for i in items])
                a = np.stack([i[2] for i in items])
                bp = np.stack([i[3] @ i[4] for i in items])  # ops before the driven one, then the parent: fixed
                self.groups.append((name, op_type, rows, objs, a, bp, bool(np.allclose(a, np.eye(4))), len(ch)))
        self.channels = {g[0] for g in self.groups}

    def update(self, state: TwinState, dirty: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
        """New world matrices of objects whose driving channels changed: (objects, matrices)."""
        objs_out, mats_out = [], []
        for name, op_type, rows, objs, a, bp, a_is_identity, n_rows in self.groups:
            d = dirty.get(name)
            if d is None or not len(d):
                continue
            mask = np.zeros(n_rows, bool)
            mask[d] = True
            sel = np.flatnonzero(mask[rows])
            if not len(sel):
                continue
            v = np.asarray(state.values[name][rows[sel]], dtype=np.float64)
            if op_type == "translate" and a_is_identity:
                # T(v)·BP: rows 0..2 are BP's, row 3 is [v, 1]·BP (the common case, no 4×4 products)
                world = bp[sel].copy()
                world[:, 3, :] = np.einsum("ni,nij->nj", v.reshape(-1, 3), bp[sel, :3, :]) + bp[sel, 3, :]
            else:
                world = a[sel] @ _op_matrices(op_type, v) @ bp[sel]
            ok = np.isfinite(world).all(axis=(1, 2))
            objs_out.append(objs[sel][ok])
            mats_out.append(world[ok])
        if not objs_out:
            return None
        return np.concatenate(objs_out), np.concatenate(mats_out)


def _op_matrices(op_type: str, v: np.ndarray) -> np.ndarray:
    n = len(v)
    m = np.tile(np.eye(4), (n, 1, 1))
    if op_type == "translate":
        m[:, 3, :3] = v.reshape(n, 3)
    elif op_type == "scale":
        s = v.reshape(n, -1)
        s = np.repeat(s, 3, axis=1) if s.shape[1] == 1 else s
        m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = s[:, 0], s[:, 1], s[:, 2]
    else:  # rotateX/Y/Z in degrees, row-vector convention (as Gf)
        a = np.radians(v.reshape(n))
        c, s = np.cos(a), np.sin(a)
        i, j = {"rotateX": (1, 2), "rotateY": (2, 0), "rotateZ": (0, 1)}[op_type]
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, s, -s, c
    return m


__all__ = ["Drives"]
