"""The origin's end-to-end safety net through real stores and relays: a report whose custody got lost on
the way (every hub believes another carries it) is sent again by its origin after `custody_recheck_s`."""

from __future__ import annotations

import dataclasses
from collections import Counter

from meshd.clock import Clock
from meshd.wire.envelope import Kind
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import FAST_TIMING, FakeUplink, make_hub, provision, running
from tests.test_relay_line import wait_for

A, B = 501, 502


async def test_a_report_nobody_carries_any_more_is_sent_again_by_its_origin(tmp_path):
    p = provision(tmp_path, [A, B])
    mesh = FakeMesh(seed=2)
    mesh.link(A, B, 0.0)
    clock = Clock(speedup=100)
    timing = dataclasses.replace(FAST_TIMING, custody_recheck_s=300.0, maintenance_s=20.0)
    origin = make_hub(p, A, mesh.radio(A), clock, timing, duty_cycle_pct=100.0)
    carrier = make_hub(p, B, mesh.radio(B), clock, timing, duty_cycle_pct=100.0)
    # B's uplink counts as up (so it is A's route) but never publishes: B keeps what it takes.
    carrier.uplink = FakeUplink(carrier, Counter())
    async with running([origin, carrier]):
        assert origin.relay is not None
        assert origin.store is not None
        assert carrier.store is not None
        a_store, b_store = origin.store, carrier.store
        env = await origin.relay.originate(Kind.ALERT, {"type": "disease_outbreak", "count": 3})
        key = (env.origin, env.seq)

        async def b_carries() -> bool:
            return any(e.key == key for e in await b_store.pending())

        async def a_handed_over() -> bool:
            entry = await a_store.get(*key)
            return entry is not None and entry.handed_to != 0

        await wait_for(b_carries, limit_s=20)
        await wait_for(a_handed_over, limit_s=20)
        # custody lost on the way: B no longer has it, A believes B does
        await b_store.remove([key])
        assert not await b_carries()
        await wait_for(b_carries, limit_s=30)  # A's recheck (300 scenario s = 3 s here) sent it again
        assert origin.relay.counters["custody_rechecked"] >= 1
