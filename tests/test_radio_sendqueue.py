"""The send queue's delivery contract, without any I/O: ordering, spacing, replies, failures."""

from __future__ import annotations

import functools
import random

import pytest
from meshtastic.protobuf import mesh_pb2

from meshd.errors import RadioError, RadioRefusedError
from meshd.radio.framing import Frame, FrameDecoder
from meshd.radio.sendqueue import QUEUE_FULL_RETRIES, SendQueue
from meshd.radio.session import QueueReply, Session
from tests.radio_fake import config_sequence, from_radio


def ready_session(free: int = 16) -> Session:
    session = Session(rng=random.Random(1))
    session.start()
    session.receive(config_sequence(session.nonce))
    session.receive(from_radio(queueStatus=mesh_pb2.QueueStatus(free=free, maxlen=16)))
    return session


class Wire:
    def __init__(self) -> None:
        self.frames: list[mesh_pb2.MeshPacket] = []
        self.fail = False

    def write(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionResetError("gone")
        for item in FrameDecoder().feed(data):
            assert isinstance(item, Frame)
            self.frames.append(mesh_pb2.ToRadio.FromString(item.payload).packet)


def add(queue: SendQueue, session: Session, payload: bytes, priority: int = 64, portnum: int = 256):
    encode = functools.partial(session.encode_packet, payload, portnum=portnum, priority=priority)
    return queue.add(encode, priority)


def ok(packet_id: int) -> QueueReply:
    return QueueReply(packet_id, True, "NONE", 0)


async def test_priority_then_fifo() -> None:
    session = ready_session()
    queue, wire = SendQueue(session), Wire()
    for payload, priority in [(b"status", 10), (b"needs-1", 64), (b"alert", 110), (b"needs-2", 64)]:
        add(queue, session, payload, priority)
    queue.write_ready(0.0, wire.write)
    assert [p.decoded.payload for p in wire.frames] == [b"alert", b"needs-1", b"needs-2", b"status"]


async def test_room_limits_what_is_written() -> None:
    session = ready_session(free=2)
    queue, wire = SendQueue(session), Wire()
    futures = [add(queue, session, bytes([i])) for i in range(5)]
    queue.write_ready(0.0, wire.write)
    assert len(wire.frames) == 2
    queue.on_reply(ok(wire.frames[0].id))
    assert futures[0].result() == wire.frames[0].id


async def test_text_spacing_holds_texts_but_not_other_ports() -> None:
    session = ready_session()
    queue, wire = SendQueue(session, text_interval_s=2.0), Wire()
    add(queue, session, b"t1", portnum=1)
    add(queue, session, b"t2", portnum=1)
    add(queue, session, b"data")
    wait = queue.write_ready(10.0, wire.write)
    assert [p.decoded.payload for p in wire.frames] == [b"t1", b"data"]
    assert wait == pytest.approx(2.0)
    assert queue.write_ready(11.0, wire.write) == pytest.approx(1.0)
    queue.write_ready(12.0, wire.write)
    assert [p.decoded.payload for p in wire.frames] == [b"t1", b"data", b"t2"]


async def test_a_failing_write_loses_nothing() -> None:
    session = ready_session()
    queue, wire = SendQueue(session, text_interval_s=2.0), Wire()
    add(queue, session, b"text", portnum=1)
    queue.write_ready(0.0, wire.write)  # the text goes; the spacing now holds texts
    queue.on_reply(ok(wire.frames[0].id))
    held = add(queue, session, b"held text", portnum=1)
    important = add(queue, session, b"important")
    wire.fail = True
    with pytest.raises(ConnectionResetError):
        queue.write_ready(0.5, wire.write)  # the connection dies while writing "important"
    queue.requeue_in_flight()  # what the link does when the connection ends
    session.start()
    session.receive(config_sequence(session.nonce))
    session.receive(from_radio(queueStatus=mesh_pb2.QueueStatus(free=16, maxlen=16)))
    wire.fail = False
    queue.write_ready(5.0, wire.write)
    assert [p.decoded.payload for p in wire.frames] == [b"text", b"held text", b"important"]
    assert not held.done()
    assert not important.done()  # written again, waiting for the radio's reply
    assert queue.stats.resent == 1


async def test_cancelled_before_writing_is_skipped() -> None:
    session = ready_session()
    queue, wire = SendQueue(session), Wire()
    add(queue, session, b"withdrawn").cancel()
    add(queue, session, b"kept")
    queue.write_ready(0.0, wire.write)
    assert [p.decoded.payload for p in wire.frames] == [b"kept"]


async def test_refusal_fails_the_caller_with_the_reason() -> None:
    session = ready_session()
    queue, wire = SendQueue(session), Wire()
    future = add(queue, session, b"x")
    queue.write_ready(0.0, wire.write)
    queue.on_reply(QueueReply(wire.frames[0].id, False, "DUTY_CYCLE_LIMIT", 9))
    with pytest.raises(RadioRefusedError) as info:
        future.result()
    assert (info.value.reason, info.value.packet_id) == ("DUTY_CYCLE_LIMIT", wire.frames[0].id)
    assert queue.stats.refused == 1


async def test_queue_full_is_retried_a_few_times_under_new_ids() -> None:
    session = ready_session()
    queue, wire = SendQueue(session), Wire()
    future = add(queue, session, b"x")
    for _ in range(QUEUE_FULL_RETRIES + 1):
        queue.write_ready(0.0, wire.write)
        queue.on_reply(QueueReply(wire.frames[-1].id, False, "ERRNO_UNKNOWN", 32))
    assert len({p.id for p in wire.frames}) == QUEUE_FULL_RETRIES + 1
    with pytest.raises(RadioRefusedError):
        future.result()


async def test_overdue_reply_needs_a_sign_of_life_first() -> None:
    session = ready_session()
    queue, wire = SendQueue(session), Wire()
    future = add(queue, session, b"x")
    queue.write_ready(100.0, wire.write)
    assert not queue.settle_silent(103.0, 10.0, last_rx=100.0)  # young: nothing to do
    assert queue.settle_silent(106.0, 10.0, last_rx=100.0)  # half the timeout: probe the radio
    assert queue.settle_silent(111.0, 10.0, last_rx=100.0)  # overdue but the radio said nothing since
    assert not future.done()
    queue.settle_silent(111.0, 10.0, last_rx=106.5)  # it answered the probe, never this packet
    assert future.result() == wire.frames[0].id
    assert queue.stats.unconfirmed == 1
    assert session.window.in_flight == ()


async def test_fail_all_on_close() -> None:
    session = ready_session(free=1)
    queue, wire = SendQueue(session), Wire()
    written, waiting = add(queue, session, b"a"), add(queue, session, b"b")
    queue.write_ready(0.0, wire.write)
    queue.fail_all("closed")
    for future in (written, waiting):
        with pytest.raises(RadioError, match="closed"):
            future.result()
    assert not queue.waiting
