"""Bounded age for a slow reader (issue 10): with the server's defaults and a client with ordinary
(autotuned) socket buffers, a reader that takes one message per N ms gets merged deltas whose
data age — in ticks, twin tick at read time minus the message's tick — stays bounded instead of
growing with the backlog that kernel buffers would otherwise hold."""

from __future__ import annotations

import asyncio
import json

from _bridgeutil import VIEW_SECRET, arun, recv_json, ws_connect


def test_a_slow_reader_gets_merged_fresh_state_with_bounded_age(bridge, factory_1k):
    rate, every = 20.0, 0.15  # the reader takes one message per 3 ticks
    b = bridge(factory_1k, rate=rate, send_deadline=10)
    clock = b.twin.clock

    async def go():
        ws = await ws_connect(b.url, token=VIEW_SECRET, max_queue=1)
        await recv_json(ws, lambda m: m["type"] == "hello", timeout=30)
        await ws.send(json.dumps({"type": "subscribe", "id": "s", "encoding": "json"}))  # everything, JSON: ~100 kB per tick
        await recv_json(ws, lambda m: m["type"] == "snapshot", timeout=30)
        ages, merged, seqs = [], [], []
        for _ in range(40):
            await asyncio.sleep(every)
            m = await recv_json(ws, lambda m: m["type"] in ("delta", "snapshot"), timeout=30)
            ages.append(clock.tick - m["tick"])
            seqs.append(m["seq"])
            merged.append(m.get("merged", 1))
        await ws.close()
        return ages, merged, seqs

    ages, merged, seqs = arun(go(), 120)
    ticks_per_read = every * rate
    assert all(b2 > a for a, b2 in zip(seqs, seqs[1:]))
    assert sum(m > 1 for m in merged[10:]) >= 5, merged  # merged regularly; the old server: never
    # a few messages in flight at most (client queue + socket buffers), each read 3 ticks after the last:
    # the age does not grow with time as a kernel-held backlog would make it (the old server: +2 ticks per read)
    bound = 5 * ticks_per_read + 2
    assert max(ages[10:]) <= bound, (ages, bound)
    assert max(ages[-10:]) <= max(ages[10:20]) + 2 * ticks_per_read, ages
