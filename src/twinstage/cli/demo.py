"""The demo twin: the SKAB pump testbed on embedded defaults, scripted and recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: (sim second, prim, attribute, value): a valve1 closing experiment as in SKAB,
#: then a speed reduction
SCRIPT = [
    (20.0, "/Testbed/Valve1", "opening", 0.6),
    (30.0, "/Testbed/Valve1", "opening", 0.3),
    (40.0, "/Testbed/Valve1", "opening", 0.12),
    (60.0, "/Testbed/Valve1", "opening", 1.0),
    (80.0, "/Testbed/Pump", "motorSpeed", 0.6),
    (100.0, "/Testbed/Valve2", "opening", 0.4),
]
SHOW = [("/Testbed/Valve1", "opening"), ("/Testbed/Valve2", "opening"), ("/Testbed/Pump", "motorSpeed"), ("/Testbed/Pump", "flowRate"),
        ("/Testbed/Sensors/FlowMeter", "flowRate"),  # measured (replayed), beside the simulated pump flow
        ("/Testbed/Pump", "pressure"), ("/Testbed/Pump", "current"), ("/Testbed/Pump", "motorTemperature"), ("/Testbed/Pump", "vibration1")]


#: what the printed Python snippet of ``demo --serve`` sets (the README shows the same)
EXAMPLE_SET = ("/Testbed/Tank", "level", 0.6)  # an input the scripted experiment leaves alone


def run_demo(out: Path, *, ticks: int | None = 1200, realtime: bool = False, rate: float = 10.0, serve: int | None = None,
             view: bool = False, screenshot: str | None = None, data: Path | None = None) -> int:
    """``ticks=None``: run until interrupted (Ctrl-C, SIGTERM) — what ``demo --serve`` does by default.

    Telemetry: a SKAB valve1 experiment (from ``data``, else ``../shared/data``) replays into
    the sensors while the models simulate the pump beside them; without SKAB the demo
    generates its own SKAB-format file from the model plus noise (``out/generated_skab.csv``).
    """
    import signal
    import sys

    import twinstage
    from twinstage.cli import _table, plural
    from twinstage.scenes import build_pump_testbed
    from twinstage.units import format_unit
    from twinstage.usd._validate import summary, validate

    out.mkdir(parents=True, exist_ok=True)
    scene = out / "pump_testbed.usda"
    build_pump_testbed(scene)
    recording = out / "pump_testbed.rec.usdc"
    serving = serve is not None
    twin = twinstage.open(scene, rate=rate, realtime=realtime or serving, seed=0)  # a served twin runs in real time
    from twinstage.telemetry._attach import attach_replay
    from twinstage.telemetry._synthetic import find_skab, generate_skab_csv

    skab = find_skab(data)
    if data is not None and skab is None:
        print(f"twinstage demo: no SKAB valve1 file under {data}; generating data instead", file=sys.stderr)
    real_skab = skab is not None
    if skab is None:
        seconds = min(int((ticks if ticks is not None else 12000) / rate) + 1, 1200)
        skab = generate_skab_csv(scene, out / "generated_skab.csv", seconds=seconds, script=SCRIPT, seed=0)
    replay = attach_replay(twin, skab)  # before recording: the recording's provenance names the data
    live = {}
    if real_skab:  # the live anomaly detector on the SKAB sensors: twin:anomalyScore / anomalyAlarm on the pump
        from twinstage.fidelity._cli import attach_live

        live = attach_live(twin, detect=True)
    twin.record(recording)
    print(f"twinstage demo: {scene} — {len(twin.table.prims)} twin prims, {twin.table.n_entries} values, models {', '.join(twin.models)}")
    print(f"twinstage demo: replaying {skab} ({len(replay.data)} rows) into {len(replay.bindings)} sensors; the models simulate the pump beside them")
    until_interrupted = ticks is None
    if until_interrupted:
        ticks = sys.maxsize
    if serving:
        from twinstage.bridge import Server
        from twinstage.bridge._cli import browser_client_dir, describe, generated_tokens

        tokens = generated_tokens()  # fresh secrets each start; without one a client is refused
        server = Server("127.0.0.1", serve, tokens=tokens, http_dir=browser_client_dir())
        server.generated_tokens = tokens
        twin.add_sink(server)
        print(describe(server, EXAMPLE_SET, until_interrupted=until_interrupted), flush=True)
    stopping = []

    def _stop(*_: object) -> None:  # the first Ctrl-C ends the run and lets the demo finish (a second one kills)
        stopping.append(True)
        twin.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if viewer is not None and getattr(viewer, "window", False):
            viewer.close_window()  # handlers run on the main thread, which owns the window

    old_handlers = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)} if until_interrupted else {}
    viewer = None
    if view or screenshot:  # the viewer is one more Frame sink (window where a display exists, else a screenshot)
        from twinstage.viewer._cli import demo_viewer

        viewer = demo_viewer(twin, view=view, screenshot=screenshot, out=out)
        if until_interrupted and getattr(viewer, "window", False):
            show = viewer.show

            def show_then_stop() -> Any:  # the window closed (rendercanvas turns Ctrl-C into that): a run without end ends too
                try:
                    return show()
                finally:
                    _stop()

            viewer.show = show_then_stop
    rows = []
    script = sorted(SCRIPT)
    every = int(rate * 10)

    def drive() -> None:
        with twin:
            while twin.tick_count < ticks and not stopping:
                now = twin.sim_time
                while script and script[0][0] <= now:
                    _, prim, attr, value = script.pop(0)
                    twin.set(prim, **{attr: value})
                    print(f"  t={now:6.1f}s  set {prim}.{attr} = {value}")
                nxt = min([int(round(script[0][0] * rate)) if script else ticks, ticks, (twin.tick_count // every + 1) * every])
                twin.run(ticks=max(1, nxt - twin.tick_count), wait_when_paused=serving)  # a bridge client may pause/step it
                if twin.tick_count % every == 0:
                    rows.append([round(twin.sim_time, 1)] + [twin.get(p, a) for p, a in SHOW])

    try:
        if viewer is None:
            drive()
        else:
            from twinstage.viewer._cli import run_with_viewer

            run_with_viewer(viewer, drive)
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    if stopping:
        print(f"twinstage demo: stopped after {plural(twin.tick_count, 'tick')}", flush=True)
    header = ["t [s]"] + [f"{p.rsplit('/', 1)[-1]}.{a}" + (f" [{u}]" if (u := format_unit(twin.unit(p, a))) else "") for p, a in SHOW]
    print(_table(rows[-30:], header))
    anim = twinstage.Recording(recording).export_per_prim(out / "pump_testbed.anim.usdc")
    if live:
        from twinstage.fidelity._cli import live_summary

        print("\n".join(live_summary(live)) + " (fits on the first 400 samples; valve1/1.csv's anomaly starts at sample 572: --ticks 7000)")
    st = twin.stats()
    print(f"recorded {recording} ({plural(twin.tick_count, 'tick')}); per-prim animation {anim}")
    print(f"live writes: {st['writer']['committed']} values, max staleness {st['writer']['max_staleness_s']:.3f} s; {plural(st['errors'], 'error')}")
    bad = 0
    for f in (scene, recording, anim):
        s = summary(validate(f))
        bad += s["errors"]
        print(f"validate {f.name}: {plural(s['errors'], 'error')}, {plural(s['warnings'], 'warning')}")
    view_failed = False
    if viewer is not None:
        from twinstage.viewer._cli import finish_demo_viewer

        view_failed = finish_demo_viewer(viewer)
    return 1 if bad or twin.errors or view_failed else 0
