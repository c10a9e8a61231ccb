"""Received envelopes are handled concurrently (their store writes share commits). A custody notice and the
same report coming back must still leave someone carrying the report, whatever order the writes land in."""

from __future__ import annotations

import asyncio

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.radio.api import ReceivedPacket
from meshd.wire import bodies, codec
from meshd.wire.envelope import Envelope, Kind, sign
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import make_hub, provision, running
from tests.test_relay_line import needs, wait_for

B, C, ORIGIN = 401, 402, 403
ROUNDS = 30


async def test_custody_notice_beside_the_report_coming_back_never_drops_it(tmp_path):
    p = provision(tmp_path, [B, C, ORIGIN])
    mesh = FakeMesh(seed=3)
    hub = make_hub(p, B, mesh.radio(B), Clock(speedup=1), duty_cycle_pct=100.0)
    key_c = keyfiles.load(p.camps[C]).sign
    key_origin = keyfiles.load(p.camps[ORIGIN]).sign
    async with running([hub]):
        relay, store, radio = hub.relay, hub.store, mesh.radios[B]
        assert relay is not None
        assert store is not None

        def packet(payload: bytes, sender: int, pid: int) -> ReceivedPacket:
            return ReceivedPacket(from_node=sender, to_node=B, packet_id=pid, portnum=256, payload=payload)

        reports = [
            codec.build_envelope(Kind.NEEDS, needs(i), origin=ORIGIN, seq=i, key=key_origin)
            for i in range(1, ROUNDS + 1)
        ]
        for i, report in enumerate(reports):
            radio.deliver(packet(report.to_bytes(), ORIGIN, 1000 + i))
        await wait_for(lambda: relay.counters["accepted"] >= ROUNDS, limit_s=10)
        # B sent each to C (no custody yet); C took custody, its routes changed and it sends each one back:
        # B hears C's custody notice and, right behind it, the report itself.
        await store.mark_attempt([(ORIGIN, r.seq) for r in reports], lambda _: 3600.0)
        for i, report in enumerate(reports):
            notice = sign(Envelope(C, 0, Kind.CUSTODY, bodies.encode_delivered_ids([(ORIGIN, report.seq)])), key_c)
            radio.deliver(packet(notice.to_bytes(), C, 2000 + 2 * i))
            radio.deliver(packet(report.to_bytes(), C, 2001 + 2 * i))
        await wait_for(lambda: relay.counters["taken_back"] + relay.counters["duplicates"] >= ROUNDS, limit_s=10)
        await asyncio.sleep(0.2)
        carried = {e.seq for e in await store.pending(limit=100) if e.origin == ORIGIN}
        # C was told (our custody notice) that we have each one again, so we must carry every one of them
        assert carried == {r.seq for r in reports}
