"""Compare two runs (metrics + per-attribute diff of their recordings) or a whole sweep.

:func:`compare_runs` reads both recordings with :class:`~twinstage.usd.Recording`,
aligns them on their common ticks and reports, per ``prim.attribute``, the largest and
the final difference. With ``diff_out`` it also writes a *difference recording*
(B − A per value and tick, same layout as a recording of the scene), which the viewer
plays back like any run: ``twinstage view SCENE --record diff.usdc --color-by pressure
--cmap coolwarm`` colours every asset by how much the two runs differ.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._spec import ScenarioError


@dataclass
class Comparison:
    a: Path
    b: Path
    metrics: list[tuple[str, float, float]] = field(default_factory=list)  #: (metric, A, B)
    attributes: list[dict[str, Any]] = field(default_factory=list)  #: prim, attribute, unit, max_abs, final_a, final_b, final_diff
    ticks: int = 0
    diff_recording: Path | None = None

    def changed(self, tol: float = 0.0) -> list[dict[str, Any]]:
        return [r for r in self.attributes if r["max_abs"] > tol]

    def report(self, limit: int = 20) -> str:
        lines = [f"A {self.a}\nB {self.b}\n{self.ticks} common ticks; {len(self.changed())} of {len(self.attributes)} attributes differ"]
        rows = sorted(self.attributes, key=lambda r: -r["max_abs"])[:limit]
        if rows:
            w = max(len(f"{r['prim']}.{r['attribute']}") for r in rows)
            lines.append(f"{'attribute':<{w}}  {'max |B-A|':>11}  {'final A':>11}  {'final B':>11}  unit")
            for r in rows:
                lines.append(f"{r['prim'] + '.' + r['attribute']:<{w}}  {r['max_abs']:>11.4g}  {r['final_a']:>11.4g}  {r['final_b']:>11.4g}  {r['unit']}")
        diff_m = [(k, x, y) for k, x, y in self.metrics if not (x == y or (math.isnan(x) and math.isnan(y)))]
        if diff_m:
            lines.append(f"metrics that differ ({len(diff_m)} of {len(self.metrics)}):")
            for k, x, y in diff_m[:limit]:
                lines.append(f"  {k}: {x:.4g} → {y:.4g}")
        if self.diff_recording:
            lines.append(f"difference recording (B − A): {self.diff_recording}")
        return "\n".join(lines)


def _locate(run: str | Path) -> tuple[Path, dict[str, Any]]:
    """A run folder (with result.json + recording.usdc), a result.json, or a recording file."""
    p = Path(run)
    if p.is_dir():
        res = p / "result.json"
        rec = p / "recording.usdc"
        if not rec.is_file():
            raise ScenarioError(f"{p}: no recording.usdc in this run folder")
        return rec, json.loads(res.read_text()) if res.is_file() else {}
    if p.name == "result.json":
        return _locate(p.parent)
    if p.is_file():
        return p, {}
    raise ScenarioError(f"{p}: no such run (a sweep run folder, its result.json or a recording)")


def compare_runs(a: str | Path, b: str | Path, *, diff_out: str | Path | None = None) -> Comparison:
    """Metric table and per-attribute difference of runs ``a`` and ``b`` (B − A)."""
    from ..usd._recording import Recording

    rec_a, res_a = _locate(a)
    rec_b, res_b = _locate(b)
    ra, rb = Recording(rec_a), Recording(rec_b)
    if ra.prims != rb.prims or set(ra.channels) != set(rb.channels):
        raise ScenarioError(f"{rec_a} and {rec_b} record different scenes (prims or channels differ); compare runs of one scene")
    common, ia, ib = np.intersect1d(ra.times, rb.times, return_indices=True)
    if not len(common):
        raise ScenarioError(f"{rec_a} and {rec_b} have no tick in common")
    cmp = Comparison(rec_a, rec_b, ticks=len(common))
    diffs: dict[str, np.ndarray] = {}
    for name, rows in ra.channels.items():
        va, vb = ra.channel(name)[ia], rb.channel(name)[ib]
        if va.dtype == bool:
            d = (va != vb).astype(float)
        else:
            d = vb.astype(float) - va.astype(float)
        diffs[name] = d
        mag = np.abs(d) if d.ndim == 2 else np.linalg.norm(d, axis=2)
        for r, pi in enumerate(rows.tolist()):
            fa = va[-1, r] if va.ndim == 2 else np.linalg.norm(va[-1, r])
            fb = vb[-1, r] if vb.ndim == 2 else np.linalg.norm(vb[-1, r])
            cmp.attributes.append({"prim": ra.prims[pi], "attribute": name, "unit": ra.units.get(name, ""), "max_abs": float(mag[:, r].max()),
                                   "final_a": float(fa), "final_b": float(fb), "final_diff": float(fb) - float(fa)})
    for k in sorted(set(res_a) | set(res_b)):
        if k.startswith("m:"):
            cmp.metrics.append((k[2:], float(res_a.get(k, math.nan)), float(res_b.get(k, math.nan))))
    if diff_out is not None:
        cmp.diff_recording = _write_diff(ra, rb, common, diffs, Path(diff_out))
    return cmp


def _write_diff(ra: Any, rb: Any, ticks: np.ndarray, diffs: dict[str, np.ndarray], out: Path) -> Path:
    """A recording of B − A on the scene's layout, written with the regular Recorder."""
    from ..runtime import open as open_twin
    from ..usd._recorder import Recorder

    scene = ra.provenance.get("scene", "")
    path = (ra.path.parent / scene).resolve() if scene and not Path(scene).is_absolute() else Path(scene)
    if not path.is_file():
        raise ScenarioError(f"{ra.path}: its scene {scene!r} is not found; cannot write a difference recording")
    eng = open_twin(path, headless=True)
    table = eng.table
    rec = Recorder(out, save_every_s=1e9, reproducible=True)
    prov = {"tool": ra.provenance.get("tool", ""), "scene": str(path), "differenceOf": [str(ra.path), str(rb.path)], "rate": eng.clock.rate}
    rec.bind(eng.stage, table, rate=ra.rate or eng.clock.rate, provenance=prov)
    sim = rb.sim_times()
    sim_by_tick = dict(zip(rb.times.tolist(), sim.tolist()))
    for k, t in enumerate(ticks.tolist()):
        for name, d in diffs.items():
            arr = table[name]
            if arr.dtype.kind in "fi":
                arr[...] = d[k].astype(arr.dtype)
        frame = table.diff(int(t), float(sim_by_tick.get(t, t)), 0.0)
        rec.consume(frame)
    rec.close()
    return out


def compare_sweep_against(out: str | Path, reference: str, limit: int = 6) -> str:
    """Every ok run of a sweep diffed against run ``reference`` (an id or id prefix): the attributes
    that differ most, max |run − reference| per run."""
    import pyarrow.parquet as pq

    out = Path(out)
    df = pq.read_table(out / "results.parquet").to_pandas()
    ok = df[df["status"] == "ok"]
    ref = ok[ok["run_id"].str.startswith(reference)]
    if len(ref) != 1:
        raise ScenarioError(f"{out}: --against {reference!r} matches {len(ref)} finished runs; give a unique run id prefix")
    ref_dir = out / "runs" / ref["run_id"].iloc[0]
    table: dict[str, dict[str, float]] = {}
    for rid in ok["run_id"]:
        cmp = compare_runs(ref_dir, out / "runs" / rid)
        table[rid] = {f"{r['prim']}.{r['attribute']}": r["max_abs"] for r in cmp.attributes}
    keys = sorted({k for row in table.values() for k in row}, key=lambda k: -max(row.get(k, 0.0) for row in table.values()))[:limit]
    params = [c for c in df.columns if c.startswith("p:")]
    lines = [f"max |run − {ref['run_id'].iloc[0]}| per attribute ({len(table)} runs)"]
    head = ["run_id"] + params + keys
    rows = [[rid] + [f"{float(ok[ok['run_id'] == rid][p].iloc[0]):.4g}" for p in params] + [f"{table[rid].get(k, 0.0):.4g}" for k in keys] for rid in table]
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines += ["  ".join(str(x).rjust(n) for x, n in zip(r, w)) for r in [head] + rows]
    return "\n".join(lines)


def compare_sweep(out: str | Path, limit: int = 6) -> str:
    """A table of a sweep's runs: parameters, status and the metrics that vary most across runs."""
    import pyarrow.parquet as pq

    p = Path(out) / "results.parquet" if Path(out).is_dir() else Path(out)
    if not p.is_file():
        raise ScenarioError(f"{out}: no results.parquet (run `twinstage sweep SPEC -o DIR` first)")
    df = pq.read_table(p).to_pandas()
    params = [c for c in df.columns if c.startswith("p:")]
    metrics = [c for c in df.columns if c.startswith("m:") and df[c].notna().any()]
    spread = sorted(metrics, key=lambda c: -(float(np.nanstd(df[c].to_numpy(float))) / (abs(float(np.nanmean(df[c].to_numpy(float)))) + 1e-12)))
    cols = ["run_id", "status", "passed"] + params + spread[:limit]
    lines = [f"{len(df)} runs, {int((df['status'] != 'ok').sum())} failed, {int(df['passed'].sum())} passed their expectations",
             df[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}")]
    bad = df[df["status"] != "ok"]
    for _, r in bad.iterrows():
        lines.append(f"failed {r['run_id']}: {r['error']}")
    return "\n".join(lines)
