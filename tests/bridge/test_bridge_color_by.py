"""``color_by_all`` (one pass per channel) picks the same colour attribute per prim as ``color_by``."""

from __future__ import annotations

import math

import twinstage
from twinstage.bridge._scene import color_by, color_by_all
from twinstage.usd import create_stage, declare_asset, declare_attribute


def _check(twin) -> list[int]:
    got = color_by_all(twin.table)
    assert got == [color_by(twin.table, i) for i in range(len(twin.table.prims))]
    return got


def test_pump_testbed_and_factory(pump_scene, factory_1k):
    for path in (pump_scene, factory_1k):
        twin = twinstage.open(path)
        try:
            got = _check(twin)
            assert any(c >= 0 for c in got)
        finally:
            twin.close()


def test_ranks_roles_unbounded_limits_and_ties(tmp_path):
    stage = create_stage(tmp_path / "s.usda", root="World")
    specs = [  # (attribute, role, min, max) per prim: hints, role rank, unbounded limits, name ties, a vec3
        [("speed", "input", 0.0, 2.0), ("pressure", "state", 0.0, 10.0)],
        [("zeta", "parameter", 0.0, 1.0), ("alpha", "parameter", 0.0, 1.0)],
        [("zeta", "state", 0.0, 1.0), ("alpha", "parameter", 0.0, 1.0)],
        [("temperature", "state", -math.inf, math.inf), ("alpha", "measured", 0.0, 1.0)],
        [("temperature", "state", -math.inf, math.inf)],
        [],
    ]
    for i, attrs in enumerate(specs):
        prim = stage.DefinePrim(f"/World/P{i}", "Xform")
        declare_asset(prim, kind="thing", asset_id=f"P{i}", model="")
        for name, role, lo, hi in attrs:
            declare_attribute(prim, name, "float", 0.5, unit="1", min=lo, max=hi, role=role)
        declare_attribute(prim, "where", "vec3", (0.0, 0.0, 0.0), unit="m")
    stage.GetRootLayer().Save()
    twin = twinstage.open(tmp_path / "s.usda")
    try:
        got = _check(twin)
        chans = twin.table.channels.values()
        names = [next((ch.name for ch in chans if ch.offset <= c < ch.offset + len(ch)), None) if c >= 0 else None for c in got]
        # a colour hint first; then state/measured before others; then the name; no finite limits: none
        assert names == ["pressure", "alpha", "zeta", "alpha", None, None]
    finally:
        twin.close()


def test_one_prim(tmp_path):
    n = 1
    stage = create_stage(tmp_path / "t.usda", root="World")
    for i in range(n):
        prim = stage.DefinePrim(f"/World/P{i}", "Xform")
        declare_asset(prim, kind="thing", asset_id=f"P{i}", model="")
        declare_attribute(prim, "temperature", "float", 1.0, unit="degC", min=0.0, max=9.0, role="state")
    stage.GetRootLayer().Save()
    twin = twinstage.open(tmp_path / "t.usda")
    try:
        assert _check(twin) == [0]
    finally:
        twin.close()
