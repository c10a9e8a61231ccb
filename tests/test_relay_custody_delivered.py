"""An uplink hub whose uplink already has the reports when it answers says so in its custody notice: the
sender learns custody and delivery at once, and no Delivered notice follows for them. Two real hubs (SQLite
stores, relays) on the in-memory mesh; 102 has the uplink (the in-memory stand-in for the MQTT bridge)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

from meshd.clock import Clock
from meshd.relay.relay import Relay
from meshd.wire import linkauth
from meshd.wire.envelope import Kind
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import FAST_TIMING, FakeUplink, make_hub, provision, running
from tests.test_relay_line import wait_for

NOTICE_S = 20.0


async def run_pair(tmp_path, *, uplink_late: bool) -> tuple[Relay, Relay, FakeMesh]:
    p = provision(tmp_path, [101, 102])
    clock = Clock(speedup=10)
    mesh = FakeMesh(seed=3, clock=clock)
    mesh.link(101, 102)
    timing = dataclasses.replace(FAST_TIMING, custody_ack_delay_s=2.0, notice_interval_s=NOTICE_S)
    origin, uplink_hub = (
        make_hub(p, c, mesh.radio(c), clock, timing, duty_cycle_pct=100.0, neighbour_radio_hops=0) for c in (101, 102)
    )
    received: Counter[str] = Counter()
    uplink = FakeUplink(uplink_hub, received)
    uplink_hub.uplink = uplink
    async with running([origin, uplink_hub]):
        a, b = origin.relay, uplink_hub.relay
        assert a is not None
        assert b is not None
        task = asyncio.create_task(uplink.run())
        try:
            await wait_for(lambda: a.routes.next_hop(clock.now()) is not None, limit_s=10)
            # 102 answers with a compact notice once it knows 101's camp (from 101's beacon)
            await wait_for(lambda: 101 in {n.camp for n in b.routes.neighbours.values()}, limit_s=10)
            if uplink_late:  # a short outage (within uplink_hold_s): 102 keeps what it gets meanwhile
                uplink.connected = False
            ids = [(await a.originate(Kind.ALERT, {"type": "fire", "urgency": "immediate"})).id for _ in range(3)]
            await wait_for(lambda: a.counters["custody_handed_over"] >= 3, limit_s=20)
            uplink.connected = True
            await wait_for(lambda: set(ids) <= set(received), limit_s=20)
            await wait_for(lambda: a.counters["delivered_learnt"] >= 3, limit_s=20)
            await clock.sleep(3 * NOTICE_S)  # time for any Delivered notice 102 still had to send
        finally:
            task.cancel()
    return a, b, mesh


async def test_a_custody_notice_that_says_delivered_spares_the_delivered_notice(tmp_path):
    a, b, mesh = await run_pair(tmp_path, uplink_late=False)
    assert a.counters["custody_delivered_received"] >= 1
    assert b.counters["custody_delivered_sent"] >= 1
    assert b.counters["delivered_notices_sent"] == 0
    frames = [linkauth.decode_custody_notice(p) for s, _, p in mesh.on_air if s == 102 and linkauth.is_link_frame(p)]
    assert any(f.delivered for f in frames)


async def test_without_the_reports_at_hq_yet_the_news_comes_in_a_delivered_notice(tmp_path):
    a, b, _ = await run_pair(tmp_path, uplink_late=True)
    assert a.counters["custody_delivered_received"] == 0
    assert b.counters["custody_delivered_sent"] == 0
    assert b.counters["delivered_notices_sent"] >= 1
