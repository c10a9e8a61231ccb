"""RadioLink against a fake device over TCP: handshake, heartbeat, send semantics, back-pressure, loss."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from meshtastic.protobuf import mesh_pb2

from meshd.errors import RadioError, RadioRefusedError, TooLargeError
from meshd.radio.api import (
    BROADCAST,
    LinkState,
    LinkStateChanged,
    Priority,
    Radio,
    RadioEvent,
    ReceivedPacket,
    RoutingResult,
)
from meshd.radio.backoff import Backoff
from meshd.radio.link import RadioLink
from meshd.radio.transport import parse_device_url
from tests.radio_fake import (
    MY_NODE,
    OTHER_KEY,
    OTHER_NODE,
    FakeDevice,
    FakeTcpDevice,
    assert_no_tasks_left,
    from_radio,
    packet_frame,
    routing_frame,
    until,
)


def fast(**overrides: Any) -> dict[str, Any]:
    """Link settings scaled down so the whole set runs in seconds; production backoff by default."""
    settings: dict[str, Any] = {
        "heartbeat_s": 5.0,
        "reply_timeout_s": 2.0,
        "backoff": Backoff(rng=random.Random(5)),
        "rng": random.Random(9),
    }
    settings.update(overrides)
    return settings


async def next_of(link: RadioLink, kind: type, within: float = 5.0) -> Any:
    async with asyncio.timeout(within):
        while True:
            event = await link.next_event()
            if isinstance(event, kind):
                return event


@pytest.fixture
async def device() -> AsyncIterator[FakeTcpDevice]:
    dev = FakeTcpDevice()
    await dev.start()
    yield dev
    await dev.stop()


@contextlib.asynccontextmanager
async def ready_link(url: str, **overrides: Any) -> AsyncIterator[RadioLink]:
    async with RadioLink(url, **fast(**overrides)) as link:
        async with asyncio.timeout(5):
            await link.wait_ready()
        yield link


async def test_handshake_reaches_ready_and_close_leaves_nothing_behind(device: FakeTcpDevice) -> None:
    link = RadioLink(device.url, **fast())
    radio: Radio = link  # mypy checks that RadioLink implements the relay's protocol
    assert radio.state is LinkState.DISCONNECTED
    async with link:
        states: list[LinkState] = []
        async with asyncio.timeout(5):
            while link.state is not LinkState.READY or len(states) < 3:
                event = await link.next_event()
                if isinstance(event, LinkStateChanged):
                    states.append(event.state)
        assert states == [LinkState.CONNECTING, LinkState.CONFIGURING, LinkState.READY]
        assert link.my_node == MY_NODE
        assert link.nodes[OTHER_NODE].public_key == OTHER_KEY
        assert link.session.config.lora.hop_limit == 3
    assert link.state in (LinkState.CLOSED,)  # (a tuple: mypy narrowed state to READY above)
    await until(lambda: any(m.disconnect for m in device.device.received))  # a polite goodbye
    assert (await link.next_event()) == LinkStateChanged(LinkState.CLOSED)
    with pytest.raises(RadioError):
        await link.next_event()
    await device.stop()
    await assert_no_tasks_left()


async def test_heartbeats_keep_one_session_alive(device: FakeTcpDevice) -> None:
    async with ready_link(device.url, heartbeat_s=0.1, reply_timeout_s=1.0) as link:
        await asyncio.sleep(1.0)
        assert device.device.heartbeats >= 4  # one at READY, then every 0.1 s
        assert device.connections == 1
        assert link.state is LinkState.READY
        assert link.metrics.reconnects == 0


async def test_send_returns_the_id_once_the_radio_accepted_it(device: FakeTcpDevice) -> None:
    async with ready_link(device.url) as link:
        pid = await link.send(b"envelope", to=OTHER_NODE, want_ack=True, priority=Priority.ALERT, channel=1)
        (pkt,) = device.device.packets
        assert pkt.id == pid
        assert (pkt.to, pkt.channel, pkt.hop_limit, pkt.want_ack) == (OTHER_NODE, 1, 3, True)
        assert pkt.priority == mesh_pb2.MeshPacket.Priority.ALERT
        assert (pkt.decoded.portnum, pkt.decoded.payload) == (256, b"envelope")
        assert link.metrics.packets_sent == 1
        with pytest.raises(TooLargeError):
            await link.send(b"x" * 234)


async def test_back_pressure_never_exceeds_the_radio_queue(device: FakeTcpDevice) -> None:
    device.device.capacity = 1
    async with ready_link(device.url) as link:
        sends = [asyncio.create_task(link.send(bytes([i]), to=BROADCAST)) for i in range(5)]
        for sent in range(1, 6):
            await until(lambda sent=sent: len(device.device.packets) == sent)  # type: ignore[misc]
            await asyncio.sleep(0.15)  # room for a mistake: the link must not write another packet now
            assert len(device.device.packets) == sent
            assert len(device.device.tx_queue) == 1
            await device.push(device.device.transmit())  # on the air; the radio announces room again
        ids = await asyncio.gather(*sends)
        assert device.device.max_queued == 1
        assert [p.id for p in device.device.packets] == ids  # each written once, in order, none refused
        assert [p.decoded.payload for p in device.device.packets] == [bytes([i]) for i in range(5)]


async def test_higher_priority_goes_first_when_queued(device: FakeTcpDevice) -> None:
    device.device.capacity = 1
    async with ready_link(device.url) as link:
        first = asyncio.create_task(link.send(b"status", priority=Priority.BACKGROUND))
        await until(lambda: len(device.device.packets) == 1)
        rest = [
            asyncio.create_task(link.send(b"needs", priority=Priority.DEFAULT)),
            asyncio.create_task(link.send(b"alert", priority=Priority.ALERT)),
        ]
        await asyncio.sleep(0.05)
        for _ in range(2):
            await device.push(device.device.transmit())
            await until(lambda: len(device.device.tx_queue) == 1)
        await asyncio.gather(first, *rest)
        assert [p.decoded.payload for p in device.device.packets] == [b"status", b"alert", b"needs"]


async def test_queue_full_refusal_is_retried_under_a_new_id(device: FakeTcpDevice) -> None:
    device.device.capacity = 1
    async with ready_link(device.url) as link:
        await until(lambda: link.session.window.reported_free == 1)
        device.device.tx_queue.append(0xF00D)  # the radio's own rebroadcast takes the last slot
        send = asyncio.create_task(link.send(b"report"))
        await until(lambda: len(device.device.packets) == 1)  # refused: ERRNO_UNKNOWN, free 0
        await asyncio.sleep(0.1)
        assert len(device.device.packets) == 1  # no retry storm: the radio said it has no room
        await device.push(device.device.transmit())  # room again
        pid = await asyncio.wait_for(send, 3)
        first, second = device.device.packets
        assert first.id != second.id == pid  # the firmware ignores a repeated id, so a new one
        assert first.decoded.payload == second.decoded.payload == b"report"


async def test_refused_packet_raises_with_the_reason(device: FakeTcpDevice) -> None:
    device.device.refuse_with = 9  # DUTY_CYCLE_LIMIT
    async with ready_link(device.url) as link:
        with pytest.raises(RadioRefusedError) as info:
            await link.send(b"x")
        assert info.value.reason == "DUTY_CYCLE_LIMIT"
        assert link.metrics.packets_refused == 1


@pytest.mark.parametrize("error", ["DUTY_CYCLE_LIMIT", "MAX_RETRANSMIT"])
async def test_routing_nak_surfaces_as_routing_result(device: FakeTcpDevice, error: str) -> None:
    async with ready_link(device.url) as link:
        pid = await link.send(b"report", to=OTHER_NODE, want_ack=True)
        await device.push(routing_frame(0x777, "MAX_RETRANSMIT") + routing_frame(pid, error))  # first: not ours
        result = await next_of(link, RoutingResult)
        assert result == RoutingResult(pid, error, OTHER_NODE)
        assert not result.ok


async def test_received_packets_become_events(device: FakeTcpDevice) -> None:
    async with ready_link(device.url) as link:
        await device.push(packet_frame(b"from a hub", hop_start=3, hop_limit=2) + packet_frame(b"N W4", portnum=1))
        first = await next_of(link, ReceivedPacket)
        second = await next_of(link, ReceivedPacket)
        assert (first.payload, first.hops_away, second.portnum) == (b"from a hub", 1, 1)


async def test_rebooted_reruns_the_handshake_and_resends_unconfirmed(device: FakeTcpDevice) -> None:
    device.device.answer_packets = False  # the radio reboots before it answers
    async with ready_link(device.url) as link:
        send = asyncio.create_task(link.send(b"report"))
        await until(lambda: len(device.device.packets) == 1)
        device.device.answer_packets = True
        await device.push(from_radio(rebooted=True))
        pid = await asyncio.wait_for(send, 5)
        assert device.device.handshakes == 2
        assert [p.id for p in device.device.packets] == [pid, pid]  # same id: the mesh drops a duplicate
        assert link.metrics.packets_resent == 1
        assert link.metrics.device_reboots == 1
        assert link.state is LinkState.READY


async def test_reconnects_when_the_tcp_endpoint_returns(device: FakeTcpDevice) -> None:
    async with ready_link(device.url) as link:
        await device.stop()
        await until(lambda: link.state is not LinkState.READY)
        send = asyncio.create_task(link.send(b"queued while the radio was away"))
        await asyncio.sleep(1.0)
        assert not send.done()
        assert device.device.packets == []
        await device.start()  # same port
        returned = time.monotonic()
        async with asyncio.timeout(3.0):
            await link.wait_ready()
        assert time.monotonic() - returned <= 3.0
        pid = await asyncio.wait_for(send, 3)
        assert [p.id for p in device.device.packets] == [pid]
        assert link.metrics.reconnects == 1
        assert link.metrics.connect_failures >= 1


async def test_send_in_flight_when_the_connection_drops_is_sent_again(device: FakeTcpDevice) -> None:
    device.device.answer_packets = False
    async with ready_link(device.url) as link:
        send = asyncio.create_task(link.send(b"report"))
        await until(lambda: len(device.device.packets) == 1)
        device.device.answer_packets = True
        await device.stop()
        await device.start()
        pid = await asyncio.wait_for(send, 5)
        assert [p.id for p in device.device.packets] == [pid, pid]


async def test_silent_radio_is_declared_dead_and_reconnected(device: FakeTcpDevice) -> None:
    async with ready_link(device.url, heartbeat_s=0.2, reply_timeout_s=0.4) as link:
        device.device.answer_heartbeats = False  # the socket stays open, the radio says nothing
        await until(lambda: device.connections >= 2, within=5)
        change = await next_of(link, LinkStateChanged)
        while change.state is not LinkState.DISCONNECTED:
            change = await next_of(link, LinkStateChanged)
        assert "silent" in change.detail


async def test_missing_queue_status_is_settled_by_a_probe(device: FakeTcpDevice) -> None:
    device.device.answer_packets = False  # firmware dropped the reply (or ignored a repeated id)
    async with ready_link(device.url, reply_timeout_s=0.5) as link:
        pid = await asyncio.wait_for(link.send(b"x"), 3)
        assert [p.id for p in device.device.packets] == [pid]  # written once: no needless resend
        assert link.metrics.packets_unconfirmed == 1
        assert device.connections == 1


async def test_text_messages_are_spaced_but_do_not_hold_up_other_ports(device: FakeTcpDevice) -> None:
    async with ready_link(device.url, text_interval_s=0.4) as link:
        t1 = asyncio.create_task(link.send_text("received #1", to=OTHER_NODE))
        t2 = asyncio.create_task(link.send_text("received #2", to=OTHER_NODE))
        await asyncio.sleep(0.05)
        data = asyncio.create_task(link.send(b"envelope"))
        await asyncio.gather(t1, t2, data)
        ports = [p.decoded.portnum for p in device.device.packets]
        assert ports == [1, 256, 1]
        texts = [
            t for p, t in zip(device.device.packets, device.device.arrivals, strict=True) if p.decoded.portnum == 1
        ]
        assert texts[1] - texts[0] >= 0.3  # written 0.4 s apart; arrival jitter allowed
        assert device.device.packets[0].want_ack


async def test_garbage_from_the_radio_is_counted_and_survived(device: FakeTcpDevice) -> None:
    async with ready_link(device.url) as link:
        noise = bytes(random.Random(3).randbytes(3000)) + b"\x94\xc3\xff\xff" + b"\x94\xc3\x00\x03\xff\xff\xff"
        await device.push(noise + b"\n" + packet_frame(b"still here"))
        event = await next_of(link, ReceivedPacket)
        assert event.payload == b"still here"
        assert link.state is LinkState.READY
        assert link.metrics.oversize_frames >= 1


async def test_close_fails_unfinished_sends() -> None:
    dev = FakeTcpDevice(FakeDevice(answer_config=False))  # never READY
    await dev.start()
    try:
        async with RadioLink(dev.url, **fast()) as link:
            send = asyncio.create_task(link.send(b"x"))
            await until(lambda: dev.device.handshakes == 1)
        with pytest.raises(RadioError, match="closed"):
            await send
        with pytest.raises(RadioError):
            await link.send(b"y")
    finally:
        await dev.stop()
    await assert_no_tasks_left()


async def test_cancelled_send_is_withdrawn(device: FakeTcpDevice) -> None:
    device.device.capacity = 1
    async with ready_link(device.url) as link:
        first = asyncio.create_task(link.send(b"first"))
        await until(lambda: len(device.device.packets) == 1)
        second = asyncio.create_task(link.send(b"second"))
        await asyncio.sleep(0.05)
        second.cancel()
        await device.push(device.device.transmit())
        await first
        await asyncio.sleep(0.2)
        assert [p.decoded.payload for p in device.device.packets] == [b"first"]


async def test_unreachable_device_backs_off_and_keeps_trying() -> None:
    link = RadioLink("tcp://127.0.0.1:1", **fast(backoff=Backoff(initial_s=0.01, max_s=0.05, rng=random.Random(1))))
    async with link:
        await until(lambda: link.metrics.connect_failures >= 3)
        assert link.state in (LinkState.BACKOFF, LinkState.CONNECTING)
    await assert_no_tasks_left()


async def test_full_event_queue_drops_oldest(device: FakeTcpDevice) -> None:
    async with ready_link(device.url, event_queue_size=4) as link:
        await device.push(b"".join(packet_frame(bytes([i]), packet_id=i + 1) for i in range(10)))
        await until(lambda: link.metrics.packets_received == 10)
        events: list[RadioEvent] = [await link.next_event() for _ in range(4)]
        assert [e.payload for e in events if isinstance(e, ReceivedPacket)] == [bytes([i]) for i in range(6, 10)]
        assert link.metrics.events_dropped >= 6


def test_bad_url_fails_at_construction() -> None:
    with pytest.raises(RadioError):
        RadioLink("udp://radio")
    assert parse_device_url("tcp://radio").port == 4403
