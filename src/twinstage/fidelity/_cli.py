"""``twinstage calibrate``, ``detect`` and ``report``: thin CLI over :mod:`twinstage.fidelity`."""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

#: SKAB column → pump-loop channel (units already match: L/min, bar, A, V, degC, g)
SKAB_TO_CHANNEL = {
    "Volume Flow RateRMS": "flowRate",
    "Pressure": "pressure",
    "Current": "current",
    "Voltage": "voltage",
    "Temperature": "motorTemperature",
    "Thermocouple": "fluidTemperature",
    "Accelerometer1RMS": "vibration1",
    "Accelerometer2RMS": "vibration2",
}
DEFAULT_PARAMS = (
    "nominal_flow", "nominal_pressure", "shutoff_pressure", "nominal_current", "supply_voltage",
    "line_resistance", "motor_rise0", "motor_tau", "fluid_rise", "fluid_tau", "vibration1", "vibration2",
)


def add_parsers(sub) -> None:
    c = sub.add_parser("calibrate", help="fit pump-loop parameters to measured CSV data (writes a USD params layer)")
    c.add_argument("scene", help="scene with a pump_loop prim (its inputs are taken as constant over the data)")
    c.add_argument("data", nargs="+", help="SKAB-format CSV files (';'-separated); each is one experiment")
    c.add_argument("-o", "--out", required=True, metavar="PARAMS.usda")
    c.add_argument("--params", help=f"comma-separated PumpParams fields (default {','.join(DEFAULT_PARAMS)})")
    c.add_argument("--prim", help="the pump_loop prim (default: the first one in the scene)")
    c.add_argument("--rows", metavar="A:B", help="use rows A..B of each file (default all)")
    c.add_argument("--windows", type=int, default=0, help="refit on N parts of the data to report the spread")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=run_calibrate)

    d = sub.add_parser("detect", help="stream CSV telemetry through the live anomaly detector (fitted on the first rows)")
    d.add_argument("data", nargs="+", help="SKAB-format CSV files")
    d.add_argument("--train", type=int, default=400, help="rows used to fit (default 400)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=run_detect)

    r = sub.add_parser("report", help="validation report of a recording: self-contained HTML with plots, metrics, alarms")
    r.add_argument("recording", metavar="RUN.usdc")
    r.add_argument("-o", "--out", required=True, metavar="REPORT.html")
    r.add_argument("--params", metavar="PARAMS.usda", help="calibration layer to summarise")
    r.add_argument("--train", type=int, default=400, help="ticks the replayed detector fits on (default 400)")
    r.set_defaults(fn=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ._report import ReportError, render

    try:
        out = render(args.recording, args.out, params=args.params, train=args.train)
    except ReportError as exc:
        print(f"twinstage report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _scene_inputs(scene: str, prim: str | None) -> tuple[str, dict[str, float]]:
    from pxr import Usd

    try:
        stage = Usd.Stage.Open(str(scene))
    except Exception as exc:  # pxr.Tf.ErrorException: missing or malformed layer
        raise SystemExit(f"twinstage calibrate: error: cannot open scene {scene}: {str(exc).strip().splitlines()[-1]}") from None
    if stage is None:
        raise SystemExit(f"twinstage calibrate: error: cannot open scene {scene}")
    pumps = [p for p in stage.Traverse() if p.GetAttribute("twin:model").Get() == "pump_loop"]
    if prim:
        pumps = [p for p in pumps if str(p.GetPath()) == prim]
    if not pumps:
        raise SystemExit(f"twinstage calibrate: error: {scene}: no pump_loop prim{' ' + prim if prim else ''}")
    pump = pumps[0]

    def value(p, name, default):
        a = p.GetAttribute(f"twin:{name}")
        v = a.Get() if a else None
        return float(v) if v is not None else default

    out = {"motorSpeed": value(pump, "motorSpeed", 1.0), "ambientTemperature": value(pump, "ambientTemperature", 25.0)}
    for rel, key in (("inletValve", "inletOpening"), ("outletValve", "outletOpening")):
        r = pump.GetRelationship(f"twin:{rel}")
        targets = r.GetForwardedTargets() if r else []
        out[key] = value(stage.GetPrimAtPath(targets[0]), "opening", 1.0) if targets else 1.0
    return str(pump.GetPath()), out


def _rows(spec: str | None, n: int) -> slice:
    if not spec:
        return slice(0, n)
    a, sep, b = spec.partition(":")
    try:
        return slice(int(a) if a else 0, int(b) if b else n)
    except ValueError:
        raise SystemExit(f"twinstage calibrate: error: --rows {spec!r}: expected A:B") from None


def run_calibrate(args: argparse.Namespace) -> int:
    from ._calibrate import CalibrationError, calibrate, write_params_layer
    from ._detect import DetectorError
    from ._skab import read_skab

    prim, consts = _scene_inputs(args.scene, args.prim)
    names = [s.strip() for s in args.params.split(",")] if args.params else list(DEFAULT_PARAMS)
    meas: dict[str, list[np.ndarray]] = {ch: [] for ch in SKAB_TO_CHANNEL.values()}
    starts, total = [], 0
    try:
        for f in args.data:
            x, _, cols = read_skab(f)
            x = x[_rows(args.rows, len(x))]
            starts.append(total)
            total += len(x)
            for j, c in enumerate(cols):
                meas[SKAB_TO_CHANNEL[c]].append(x[:, j])
    except (DetectorError, OSError) as exc:
        print(f"twinstage calibrate: error: {exc}", file=sys.stderr)
        return 2
    measured = {ch: np.concatenate(v) for ch, v in meas.items()}
    inputs = {k: np.full(total, v) for k, v in consts.items()}
    try:
        r = calibrate(inputs, measured, names, starts=starts, windows=args.windows, sources=args.data)
    except CalibrationError as exc:
        print(f"twinstage calibrate: error: {exc}", file=sys.stderr)
        return 2
    r.provenance["scene"] = str(args.scene)
    r.provenance["scene_inputs"] = consts
    out = write_params_layer(r, args.out, prim)
    if args.json:
        print(json.dumps({"out": str(out), "prim": prim, "parameters": r.table(), "success": r.success,
                          "rms_weighted_residual": r.rms_weighted_residual}, default=_num))
        return 0
    print(f"calibrated {prim} on {total} rows of {len(args.data)} file(s); weighted RMS residual {r.rms_weighted_residual:.2f}")
    print(f"{'parameter':<20}{'value':>12}{'± std':>12}{'window sd':>12}  identifiable")
    for row in r.table():
        flag = "yes" if row["identifiable"] else "NO - the data cannot determine it"
        if row["at_bound"]:
            flag += " (at a bound: widen it or fix the parameter)"
        print(f"{row['name']:<20}{row['value']:>12.5g}{row['std']:>12.3g}{row['window_spread']:>12.3g}  {flag}")
    print(f"wrote {out}")
    return 0


def _num(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return o.tolist() if hasattr(o, "tolist") else str(o)


def run_detect(args: argparse.Namespace) -> int:
    from ._detect import SKAB_ALLOWANCE, SKAB_SLOW, DetectorError, DetectorSettings, WindowDetector
    from ._skab import read_skab

    results = []
    for f in args.data:
        try:
            x, label, names = read_skab(f)
            det = WindowDetector(DetectorSettings(slow=SKAB_SLOW, allowance=SKAB_ALLOWANCE), channels=names).fit(x[: args.train])
        except (DetectorError, OSError) as exc:
            print(f"twinstage detect: error: {exc}", file=sys.stderr)
            return 2
        alarms = []
        for row in x[args.train :]:
            alarms.append(det.update(row)[1])
        a = np.array(alarms, dtype=bool)
        edges = np.flatnonzero(np.diff(np.r_[0, a.astype(np.int8), 0])).reshape(-1, 2) + args.train
        results.append({"file": f, "rows": int(len(x)), "alarm_rows": int(a.sum()), "alarms": edges.tolist()})
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            spans = ", ".join(f"{s}-{e - 1}" for s, e in r["alarms"]) or "none"
            print(f"{r['file']}: {r['alarm_rows']} of {r['rows'] } rows in alarm; alarm rows {spans}")
    return 0


def attach_live(twin, *, assimilate: bool = False, detect: bool = False) -> dict:
    """``twinstage run --assimilate`` / ``--detect`` (and the demo): the Kalman stage and the
    live anomaly monitor on a twin (with ``SKAB_ALLOWANCE`` for sensors whose
    ``twin:assetId`` is a SKAB column); the monitor publishes on the first prim that declares
    ``twin:anomalyAlarm`` (or ``twin:anomalyScore``); with ``detect``, a scene that declares
    ``twin:needsRecalibration`` also gets the residual/drift monitor publishing there.
    Returns what was added."""
    out: dict = {}
    if assimilate:
        from ._assimilate import Assimilator

        out["assimilator"] = twin.add_stage(Assimilator())
    if detect:
        from ._monitor import AnomalyMonitor

        target = None
        for name in ("anomalyAlarm", "anomalyScore"):
            ch = twin.table.channels.get(name)
            if ch is not None and len(ch):
                target = twin.table.prims[int(ch.prim_index[0])]
                break
        from ._detect import SKAB_ALLOWANCE, DetectorSettings

        # the benchmarked settings: SKAB's allowance applies to sensors whose twin:assetId is a SKAB column
        out["monitor"] = twin.add_sink(AnomalyMonitor(publish=target, settings=DetectorSettings(allowance=SKAB_ALLOWANCE)))
        ch = twin.table.channels.get("needsRecalibration")
        if ch is not None and len(ch):
            from ._residuals import ResidualMonitor

            out["residuals"] = twin.add_sink(ResidualMonitor(publish=twin.table.prims[int(ch.prim_index[0])]))
    return out


def live_summary(added: dict) -> list[str]:
    lines = []
    a = added.get("assimilator")
    if a is not None:
        lines.append(f"assimilation: {a.status}; {len(a.names)} attributes, {a.updates} measurements entered")
        for name, v in sorted(a.last.items()):
            lines.append(f"  {name}: estimate {v['estimate']:.4g} ± {v['std']:.2g} (model {v['model']:.4g}, measured {v['measured']:.4g})")
    m = added.get("monitor")
    if m is not None:
        raised = sum(1 for e in m.events if e["event"] == "raised")
        lines.append(f"anomaly monitor: {m.status}; {len(m.scores)} rows scored, alarm raised {raised}×, now {'ON' if m.alarm else 'off'}"
                     + (f" (published on {m.publish})" if m.publish else ""))
    r = added.get("residuals")
    if r is not None:
        lines.append(f"drift monitor: {r.status}; needs recalibration: {'YES' if r.needs_recalibration else 'no'}"
                     + (f" (published on {r.publish})" if r.published else ""))
    return lines
