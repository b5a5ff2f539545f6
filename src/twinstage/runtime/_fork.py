""":meth:`Engine.fork`: a fresh headless engine on the same scene, optionally continuing from now.

``copy_state=True`` copies everything a tick reads: the table's values and quality
flags, the previous tick's values and quality (so the fork's first Frame diffs the
same way the original's would), the clock's tick (hence sim time), queued sets, the
models' parameters and their random generators' states. With the same events the
fork then produces exactly the Frames the original would have produced — as long
as the original has no telemetry sources (sources are not forked: the fork's rows
are simulated from then on). The original is only read.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable


def _copy_models(engine: Any) -> list[Any]:
    """Unbound copies of the engine's models with their parameters (e.g. calibrated ones)."""
    out = []
    for m in engine.models.values():
        inner = getattr(m, "inner", None) or m  # a scenario's FaultySensors wrapper: the plain model
        new = copy.copy(inner)  # bind() on the fork re-resolves rows against the fork's table
        if hasattr(inner, "params"):
            new.params = copy.deepcopy(inner.params)
        out.append(new)
    return out


def fork_engine(engine: Any, engine_cls: type, *, seed: int | None = None, models: Iterable[Any] | None = None,
                copy_state: bool = False, **kwargs: Any) -> Any:
    """A new ``engine_cls`` (the headless :class:`~._engine.Engine`) on ``engine``'s scene (see :meth:`Engine.fork`)."""
    if models is None and copy_state:
        models = _copy_models(engine)
    kw = {"rate": engine.clock.rate, "realtime": engine.clock.realtime, "speed": engine.clock.speed,
          "seed": engine.seed if seed is None else seed, "models": () if models is None else models, "source": engine.source, **kwargs}
    fork = engine_cls(engine.stage, _scene=engine._scene, **kw)
    if copy_state:
        _copy_state(engine, fork, same_seed=seed is None or seed == engine.seed)
    return fork


def _copy_state(src: Any, dst: Any, *, same_seed: bool) -> None:
    st, dt = src.table, dst.table
    for name in st.channels:
        dt[name][...] = st[name]
        dt.quality(name)[...] = st.quality(name)
        dt._prev[name][...] = st._prev[name]
        dt._prev_quality[name][...] = st._prev_quality[name]
    dst.clock.tick = src.clock.tick
    dst.clock.paused = False
    with src._lock:
        dst._pending = dict(src._pending)
    if same_seed:  # continue the same random streams; another seed starts its own
        for name, rng in src._rngs.items():
            if name in dst._rngs:
                dst._rngs[name].bit_generator.state = copy.deepcopy(rng.bit_generator.state)
    dst.params_layers = list(src.params_layers)


def engine_of(obj: Any) -> Any:
    """The engine behind a :class:`SinkContext` (what a sink's ``start`` gets), or ``obj`` itself when it
    is one; None otherwise. For sinks that fork the running twin (the bridge's ``whatif``)."""
    from ._context import SinkContext

    if isinstance(obj, SinkContext):
        return obj._engine
    ctx = getattr(obj, "context", None)  # an engine (or Twin) holds the context made for it
    return obj if isinstance(ctx, SinkContext) and ctx._engine is obj else None
