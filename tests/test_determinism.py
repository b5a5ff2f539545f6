"""Same scene + seed + inputs ⇒ the same state and the same recording, bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import twinstage
from twinstage.usd import create_stage, declare_asset, declare_attribute

PUMP, V1, V2 = "/Testbed/Pump", "/Testbed/Valve1", "/Testbed/Valve2"

#: (tick before which it is applied, how, prim, attribute, value)
PUMP_SCRIPT = [
    (0, "set", V1, "opening", 0.8),
    (15, "set", PUMP, "ambientTemperature", (77.0, "degF")),
    (30, "set", V1, "opening", 0.25),
    (45, "pxr", V2, "opening", 0.6),  # a direct USD edit, through change notices
    (60, "set", PUMP, "motorSpeed", 0.7),
    (80, "set", V1, "opening", 0.1),
    (100, "pxr", PUMP, "motorSpeed", 1.1),
    (120, "set", V1, "opening", 1.0),
]


def _run_script(scene: Path, rec: Path, script: list[tuple], ticks: int, reproducible: bool = False, **open_kw: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    twin = twinstage.open(scene, **open_kw)
    twin.record(rec, reproducible=reproducible)
    pending = sorted(script, key=lambda s: s[0])
    with twin:
        while twin.tick_count < ticks:
            while pending and pending[0][0] <= twin.tick_count:
                _, how, prim, attr, value = pending.pop(0)
                if how == "set":
                    twin.set(prim, **{attr: value})
                else:
                    twin.stage.GetPrimAtPath(prim).GetAttribute(f"twin:{attr}").Set(value)
            nxt = pending[0][0] if pending else ticks
            twin.run(ticks=max(1, min(nxt, ticks) - twin.tick_count))
        assert list(twin.errors) == []
        values = twin.table.snapshot()
        quality = {n: twin.table.quality(n).copy() for n in twin.table.channels}
    return values, quality


def _recorded(rec: Path) -> dict[str, np.ndarray]:
    r = twinstage.Recording(rec)
    out = {"ticks": r.ticks, "simTime": r.sim_times()}
    for name in r.channels:
        out[name] = r.channel(name)
        out[f"{name}:quality"] = r.channel(name, quality=True)
    return out


def _assert_bit_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = np.ascontiguousarray(a[k]), np.ascontiguousarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert np.array_equal(x, y), k
        assert x.tobytes() == y.tobytes(), k  # bit for bit (also -0.0 vs 0.0, NaN payloads)


def _copy_scene(scene: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in scene.parent.iterdir():
        if f.is_file() and f.name.startswith(scene.stem):
            shutil.copy(f, dest / f.name)
    return dest / scene.name


def test_pump_runs_repeat_bit_for_bit(pump_scene, tmp_path):
    ticks = 150
    runs = []
    for name in ("a", "b"):
        scene = _copy_scene(pump_scene, tmp_path / name)  # separate files: a pxr edit in one cannot reach the other
        values, quality = _run_script(scene, tmp_path / name / "rec.usdc", PUMP_SCRIPT, ticks, seed=7)
        runs.append((values, quality, _recorded(tmp_path / name / "rec.usdc")))
    (va, qa, ra), (vb, qb, rb) = runs
    _assert_bit_identical(va, vb)
    _assert_bit_identical(qa, qb)
    _assert_bit_identical(ra, rb)
    assert ra["ticks"].tolist() == list(range(1, ticks + 1))
    assert len(ra["opening"]) == ticks
    # the script did something: valve 1 went down to 0.1 and back up, valve 2 to 0.6 via pxr
    v1 = twinstage.Recording(tmp_path / "a" / "rec.usdc").series(V1, "opening")
    assert v1.min() == 0.1 and v1[-1] == 1.0
    assert twinstage.Recording(tmp_path / "a" / "rec.usdc").series(V2, "opening")[-1] == 0.6


def test_reproducible_recordings_are_byte_identical_files(pump_scene, tmp_path):
    for name in ("a", "b"):
        scene = _copy_scene(pump_scene, tmp_path / name)
        _run_script(scene, tmp_path / name / "rec.usdc", PUMP_SCRIPT, 130, reproducible=True, seed=3)
    a, b = (tmp_path / n / "rec.usdc" for n in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    prov = twinstage.Recording(a).provenance
    assert prov["reproducible"] is True and prov["scene"] == "pump_testbed.usda" and prov["seed"] == 3
    assert "start" not in prov and "end" not in prov and "command" not in prov
    # a different seed is a different run: the provenance says so, so the bytes differ
    _run_script(_copy_scene(pump_scene, tmp_path / "c"), tmp_path / "c" / "rec.usdc", PUMP_SCRIPT, 130, reproducible=True, seed=4)
    assert (tmp_path / "c" / "rec.usdc").read_bytes() != a.read_bytes()


def test_different_inputs_give_different_results(pump_scene, tmp_path):
    changed = [s if s[0] != 80 else (80, "set", V1, "opening", 0.15) for s in PUMP_SCRIPT]
    va, _ = _run_script(_copy_scene(pump_scene, tmp_path / "a"), tmp_path / "a" / "rec.usdc", PUMP_SCRIPT, 100)
    vb, _ = _run_script(_copy_scene(pump_scene, tmp_path / "b"), tmp_path / "b" / "rec.usdc", changed, 100)
    ra, rb = _recorded(tmp_path / "a" / "rec.usdc"), _recorded(tmp_path / "b" / "rec.usdc")
    assert not np.array_equal(va["flowRate"], vb["flowRate"])
    assert not np.array_equal(ra["vibration1"], rb["vibration1"])
    # identical up to the tick where the scripts part (tick 81 is the first one with the change)
    np.testing.assert_array_equal(ra["flowRate"][:80], rb["flowRate"][:80])
    assert not np.array_equal(ra["flowRate"][80], rb["flowRate"][80])


def test_results_do_not_depend_on_the_write_budget(pump_scene, tmp_path):
    # the per-prim USD writer works to a wall-clock budget; the state must not
    va, _ = _run_script(_copy_scene(pump_scene, tmp_path / "a"), tmp_path / "a" / "rec.usdc", PUMP_SCRIPT, 90, write_budget_s=None)
    vb, _ = _run_script(_copy_scene(pump_scene, tmp_path / "b"), tmp_path / "b" / "rec.usdc", PUMP_SCRIPT, 90, write_budget_s=0.0)
    _assert_bit_identical(va, vb)
    _assert_bit_identical(_recorded(tmp_path / "a" / "rec.usdc"), _recorded(tmp_path / "b" / "rec.usdc"))


def test_factory_with_motion_repeats_bit_for_bit(factory_1k, tmp_path):
    machines = [f"/Factory/Machines/{p}" for p in ("M0000", "M0123", "M0999")]
    items = [f"/Factory/Conveyors/Loop0/Item{j:03d}" for j in (0, 57, 199)]
    twin = twinstage.open(factory_1k)
    for p in machines + items:  # the generator's naming, checked rather than assumed
        twin.table.row(p, "temperature" if "Machines" in p else "position")
    twin.close()
    script = [
        (0, "set", machines[0], "heatInput", 9000.0),
        (5, "set", items[0], "speed", 2.5),
        (10, "set", machines[1], "ambientTemperature", (300.0, "K")),
        (20, "set", items[1], "speed", 0.0),
        (25, "set", items[2], "distance", 3.0),
        (30, "set", machines[2], "heatInput", 0.0),
    ]
    runs = []
    for name in ("a", "b"):
        values, quality = _run_script(factory_1k, tmp_path / f"{name}.usdc", script, 40, seed=3)
        runs.append((values, quality, _recorded(tmp_path / f"{name}.usdc")))
    (va, qa, ra), (vb, qb, rb) = runs
    _assert_bit_identical(va, vb)
    _assert_bit_identical(qa, qb)
    _assert_bit_identical(ra, rb)
    assert ra["position"].shape == (40, 200, 3)
    assert not np.array_equal(ra["position"][0], ra["position"][-1])  # things moved
    assert ra["temperature"].shape == (40, 1000)


class Noisy:
    """A user model that uses its generator: the seed must matter, and only the seed."""

    name: ClassVar[str] = "noisy"

    def bind(self, table, prims, stage) -> None:
        self.rows = table.rows("reading", prims)

    def step(self, table, t, dt, rng) -> None:
        table["reading"][self.rows] = 10.0 + rng.normal(0.0, 0.5, len(self.rows))

    def parameters(self) -> dict[str, Any]:
        return {"sigma": 0.5}


def test_seed_drives_model_generators(tmp_path):
    path = tmp_path / "noisy.usda"
    stage = create_stage(path, root="W")
    for i in range(5):
        prim = stage.DefinePrim(f"/W/S{i}", "Xform")
        declare_asset(prim, kind="sensor", model="noisy")
        declare_attribute(prim, "reading", "float", 10.0, unit="V")
    stage.GetRootLayer().Save()

    def run(seed: int, rec: str) -> dict[str, np.ndarray]:
        with twinstage.open(path, seed=seed, models=[Noisy()]) as twin:
            twin.record(tmp_path / rec)
            twin.run(ticks=20)
        return _recorded(tmp_path / rec)

    a, b, c = run(11, "a.usdc"), run(11, "b.usdc"), run(12, "c.usdc")
    _assert_bit_identical(a, b)
    assert not np.array_equal(a["reading"], c["reading"])
    assert len(np.unique(a["reading"])) == a["reading"].size  # really noisy
