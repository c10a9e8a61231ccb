"""Managed flooding, hop limits, reliability, duty cycle and limits of the simulated mesh.

These drive radios through the Python API (as if their host sent `ToRadio.packet`) in virtual time,
so minutes of airtime take milliseconds.
"""

from __future__ import annotations

import math

import pytest

from meshd.errors import RadioError
from meshd.radio.airtime import payload_airtime_s, preset
from meshd.radio.api import BROADCAST
from meshd.radio.sim import LinkSpec, NodeSpec, SimNetwork, Topology, line_topology, node_num_for
from meshd.radio.sim.node import DeliveredPacket, VirtualRadio


def data_packets(radio: VirtualRadio) -> list[DeliveredPacket]:
    return [d for d in radio.delivered if not d.is_routing]


def routing(radio: VirtualRadio, request_id: int) -> list[DeliveredPacket]:
    return [d for d in radio.delivered if d.is_routing and d.packet.decoded.request_id == request_id]


def sim(topology: Topology, **kwargs: object) -> SimNetwork:
    options: dict[str, object] = {"speedup": math.inf, "pty": False, "base_port": None, "seed": 3}
    options.update(kwargs)
    return SimNetwork(topology, **options)  # type: ignore[arg-type]


async def test_broadcast_crosses_two_hops_and_is_delivered_once_everywhere() -> None:
    async with sim(line_topology(3), record_air=True) as net:
        a, b, c = net.radios
        packet_id = a.send(b"flood me")
        await net.sleep(30)
        assert [len(data_packets(r)) for r in (a, b, c)] == [0, 1, 1]
        at_c = data_packets(c)[0].packet
        assert getattr(at_c, "from") == a.num
        assert at_c.id == packet_id
        assert (at_c.hop_start, at_c.hop_limit) == (3, 2)  # one relay on the way
        assert at_c.relay_node == b.num & 0xFF
        # a, b and c each transmit it once (c's rebroadcast has nobody new to reach, but c cannot know).
        assert [rec.transmitter for rec in net.on_air] == [a.num, b.num, c.num]
        assert net.stats.node(a.num).rx_duplicates == 1  # a heard b's rebroadcast of its own packet


@pytest.mark.parametrize(("hop_limit", "reached"), [(0, 1), (1, 2), (2, 3)])
async def test_hop_limit_bounds_the_reach(hop_limit: int, reached: int) -> None:
    async with sim(line_topology(4)) as net:
        source, *others = net.radios
        source.send(b"how far", hop_limit=hop_limit)
        await net.sleep(30)
        got = [len(data_packets(r)) for r in others]
        assert got == [1] * reached + [0] * (3 - reached)


async def test_client_mute_never_rebroadcasts() -> None:
    async with sim(line_topology(3, roles=["CLIENT", "CLIENT_MUTE", "CLIENT"])) as net:
        a, mute, c = net.radios
        a.send(b"muted")
        await net.sleep(30)
        assert len(data_packets(mute)) == 1
        assert data_packets(c) == []
        assert net.stats.node(mute.num).tx_frames == 0


def _triangle(relay_roles: tuple[str, str]) -> Topology:
    """s hears r1 and r2, r1 and r2 hear each other; t hears only r1 and r2."""
    ids = ["s", "r1", "r2", "t"]
    roles = {"s": "CLIENT", "r1": relay_roles[0], "r2": relay_roles[1], "t": "CLIENT"}
    nodes = tuple(NodeSpec(i, node_num_for("tri-" + i), i, i.upper(), role=roles[i]) for i in ids)
    links = tuple(
        LinkSpec(a, b, snr_db=snr)
        for a, b, snr in [("s", "r1", -10.0), ("s", "r2", 5.0), ("r1", "r2", 5.0), ("r1", "t", 0.0), ("r2", "t", 0.0)]
    )
    return Topology(nodes=nodes, links=links, links_only=True, name="triangle")


async def test_lower_snr_relays_first_and_others_cancel() -> None:
    # r1 heard s at -10 dB, r2 at +5 dB: r1's contention window is 16 slots, r2's 128, so r1 usually
    # rebroadcasts first; whoever is second hears the first and cancels its own copy.
    r1, r2 = node_num_for("tri-r1"), node_num_for("tri-r2")
    first = []
    for seed in range(40):
        async with sim(_triangle(("CLIENT", "CLIENT")), seed=seed, record_air=True) as net:
            net.radio("s").send(b"x")
            await net.sleep(30)
            relayers = [rec.transmitter for rec in net.on_air if rec.relayed and rec.transmitter in (r1, r2)]
            assert len(relayers) == 1, relayers
            assert net.stats.node(r1).relays_cancelled + net.stats.node(r2).relays_cancelled == 1
            assert len(data_packets(net.radio("t"))) == 1
            first.append(relayers[0])
    # Expected share for r1: P(U{0..15} <= U{0..127}) = 0.94; 0.8 leaves > 4 sigma of room.
    assert first.count(r1) / len(first) >= 0.8


async def test_router_always_rebroadcasts() -> None:
    async with sim(_triangle(("CLIENT", "ROUTER")), record_air=True) as net:
        s, r1, r2, _t = net.radios
        s.send(b"x")
        await net.sleep(30)
        relayers = [rec.transmitter for rec in net.on_air if rec.relayed]
        assert relayers[0] == r2.num  # a ROUTER's window ends before any client's
        assert r1.num not in relayers  # the client heard the router and cancelled
        assert net.stats.node(r1.num).relays_cancelled == 1


async def test_want_ack_dm_direct_gets_real_ack() -> None:
    async with sim(line_topology(2)) as net:
        a, b = net.radios
        packet_id = a.send(b"dm", to=b.num, want_ack=True)
        await net.sleep(30)
        assert len(data_packets(b)) == 1
        acks = routing(a, packet_id)
        assert [d.routing_error for d in acks] == ["NONE"]
        assert getattr(acks[0].packet, "from") == b.num
        assert net.stats.node(a.num).tx_frames == 1
        assert net.stats.node(b.num).acks_sent == 1


async def test_want_ack_dm_over_relay_gets_implicit_then_real_ack() -> None:
    async with sim(line_topology(3)) as net:
        a, _b, c = net.radios
        packet_id = a.send(b"dm", to=c.num, want_ack=True)
        await net.sleep(60)
        assert len(data_packets(c)) == 1
        senders = [getattr(d.packet, "from") for d in routing(a, packet_id)]
        assert senders == [a.num, c.num]  # implicit ACK on hearing the relay, then c's ACK
        assert all(d.routing_error == "NONE" for d in routing(a, packet_id))
        assert net.stats.node(a.num).tx_frames == 1


async def test_dead_link_gives_max_retransmit_after_three_transmissions() -> None:
    async with sim(line_topology(2)) as net:
        a, b = net.radios
        net.set_link(a.num, b.num, 1.0)
        start = net.clock.now
        packet_id = a.send(b"anyone?", to=b.num, want_ack=True)
        await net.sleep(120)
        naks = routing(a, packet_id)
        assert [d.routing_error for d in naks] == ["MAX_RETRANSMIT"]
        assert net.stats.node(a.num).tx_frames == 3
        assert net.stats.node(a.num).retransmissions == 2
        assert data_packets(b) == []
        # Each retransmission waits the firmware's timeout (2 x airtime + slots + 4.5 s).
        assert 3 * 4.5 < naks[0].time - start < 60


async def test_broadcast_want_ack_gets_implicit_ack() -> None:
    async with sim(line_topology(2)) as net:
        a, _b = net.radios
        packet_id = a.send(b"all", want_ack=True)
        await net.sleep(30)
        acks = routing(a, packet_id)
        assert [(getattr(d.packet, "from"), d.routing_error) for d in acks] == [(a.num, "NONE")]
        assert net.stats.node(a.num).tx_frames == 1


@pytest.mark.parametrize(
    ("size", "portnum", "error"),
    [(231, 256, None), (232, 256, "TOO_LARGE"), (233, 256, "TOO_LARGE"), (240, 256, "TOO_LARGE"), (232, 1, None)],
)
async def test_frame_size_limit(size: int, portnum: int, error: str | None) -> None:
    async with sim(line_topology(2), record_air=True) as net:
        a, b = net.radios
        packet_id = a.send(b"z" * size, to=b.num, portnum=portnum, want_ack=True)
        await net.sleep(30)
        results = [d.routing_error for d in routing(a, packet_id)]
        if error is None:
            assert results == ["NONE"]
            assert net.on_air[0].payload == b"z" * size
            assert net.on_air[0].airtime_s == pytest.approx(payload_airtime_s(size, preset("LONG_FAST"), portnum))
        else:
            assert results == [error]
            assert net.on_air == []


async def test_no_channel_and_pki_without_key_are_refused() -> None:
    async with sim(line_topology(2)) as net:
        a, b = net.radios
        on_disabled_channel = a.send(b"x", to=b.num, channel=3)
        pki_broadcast = a.send(b"x", pki=True)
        pki_unknown = a.send(b"x", to=0x12345678, pki=True)
        await net.sleep(5)
        assert routing(a, on_disabled_channel)[0].routing_error == "NO_CHANNEL"
        assert routing(a, pki_broadcast)[0].routing_error == "PKI_FAILED"
        assert routing(a, pki_unknown)[0].routing_error == "PKI_SEND_FAIL_PUBLIC_KEY"


async def test_pki_dm_relayed_as_ciphertext() -> None:
    async with sim(line_topology(3), record_air=True) as net:
        a, b, c = net.radios
        a.send(b"protection incident", to=c.num, pki=True, want_ack=True)
        await net.sleep(60)
        [got] = data_packets(c)
        assert got.packet.pki_encrypted
        assert got.packet.public_key == a.public_key
        assert got.packet.decoded.payload == b"protection incident"
        assert data_packets(b) == []  # the relay cannot read it and does not deliver it
        carried = [rec for rec in net.on_air if rec.from_node == a.num]
        assert {rec.transmitter for rec in carried} >= {a.num, b.num}
        assert all(rec.pki and rec.portnum is None for rec in carried)
        assert all(b"protection" not in rec.payload for rec in net.on_air)
        # 16-byte header + Data + 12 bytes of PKI overhead
        assert carried[0].airtime_s == pytest.approx(net.channel.airtime_s(16 + got.packet.decoded.ByteSize() + 12))


async def test_eu868_duty_cycle_refuses_with_nak_then_recovers() -> None:
    async with sim(line_topology(2), region="EU_868", preset="LONG_SLOW") as net:
        a, _b = net.radios
        per_frame = payload_airtime_s(200, preset("LONG_SLOW"))
        frames_needed = math.ceil(360.0 / per_frame) + 1  # 10 % of an hour is 360 s
        sent = 0
        while sent < frames_needed:
            for _ in range(min(16, frames_needed - sent)):  # never more than the radio's queue
                a.send(b"d" * 200, hop_limit=0)
                sent += 1
            while a.queue_depth or a.channel.is_transmitting(a.num):
                await net.sleep(5)
        assert a.duty_cycle_percent() > 10.0
        assert net.stats.node(a.num).tx_frames == frames_needed
        refused = a.send(b"one more", hop_limit=0)
        await net.sleep(1)
        assert [d.routing_error for d in routing(a, refused)] == ["DUTY_CYCLE_LIMIT"]
        assert net.stats.node(a.num).duty_cycle_refusals == 1
        await net.sleep(3600)  # the one-minute buckets roll over
        accepted = a.send(b"later", hop_limit=0)
        await net.sleep(30)
        assert routing(a, accepted) == []
        assert net.stats.node(a.num).tx_frames == frames_needed + 1


async def test_kr_and_us_have_no_duty_cycle_limit() -> None:
    for region in ("KR", "US"):
        async with sim(line_topology(2), region=region, preset="LONG_SLOW") as net:
            a, _b = net.radios
            for _ in range(3):
                for _ in range(16):
                    a.send(b"d" * 200, hop_limit=0)
                while a.queue_depth or a.channel.is_transmitting(a.num):
                    await net.sleep(5)
            assert a.duty_cycle_percent() > 15.0  # well over the 10 % an EU_868 radio may use
            assert net.stats.node(a.num).duty_cycle_refusals == 0


async def test_full_transmit_queue_is_refused() -> None:
    async with sim(line_topology(2), preset="LONG_SLOW") as net:
        a, _b = net.radios
        for _ in range(17):
            a.send(b"q" * 100, hop_limit=0)
        assert a.queue_depth == 16
        assert net.stats.node(a.num).queue_full == 1


async def test_packets_wait_for_a_host_in_a_32_entry_queue() -> None:
    from meshtastic.protobuf import mesh_pb2

    class FakeSession:
        kind = "test"

        def __init__(self) -> None:
            self.configured = False
            self.got: list[mesh_pb2.FromRadio] = []

        def send(self, message: mesh_pb2.FromRadio) -> None:
            self.got.append(message)

        def send_text(self, text: str) -> None:
            pass

        def end(self) -> None:
            self.configured = False

    async with sim(line_topology(2)) as net:
        a, b = net.radios
        for i in range(40):
            a.send(f"report {i}".encode(), hop_limit=0)
            await net.sleep(5)
        session = FakeSession()
        b.attach_session(session)
        b.handle_to_radio(session, mesh_pb2.ToRadio(want_config_id=1234))
        kinds = [m.WhichOneof("payload_variant") for m in session.got]
        complete = kinds.index("config_complete_id")
        queued = [m.packet.decoded.payload for m in session.got[complete + 1 :]]
        assert queued == [f"report {i}".encode() for i in range(8, 40)]  # the oldest 8 were dropped
        assert session.configured
        a.send(b"live", hop_limit=0)
        await net.sleep(5)
        assert session.got[-1].packet.decoded.payload == b"live"


async def test_six_camps_broadcast_reaches_every_radio_once() -> None:
    from meshd.radio.sim import bundled_topology_path, load_topology

    topo = load_topology(bundled_topology_path())
    for seed in (1, 2, 3):
        async with sim(topo, seed=seed) as net:
            source = net.radio("c1-hub")
            source.send(b"needs report", to=BROADCAST)
            await net.sleep(60)
            counts = {r.spec.id: len(data_packets(r)) for r in net.radios if r is not source}
            assert set(counts.values()) <= {0, 1}
            # Every hub gets it (directly, through the relay, or through another camp).
            assert all(counts[f"c{i}-hub"] == 1 for i in range(2, 7)), counts


async def test_injected_forged_frame_is_heard_and_flooded() -> None:
    from meshtastic.protobuf import mesh_pb2

    async with sim(line_topology(3), record_air=True) as net:
        rogue, b, c = net.radios
        forged = mesh_pb2.MeshPacket(to=BROADCAST, id=0x1234, hop_limit=2, hop_start=2)
        setattr(forged, "from", 0xDEADBEEF)  # claims to be someone else
        forged.decoded.portnum = 256
        forged.decoded.payload = b"forged"
        airtime = net.inject(rogue.num, forged)
        await net.sleep(30)
        assert airtime == pytest.approx(net.on_air[0].airtime_s)
        assert [getattr(d.packet, "from") for d in data_packets(b)] == [0xDEADBEEF]
        assert [d.packet.decoded.payload for d in data_packets(c)] == [b"forged"]
        assert data_packets(rogue) == []  # it does not hear its own frame back as new
        await net.stop_radio("n2")
        with pytest.raises(RadioError, match="powered off"):
            c.send(b"nope")
