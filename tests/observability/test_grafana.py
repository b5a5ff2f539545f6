"""The Grafana dashboard only queries metrics that MetricsSink exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from twinstage.observability import METRIC_NAMES

DASH = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "twinstage.json"


def test_dashboard_queries_exported_metrics():
    dash = json.loads(DASH.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\btwinstage_[a-z_]+", e)}
    exported = set(METRIC_NAMES) | {n + s for n in METRIC_NAMES for s in ("_bucket", "_count", "_sum")}
    assert used and used <= exported, used - exported
    covered = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    assert covered == set(METRIC_NAMES)  # every exported metric has a panel
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
