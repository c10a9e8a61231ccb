"""Periodic route beacons back off while nothing changes (like RFC 6206's Trickle timer): the wait doubles
from `beacon_interval_s` up to `beacon_interval_max_s`, and a change of route starts again from the shortest
interval. Two real hubs (SQLite stores, relays) on the in-memory mesh; 101 has the uplink."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import Counter

from meshd.clock import Clock
from meshd.radio.api import BROADCAST
from meshd.wire.envelope import Envelope, Kind
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import FAST_TIMING, FakeUplink, make_hub, provision, running
from tests.test_relay_line import wait_for

SPEEDUP = 100.0
BEACON_S = 30.0


async def beacon_times(tmp_path, *, max_s: float, window_s: float, drop_uplink_at: float | None = None) -> list[float]:
    """Scenario times of hub 102's beacons (it routes through 101, whose uplink stays up unless dropped)."""
    p = provision(tmp_path, [101, 102])
    clock = Clock(speedup=SPEEDUP)
    mesh = FakeMesh(seed=2, clock=clock)
    mesh.link(101, 102)
    timing = dataclasses.replace(
        FAST_TIMING, beacon_interval_s=BEACON_S, beacon_interval_max_s=max_s, beacon_min_gap_s=5.0, uplink_hold_s=0.0
    )
    uplink_hub, hub = (
        make_hub(p, c, mesh.radio(c), clock, timing, duty_cycle_pct=100.0, neighbour_radio_hops=0) for c in (101, 102)
    )
    uplink = FakeUplink(uplink_hub, Counter())
    uplink_hub.uplink = uplink
    async with running([uplink_hub, hub]):
        relay = hub.relay
        assert relay is not None
        task = asyncio.create_task(uplink.run())
        try:
            await wait_for(lambda: relay.routes.next_hop(clock.now()) is not None, limit_s=10)
            start = clock.now()
            if drop_uplink_at is not None:
                await clock.sleep(drop_uplink_at)
                uplink.connected = False  # 101 loses its uplink: 102's route changes...
                await clock.sleep(BEACON_S)
                uplink.connected = True  # ...and comes back as it was
                await clock.sleep(window_s - drop_uplink_at - BEACON_S)
            else:
                await clock.sleep(window_s)
        finally:
            task.cancel()
    return [
        at - start
        for (sender, to, payload), at in zip(mesh.on_air, mesh.on_air_at, strict=True)
        if sender == 102 and to == BROADCAST and at >= start and Envelope.from_bytes(payload).kind is Kind.STATUS
    ]


async def test_a_stable_route_is_beaconed_less_and_less_often(tmp_path):
    times = await beacon_times(tmp_path / "trickle", max_s=8 * BEACON_S, window_s=20 * BEACON_S)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 30, 60, 120, 240, 240 ...: about 6 beacons in 20 intervals instead of 20
    assert 3 <= len(times) <= 8, times
    assert max(gaps) >= 6 * BEACON_S, gaps
    assert all(gap <= 8 * BEACON_S * 1.2 + 5 for gap in gaps), gaps  # never beyond the longest interval
    # the control: no backoff, one beacon per interval
    control = await beacon_times(tmp_path / "fixed", max_s=BEACON_S, window_s=20 * BEACON_S)
    assert len(control) >= 15, control


async def test_a_route_change_starts_again_from_the_shortest_interval(tmp_path):
    drop = 10 * BEACON_S
    times = await beacon_times(tmp_path, max_s=8 * BEACON_S, window_s=16 * BEACON_S, drop_uplink_at=drop)
    before = [t for t in times if t < drop]
    assert len(before) <= 5, times  # backing off: 30, 60, 120 ...
    assert before[-1] - before[-2] >= 3 * BEACON_S, times
    # once the route is back as it was (drop + 1 interval), periodic beacons start again from 30 s: two or
    # more within the next four intervals (backed off, there would be at most one)
    back = drop + BEACON_S + 2 * 5.0
    assert len([t for t in times if back < t <= back + 4 * BEACON_S]) >= 2, times
