"""A compact custody notice names again the frames the last notices to the same hub answered (a few, twice at
most, for three custody timeouts): one notice in five is lost on a 20 % link, and its sender would otherwise
send the whole data frame again. In bench/sim_network.py this took data retransmissions from 140 to 80-102
in one set of runs (docs/BENCHMARKS.md, "Relay")."""

from __future__ import annotations

import asyncio

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.radio.api import BROADCAST, ReceivedPacket
from meshd.relay import relay as relay_module
from meshd.wire import bodies, codec, linkauth
from meshd.wire.envelope import Envelope, Kind, sign
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import FAST_TIMING, make_hub, provision, running
from tests.test_relay_line import needs, wait_for

B, ORIGIN = 601, 602


async def test_a_notice_names_recent_answers_again_twice_at_most_and_not_after_the_window(tmp_path):
    p = provision(tmp_path, [B, ORIGIN])
    mesh = FakeMesh(seed=3)
    hub = make_hub(p, B, mesh.radio(B), Clock(speedup=50), duty_cycle_pct=100.0)
    key = keyfiles.load(p.camps[ORIGIN]).sign
    radio = mesh.radios[B]

    def deliver(payload: bytes, pid: int, to: int = B) -> None:
        radio.deliver(ReceivedPacket(from_node=ORIGIN, to_node=to, packet_id=pid, portnum=256, payload=payload))

    def notices() -> list[tuple[int, ...]]:
        frames = [payload for to, payload, _ in radio.sent if to == ORIGIN and linkauth.is_link_frame(payload)]
        return [linkauth.decode_custody_notice(frame).packet_ids for frame in frames]

    async def report_in(seq: int, pid: int) -> tuple[int, ...]:
        before = len(notices())
        env = codec.build_envelope(Kind.NEEDS, needs(seq), origin=ORIGIN, seq=seq, key=key)
        deliver(env.to_bytes(), pid)
        await wait_for(lambda: len(notices()) > before, limit_s=10)
        [notice] = notices()[before:]
        return notice

    async with running([hub]):
        # the origin's beacon tells B its camp, so B answers with compact notices
        status = bodies.encode_status({"uplink_hops": 0, "uplink_up": False, "via": 0})
        deliver(sign(Envelope(ORIGIN, 0, Kind.STATUS, status), key).to_bytes(), 1, to=BROADCAST)
        assert await report_in(1, 0x1001) == (0x1001,)
        assert await report_in(2, 0x1002) == (0x1002, 0x1001)
        # 0x1001 has been named twice: enough (both notices lost is one time in 25 at 20 % loss)
        assert await report_in(3, 0x1003) == (0x1003, 0x1002)
        assert hub.relay is not None
        assert hub.relay.counters["custody_answers_repeated"] == 2
        # three custody timeouts later the sender has retried anyway: nothing old is named
        await asyncio.sleep(hub.relay.clock.real(3 * FAST_TIMING.custody_timeout_s) + 0.2)
        assert await report_in(4, 0x1004) == (0x1004,)


async def test_at_most_a_few_answers_are_repeated(tmp_path):
    p = provision(tmp_path, [B, ORIGIN])
    mesh = FakeMesh(seed=3)
    hub = make_hub(p, B, mesh.radio(B), Clock(speedup=50), duty_cycle_pct=100.0)
    key = keyfiles.load(p.camps[ORIGIN]).sign
    radio = mesh.radios[B]
    status = bodies.encode_status({"uplink_hops": 0, "uplink_up": False, "via": 0})
    async with running([hub]):
        radio.deliver(
            ReceivedPacket(
                from_node=ORIGIN,
                to_node=BROADCAST,
                packet_id=1,
                portnum=256,
                payload=sign(Envelope(ORIGIN, 0, Kind.STATUS, status), key).to_bytes(),
            )
        )
        # eight frames in one custody delay are answered by one notice...
        for seq in range(1, 9):
            env = codec.build_envelope(Kind.NEEDS, needs(seq), origin=ORIGIN, seq=seq, key=key)
            radio.deliver(
                ReceivedPacket(from_node=ORIGIN, to_node=B, packet_id=0x2000 + seq, portnum=256, payload=env.to_bytes())
            )
        await wait_for(lambda: any(linkauth.is_link_frame(p) for _, p, _ in radio.sent), limit_s=10)
        await asyncio.sleep(0.1)
        # ...and the next one names only the latest REPEAT_ANSWERS of them again
        env = codec.build_envelope(Kind.NEEDS, needs(9), origin=ORIGIN, seq=9, key=key)
        radio.deliver(
            ReceivedPacket(from_node=ORIGIN, to_node=B, packet_id=0x2009, portnum=256, payload=env.to_bytes())
        )
        await wait_for(lambda: sum(linkauth.is_link_frame(p) for _, p, _ in radio.sent) >= 2, limit_s=10)
        frames = [linkauth.decode_custody_notice(p) for _, p, _ in radio.sent if linkauth.is_link_frame(p)]
        assert sorted(frames[0].packet_ids) == [0x2000 + seq for seq in range(1, 9)]
        repeated = sorted(frames[1].packet_ids[1:])
        assert frames[1].packet_ids[0] == 0x2009
        assert relay_module.REPEAT_ANSWERS == 4
        assert repeated == [0x2005, 0x2006, 0x2007, 0x2008]
