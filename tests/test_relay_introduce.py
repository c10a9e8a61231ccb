"""A hub that receives a signed custody notice addressed to it learns that the sender cannot name its link
key (it missed our beacons): it beacons soon to introduce itself, instead of leaving that neighbour to sign
every notice (~85 bytes instead of ~16) and broadcast its news until our next periodic beacon (half an hour
to two hours later). Hub B runs for real; the test plays its neighbour C (see tests/test_relay_news.py)."""

from __future__ import annotations

import asyncio

from meshd.radio.api import BROADCAST
from meshd.relay import relay as relay_module
from meshd.wire import bodies
from meshd.wire.envelope import Envelope, Kind, sign
from tests.support.hubs import FAST_TIMING
from tests.test_relay_line import wait_for
from tests.test_relay_news import ORIGIN, SPEEDUP, B, C, World, world

GAP_S = 60.0


def beacons(w: World) -> int:
    return sum(
        1 for to, payload, _ in w.radio.sent if to == BROADCAST and Envelope.from_bytes(payload).kind is Kind.STATUS
    )


def signed_notice(w: World, to: int, pid: int) -> None:
    body = bodies.encode_delivered_ids([(ORIGIN, 1)], [0x1234])
    w.deliver(sign(Envelope(C, 0, Kind.CUSTODY, body), w.key_c).to_bytes(), C, pid, to=to)


async def test_a_signed_custody_notice_to_us_makes_us_beacon_soon_once(tmp_path, monkeypatch):
    monkeypatch.setattr(relay_module, "INTRODUCE_GAP_S", GAP_S, raising=False)
    async with world(tmp_path) as w:
        clock = w.relay.clock
        await wait_for(lambda: beacons(w) >= 1, limit_s=10)  # B's boot beacon
        await clock.sleep(GAP_S)
        before = beacons(w)
        signed_notice(w, B, 0x300)
        await wait_for(lambda: beacons(w) > before, limit_s=2 * FAST_TIMING.beacon_min_gap_s / SPEEDUP + 5)
        assert w.relay.counters["beacons_introduce"] == 1
        # more signed notices soon after: no more beacons for them
        signed_notice(w, B, 0x301)
        await asyncio.sleep(3 * FAST_TIMING.beacon_min_gap_s / SPEEDUP)
        assert w.relay.counters["beacons_introduce"] == 1


async def test_a_signed_notice_to_another_hub_or_broadcast_does_not(tmp_path, monkeypatch):
    monkeypatch.setattr(relay_module, "INTRODUCE_GAP_S", GAP_S, raising=False)
    async with world(tmp_path) as w:
        await wait_for(lambda: beacons(w) >= 1, limit_s=10)
        await w.relay.clock.sleep(GAP_S)
        signed_notice(w, BROADCAST, 0x300)
        await asyncio.sleep(3 * FAST_TIMING.beacon_min_gap_s / SPEEDUP)
        assert w.relay.counters["beacons_introduce"] == 0
