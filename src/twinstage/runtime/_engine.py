"""The headless engine: a StateTable, models, sources, a clock, and the tick's stages.

One tick runs six explicit stages, in this order::

    sources → queued sets → models → [added stages] → quality → diff → sinks

* **sources** — replay sources are polled for the tick's sim-time window, live
  sources' batches are drained from the bounded inbox, everything is aligned onto the
  tick (``telemetry._align``) and written into the table with its quality;
* **queued sets** — :meth:`Engine.set` calls (and, on a :class:`~twinstage.Twin`,
  pxr edits of the stage);
* **models** — each model steps its prims vectorised; rows fed by a source are then
  restored, so a model never overwrites a measurement;
* **added stages** — optional, :meth:`Engine.add_stage` (e.g. the fidelity
  package's data assimilation): each gets ``step(t, dt)`` with this tick's model
  values and measurements (and their telemetry flags) in the table, and may
  rewrite values and quality flags before the quality checks run;
* **quality** — non-finite values are replaced and flagged BAD, limits set
  OUT_OF_RANGE, fed rows get their telemetry flags (STALE, LATE, BAD, …);
* **diff** — the immutable :class:`~twinstage.state.Frame` of what changed;
* **sinks** — every sink consumes the Frame (one failing sink stops nothing).

An :class:`Engine` has no live layer, no writers and no USD change listener:
creating and ticking one is cheap (calibration and sweeps run thousands; use
:meth:`Engine.fork` to skip re-reading the stage). :class:`~twinstage.Twin` is an
engine plus the USD writers and the pxr-edit listener. Sinks get a
:class:`SinkContext`, not the engine. Binding the models is ``_binding``'s, the limit
check and the words for a flag ``_quality``'s, the sources ``_feeds``'.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Iterable

import numpy as np
from pxr import Usd

from ..models import Model
from ..state import Frame, Quality, StateError, StateTable
from ..units import converter, split_quantity
from ._binding import bind_models
from ._clock import Clock
from ._context import Sink, SinkContext, _CallbackSink
from ._feeds import Feeds
from ._provenance import provenance, read_scene
from ._quality import flag_limits, limited_channels, quality_reason

log = logging.getLogger("twinstage")


class Engine:
    """A headless twin: state, models, telemetry sources and a fixed-step clock.

    ``twinstage.open(path, headless=True)`` builds one; so does ``Engine(stage)``.
    Sinks are optional (``on_frame``, ``add_sink``, :meth:`record`).
    """

    live_layer = None

    def __init__(self, stage: Usd.Stage, *, rate: float = 10.0, realtime: bool = False, speed: float = 1.0, seed: int = 0,
                 models: Iterable[Model] = (), source: str | None = None, _scene: tuple | None = None):
        self.stage = stage
        root = stage.GetRootLayer()
        self.source = source or (root.realPath or root.identifier)
        self.seed = int(seed)
        self.clock = Clock(rate, realtime=realtime, speed=speed)
        self.errors: collections.deque[str] = collections.deque(maxlen=200)
        self.data_sources: list[str] = []
        self._scene = _scene or read_scene(stage, self.source)
        prim_paths, self.assets, decls = self._scene
        self.table = StateTable(prim_paths, decls)
        self._limited = limited_channels(self.table)
        self._given_models = list(models)
        self.models, self._model_order, self._rngs = bind_models(self.table, self.assets, stage, self._given_models, self.seed)
        self.feeds = Feeds(self.table)
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], Any] = {}
        self._writing = False
        self._stop = False
        self._running = False
        self._sinks: list[Sink] = []
        self._stages: list[Any] = []
        self.params_layers: list[dict[str, Any]] = []  #: calibration layers applied (path, sha256, applied/skipped): provenance
        self._frame: Frame | None = None
        self.context = SinkContext(self)

    def fork(self, *, seed: int | None = None, models: Iterable[Model] | None = None, copy_state: bool = False, **kwargs: Any) -> "Engine":
        """A headless engine on the same scene without re-reading the stage (sweeps, fits); ``copy_state=True``
        continues from this engine's state, parameters and random streams (``runtime._fork``)."""
        from ._fork import fork_engine
        return fork_engine(self, Engine, seed=seed, models=models, copy_state=copy_state, **kwargs)

    # -- state access -----------------------------------------------------------
    @property
    def tick_count(self) -> int:
        return self.clock.tick

    @property
    def sim_time(self) -> float:
        return self.clock.sim_time

    @property
    def last_frame(self) -> Frame | None:
        return self._frame

    def _coerce(self, path: str, name: str, value: Any) -> Any:
        mag, unit = split_quantity(value)
        if unit is not None:  # set() has checked that prim and attribute exist
            conv = converter(unit, self.table.channels[name].unit, f"{path}.twin:{name}")
            if isinstance(mag, (int, float)) and not isinstance(mag, bool):
                mag = conv(float(mag))
            else:
                mag = conv(np.asarray(mag, dtype=float))
        return self.table.validate(path, name, mag)

    def set(self, path: str, **values: Any) -> None:
        """Queue new values for ``path``'s twin attributes; they enter the next Frame.

        ``twin.set("/Testbed/Valve1", opening=0.4)``. A value may carry a unit as
        ``(value, "unit")`` or a pint Quantity and is converted to the attribute's
        unit. Everything is validated first (prim, attribute, type, finiteness,
        limits, unit, not fed by a telemetry source); one bad value rejects the whole
        call and queues nothing.
        """
        if not values:
            raise StateError(f"{path}: set() needs at least one attribute=value")
        staged = []
        for name, value in values.items():
            row = self.table.row(path, name)
            owner = self.feeds.owner_of(name, row) if self.feeds else None
            if owner is not None:
                raise StateError(f"{path}.twin:{name} is fed by telemetry source {owner!r}; set() cannot write a measured value")
            staged.append(((name, row), self._coerce(path, name, value)))
        with self._lock:
            self._pending.update(staged)

    def get(self, path: str, name: str | None = None) -> Any:
        """Current value of ``path``'s ``twin:<name>``, or a dict of all its twin attributes."""
        if name is not None:
            return self.table.get(path, name)
        return {n: self.table.get(path, n) for n in self.table.attributes(path)}

    def unit(self, path: str, name: str) -> str:
        self.table.row(path, name)
        return self.table.channels[name].unit

    def quality(self, path: str, name: str) -> Quality:
        return Quality(int(self.table.quality(name)[self.table.row(path, name)]))

    def quality_reason(self, path: str, name: str) -> str:
        """Why ``path``'s ``twin:<name>`` is flagged, in words ('good' when it is not)."""
        return quality_reason(self.table, self.feeds, path, name)

    def freshness(self, path: str | None = None, name: str | None = None) -> Any:
        """Age (s) of the last good sample of a fed attribute (inf: none yet; NaN: not fed), or
        with no arguments a dict channel → array over all its rows."""
        ages = self.feeds.freshness()
        if path is None:
            return ages
        row = self.table.row(path, name or "")
        a = ages.get(name or "")
        return float("nan") if a is None else float(a[row])

    # -- sources ----------------------------------------------------------------
    def add_source(self, src: Any) -> Any:
        """Bind ``src`` (no row is fed twice) and start it: from the next tick its aligned values and
        quality fill the rows it feeds, which models no longer write."""
        self.feeds.add(src, self.clock.sim_time)
        self._refeed()
        desc = getattr(src, "describe", None)
        self.data_sources.append(desc() if callable(desc) else f"{getattr(src, 'kind', '')}:{getattr(src, 'name', '')}")
        return src

    def remove_source(self, name: str) -> None:
        self.feeds.remove(name)
        self._refeed()

    def _refeed(self) -> None:
        for model in self._model_order:
            fed = getattr(model, "fed", None)
            if callable(fed):
                fed(self.feeds.fed)

    # -- stages -----------------------------------------------------------------
    def add_stage(self, stage: Any) -> Any:
        """Run ``stage.step(t, dt)`` each tick after the models, before the quality checks (which see
        what it wrote into ``ctx.table``). ``stage.start(ctx)`` gets the :class:`SinkContext`;
        optional ``describe()`` goes into the provenance, ``close()`` runs at close. Errors are logged."""
        stage.start(self.context)
        self._stages.append(stage)
        return stage

    def remove_stage(self, stage: Any) -> None:
        if stage in self._stages:
            self._stages.remove(stage)

    @property
    def stages(self) -> tuple[Any, ...]:
        return tuple(self._stages)

    # -- sinks ------------------------------------------------------------------
    def add_sink(self, sink: Sink) -> Sink:
        sink.start(self.context)
        self._sinks.append(sink)
        return sink

    def remove_sink(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
            sink.close()

    def on_frame(self, callback: Callable[[Frame], None]) -> Callable[[], None]:
        """Call ``callback(frame)`` after every tick; returns a function that unsubscribes."""
        sink = self.add_sink(_CallbackSink(callback))
        return lambda: self.remove_sink(sink)

    def record(self, path: Any, *, save_every_s: float = 2.0, every: int = 1, reproducible: bool = False,
               chunked: bool | None = None, chunk_ticks: int | None = None) -> Any:
        """Record every ``every``-th tick to ``path`` (a separate USD layer), saving atomically.

        ``reproducible=True`` keeps wall times and the command line out of the provenance (same inputs →
        same bytes); ``chunked=True`` writes value-clip chunks (:class:`~twinstage.usd._recorder.Recorder`).
        """
        from ..usd._recorder import Recorder

        return self.add_sink(Recorder(path, save_every_s=save_every_s, every=every, reproducible=reproducible,
                                      chunked=chunked, chunk_ticks=chunk_ticks))

    # -- running ------------------------------------------------------------------
    def pause(self) -> None:
        self.clock.pause()

    def resume(self) -> None:
        self.clock.resume()

    def stop(self) -> None:
        """Ask a running :meth:`run` to return after the current tick (thread-safe)."""
        self._stop = True

    def step(self, n: int = 1) -> None:
        """Advance ``n`` ticks, paused or not (a running :meth:`run` in another thread lets them through)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if self._running:
            self.clock.step(n)
            return
        for _ in range(n):
            self.tick()
        self.flush()

    def tick(self) -> Frame:
        """Advance one tick: sources → queued sets → models → quality → diff → sinks."""
        clock = self.clock
        t0, t1, wall = clock.sim_time, (clock.tick + 1) * clock.dt, time.time()
        feeds = self.feeds
        if feeds:
            self._stage_sources(t0, t1, wall)
        self._stage_sets()
        self._stage_models(t0, clock.dt)
        if self._stages:
            self._stage_added(t0, clock.dt)
        self._stage_quality()
        clock.advance()
        frame = self.table.diff(clock.tick, clock.sim_time, time.time())
        self._frame = frame
        self._stage_sinks(frame)
        return frame

    def _stage_sources(self, t0: float, t1: float, wall: float) -> None:
        feeds = self.feeds
        feeds.collect(t0, t1, wall)
        if feeds.errors:
            for e in feeds.errors:
                self._error(f"tick {self.clock.tick + 1}: {e}")
            feeds.errors.clear()
        feeds.write()

    def _stage_sets(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        table = self.table
        for (name, row), value in pending.items():
            table[name][row] = value

    def _stage_models(self, t: float, dt: float) -> None:
        feeds = self.feeds if self.feeds else None
        for model in self._model_order:
            model.step(self.table, t, dt, self._rngs[model.name])
            if feeds is not None:  # a model never overwrites a measurement, not even for the next model
                feeds.write()

    def _stage_added(self, t: float, dt: float) -> None:
        if self.feeds:  # measurements' telemetry flags for this tick (the quality stage sets them again)
            self.feeds.flag()
        for stage in self._stages:
            try:
                stage.step(t, dt)
            except Exception as exc:  # a failing stage must not stop the clock
                self._error(f"tick {self.clock.tick + 1}: stage {type(stage).__name__} failed: {exc!r}")

    def _stage_quality(self) -> None:
        table = self.table
        for name in table.sanitize():
            self._error(f"tick {self.clock.tick + 1}: non-finite values in twin:{name}; kept the previous values, flagged BAD")
        flag_limits(table, self._limited)  # OUT_OF_RANGE mirrors the limits, other flags stay
        if self.feeds:
            self.feeds.flag()

    def _stage_sinks(self, frame: Frame) -> None:
        for sink in list(self._sinks):
            self._writing = sink.writes_stage
            try:
                sink.consume(frame)
            except Exception as exc:  # one failing sink must not stop the others or the clock
                self._error(f"tick {frame.tick}: sink {type(sink).__name__} failed: {exc!r}")
            finally:
                self._writing = False

    def run(self, ticks: int | None = None, *, duration: float | None = None, wait_when_paused: bool = False) -> Frame | None:
        """Run ``ticks`` ticks or ``duration`` sim seconds (or until :meth:`stop`).

        Real-time pacing follows the clock (``realtime=True`` at open). When paused
        it returns at once unless ``wait_when_paused`` (another thread resumes or
        steps it). Pending per-prim writes are flushed at the end.
        """
        if ticks is None and duration is None:
            raise ValueError("run() needs ticks= or duration=")
        if ticks is None:
            ticks = int(round(duration * self.clock.rate))
        if ticks < 0:
            raise ValueError("ticks must be >= 0")
        self._stop = False
        self._running = True
        done = 0
        try:
            while done < ticks and not self._stop:
                if not self.clock.may_tick():
                    if not wait_when_paused:
                        break
                    time.sleep(0.005)
                    continue
                self.clock.wait()
                self.tick()
                done += 1
        finally:
            self._running = False
            self.flush()
        return self._frame

    def flush(self) -> None:
        """Commit deferred writes (an engine has none; a Twin's live writer does)."""

    def stats(self) -> dict[str, Any]:
        st: dict[str, Any] = {"tick": self.clock.tick, "sim_time": self.clock.sim_time, "overruns": self.clock.overruns, "errors": len(self.errors)}
        if self.feeds:
            st["telemetry"] = self.feeds.stats()
        return st

    def _error(self, msg: str) -> None:
        log.error(msg)
        self.errors.append(msg)

    def provenance(self) -> dict[str, Any]:
        return provenance(self)

    def close(self) -> None:
        """Stop sources and close every sink (a recorder saves). Idempotent."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self.flush()
        self.feeds.close()
        for e in self.feeds.errors:
            self._error(e)
        for part in (*self._stages, *self._sinks):  # a stage's close() is optional
            try:
                if callable(getattr(part, "close", None)):
                    part.close()
            except Exception as exc:
                self._error(f"closing {type(part).__name__} failed: {exc!r}")

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
