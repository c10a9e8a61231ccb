"""A hub that keeps sending signed Delivered notices as far as its beacons go skips its periodic beacon: every
neighbour's host receives those notices, which keep our route fresh there (`RouteTable.heard_from`). Three
real hubs (SQLite stores, relays) in a line on the in-memory mesh; 103 has the uplink (and tells 102 of each
delivery in its custody notice), 102 passes the news back to 101, which reports all along.

Hubs that share a link key send that news in short frames to the one hub it is for instead (which do not
stand in for a beacon: tests/test_relay_news.py); the signed broadcast is what goes to a hub whose camp
makes no link key, as here."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

from meshd.clock import Clock
from meshd.relay.relay import Relay
from meshd.wire.envelope import Kind
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import FAST_TIMING, FakeUplink, make_hub, provision, running
from tests.test_relay_line import wait_for

SPEEDUP = 50.0
BEACON_S = 60.0


async def test_delivered_notices_stand_in_for_periodic_beacons(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(Relay, "_has_link_key", lambda self, camp: False)
    p = provision(tmp_path, [101, 102, 103])
    mesh = FakeMesh(seed=2)
    mesh.link(101, 102)
    mesh.link(102, 103)
    clock = Clock(speedup=SPEEDUP)
    timing = dataclasses.replace(
        FAST_TIMING,
        beacon_interval_s=BEACON_S,
        beacon_interval_max_s=BEACON_S,  # (no backing off: one periodic beacon per interval unless suppressed)
        beacon_min_gap_s=5.0,
        notice_interval_s=20.0,
        custody_timeout_s=60.0,
    )  # (a long custody timeout: premature retries on a loaded machine would count 102 as failing)
    # on the in-memory mesh every neighbour is direct: notices at hop limit 0 reach as far as beacons
    origin, middle, uplink_hub = (
        make_hub(p, c, mesh.radio(c), clock, timing, duty_cycle_pct=100.0, neighbour_radio_hops=0)
        for c in (101, 102, 103)
    )
    received: Counter[str] = Counter()
    uplink = FakeUplink(uplink_hub, received)
    uplink_hub.uplink = uplink
    async with running([origin, middle, uplink_hub]):
        a, b = origin.relay, middle.relay
        assert a is not None
        assert b is not None
        task = asyncio.create_task(uplink.run())
        try:
            await wait_for(lambda: a.routes.next_hop(clock.now()) is not None, limit_s=10)
            start, beacons_before = clock.now(), b.counters["beacons_sent"]
            routed = True
            while clock.now() - start < 10 * BEACON_S:  # a report every 15 s: a notice every 20 s
                await a.originate(Kind.ALERT, {"type": "fire", "urgency": "immediate"})
                await clock.sleep(15.0)
                hop = a.routes.next_hop(clock.now())
                routed = routed and hop is not None and hop.camp == 102
            beacons = b.counters["beacons_sent"] - beacons_before
        finally:
            task.cancel()
    assert b.counters["delivered_notices_sent"] >= 10
    assert beacons <= 2, beacons  # instead of one per interval (10)
    assert routed  # 101's route through 102 never went stale meanwhile
    assert len(received) >= 30
