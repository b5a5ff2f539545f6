"""Fan-out worker processes (``twinstage serve --fanout-procs N``): the twin ticks in one process,
the websocket sessions run in N others, so the tick and the fan-out never share an interpreter.

- :class:`FanoutHub` is the twin's sink in the twin process. Each tick it derives the tick's alarms
  (:class:`~twinstage.bridge._alarms.AlarmState`), reads new twin errors and, at its interval, the
  telemetry freshness, encodes the binary delta for clients subscribed to everything
  (:func:`encode_all`; workers' sessions send those bytes as they are) and pickles all of it with
  the Frame once, handing the same bytes to every worker's feed (:mod:`._fanout_feed`; a worker
  that falls behind gets frames merged). Stage structure changes (prims added/removed) are watched
  here and sent to every worker.
- Each worker opens the scene itself (metadata, stage, hello), starts from the twin's state as
  the hub sends it, and runs an ordinary :class:`~twinstage.bridge.Server` whose control is a
  :class:`~twinstage.bridge._fanout_remote.RemoteControl`: reads come from the frames, changes (set,
  pause, resume, step, ingest, whatif) and the ``clients`` list are calls answered in the twin
  process (:mod:`._fanout_calls`); acks keep the rules of a single server (a ``step n`` ack after the
  n-th tick's delta, a ``pause`` ack with the last tick sent). Events of one worker's clients'
  commands (paused, resumed, stepped, …) reach every worker's clients. A client cannot tell the two
  kinds of server apart, apart from timing (``tests/bridge/test_bridge_fanout_parity.py``).
- All workers listen on the one port with ``SO_REUSEPORT``; the kernel spreads connections. They
  also serve the static browser client (``--http``) and the scene's GLB.
  A worker that dies takes its own clients with it; the others go on.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import pickle
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ._fanout_calls import HubCalls
from ._fanout_feed import MERGE_AFTER, WorkerLink, frame_parts, merge_frames
from ._fanout_worker import _reuse_socket, _worker_main  # the worker side (imports the Server lazily)

log = logging.getLogger("twinstage.bridge")

#: the selection key of a subscription to everything (``Selection.key`` with no prefixes, no attributes)
ALL = ((), ())


def encode_all(channels: Any, seq: int, frame: Any) -> dict:
    """The binary delta of ``frame`` for a client subscribed to everything, encoded once here in the
    twin process; byte for byte what a worker's session would encode (``_mailbox._shared_payload``)."""
    from types import SimpleNamespace

    from ._state import encode_state, gather

    parts = gather(SimpleNamespace(channels=channels), [(n, c.rows, c.values, c.quality) for n, c in frame.changes.items() if n in channels])
    return {(ALL, "binary"): encode_state("delta", "binary", parts, seq, frame.tick, frame.sim_time, frame.wall_time, merged=1)}


def _structure_tracker(hub: "FanoutHub", stage: Any) -> Any:
    """Prims added to/removed from the twin's stage, sent to every worker (which tells its clients)."""
    from ._structure import StructureTracker

    class HubStructure(StructureTracker):
        def deliver(self, added: list[dict], removed: list[str]) -> None:
            hub.broadcast(("structure", added, removed))

    return HubStructure(hub, stage)


class FanoutHub(HubCalls):
    """A twin sink that feeds ``procs`` worker processes, each serving websocket clients on the shared port.

    ``scene``/``open_kwargs``: how a worker opens the same scene (``twinstage.open``) for its
    metadata. ``server_kwargs``: what each worker's :class:`~twinstage.bridge.Server` gets (``http_dir``
    too: every worker serves the static files). ``ingest``: the twin's
    :class:`~twinstage.telemetry.BridgeIngestSource` (workers forward to it).
    """

    writes_stage = False
    #: seconds between ``freshness`` messages (0: none); set before the hub starts (as ``Server.freshness_interval``)
    freshness_interval = 1.0

    def __init__(self, scene: str, procs: int, host: str = "127.0.0.1", port: int = 8765, *, open_kwargs: dict | None = None,
                 server_kwargs: dict | None = None, ingest: Any = None, start_timeout: float = 180.0):
        if procs < 1:
            raise ValueError("fan-out needs at least 1 worker process")
        from .infra.auth import Auth

        self.scene, self.procs, self.host, self.requested_port = str(scene), int(procs), host, int(port)
        self.open_kwargs = dict(open_kwargs or {})
        self.server_kwargs = kw = dict(server_kwargs or {})
        self.auth = Auth(list(kw.get("tokens", ())), kw.get("anonymous", "default"))  # for describe(); workers check tokens themselves
        self.http_dir = Path(kw["http_dir"]).resolve() if kw.get("http_dir") else None
        if self.http_dir is not None:
            kw["http_dir"] = str(self.http_dir)
        self.ingest = ingest
        self.start_timeout = start_timeout
        self.session = uuid.uuid4().hex
        self.workers: list[WorkerLink] = []
        self.seq = 0
        self.closed = False
        self.control: Any = None
        self.calls: Any = None
        self.side_calls: Any = None
        self.port = 0
        self._reserve: Any = None  # a socket holding the port
        self.alarms: Any = None
        self.errors: Any = None
        self.freshness: Any = None
        self.structure: Any = None
        self.scenarios: Any = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/"

    def stats(self) -> dict[str, Any]:
        out: collections.Counter = collections.Counter()
        for w in self.workers:
            out.update({k: v for k, v in w.stats.items() if isinstance(v, (int, float))})
        return {**out, "session": self.session, "seq": self.seq, "workers": sum(w.alive for w in self.workers),
                "merged_for_workers": sum(w.merged for w in self.workers)}

    # -- sink protocol ----------------------------------------------------------------------------
    def start(self, twin: Any) -> None:
        from ._alarms import AlarmState
        from ._control import TwinControl
        from ._freshness import FreshnessPublisher
        from ._twin_errors import ErrorWatch

        from ._scenario import ScenarioRunner

        self.control = ctl = TwinControl(twin)
        self.scenarios = ScenarioRunner(self.server_kwargs.get("scenarios"), self.scenario_event)
        self.scenarios.bind(ctl)
        self._start_calls()
        self._reserve = _reuse_socket(self.host, self.requested_port, listen=False)  # holds the port; workers listen on it
        self.port = self._reserve.getsockname()[1]
        table = ctl.table
        self.alarms = AlarmState(table, ctl.stage)
        self.errors = ErrorWatch(ctl.errors())
        self.freshness = FreshnessPublisher.attach(self, twin)
        init = {"values": {n: np.array(table[n]) for n in table.channels}, "quality": {n: np.array(table.quality(n)) for n in table.channels},
                "tick": ctl.tick, "sim_time": ctl.sim_time, "paused": ctl.paused, "session": self.session, "procs": self.procs,
                "ingest_keys": list(self.ingest.keys) if self.ingest is not None else None}
        mp = multiprocessing.get_context("spawn")
        spec = {"scene": self.scene, "open_kwargs": self.open_kwargs, "server_kwargs": self.server_kwargs, "host": self.host, "port": self.port,
                "log": _log_setup()}
        for i in range(self.procs):
            mine, theirs = mp.Pipe(duplex=True)
            proc = mp.Process(target=_worker_main, args=(i, theirs, spec), name=f"twinstage-fanout-{i}", daemon=True)
            proc.start()
            theirs.close()
            w = WorkerLink(self, i, proc, mine)
            w.send(("init", init))
            self.workers.append(w)
        for w in self.workers:
            if not w.conn.poll(self.start_timeout):
                self.close()
                raise OSError(f"bridge fan-out worker {w.index} did not start within {self.start_timeout:g} s")
            msg = pickle.loads(w.conn.recv_bytes())
            if msg[0] != "ready":
                self.close()
                raise OSError(f"bridge fan-out worker {w.index} failed: {msg[1]}")
            w.start()
        if ctl.stage is not None:
            self.structure = _structure_tracker(self, ctl.stage)
        log.info("bridge serving %s from %d worker processes (session %s)", self.url, self.procs, self.session)

    def consume(self, frame: Any) -> None:
        """Tick thread: apply a requested pause; derive the tick's alarms, errors and freshness; serialise
        it all with the Frame once and queue the bytes for every live worker."""
        if self.closed:
            return
        ctl = self.control
        last = ctl.on_tick()
        self.seq += 1
        paused = ctl.paused
        alarms = self.alarms.derive(self.seq, frame)
        events = [("error", text, "", frame.tick, frame.sim_time) for text in self.errors.new(ctl.errors())]
        fresh = self.freshness.read() if self.freshness is not None else None
        encoded = encode_all(ctl.table.channels, self.seq, frame)  # once, for every worker
        blob = pickle.dumps(("frame", self.seq, frame_parts(frame), last, paused, encoded, alarms, events, fresh), protocol=5)
        item = ("frame", self.seq, frame, last, paused, blob, alarms, events, fresh)
        for w in self.workers:
            if w.alive:
                w.put(item)
        self._sent_paused = paused
        if last:
            self.on_last_tick(frame.tick)
        if self.scenarios.running:  # what is due enters the next tick (as the single server's runner)
            self.scenarios.advance(frame)

    def broadcast(self, msg: tuple, but: Any = None) -> None:
        """A message for every live worker (but one), in order with the frames."""
        for w in self.workers:
            if w.alive and w is not but:
                w.put(("msg", msg))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.structure is not None:
            self.structure.revoke()
        for w in self.workers:
            if w.alive and w.proc.is_alive():
                try:
                    w.send(("stop",))
                except (OSError, ValueError):
                    pass
        for w in self.workers:
            w.proc.join(20)
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(5)
            w.alive = False
            with w.cond:
                w.cond.notify_all()
        self._stop_calls()
        if self._reserve is not None:
            self._reserve.close()


__all__ = ["FanoutHub", "MERGE_AFTER", "merge_frames"]


def _log_setup() -> tuple[str, int]:
    """The serve process's log format and level, for the workers (spawned: they start unconfigured)."""
    from ..observability._logs import JsonFormatter

    root = logging.getLogger()
    fmt = "json" if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers) else "text"
    return fmt, root.getEffectiveLevel()
