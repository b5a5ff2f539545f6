"""Twin: the headless :class:`Engine` plus the USD writers and the pxr-edit listener."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from pxr import Sdf, Tf, Usd

from ..models import Model
from ..state import StateError
from ..units import UnitError
from ..usd import open_stage
from ..usd._writer import ColumnarWriter, LiveWriter, create_live_layer, open_live_stage
from ._context import SinkContext
from ._engine import Engine, Sink

__all__ = ["Sink", "Twin", "open"]


class Twin(Engine):
    """A running digital twin over a USD stage.

    Build one with :func:`twinstage.open`. State lives in :attr:`table`; each
    :meth:`tick` runs the engine's stages (sources, queued :meth:`set` calls and
    edits made directly to the stage with pxr, models, quality, diff) and hands one
    immutable :class:`Frame` to every sink: the per-prim :class:`LiveWriter`, the
    :class:`ColumnarWriter`, a :class:`Recorder` if recording, ``on_frame``
    callbacks, and any sink added with :meth:`add_sink`.
    """

    def __init__(
        self,
        stage: Usd.Stage,
        *,
        rate: float = 10.0,
        realtime: bool = False,
        speed: float = 1.0,
        seed: int = 0,
        models: Iterable[Model] = (),
        write_budget_s: float | None | str = "auto",
        columnar: bool = True,
        source: str | None = None,
        _live_layer: Sdf.Layer | None = None,
    ):
        super().__init__(stage, rate=rate, realtime=realtime, speed=speed, seed=seed, models=models, source=source)
        # twinstage.open put one in the session layer before composing the stage; a user's own stage gets one now
        self.live_layer = _live_layer if _live_layer is not None else create_live_layer(stage)
        self.context = SinkContext(self)
        if write_budget_s == "auto":
            write_budget_s = 0.5 * self.clock.dt
        self.writer = LiveWriter(budget_s=write_budget_s)
        self.add_sink(self.writer)
        self.columns = ColumnarWriter() if columnar else None
        if self.columns:
            self.add_sink(self.columns)
        self._listener = Tf.Notice.Register(Usd.Notice.ObjectsChanged, self._on_objects_changed, stage)

    def flush(self) -> None:
        self._writing = True
        try:
            self.writer.flush(self.clock.tick)
        finally:
            self._writing = False

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        st = dict(self.writer.stats)
        st["max_staleness_s"] = st["max_staleness_ticks"] * self.clock.dt
        out["writer"] = st
        return out

    # -- USD change notices -------------------------------------------------------
    def _on_objects_changed(self, notice: Usd.Notice.ObjectsChanged, sender: Usd.Stage) -> None:
        if self._writing:
            return
        layer = self.stage.GetEditTarget().GetLayer()
        for path in list(notice.GetChangedInfoOnlyPaths()) + list(notice.GetResyncedPaths()):
            if not path.IsPropertyPath() or not path.name.startswith("twin:"):
                continue
            name = path.name[len("twin:") :]
            prim = str(path.GetPrimPath())
            if ":" in name or prim not in self.table.prim_index or name not in self.table.channels:
                continue
            spec = layer.GetAttributeAtPath(path)
            if spec is None or spec.default is None:
                continue
            value = spec.default
            if self.table.channels[name].type == "vec3":
                value = tuple(value)
            try:
                self.set(prim, **{name: value})
            except (StateError, UnitError) as exc:
                self._error(f"edit of {path} in {layer.identifier} rejected: {exc}")

    def close(self) -> None:
        """Flush live writes, stop sources, close every sink (a recorder saves), detach from the stage."""
        if self._listener is None:
            return
        super().close()
        self._listener.Revoke()
        self._listener = None

    def __enter__(self) -> "Twin":
        return self


def open(path: str | os.PathLike[str], *, load: str = "all", headless: bool = False, **kwargs: Any) -> Twin | Engine:
    """Open a USD scene as a twin: ``twin = twinstage.open("scenes/pump_testbed.usda")``.

    Keyword arguments go to :class:`Twin` (``rate``, ``realtime``, ``speed``, ``seed``,
    ``models``, ``write_budget_s``, ``columnar``). ``headless=True`` returns an
    :class:`Engine` instead: no live layer, no writers, no USD listener.
    """
    if headless:
        return Engine(open_stage(path, load=load), source=str(Path(path).resolve()), **kwargs)
    stage, live = open_live_stage(path, load=load)  # the live layer is in the session layer before the stage composes
    return Twin(stage, source=str(Path(path).resolve()), _live_layer=live, **kwargs)
