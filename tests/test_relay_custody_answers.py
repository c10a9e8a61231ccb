"""A custody notice names the data frames it answers (their packet ids): only a notice that answers the
sender's latest send of a report hands the report over. A late notice for an earlier send, after which the
receiver may have passed the report on or given it back, counts for nothing (before, it could leave a
report carried by no hub: one of the 20-camp bench runs lost one that way)."""

from __future__ import annotations

import asyncio

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.radio.api import BROADCAST, ReceivedPacket
from meshd.wire import bodies, codec
from meshd.wire.envelope import Envelope, Kind, sign
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import make_hub, provision, running
from tests.test_relay_line import needs, wait_for

B, C, ORIGIN = 501, 502, 503


async def _hub_sending_to_c(tmp_path):
    """Hub B running, with neighbour C (played by the test, which has an uplink) and one report to carry."""
    p = provision(tmp_path, [B, C, ORIGIN])
    mesh = FakeMesh(seed=5)
    hub = make_hub(p, B, mesh.radio(B), Clock(speedup=50), duty_cycle_pct=100.0)
    return p, mesh, hub


def _packet(payload: bytes, sender: int, pid: int, to: int = B) -> ReceivedPacket:
    return ReceivedPacket(from_node=sender, to_node=to, packet_id=pid, portnum=256, payload=payload)


def _data_sends_to(mesh: FakeMesh, node: int) -> list[int]:
    radio = mesh.radios[B]
    out = []
    for (to, payload, _), pid in zip(radio.sent, radio.sent_ids, strict=True):
        if to == node and Envelope.from_bytes(payload).kind is Kind.NEEDS:
            out.append(pid)
    return out


def _notice(key, ids: list[tuple[int, int]], answers: list[int] | None) -> bytes:
    body = bodies.encode_delivered_ids(ids, answers or ())
    return sign(Envelope(C, 0, Kind.CUSTODY, body), key).to_bytes()


async def _start(tmp_path):
    p, mesh, hub = await _hub_sending_to_c(tmp_path)
    key_c = keyfiles.load(p.camps[C]).sign
    key_origin = keyfiles.load(p.camps[ORIGIN]).sign
    beacon = sign(
        Envelope(C, 0, Kind.STATUS, bodies.encode_status({"uplink_hops": 1, "uplink_up": True, "via": 0})), key_c
    )
    report = codec.build_envelope(Kind.NEEDS, needs(1), origin=ORIGIN, seq=1, key=key_origin)
    return p, mesh, hub, key_c, beacon, report


async def test_a_copy_back_from_our_upstream_voids_notices_for_earlier_sends(tmp_path):
    """`make demo` lost a report this way: camp 1 sent it to camp 3, camp 3 passed it on to camp 2, camp 2 (from
    which camp 1 had it) sent it to camp 1 again, and camp 1, still waiting for camp 3's notice, took that copy
    as a retransmission, acknowledged it (so camp 2 let it go) and then handed it over on camp 3's notice."""
    _, mesh, hub, key_c, beacon, report = await _start(tmp_path)
    async with running([hub]):
        relay, store, radio = hub.relay, hub.store, mesh.radios[B]
        assert relay is not None
        assert store is not None
        radio.deliver(_packet(beacon.to_bytes(), C, 1, to=BROADCAST))
        radio.deliver(_packet(report.to_bytes(), ORIGIN, 2))
        await wait_for(lambda: len(_data_sends_to(mesh, C)) >= 1, limit_s=20)
        [first] = _data_sends_to(mesh, C)[:1]
        # the hub we got it from sends it again (round a loop, or its notice was lost: we cannot tell)
        radio.deliver(_packet(report.to_bytes(), ORIGIN, 3))
        await wait_for(lambda: relay.counters["duplicates"] >= 1, limit_s=10)
        # C's notice for our first send: C may have passed it on since, and this copy may be it
        radio.deliver(_packet(_notice(key_c, [(ORIGIN, 1)], [first]), C, 10))
        await wait_for(lambda: relay.counters["custody_stale"] >= 1, limit_s=10)
        assert [e.key for e in await store.pending()] == [(ORIGIN, 1)]
        assert relay.counters["custody_handed_over"] == 0
        # only a notice for a send made after that copy hands it over
        await wait_for(lambda: len(_data_sends_to(mesh, C)) >= 2, limit_s=20)
        latest = _data_sends_to(mesh, C)[-1]
        radio.deliver(_packet(_notice(key_c, [(ORIGIN, 1)], [latest]), C, 11))
        await wait_for(lambda: relay.counters["custody_handed_over"] >= 1, limit_s=10)
        assert await store.pending() == []


async def test_a_notice_for_any_send_since_we_took_custody_hands_over(tmp_path):
    """A retry crossed C's late notice for the first send: nothing came back in between, so C did take it."""
    _, mesh, hub, key_c, beacon, report = await _start(tmp_path)
    async with running([hub]):
        relay, store, radio = hub.relay, hub.store, mesh.radios[B]
        assert relay is not None
        assert store is not None
        radio.deliver(_packet(beacon.to_bytes(), C, 1, to=BROADCAST))
        radio.deliver(_packet(report.to_bytes(), ORIGIN, 2))
        await wait_for(lambda: len(_data_sends_to(mesh, C)) >= 2, limit_s=20)
        first = _data_sends_to(mesh, C)[0]
        radio.deliver(_packet(_notice(key_c, [(ORIGIN, 1)], [first]), C, 10))
        await wait_for(lambda: relay.counters["custody_handed_over"] >= 1, limit_s=10)
        assert await store.pending() == []
        assert relay.counters["custody_stale"] == 0


async def test_a_report_that_came_back_ignores_notices_for_sends_before_it(tmp_path):
    _, mesh, hub, key_c, beacon, report = await _start(tmp_path)
    async with running([hub]):
        relay, store, radio = hub.relay, hub.store, mesh.radios[B]
        assert relay is not None
        assert store is not None
        radio.deliver(_packet(beacon.to_bytes(), C, 1, to=BROADCAST))
        radio.deliver(_packet(report.to_bytes(), ORIGIN, 2))
        await wait_for(lambda: len(_data_sends_to(mesh, C)) >= 1, limit_s=20)
        [first] = _data_sends_to(mesh, C)[:1]
        # C took it (notice lost), then sent it back to us; its notice for our first send comes after
        radio.deliver(_packet(_notice(key_c, [(ORIGIN, 1)], [first]), C, 10))
        await asyncio.sleep(0)  # the notice is handled first...
        await wait_for(lambda: relay.counters["custody_handed_over"] >= 1, limit_s=10)
        radio.deliver(_packet(report.to_bytes(), C, 11))  # ...then the report comes back: carried again
        await wait_for(lambda: relay.counters["taken_back"] >= 1, limit_s=10)
        radio.deliver(_packet(_notice(key_c, [(ORIGIN, 1)], [first]), C, 12))  # a second copy of that notice
        await wait_for(lambda: relay.counters["custody_stale"] >= 1, limit_s=10)
        assert [e.key for e in await store.pending()] == [(ORIGIN, 1)]


async def test_notices_from_hubs_that_name_no_frames_still_hand_over(tmp_path):
    _, mesh, hub, key_c, beacon, report = await _start(tmp_path)
    async with running([hub]):
        relay, store, radio = hub.relay, hub.store, mesh.radios[B]
        assert relay is not None
        assert store is not None
        radio.deliver(_packet(beacon.to_bytes(), C, 1, to=BROADCAST))
        radio.deliver(_packet(report.to_bytes(), ORIGIN, 2))
        await wait_for(lambda: len(_data_sends_to(mesh, C)) >= 1, limit_s=20)
        radio.deliver(_packet(_notice(key_c, [(ORIGIN, 1)], None), C, 10))
        await wait_for(lambda: relay.counters["custody_handed_over"] >= 1, limit_s=10)
        assert await store.pending() == []


async def test_our_custody_notice_names_the_frames_it_answers(tmp_path):
    _, mesh, hub, _, _, report = await _start(tmp_path)
    async with running([hub]):
        relay, radio = hub.relay, mesh.radios[B]
        assert relay is not None
        radio.deliver(_packet(report.to_bytes(), ORIGIN, 0x12345678))
        radio.deliver(_packet(report.to_bytes(), ORIGIN, 0x0BCDEF01))  # a retransmission before our answer

        def notices() -> list[Envelope]:
            return [
                env
                for to, payload, _ in radio.sent
                if to == ORIGIN and (env := Envelope.from_bytes(payload)).kind is Kind.CUSTODY
            ]

        await wait_for(lambda: bool(notices()), limit_s=10)
        [notice] = notices()
        assert bodies.decode_delivered_ids(notice.body) == [(ORIGIN, 1)]
        assert bodies.decode_custody_answers(notice.body) == {0x5678, 0xEF01}
