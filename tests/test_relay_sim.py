"""The relay through the real path: five hubs with real RadioLinks on the LoRa simulator (20 % loss per
link, LongFast airtime, collisions), real SQLite stores; only the last hub has an uplink (an in-memory
stand-in). 60 reports keep it within a minute here; tests/test_relay_line.py runs 200 over the fake mesh."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter

import pytest

from meshd.clock import Clock
from meshd.config import HubConfig
from meshd.daemon.hub import Hub
from meshd.radio.sim import SimNetwork, line_topology
from meshd.wire import linkauth
from meshd.wire.envelope import Kind
from tests.support.hubs import FakeUplink, provision, running
from tests.test_relay_crash import TIMING
from tests.test_relay_line import needs, wait_for

SPEEDUP = 40.0


async def _empty(store) -> bool:
    return not await store.pending(limit=1)


async def _diagnose(hubs: list[Hub]) -> str:
    """What each hub still carries and what its relay did: enough to tell a lost notice from a loop."""
    lines = []
    for hub in hubs:
        assert hub.store is not None
        assert hub.relay is not None
        pending = await hub.store.pending(limit=10)
        carried = [(e.origin, e.seq, e.attempts, e.from_node) for e in pending]
        lines.append(f"camp {hub.config.hub.camp_id}: carries {carried} counters {dict(hub.relay.counters)}")
    return "\n".join(lines)


@pytest.mark.flaky(reruns=1)  # real-time simulator on two shared cores
async def test_five_hubs_in_a_lossy_line_deliver_every_report_exactly_once(tmp_path):
    camps = [1, 2, 3, 4, 5]
    p = provision(tmp_path, camps)
    received: Counter[str] = Counter()
    topology = line_topology(5, loss=0.2, name="relay-line")
    async with SimNetwork(topology, speedup=SPEEDUP, seed=9, pty=False, record_air=True) as net:
        clock = Clock(SPEEDUP)

        def config_for(camp: int) -> HubConfig:
            base = p.config(camp, duty_cycle_pct=100.0)
            timing = dataclasses.replace(base.timing, **{**TIMING, "speedup": SPEEDUP})
            radio = dataclasses.replace(base.radio, device=f"tcp://127.0.0.1:{net.radios[camp - 1].tcp_port}")
            return dataclasses.replace(base, radio=radio, timing=timing)

        hubs = [Hub(config_for(c), clock=clock, serve_status=False) for c in camps]
        uplink = FakeUplink(hubs[-1], received)
        hubs[-1].uplink = uplink
        async with running(hubs):
            up = asyncio.create_task(uplink.run())
            try:
                sent = [
                    (await hubs[0].relay.originate(Kind.NEEDS, needs(i))).id  # type: ignore[union-attr]
                    for i in range(60)
                ]
                try:
                    await wait_for(lambda: set(sent) <= set(received), limit_s=150)
                except AssertionError:
                    missing = [i for i in sent if i not in received]
                    raise AssertionError(f"not delivered: {missing[:10]}; {await _diagnose(hubs)}") from None
                assert all(received[i] == 1 for i in sent), received.most_common(3)

                # The origin hands every report on and carries none of them any more.
                origin = hubs[0].store
                assert origin is not None
                try:
                    await wait_for(lambda: _empty(origin), limit_s=60)
                except AssertionError:
                    raise AssertionError(f"origin still carries reports; {await _diagnose(hubs)}") from None

                # ...and the news that HQ has them came back to it hop by hop (its field desk's receipt)
                async def origin_knows_all() -> bool:
                    return all([await origin.is_delivered(*map(int, i.split(":"))) for i in sent])

                try:
                    await wait_for(origin_knows_all, limit_s=60)
                except AssertionError:
                    where = {}
                    for i in sent:
                        key = tuple(map(int, i.split(":")))
                        if not await origin.is_delivered(*key):
                            stores = [(c, h.store) for c, h in zip(camps, hubs, strict=True) if h.store is not None]
                            where[i] = [c for c, store in stores if await store.is_delivered(*key)]
                    raise AssertionError(f"origin has no news of {where} (id: camps that know)") from None
            finally:
                up.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await up
        # the reports really crossed four lossy radio hops: the simulator saw losses and our retries
        assert net.stats.losses > 0
        assert sum(h.relay.counters["retransmissions"] for h in hubs if h.relay is not None) > 0
        # hubs that know each other (from their beacons) answer with compact notices under their link key
        notices = [
            linkauth.is_link_frame(r.payload)
            for r in net.on_air
            if r.portnum == 256 and linkauth.frame_kind(r.payload) is Kind.CUSTODY
        ]
        assert notices
        assert sum(notices) > len(notices) / 2, f"{sum(notices)} of {len(notices)} custody notices compact"
        link_notices = [
            linkauth.decode_custody_notice(r.payload)
            for r in net.on_air
            if r.portnum == 256 and linkauth.is_link_frame(r.payload)
        ]
        # the uplink hub's notices said "delivered" too, and its neighbour took the news from them
        assert any(notice.delivered for notice in link_notices)
        assert hubs[3].relay is not None
        assert hubs[3].relay.counters["custody_delivered_received"] > 0
        # the rest of the way back, the news went in short link frames (custody notices or notices of its own)
        assert any(notice.reports for notice in link_notices)
        assert hubs[0].relay is not None
        assert hubs[0].relay.counters["news_received"] > 0
