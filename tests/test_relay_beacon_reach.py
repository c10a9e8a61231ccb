"""A periodic beacon goes only as far as the neighbours we know (no hill relay repeats it while every
neighbour hears us directly); a beacon that says something new still goes as far as `neighbour_radio_hops`.
Hub B runs for real; the test plays its neighbours (see tests/test_relay_news.py)."""

from __future__ import annotations

import dataclasses

from meshd.radio.api import BROADCAST, ReceivedPacket
from meshd.wire import bodies
from meshd.wire.envelope import Envelope, Kind, sign
from tests.support.hubs import FAST_TIMING
from tests.test_relay_line import wait_for
from tests.test_relay_news import ORIGIN, World, world

BEACON_S = 30.0
TIMING = dataclasses.replace(FAST_TIMING, beacon_interval_s=BEACON_S, beacon_interval_max_s=BEACON_S)


def beacon_hop_limits(w: World, recorded: list[tuple[int, int, bytes]]) -> list[int]:
    return [
        hop_limit
        for sender, hop_limit, payload in recorded
        if sender == w.radio.node and Envelope.from_bytes(payload).kind is Kind.STATUS
    ]


def record_hop_limits(w: World) -> list[tuple[int, int, bytes]]:
    mesh = w.radio.mesh
    recorded: list[tuple[int, int, bytes]] = []
    transmit = mesh.transmit

    def recording(sender: int, to: int, payload: bytes, portnum: int, hop_limit: int) -> int:
        if to == BROADCAST:
            recorded.append((sender, hop_limit, payload))
        return transmit(sender, to, payload, portnum, hop_limit)

    mesh.transmit = recording  # type: ignore[method-assign]
    return recorded


async def test_periodic_beacons_stay_off_the_hill_relays_while_every_neighbour_is_direct(tmp_path):
    async with world(tmp_path, TIMING) as w:
        recorded = record_hop_limits(w)
        await wait_for(lambda: w.relay.counters["beacons_periodic"] >= 2, limit_s=20)
        periodic = beacon_hop_limits(w, recorded)[-2:]
        assert periodic == [0, 0], recorded

        # a neighbour heard only through a relay radio: periodic beacons go through the relays again
        status = bodies.encode_status({"uplink_hops": 3, "uplink_up": False, "via": 0})
        beacon = sign(Envelope(ORIGIN, 0, Kind.STATUS, status), w.key_origin).to_bytes()
        far = 0x7777
        w.radio.deliver(
            ReceivedPacket(from_node=far, to_node=BROADCAST, packet_id=9, portnum=256, payload=beacon, hop_start=1)
        )
        count = w.relay.counters["beacons_periodic"]
        await wait_for(lambda: w.relay.counters["beacons_periodic"] >= count + 2, limit_s=20)
        assert beacon_hop_limits(w, recorded)[-1] == 1, recorded


async def test_a_beacon_with_news_goes_as_far_as_neighbour_radio_hops(tmp_path):
    async with world(tmp_path, TIMING) as w:
        recorded = record_hop_limits(w)
        await wait_for(lambda: w.relay.counters["beacons_periodic"] >= 1, limit_s=20)
        before = len(beacon_hop_limits(w, recorded))
        assert beacon_hop_limits(w, recorded)[-1] == 0  # (periodic)
        # the origin asks (no route): B answers, through the relays too, though every neighbour is direct
        w.beacon(ORIGIN, w.key_origin, 0, 0x501)
        answers = w.relay.counters["beacons_answer"]
        await wait_for(lambda: w.relay.counters["beacons_answer"] > answers, limit_s=20)
        assert 1 in beacon_hop_limits(w, recorded)[before:], recorded
