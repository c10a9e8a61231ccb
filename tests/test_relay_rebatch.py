"""An own report that has been on the air is never wrapped into a batch again. A batch takes its first
report's id: had the report come back (or been rechecked) and gone out as the first of a batch, a hub still
holding the single report would take the batch for a duplicate and answer custody for all of it, leaving the
other reports carried by nobody until the origin's 6-hour recheck. Found by reading the code; a real hub
(SQLite store, relay) on the in-memory mesh, the test playing its uplink neighbour."""

from __future__ import annotations

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.radio.api import BROADCAST, ReceivedPacket
from meshd.wire import bodies, linkauth
from meshd.wire.envelope import Envelope, Kind, sign
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import make_hub, provision, running
from tests.test_relay_line import needs, wait_for

B, C = 801, 802


async def test_a_report_taken_back_goes_alone_and_new_ones_batch_under_their_own_id(tmp_path):
    p = provision(tmp_path, [B, C])
    mesh = FakeMesh(seed=8)
    hub = make_hub(p, B, mesh.radio(B), Clock(speedup=50), duty_cycle_pct=100.0)
    key_c = keyfiles.load(p.camps[C]).sign
    links_c = linkauth.LinkKeys(C, key_c, p.registry)
    async with running([hub]):
        relay, radio = hub.relay, mesh.radios[B]
        assert relay is not None

        def deliver(payload: bytes, pid: int, to: int = B) -> None:
            radio.deliver(ReceivedPacket(from_node=C, to_node=to, packet_id=pid, portnum=256, payload=payload))

        def data_to_c() -> list[tuple[int, Envelope]]:
            return [
                (pid, Envelope.from_bytes(payload))
                for (to, payload, _), pid in zip(radio.sent, radio.sent_ids, strict=True)
                if to == C and linkauth.frame_kind(payload) in (Kind.NEEDS, Kind.BATCH)
            ]

        status = bodies.encode_status({"uplink_hops": 1, "uplink_up": True, "via": 0})
        deliver(sign(Envelope(C, 0, Kind.STATUS, status), key_c).to_bytes(), 1, to=BROADCAST)
        first = await relay.originate(Kind.NEEDS, needs(1))
        await wait_for(lambda: len(data_to_c()) >= 1, limit_s=10)
        [(pid, sent)] = data_to_c()
        assert (sent.kind, sent.seq) == (Kind.NEEDS, first.seq)
        deliver(links_c.custody_notice(B, [pid]), 2)
        await wait_for(lambda: relay.counters["custody_handed_over"] >= 1, limit_s=10)

        # two new reports wait to share a batch; meanwhile the first comes back (C's routes changed)
        later = [await relay.originate(Kind.NEEDS, needs(i)) for i in (2, 3)]
        deliver(sent.to_bytes(), 3)
        await wait_for(lambda: relay.counters["taken_back"] >= 1, limit_s=10)
        await wait_for(lambda: len(data_to_c()) >= 3, limit_s=10)
        frames = [(env.kind, env.seq) for _, env in data_to_c()]
        assert (Kind.BATCH, first.seq) not in frames, frames
        assert frames[1] == (Kind.NEEDS, first.seq)  # alone, under its own id
        assert frames[2] == (Kind.BATCH, later[0].seq)  # the new ones together, under the first new id
