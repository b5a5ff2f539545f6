"""The whole tick against its USD commits, sustained tick rates, and a 10k-asset twin at 60 Hz.

Scenes are factory floors from :func:`twinstage.scenes.generate_factory` (N machines,
thermal model: every ``temperature`` changes every tick, the other four channels
hold still), cached under ``$TMPDIR/twinstage-bench`` keyed by size, twinstage
version and a hash of the generator's source.

For each size one ``Twin(rate=60)`` runs two phases:

1. **tick vs commits** — writer budget off (``budget_s=None``: commit everything),
   so each tick does the same work every time. ``Twin.tick()`` (queued sets,
   models, sanitize, limit check, diff, every sink) is timed, and inside it the
   commits of that same Frame (``LiveWriter.consume`` + ``ColumnarWriter.consume``).
   Target: median tick ≤ 1.3 × median commits.
2. **sustained** — the Twin's default budget (half a tick period per tick for
   per-prim writes; columnar writes every value every tick), ticking as fast as
   possible: ticks/s, per-prim max staleness (``Twin.stats()``), and on a few
   sampled ticks a check that the columnar arrays in USD equal the table. For
   10k assets the targets are ≥ 60 ticks/s and per-prim staleness ≤ 0.25 s.

    python bench/tick.py [--quick] [--json] [--items N]
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import Report, log, parse_args

import twinstage
from twinstage import __version__
from twinstage.scenes import _factory, generate_factory
from twinstage.usd._writer import COLUMN_NS, state_prim_path

RATE = 60.0


def scene(n: int, items: int, args) -> Path:
    """A cached factory scene of ``n`` machines (generated once per size/version/generator)."""
    src = Path(_factory.__file__).read_bytes()
    key = hashlib.sha1(src).hexdigest()[:10]
    d = Path(tempfile.gettempdir()) / "twinstage-bench"
    p = d / f"factory-{n}-items{items}-v{__version__}-{key}.usdc"
    if not p.exists():
        log(args, f"tick: generating {n} assets (+{items} items) -> {p} ...")
        t0 = time.perf_counter()
        tmp = p.with_name(p.stem + ".partial.usdc")
        generate_factory(n, tmp, items=items)
        tmp.replace(p)
        log(args, f"tick: generated in {time.perf_counter() - t0:.0f} s")
    return p


class _Timed:
    """Times a sink's consume() in place (the Twin still calls it in its own order)."""

    def __init__(self, sink):
        self.sink = sink
        self.last = 0.0
        self._orig = sink.consume

        def consume(frame):
            t0 = time.perf_counter()
            try:
                self._orig(frame)
            finally:
                self.last = time.perf_counter() - t0

        sink.consume = consume

    def remove(self) -> None:
        del self.sink.consume


def columnar_matches(twin) -> bool:
    """The columnar arrays *in USD* (read through the stage) equal the table, values and quality."""
    prim = twin.stage.GetPrimAtPath(state_prim_path(twin.stage))
    for name in twin.table.channels:
        got = np.asarray(prim.GetAttribute(f"{COLUMN_NS}:{name}").Get())
        q = np.asarray(prim.GetAttribute(f"{COLUMN_NS}:{name}:quality").Get())
        if not (np.array_equal(got, twin.table[name]) and np.array_equal(q, twin.table.quality(name))):
            return False
    return int(prim.GetAttribute(f"{COLUMN_NS}:tick").Get()) == twin.tick_count


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--items", type=int, default=0, help="conveyor items added to each scene"))
    rep = Report("tick", args)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    phase1 = {1_000: 15, 10_000: 8} if args.quick else {1_000: 40, 10_000: 15, 100_000: 5}
    phase2 = {1_000: 120, 10_000: 120} if args.quick else {1_000: 300, 10_000: 300, 100_000: 60}
    rows1, rows2 = [], []
    for n in sizes:
        path = scene(n, args.items, args)
        log(args, f"tick: opening {n} assets ...")
        t0 = time.perf_counter()
        twin = twinstage.open(path, rate=RATE)  # budget defaults: 0.5 * dt per tick
        open_s = time.perf_counter() - t0
        default_budget = twin.writer.budget_s
        entries = twin.table.n_entries
        key = f"{n // 1000}k"

        # -- phase 1: the whole tick vs its commits (commit everything) -------------
        twin.writer.budget_s = None
        tw, tc = _Timed(twin.writer), _Timed(twin.columns)
        ticks, commits, live, cols = [], [], [], []
        repeat = args.repeat or phase1[n]
        changed = 0
        for r in range(3 + repeat):
            t0 = time.perf_counter()
            frame = twin.tick()
            dt = time.perf_counter() - t0
            if r >= 3:
                ticks.append(dt)
                commits.append(tw.last + tc.last)
                live.append(tw.last)
                cols.append(tc.last)
                changed = frame.n_changed
        tw.remove()
        tc.remove()
        m_tick, m_commit = float(np.median(ticks)), float(np.median(commits))
        ratio = m_tick / m_commit
        rep.figure(f"tick_{key}_open_s", open_s)
        rep.figure(f"tick_{key}_entries", entries)
        rep.figure(f"tick_{key}_changed_per_tick", changed)
        rep.figure(f"tick_{key}_tick_ms", m_tick * 1e3)
        rep.figure(f"tick_{key}_commits_ms", m_commit * 1e3)
        rep.figure(f"tick_{key}_perprim_ms", float(np.median(live)) * 1e3)
        rep.figure(f"tick_{key}_columnar_ms", float(np.median(cols)) * 1e3)
        rep.figure(f"tick_{key}_overhead_ms", (m_tick - m_commit) * 1e3)
        rep.figure(f"tick_{key}_tick_over_commits_ratio", ratio)
        rep.figure(f"tick_{key}_commit_all_ticks_per_s", 1.0 / m_tick)
        s1 = rep.target(f"{key} assets: tick/commits", f"tick_{key}_tick_over_commits_ratio", ratio, 1.3)
        rows1.append([key, entries, changed, m_tick * 1e3, m_commit * 1e3, float(np.median(live)) * 1e3,
                      float(np.median(cols)) * 1e3, (m_tick - m_commit) * 1e3, ratio, s1, 1.0 / m_tick])

        # -- phase 2: sustained, default budget --------------------------------------
        twin.writer.budget_s = default_budget
        k = args.repeat * 10 if args.repeat else phase2[n]
        sample = set(np.linspace(0, k - 1, 6).astype(int).tolist())
        durations = []
        checks = []
        c0 = twin.writer.stats["committed"]
        for i in range(k):
            t0 = time.perf_counter()
            twin.tick()
            durations.append(time.perf_counter() - t0)
            if i in sample:
                checks.append(columnar_matches(twin))
        st = twin.stats()
        tps = k / sum(durations)
        stale_s = st["writer"]["max_staleness_s"]
        per_tick = (st["writer"]["committed"] - c0) / k
        ok_cols = all(checks)
        rep.figure(f"sustained_{key}_ticks_per_s", tps)
        rep.figure(f"sustained_{key}_tick_p50_ms", float(np.median(durations)) * 1e3)
        rep.figure(f"sustained_{key}_tick_p95_ms", float(np.percentile(durations, 95)) * 1e3)
        rep.figure(f"sustained_{key}_perprim_writes_per_tick", per_tick)
        rep.figure(f"sustained_{key}_max_staleness_s", stale_s)
        rep.figure(f"sustained_{key}_columnar_equals_table", ok_cols)
        rep.figure(f"sustained_{key}_columnar_checked_ticks", len(checks))
        s_rate = s_stale = s_cols = "-"
        if n == 10_000:
            rep.figure("hz60_10k_holds_60", tps >= RATE)
            s_rate = rep.target("10k assets @60 Hz: ticks/s", f"sustained_{key}_ticks_per_s", tps, RATE, higher_is_better=True)
            s_stale = rep.target("10k assets @60 Hz: per-prim staleness s", f"sustained_{key}_max_staleness_s", stale_s, 0.25)
            s_cols = rep.target("10k assets @60 Hz: columnar == table (1 = yes)", f"sustained_{key}_columnar_equals_table", 1.0 if ok_cols else 0.0, 1.0,
                                higher_is_better=True)
        rows2.append([key, k, tps, s_rate, float(np.median(durations)) * 1e3, float(np.percentile(durations, 95)) * 1e3,
                      per_tick, stale_s, s_stale, f"{sum(checks)}/{len(checks)}", s_cols])
        twin.close()
        del twin
    rep.table(f"Tick vs its commits (Twin(rate={RATE:g}), per-prim budget off; median ms per tick)",
              ["assets", "entries", "changed", "tick ms", "commits ms", "per-prim ms", "columnar ms", "rest ms", "tick/commits", "<=1.3", "ticks/s"],
              rows1)
    rep.table(f"Sustained, as fast as possible (Twin(rate={RATE:g}), default budget = half a period for per-prim writes)",
              ["assets", "ticks", "ticks/s", ">=60", "p50 ms", "p95 ms", "per-prim writes/tick", "staleness s", "<=0.25", "columnar==table", "ok"],
              rows2)
    rep.note("commits = LiveWriter.consume + ColumnarWriter.consume of the same Frame, timed inside Twin.tick(); "
             "rest = queued sets + models + sanitize + limit check + diff + Frame")
    rep.note("the 60 Hz and staleness targets hold for 10k assets; other sizes are reported for information")
    return rep.finish()


if __name__ == "__main__":
    raise SystemExit(main())
