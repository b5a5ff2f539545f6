"""USD structure tracking: prims added to / removed from the stage while the server runs
become ``structure`` messages (and the ``added``/``removed`` lists of later hellos).

A prim added while running is re-sent (same path, new record) when its transform or
size changes, so clients see it where it ends up.
"""

from __future__ import annotations

import logging
from typing import Any

from ._jsonio import wire
from ._messages import PrimInfo, Structure
from ._scene import SceneInfo

log = logging.getLogger("twinstage.bridge")
_SHAPE_PROPS = ("extent", "size", "radius", "height")


class StructureTracker:
    def __init__(self, server: Any, stage: Any):
        from pxr import Tf, Usd

        self.server = server
        self.stage = stage
        self.known: set[str] = {str(p.GetPath()) for p in stage.Traverse()}
        self.runtime: set[str] = set()  # prims added while running (their moves are re-sent)
        self.added: dict[str, dict] = {}
        self.removed: list[str] = []
        self._notice = Tf.Notice.Register(Usd.Notice.ObjectsChanged, self._on_stage_changed, stage)

    def revoke(self) -> None:
        if self._notice is not None:
            self._notice.Revoke()
            self._notice = None

    def _on_stage_changed(self, notice: Any, stage: Any) -> None:
        """USD change notice (in the editing thread): hand added/removed prims to the loop."""
        server = self.server
        if server.closed:
            return
        try:
            from pxr import Sdf, Usd

            resynced = list(notice.GetResyncedPaths())
            paths = [p for p in resynced if p.IsPrimPath() and p != Sdf.Path.absoluteRootPath]
            touched: set[str] = set()
            if self.runtime:  # every tick's live writes come through here: 17 % of `serve`'s CPU at 10k assets when done with no runtime prims
                touched = {str(p.GetPrimPath()) for p in resynced + list(notice.GetChangedInfoOnlyPaths())
                           if p.IsPropertyPath() and (p.name.startswith("xformOp") or p.name in _SHAPE_PROPS)}
                touched &= self.runtime
            if not paths and not touched:
                return
            info = SceneInfo(stage)
            added: dict[str, dict] = {}
            removed = []
            for p in paths:
                sp = str(p)
                prim = stage.GetPrimAtPath(p)
                alive = bool(prim) and prim.IsActive() and prim.IsDefined()
                if alive and sp not in self.known:
                    if not any(sp.startswith(a + "/") for a in added):
                        added[sp] = info.prim(sp)
                        self.runtime.add(sp)
                    for q in Usd.PrimRange(prim):
                        self.known.add(str(q.GetPath()))
                elif not alive and sp in self.known:
                    removed.append(sp)
                    pre = sp + "/"
                    self.known = {k for k in self.known if k != sp and not k.startswith(pre)}
                    self.runtime = {k for k in self.runtime if k != sp and not k.startswith(pre)}
            for sp in touched:
                if sp not in added and stage.GetPrimAtPath(sp):
                    added[sp] = info.prim(sp)
            if added or removed:
                self.deliver(list(added.values()), removed)
        except Exception:
            log.exception("bridge: reading a stage change failed")

    def deliver(self, added: list[dict], removed: list[str]) -> None:
        """Hand a change to the server's loop (the fan-out hub sends it to its workers instead)."""
        self.server.post(self._on_structure, added, removed)

    def _on_structure(self, added: list[dict], removed: list[str]) -> None:
        for r in removed:
            if r in self.added or any(r.startswith(a + "/") for a in self.added):
                self.added = {k: v for k, v in self.added.items() if k != r and not k.startswith(r + "/")}
            else:
                self.removed.append(r)
        for a in added:
            self.added[a["path"]] = a
            if a["path"] in self.removed:
                self.removed.remove(a["path"])
        m = self.server.mirror
        text = wire(Structure(seq=m.seq, tick=m.tick, added=[PrimInfo.model_validate(a) for a in added], removed=removed))
        for s in list(self.server.sessions):
            s.on_structure(text, added, removed)
