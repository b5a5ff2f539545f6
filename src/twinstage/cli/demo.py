"""The demo twin: the SKAB pump testbed on embedded defaults, scripted and recorded."""

from __future__ import annotations

from pathlib import Path

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
        ("/Testbed/Pump", "pressure"), ("/Testbed/Pump", "current"), ("/Testbed/Pump", "motorTemperature"), ("/Testbed/Pump", "vibration1")]


def run_demo(out: Path, *, ticks: int = 1200, realtime: bool = False, rate: float = 10.0, serve: int | None = None,
             view: bool = False, screenshot: str | None = None) -> int:
    import twinstage
    from twinstage.cli import _table
    from twinstage.scenes import build_pump_testbed
    from twinstage.usd._validate import summary, validate

    out.mkdir(parents=True, exist_ok=True)
    scene = out / "pump_testbed.usda"
    build_pump_testbed(scene)
    recording = out / "pump_testbed.rec.usdc"
    serving = serve is not None
    twin = twinstage.open(scene, rate=rate, realtime=realtime or serving, seed=0)  # a served twin runs in real time
    twin.record(recording)
    print(f"twinstage demo: {scene} — {len(twin.table.prims)} twin prims, {twin.table.n_entries} values, models {', '.join(twin.models)}")
    if serving:
        from twinstage.bridge import Server
        from twinstage.bridge._cli import browser_client_dir, describe

        server = Server("127.0.0.1", serve, http_dir=browser_client_dir())  # anonymous clients may watch, not set
        twin.add_sink(server)
        print(describe(server), flush=True)
    viewer = None
    if view or screenshot:  # the viewer is one more Frame sink (window where a display exists, else a screenshot)
        from twinstage.viewer._cli import demo_viewer

        viewer = demo_viewer(twin, view=view, screenshot=screenshot, out=out)
    rows = []
    script = sorted(SCRIPT)
    every = int(rate * 10)

    def drive() -> None:
        with twin:
            while twin.tick_count < ticks:
                now = twin.sim_time
                while script and script[0][0] <= now:
                    _, prim, attr, value = script.pop(0)
                    twin.set(prim, **{attr: value})
                    print(f"  t={now:6.1f}s  set {prim}.{attr} = {value}")
                nxt = min([int(round(script[0][0] * rate)) if script else ticks, ticks, (twin.tick_count // every + 1) * every])
                twin.run(ticks=max(1, nxt - twin.tick_count), wait_when_paused=serving)  # a bridge client may pause/step it
                if twin.tick_count % every == 0:
                    rows.append([round(twin.sim_time, 1)] + [twin.get(p, a) for p, a in SHOW])

    if viewer is None:
        drive()
    else:
        from twinstage.viewer._cli import run_with_viewer

        run_with_viewer(viewer, drive)
    header = ["t [s]"] + [f"{p.rsplit('/', 1)[-1]}.{a} [{twin.unit(p, a)}]" for p, a in SHOW]
    print(_table(rows, header))
    anim = twinstage.Recording(recording).export_per_prim(out / "pump_testbed.anim.usdc")
    st = twin.stats()
    print(f"recorded {recording} ({twin.tick_count} ticks); per-prim animation {anim}")
    print(f"live writes: {st['writer']['committed']} values, max staleness {st['writer']['max_staleness_s']:.3f} s; errors: {st['errors']}")
    bad = 0
    for f in (scene, recording, anim):
        s = summary(validate(f))
        bad += s["errors"]
        print(f"validate {f.name}: {s['errors']} errors, {s['warnings']} warnings")
    view_failed = False
    if viewer is not None:
        from twinstage.viewer._cli import finish_demo_viewer

        view_failed = finish_demo_viewer(viewer)
    return 1 if bad or twin.errors or view_failed else 0
