"""``twinstage report RUN.usdc -o report.html``: a self-contained validation report.

From a recording (which sublayers its scene) the report finds every sensor — a prim
whose ``twin:measures`` relationship names the model attribute it observes — and
pairs its *measured* series with the *simulated* one (converted to the sensor's unit).
It shows, per pair: simulated vs measured over time with a ±2σ band of the residual
(rolling), the residual and its distribution, and alarm spans of the live detector
replayed over the recorded measurements; tables of MAE/RMSE/MAPE/bias with
block-bootstrap CIs, alignment (time skew, share of Good samples), an optional
calibration summary (``--params`` layer) and the provenance of run and calibration.
Plots are matplotlib PNGs embedded as base64: one HTML file, no external resource.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ReportError(ValueError):
    """The recording cannot be reported on (missing, no sensors, nothing recorded)."""


@dataclass
class Pair:
    sensor: str
    attribute: str
    target: str
    target_attribute: str
    unit: str
    time: np.ndarray
    measured: np.ndarray
    simulated: np.ndarray
    quality: np.ndarray


def load_pairs(recording) -> tuple[object, list[Pair]]:
    """Recording and its (measured, simulated) pairs."""
    from pxr import Usd

    from twinstage.units import converter
    from twinstage.usd._recorder import Recording

    try:
        rec = Recording(recording)
    except Exception as exc:
        raise ReportError(str(exc)) from None
    try:
        stage = Usd.Stage.Open(str(rec.path))
    except Exception as exc:
        raise ReportError(f"{rec.path}: cannot compose the recording with its scene: {str(exc).strip().splitlines()[-1]}") from None
    t = rec.sim_times()
    if t.size == 0:
        raise ReportError(f"{rec.path}: the recording holds no ticks")
    pairs = []
    for prim in stage.Traverse():
        rel = prim.GetRelationship("twin:measures")
        targets = rel.GetForwardedTargets() if rel else []
        if not targets or not targets[0].IsPropertyPath():
            continue
        path = str(prim.GetPath())
        target = targets[0]
        tattr = target.name.split(":", 1)[1] if target.name.startswith("twin:") else target.name
        readings = [a.GetName()[5:] for a in prim.GetAttributes()
                    if a.GetName().startswith("twin:") and a.GetName().endswith(":role") and a.Get() == "measured"]
        readings = [r[: -len(":role")] for r in readings]
        if len(readings) != 1 or path not in rec.prims or str(target.GetPrimPath()) not in rec.prims:
            continue
        attr = readings[0]
        try:
            meas = rec.series(path, attr).astype(float)
            sim = rec.series(str(target.GetPrimPath()), tattr).astype(float)
            rows = np.flatnonzero(rec.channels[attr] == rec.prims.index(path))
            q = rec.channel(attr, quality=True)[:, rows[0]].astype(np.uint8)
        except Exception:
            continue
        sim = converter(rec.units.get(tattr, ""), rec.units.get(attr, ""))(sim) if rec.units.get(tattr) != rec.units.get(attr) else sim
        pairs.append(Pair(path, attr, str(target.GetPrimPath()), tattr, rec.units.get(attr, ""), t, meas, sim, q))
    if not pairs:
        raise ReportError(f"{rec.path}: no measured channels (no sensor prim with twin:measures was recorded): nothing to validate")
    return rec, pairs


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _spans(alarm: np.ndarray, t: np.ndarray) -> list[tuple[float, float]]:
    edges = np.flatnonzero(np.diff(np.r_[0, alarm.astype(np.int8), 0])).reshape(-1, 2)
    return [(float(t[a]), float(t[min(b, len(t)) - 1])) for a, b in edges]


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.4g}"


def render(recording, out, *, params=None, train: int = 400, n_boot: int = 500) -> Path:
    """Write the HTML report for ``recording`` to ``out``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._detect import DetectorError, DetectorSettings, WindowDetector
    from ._metrics import MetricsError, error_metrics, time_skew

    rec, pairs = load_pairs(recording)
    t = pairs[0].time
    n = t.size
    # live detector replayed over the recorded measurements (temperatures are slow states)
    names = [f"{p.sensor}.{p.attribute}" for p in pairs]
    slow = tuple(nm for nm, p in zip(names, pairs) if p.unit in ("degC", "K", "degF"))
    X = np.column_stack([np.where((p.quality & 16) != 0, np.nan, p.measured) for p in pairs])
    fit_rows = min(train, n // 2)
    alarm = np.zeros(n, dtype=bool)
    detector_note = ""
    try:
        det = WindowDetector(DetectorSettings(slow=slow), channels=names).fit(X[:fit_rows])
        _, a = det.run(X[fit_rows:])
        alarm[fit_rows:] = a
        detector_note = f"fitted on the first {fit_rows} ticks, streamed over the remaining {n - fit_rows}"
    except DetectorError as exc:
        detector_note = f"not run: {exc}"
    spans = _spans(alarm, t)
    drift_note = _drift_note(pairs, t)
    sections, metric_rows, align_rows = [], [], []
    for p in pairs:
        resid = p.measured - p.simulated
        label = f"{p.sensor}.twin:{p.attribute} vs {p.target}.twin:{p.target_attribute}"
        try:
            m = error_metrics(p.simulated, p.measured, names=[p.attribute], n_boot=n_boot)[p.attribute]["all"]
            metric_rows.append([html.escape(label), html.escape(p.unit), str(m["n"])] + [
                f"{_fmt(m[k].value)} [{_fmt(m[k].lo)}, {_fmt(m[k].hi)}]" for k in ("mae", "rmse", "mape", "bias")])
        except MetricsError as exc:
            metric_rows.append([html.escape(label), html.escape(p.unit), "0", html.escape(str(exc)), "", "", ""])
        try:
            dt = float(np.median(np.diff(t))) if n > 1 else 1.0
            sk = time_skew(p.simulated, p.measured, max_lag=min(30, n // 4 - 2), dt=dt)
            skew = f"{sk:.3g} s" if np.isfinite(sk) else "– (series do not co-move)"
        except Exception:
            skew = "–"
        align_rows.append([html.escape(label), f"{100 * float((p.quality == 0).mean()):.1f} %", skew])
        fig, ax = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [3, 1]})
        ok = np.isfinite(resid)
        sd = np.full(n, np.nan)
        if ok.sum() > 10:
            k = max(5, n // 50)
            r = np.where(ok, resid, 0.0)
            c1, c2, cn = (np.convolve(v, np.ones(k), "same") for v in (r, r * r, ok.astype(float)))
            sd = np.sqrt(np.maximum(c2 / np.maximum(cn, 1) - (c1 / np.maximum(cn, 1)) ** 2, 0))
        ax[0].fill_between(t, p.simulated - 2 * sd, p.simulated + 2 * sd, color="tab:blue", alpha=0.2, label="simulated ±2σ (residual)")
        ax[0].plot(t, p.simulated, color="tab:blue", lw=1, label="simulated")
        ax[0].plot(t, p.measured, color="k", lw=0.6, label="measured")
        for a, b in spans:
            ax[0].axvspan(a, b, color="tab:red", alpha=0.15)
        ax[0].set_xlabel("sim time (s)")
        ax[0].set_ylabel(p.unit)
        ax[0].set_title(label, fontsize=9)
        ax[0].legend(fontsize=7, loc="best")
        ax[1].hist(resid[ok], bins=40, color="tab:gray")
        ax[1].set_title("residual (measured − simulated)", fontsize=9)
        sections.append(f"<h3>{html.escape(label)}</h3>{_png(fig)}")
    # residual timeline
    fig, ax = plt.subplots(figsize=(12, 2.6))
    for p in pairs:
        r = p.measured - p.simulated
        s = np.nanstd(r)
        ax.plot(t, (r - np.nanmean(r)) / (s if s > 0 else 1), lw=0.6, label=p.attribute)
    for a, b in spans:
        ax.axvspan(a, b, color="tab:red", alpha=0.15)
    ax.set_title("standardised residuals; red: anomaly alarm", fontsize=9)
    ax.legend(fontsize=6, ncol=4)
    timeline = _png(fig)
    calib = ""
    if params:
        calib = _calibration_section(params)
    rec_hash = hashlib.sha256(Path(rec.path).read_bytes()).hexdigest()
    prov = {**rec.provenance, "recording": str(rec.path), "recordingSha256": rec_hash}
    css = ("body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;margin:1em 0}"
           "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}img{max-width:100%}"
           "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}")
    assim_note = (" The run assimilated its measurements (<code>--assimilate</code>): the simulated values are Kalman"
                  " estimates, so their residuals measure the filter, not the bare model." if "assimilation" in str(rec.provenance.get("stages", "")) else "")
    alarms_txt = ", ".join(f"{a:.0f}–{b:.0f} s" for a, b in spans) or "none"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>twinstage validation report</title><style>{css}</style></head><body>
<h1>Validation report</h1>
<p>Recording <code>{html.escape(str(rec.path))}</code>: {n} ticks, {len(pairs)} measured channels.{assim_note}</p>
<h2>Alarms</h2><p>Live anomaly detector {html.escape(detector_note)}. Alarm spans: {html.escape(alarms_txt)}.</p>{timeline}
<h2>Drift (needs recalibration?)</h2><p>{drift_note}</p>
<h2>Metrics (95 % block-bootstrap confidence intervals)</h2>
{_table(["channel", "unit", "n", "MAE", "RMSE", "MAPE %", "bias (sim − meas)"], metric_rows)}
<h2>Alignment</h2>{_table(["channel", "Good samples", "time skew (cross-correlation)"], align_rows)}
<h2>Simulated vs measured</h2>{''.join(sections)}
{calib}
<h2>Provenance</h2><pre>{html.escape(json.dumps(prov, indent=2, default=str))}</pre>
</body></html>
"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out


def _drift_note(pairs, t) -> str:
    """The slow drift monitor replayed over the recorded residuals: does the twin need recalibrating?"""
    from ._drift import DriftError, DriftMonitor

    R = np.column_stack([np.where((p.quality & 16) != 0, np.nan, p.measured - p.simulated) for p in pairs])
    n = R.shape[0]
    mon = DriftMonitor()
    fit = min(max(4 * mon.block, n // 3), n // 2)
    try:
        mon.fit(R[:fit])
    except DriftError as exc:
        return html.escape(f"Drift monitor not run: {exc}.")
    flags = mon.run(R[fit:])
    names = [f"{p.sensor}.twin:{p.attribute}" for p in pairs]
    if not flags.any():
        return html.escape(f"Drift monitor (block CUSUM, fitted on the first {fit} ticks): no drift; the calibration still holds.")
    first = fit + int(np.argmax(flags))
    drifting = [nm for nm, d in zip(names, mon.drifting) if d] or ["(cleared by the end)"]
    return ("<b>NEEDS RECALIBRATION</b>: " + html.escape(f"the drift monitor (block CUSUM, fitted on the first {fit} ticks) flagged "
            f"drift from t = {t[first]:.0f} s; drifting at the end: {', '.join(drifting)}. Run `twinstage calibrate` on recent data."))


def _calibration_section(params) -> str:
    from pxr import Sdf

    layer = Sdf.Layer.FindOrOpen(str(params))
    if layer is None:
        raise ReportError(f"{params}: cannot open the calibration layer")
    info = layer.customLayerData.get("twinstage:calibration")
    if info is None:
        raise ReportError(f"{params}: not a twinstage calibration layer (no customLayerData twinstage:calibration)")
    rows = []
    layer_prims = []
    layer.Traverse(layer.pseudoRoot.path, lambda p: layer_prims.append(p))
    for path in layer_prims:
        if not path.IsPropertyPath() or not path.name.startswith("twin:param:"):
            continue
        spec = layer.GetAttributeAtPath(path)
        cd = dict(spec.customData)
        ident = "yes" if cd.get("identifiable") else "<b>NO</b>"
        rows.append([html.escape(path.name[len("twin:param:"):]), _fmt(spec.default), _fmt(cd.get("std", float("nan"))),
                     _fmt(cd.get("window_spread", float("nan"))), ident + (" (at bound)" if cd.get("at_bound") else "")])
    prov = json.loads(info)
    prov.pop("covariance", None)
    return (f"<h2>Calibration</h2><p>Layer <code>{html.escape(str(params))}</code>.</p>"
            + _table(["parameter", "value", "± std (Jacobian)", "window spread", "identifiable"], rows)
            + f"<pre>{html.escape(json.dumps(prov, indent=2, default=str))}</pre>")
