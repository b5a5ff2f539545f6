"""Sinks: the :class:`Sink` protocol and :class:`SinkContext`, what a sink sees of the engine it is added to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from ..state import Frame
    from ._engine import Engine


class SinkContext:
    """The small view of a running engine handed to ``sink.start(...)``.

    Data: ``stage``, ``table``, ``clock``, ``source`` (scene file), ``errors`` (the
    engine's error log), ``assets``, ``models``, ``live_layer`` (None when headless)
    and ``tick_count`` / ``sim_time``. Control (the back-channel a bridge or viewer
    offers its clients): ``set``, ``get``, ``unit``, ``pause``, ``resume``, ``stop``,
    ``step``. Reports: ``stats()``, ``provenance()``, ``quality_reason(path, attr)``
    ``freshness()`` (per-channel age of the last good telemetry sample) and
    ``sample_times()`` (time of the newest sample, good or bad).

    A sink that holds this instead of the Twin cannot reach into another sink or into
    the engine's internals; it is the whole contract.
    """

    __slots__ = ("_engine", "stage", "table", "clock", "source", "errors", "assets", "models", "live_layer")

    def __init__(self, engine: "Engine"):
        self._engine = engine
        self.stage = engine.stage
        self.table = engine.table
        self.clock = engine.clock
        self.source = engine.source
        self.errors = engine.errors
        self.assets = engine.assets
        self.models = engine.models
        self.live_layer = engine.live_layer

    @property
    def tick_count(self) -> int:
        return self.clock.tick

    @property
    def sim_time(self) -> float:
        return self.clock.sim_time

    def set(self, path: str, **values: Any) -> None:
        self._engine.set(path, **values)

    def get(self, path: str, name: str | None = None) -> Any:
        return self._engine.get(path, name)

    def unit(self, path: str, name: str) -> str:
        return self._engine.unit(path, name)

    def pause(self) -> None:
        self._engine.pause()

    def resume(self) -> None:
        self._engine.resume()

    def stop(self) -> None:
        self._engine.stop()

    def step(self, n: int = 1) -> None:
        self._engine.step(n)

    def stats(self) -> dict[str, Any]:
        return self._engine.stats()

    def provenance(self) -> dict[str, Any]:
        return self._engine.provenance()

    def quality_reason(self, path: str, name: str) -> str:
        return self._engine.quality_reason(path, name)

    def freshness(self) -> dict[str, Any]:
        return self._engine.freshness()

    def sample_times(self) -> dict[str, Any]:
        """Per fed channel, the sim time of each row's newest telemetry sample, good or bad (NaN: not fed)."""
        return self._engine.feeds.sample_times()


class Sink(Protocol):
    """Consumes Frames. ``start`` gets a :class:`SinkContext`. ``writes_stage`` is True
    for sinks that write the twin's stage (their change notices are not user edits)."""

    writes_stage: bool

    def start(self, twin: SinkContext) -> None: ...

    def consume(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


class _CallbackSink:
    writes_stage = False

    def __init__(self, fn: Callable[[Frame], None]):
        self.fn = fn

    def start(self, twin: SinkContext) -> None:
        pass

    def consume(self, frame: Frame) -> None:
        self.fn(frame)

    def close(self) -> None:
        pass
