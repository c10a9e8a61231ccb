"""The sans-I/O session: handshake, node DB, packets, routing results, queue accounting, reboots."""

from __future__ import annotations

import random
from typing import Any

import pytest
from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshd.errors import EncodeError, TooLargeError
from meshd.radio.api import BROADCAST, ReceivedPacket, RoutingResult
from meshd.radio.framing import WAKE_BYTES, Frame, FrameDecoder, encode_frame
from meshd.radio.session import (
    ConfigComplete,
    DeviceLog,
    DeviceRebooted,
    QueueReply,
    Session,
    SessionState,
)
from tests.radio_fake import MY_NODE, OTHER_KEY, OTHER_NODE, config_sequence, from_radio, packet_frame, routing_frame


def to_radio(data: bytes) -> list[mesh_pb2.ToRadio]:
    out = []
    for item in FrameDecoder().feed(data):
        assert isinstance(item, Frame)
        out.append(mesh_pb2.ToRadio.FromString(item.payload))
    return out


def ready_session(**kwargs) -> Session:
    session = Session(rng=random.Random(1), **kwargs)
    session.start()
    events = session.receive(config_sequence(session.nonce))
    assert events == [ConfigComplete(MY_NODE, 3)]
    return session


def status(packet_id: int, free: int, res: int = 0) -> bytes:
    return from_radio(queueStatus=mesh_pb2.QueueStatus(res=res, free=free, maxlen=16, mesh_packet_id=packet_id))


def test_start_sends_wake_bytes_and_want_config() -> None:
    session = Session(rng=random.Random(7))
    data = session.start()
    assert data.startswith(WAKE_BYTES)
    (msg,) = to_radio(data[len(WAKE_BYTES) :])
    assert msg.want_config_id == session.nonce
    assert session.nonce not in (0, 69420, 69421)
    assert session.state is SessionState.CONFIGURING


def test_handshake_collects_config_and_node_db() -> None:
    session = ready_session()
    assert session.state is SessionState.READY
    assert session.my_node == MY_NODE
    assert session.metadata is not None
    assert session.metadata.firmware_version == "2.7.15.fake"
    assert sorted(session.channels) == list(range(8))
    assert session.config.lora.hop_limit == 3
    assert session.module_config.HasField("mqtt")
    assert session.nodes[MY_NODE].long_name == "Hub 412"
    assert session.nodes[OTHER_NODE].public_key == OTHER_KEY
    assert session.nodes[OTHER_NODE].user_id == f"!{OTHER_NODE:08x}"


def test_handshake_fed_one_byte_at_a_time() -> None:
    session = Session(rng=random.Random(2))
    session.start()
    events = []
    for byte in config_sequence(session.nonce):
        events += session.receive(bytes([byte]))
    assert events == [ConfigComplete(MY_NODE, 3)]


def test_config_complete_with_another_nonce_is_ignored() -> None:
    session = Session(rng=random.Random(3))
    session.start()
    assert session.receive(from_radio(config_complete_id=session.nonce ^ 1)) == []
    assert session.state is SessionState.CONFIGURING
    assert session.room == 0  # nothing may be written before READY


def test_private_port_packet_is_received_with_radio_metadata() -> None:
    session = ready_session()
    frame = packet_frame(
        b"envelope",
        channel=1,
        hop_start=3,
        hop_limit=1,
        rx_snr=-7.25,
        rx_rssi=-110,
        pki_encrypted=True,
        public_key=OTHER_KEY,
        want_ack=True,
    )
    (event,) = session.receive(frame)
    assert event == ReceivedPacket(
        from_node=OTHER_NODE,
        to_node=MY_NODE,
        packet_id=0x5555,
        portnum=256,
        payload=b"envelope",
        channel=1,
        hop_start=3,
        hop_limit=1,
        rx_snr=-7.25,
        rx_rssi=-110,
        pki_encrypted=True,
        public_key=OTHER_KEY,
        want_ack=True,
    )
    assert event.hops_away == 2


def test_text_messages_and_configured_ports_only() -> None:
    session = ready_session(portnums=(256, 300))
    text = session.receive(packet_frame("필요 물4".encode(), portnum=portnums_pb2.PortNum.TEXT_MESSAGE_APP))
    assert isinstance(text[0], ReceivedPacket)
    assert text[0].payload.decode() == "필요 물4"
    assert session.receive(packet_frame(b"x", portnum=300))[0].portnum == 300  # type: ignore[union-attr]
    assert session.receive(packet_frame(b"x", portnum=257)) == []  # ATAK forwarder: not ours
    assert session.receive(packet_frame(b"x", portnum=portnums_pb2.PortNum.POSITION_APP)) == []
    assert session.stats.packets_ignored == 2


def test_encrypted_packet_the_radio_could_not_decode_is_skipped() -> None:
    session = ready_session()
    pkt = mesh_pb2.MeshPacket(to=MY_NODE, id=9, encrypted=b"\x01\x02\x03")
    assert session.receive(from_radio(packet=pkt)) == []
    assert session.stats.packets_undecodable == 1


def test_nodeinfo_packet_updates_node_db() -> None:
    session = ready_session()
    user = mesh_pb2.User(id="!00000777", long_name="Field 7", short_name="F7", public_key=b"k" * 32)
    frame = packet_frame(user.SerializeToString(), portnum=portnums_pb2.PortNum.NODEINFO_APP, sender=0x777)
    assert session.receive(frame) == []
    assert session.nodes[0x777].public_key == b"k" * 32
    assert session.nodes[0x777].long_name == "Field 7"


@pytest.mark.parametrize("error", ["DUTY_CYCLE_LIMIT", "MAX_RETRANSMIT", "NONE", "NO_RESPONSE"])
def test_routing_result_for_our_packet(error: str) -> None:
    session = ready_session()
    packet = session.encode_packet(b"report", to=OTHER_NODE, want_ack=True)
    session.packet_written(packet)
    (event,) = session.receive(routing_frame(packet.packet_id, error))
    assert event == RoutingResult(packet.packet_id, error, OTHER_NODE)
    assert event.ok is (error == "NONE")


def test_routing_result_for_someone_elses_packet_is_ignored() -> None:
    session = ready_session()
    assert session.receive(routing_frame(0x424242, "MAX_RETRANSMIT")) == []


def test_unknown_routing_error_number_gets_a_name() -> None:
    session = ready_session()
    packet = session.encode_packet(b"x")
    session.packet_written(packet)
    routing = mesh_pb2.Routing()
    routing.error_reason = 77
    frame = packet_frame(routing.SerializeToString(), portnum=5, request_id=packet.packet_id)
    (event,) = session.receive(frame)
    assert isinstance(event, RoutingResult)
    assert event.error == "UNKNOWN_77"


def test_encode_packet_fields() -> None:
    session = ready_session()
    packet = session.encode_packet(
        b"p" * 233, to=OTHER_NODE, portnum=300, hop_limit=5, want_ack=True, priority=110, pki=True, channel=2
    )
    (msg,) = to_radio(packet.frame)
    pkt = msg.packet
    assert (pkt.to, pkt.id, pkt.channel, pkt.hop_limit) == (OTHER_NODE, packet.packet_id, 2, 5)
    assert pkt.want_ack
    assert pkt.pki_encrypted
    assert pkt.priority == mesh_pb2.MeshPacket.Priority.ALERT
    assert (pkt.decoded.portnum, pkt.decoded.payload) == (300, b"p" * 233)
    assert packet.packet_id != 0


def test_default_hop_limit_follows_the_radio_config() -> None:
    session = Session(rng=random.Random(4))
    assert to_radio(session.encode_packet(b"x").frame)[0].packet.hop_limit == 3
    session.start()
    session.receive(config_sequence(session.nonce, hop_limit=5))
    assert to_radio(session.encode_packet(b"x").frame)[0].packet.hop_limit == 5


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"payload": b"x" * 234}, TooLargeError),
        ({"hop_limit": 8}, EncodeError),
        ({"hop_limit": -1}, EncodeError),
        ({"channel": 8}, EncodeError),
        ({"portnum": 0}, EncodeError),
        ({"portnum": 512}, EncodeError),
        ({"to": 0}, EncodeError),
        ({"pki": True}, EncodeError),  # broadcast
        ({"priority": 128}, EncodeError),
    ],
)
def test_encode_packet_rejects(kwargs: dict[str, Any], error: type[Exception]) -> None:
    session = ready_session()
    payload = kwargs.pop("payload", b"x")
    with pytest.raises(error):
        session.encode_packet(payload, **kwargs)


def test_packet_ids_are_random_non_zero_and_distinct() -> None:
    session = Session()
    ids = {session.encode_packet(b"x", to=BROADCAST).packet_id for _ in range(2000)}
    assert len(ids) == 2000
    assert 0 not in ids


def test_heartbeat_is_a_plain_keepalive() -> None:
    (msg,) = to_radio(Session().heartbeat())
    assert msg.WhichOneof("payload_variant") == "heartbeat"
    assert msg.heartbeat.nonce == 0  # nonce 1 would make the radio broadcast its NodeInfo


def test_queue_room_follows_numbered_and_unnumbered_replies() -> None:
    session = ready_session()
    assert session.room == 1  # before any QueueStatus: one packet, to learn more
    session.receive(status(0, free=2))  # heartbeat reply
    assert session.room == 2
    a, b = (session.encode_packet(b"a"), session.encode_packet(b"b"))
    session.packet_written(a)
    session.packet_written(b)
    assert session.room == 0
    (reply,) = session.receive(status(a.packet_id, free=1))
    assert reply == QueueReply(a.packet_id, True, "NONE", 0)
    assert session.room == 0  # free 1 was before b reached the radio
    session.receive(status(b.packet_id, free=0))
    assert session.room == 0
    session.receive(status(0, free=1))  # the radio announces room again
    assert session.room == 1


def test_lost_reply_is_resolved_by_a_later_one() -> None:
    session = ready_session()
    session.receive(status(0, free=10))
    a, b = session.encode_packet(b"a"), session.encode_packet(b"b")
    session.packet_written(a)
    session.packet_written(b)
    replies = session.receive(status(b.packet_id, free=8))  # a's reply was dropped by the firmware
    assert replies == [
        QueueReply(a.packet_id, True, "NONE", 0, confirmed=False),
        QueueReply(b.packet_id, True, "NONE", 0),
    ]
    assert session.room == 8


@pytest.mark.parametrize(
    ("res", "accepted", "reason"),
    [(0, True, "NONE"), (35, True, "NONE"), (9, False, "DUTY_CYCLE_LIMIT"), (32, False, "ERRNO_UNKNOWN"),
     (34, False, "TX_DISABLED"), (6, False, "NO_CHANNEL"), (250, False, "ERRNO_250")],
)  # fmt: skip
def test_queue_status_result_names(res: int, accepted: bool, reason: str) -> None:
    session = ready_session()
    packet = session.encode_packet(b"a")
    session.packet_written(packet)
    (reply,) = session.receive(status(packet.packet_id, free=5, res=res))
    assert isinstance(reply, QueueReply)
    assert (reply.accepted, reply.reason) == (accepted, reason)


def test_rebooted_reruns_the_handshake() -> None:
    session = ready_session()
    first_nonce = session.nonce
    packet = session.encode_packet(b"a")
    session.packet_written(packet)
    events = session.receive(from_radio(rebooted=True))
    assert events == [DeviceRebooted()]
    assert session.state is SessionState.CONFIGURING
    assert session.window.in_flight == ()
    data = session.data_to_send()
    assert data.startswith(WAKE_BYTES)
    (msg,) = to_radio(data[len(WAKE_BYTES) :])
    assert msg.want_config_id == session.nonce != first_nonce
    assert session.data_to_send() == b""
    assert session.receive(config_sequence(session.nonce)) == [ConfigComplete(MY_NODE, 3)]


def test_malformed_frames_are_counted_not_raised() -> None:
    session = ready_session()
    events = session.receive(encode_frame(b"\xff\xff\xff\xff") + packet_frame(b"ok"))
    assert [type(e) for e in events] == [ReceivedPacket]
    assert session.stats.bad_frames == 1


def test_truncated_frame_does_not_take_the_next_packets_with_it() -> None:
    session = ready_session()
    cut = packet_frame(b"lost" * 20)[:12]  # the device reset mid-frame; its header claims ~90 bytes
    frames = packet_frame(b"one", packet_id=1) + packet_frame(b"two", packet_id=2)
    later = b"INFO | more chatter from the device\n" * 3 + packet_frame(b"three", packet_id=3)
    events = session.receive(cut + frames) + session.receive(later)
    received = [e.payload for e in events if isinstance(e, ReceivedPacket)]
    assert received == [b"one", b"two", b"three"]
    assert session.stats.bad_frames >= 1


def test_quiet_device_mid_frame_is_given_up_on() -> None:
    session = ready_session()
    cut = packet_frame(b"lost" * 20)[:12]
    assert session.receive(cut + packet_frame(b"one", packet_id=1)) == []  # still waiting for ~90 bytes
    events = session.expire_partial()  # the link calls this after a quiet spell
    assert [e.payload for e in events if isinstance(e, ReceivedPacket)] == [b"one"]
    assert session.expire_partial() == []


def test_device_logs_surface_as_log_events() -> None:
    session = ready_session()
    record = mesh_pb2.LogRecord(message="Duty cycle limit\n", level=mesh_pb2.LogRecord.Level.WARNING, source="Router")
    note = mesh_pb2.ClientNotification(message="You can send again in 3 mins", level=mesh_pb2.LogRecord.Level.WARNING)
    events = session.receive(
        b"INFO | plain text\n" + from_radio(log_record=record) + from_radio(clientNotification=note)
    )
    assert events == [
        DeviceLog("INFO | plain text"),
        DeviceLog("Duty cycle limit", "WARNING", "log_record"),
        DeviceLog("You can send again in 3 mins", "WARNING", "notification"),
    ]
