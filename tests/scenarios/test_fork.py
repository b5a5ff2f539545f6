"""Engine.fork(copy_state=True): the fork continues exactly as the original would; the original is untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import twinstage

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "scenes/pump_testbed.usda"


def _frames(eng, n, events=()):
    out = []
    for k in range(n):
        for at, prim, vals in events:
            if at == k:
                eng.set(prim, **vals)
        f = eng.tick()
        out.append((f.tick, f.sim_time, [(c, r, repr(v), q) for c, r, v, q in f.items()],
                    {ch: eng.table[ch].copy() for ch in eng.table.channels},
                    {ch: eng.table.quality(ch).copy() for ch in eng.table.channels}))
    return out


def _same(a, b):
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        assert fa[0] == fb[0] and fa[1] == fb[1] and fa[2] == fb[2]
        for ch in fa[3]:
            assert np.array_equal(fa[3][ch], fb[3][ch], equal_nan=True), ch
            assert np.array_equal(fa[4][ch], fb[4][ch]), ch


def test_fork_continues_like_the_original():
    a = twinstage.open(SCENE, headless=True, seed=7)
    a.set("/Testbed/Pump", ambientTemperature=35.0)
    a.run(ticks=150)
    a.set("/Testbed/Valve2", opening=0.4)  # queued, not yet ticked: the fork takes it too
    before = {ch: a.table[ch].copy() for ch in a.table.channels}
    fork = a.fork(copy_state=True)
    assert fork.tick_count == a.tick_count == 150 and fork.sim_time == a.sim_time
    # the original is untouched by forking and by running the fork
    events = [(20, "/Testbed/Valve1", {"opening": 0.6})]
    got = _frames(fork, 80, events)
    assert all(np.array_equal(a.table[ch], before[ch], equal_nan=True) for ch in before) and a.tick_count == 150
    want = _frames(a, 80, events)
    _same(got, want)
    # the Frames' diffs agree too (previous state was copied)
    b = twinstage.open(SCENE, headless=True, seed=7)
    b.run(ticks=10)
    fb = b.fork(copy_state=True)
    f1, f2 = b.tick(), fb.tick()
    assert f1.tick == f2.tick and f1.sim_time == f2.sim_time
    assert f1.n_changed > 0 and [(c, r, repr(v), q) for c, r, v, q in f1.items()] == [(c, r, repr(v), q) for c, r, v, q in f2.items()]


def test_fork_copies_model_parameters_not_aliases():
    a = twinstage.open(SCENE, headless=True)
    m = a.models["pump_loop"]
    from dataclasses import replace

    m.params = replace(m.params, motor_tau=123.0)
    f = a.fork(copy_state=True)
    assert f.models["pump_loop"].params.motor_tau == 123.0
    assert f.models["pump_loop"] is not m
    f.models["pump_loop"].params = replace(f.models["pump_loop"].params, motor_tau=5.0)
    assert m.params.motor_tau == 123.0
    # without copy_state a fork starts fresh
    g = a.fork()
    assert g.tick_count == 0 and g.models["pump_loop"].params.motor_tau != 123.0


def test_fork_with_another_seed_differs_from_same_seed():
    a = twinstage.open(SCENE, headless=True, seed=1)
    a.run(ticks=20)
    same, other = a.fork(copy_state=True), a.fork(copy_state=True, seed=99)
    same.run(ticks=50)
    other.run(ticks=50)
    a.run(ticks=50)
    assert all(np.array_equal(a.table[ch], same.table[ch], equal_nan=True) for ch in a.table.channels)
    # the random streams: the same seed continues the original's, another seed has its own
    a2 = twinstage.open(SCENE, headless=True, seed=1)
    for name, rng in a2._rngs.items():
        rng.random(3)  # advance the original's stream
    s2, o2 = a2.fork(copy_state=True), a2.fork(copy_state=True, seed=99)
    for name, rng in a2._rngs.items():
        assert s2._rngs[name].random() == rng.random()
        assert o2._rngs[name].random() != s2._rngs[name].random()


class _Estimator:
    """A stand-in for a data-assimilation stage: it writes an estimate into the table and flags it."""

    def start(self, ctx):
        self.table = ctx.table

    def step(self, t, dt):
        from twinstage.state import Quality

        row = self.table.row("/Testbed/Tank", "level")
        self.table["level"][row] = 0.4242
        self.table.quality("level")[row] |= Quality.ESTIMATED


def test_fork_starts_from_the_assimilated_estimate():
    from twinstage.state import Quality

    a = twinstage.open(SCENE, headless=True)
    a.add_stage(_Estimator())
    a.run(ticks=3)
    f = a.fork(copy_state=True)
    assert f.get("/Testbed/Tank", "level") == 0.4242 and f.quality("/Testbed/Tank", "level") & Quality.ESTIMATED
    assert not f.stages  # stages are not forked: the prediction runs the models from the estimate on
    fresh = a.fork()
    f.run(ticks=1)
    fresh.run(ticks=1)
    # the models go on from the estimate, not from the scene's initial level
    assert abs(f.get("/Testbed/Tank", "level") - 0.4242) < 0.01 < abs(fresh.get("/Testbed/Tank", "level") - 0.4242)
