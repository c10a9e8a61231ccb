"""Sans-I/O Meshtastic stream-API session: bytes in, events out, bytes to write on request.

No sockets, no clocks, no asyncio: `RadioLink` owns the transport and the timers and drives this class.
That keeps every protocol decision testable with plain byte strings (and fuzzable).

Lifecycle, per connection: `start()` returns the wake bytes and a `want_config_id` frame with a fresh
random nonce; the device answers with my_info, its own node_info, metadata, channels, config sections,
module config sections, the other nodes, and `config_complete_id == nonce`, after which the session is
READY and live packets flow. `FromRadio.rebooted` means the device lost our session: the handshake is
re-run (its bytes are returned by `data_to_send()`) and a `DeviceRebooted` event tells the link to
re-send what the radio never confirmed.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from meshtastic.protobuf import channel_pb2, localonly_pb2, mesh_pb2, portnums_pb2

from meshd.errors import EncodeError, TooLargeError
from meshd.radio.airtime import DATA_PAYLOAD_LEN
from meshd.radio.api import BROADCAST, PRIVATE_PORT, ROUTING_PORT, TEXT_PORT, ReceivedPacket, RoutingResult
from meshd.radio.framing import WAKE_BYTES, Frame, FrameDecoder, encode_frame
from meshd.radio.txwindow import Resolution, TxWindow, res_name

log = logging.getLogger(__name__)

NODEINFO_PORT = portnums_pb2.PortNum.NODEINFO_APP
DEFAULT_HOP_LIMIT = 3
MAX_HOP_LIMIT = 7
MAX_CHANNEL_INDEX = 7
MAX_PORTNUM = 511
# want_config_id values the firmware treats specially (config only / nodes only): never use them.
_SPECIAL_NONCES = frozenset({69420, 69421})
_ROUTING_ERRORS: dict[int, str] = {v: k for k, v in mesh_pb2.Routing.Error.items()}
_LOG_LEVELS: dict[int, str] = {v: k for k, v in mesh_pb2.LogRecord.Level.items()}


class SessionState(enum.Enum):
    IDLE = "idle"  # no connection started
    CONFIGURING = "configuring"  # want_config sent, collecting the device's configuration
    READY = "ready"  # config_complete_id matched our nonce: packets flow


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """What the radio's node DB (and NODEINFO packets heard since) tell us about one node."""

    num: int
    user_id: str = ""
    long_name: str = ""
    short_name: str = ""
    public_key: bytes = b""
    role: int = 0
    hw_model: int = 0
    last_heard: int = 0


@dataclass(frozen=True, slots=True)
class ConfigComplete:
    my_node: int
    nodes: int


@dataclass(frozen=True, slots=True)
class DeviceRebooted:
    """The device restarted: queued packets it never confirmed must be written again after READY."""


@dataclass(frozen=True, slots=True)
class DeviceLog:
    text: str
    level: str = ""  # LogRecord level name when known
    source: str = "stream"  # "stream" (text between frames), "log_record", or "notification"


@dataclass(frozen=True, slots=True)
class QueueReply:
    """A QueueStatus reply resolved one packet we wrote (accepted into the radio queue, or refused)."""

    packet_id: int
    accepted: bool
    reason: str  # "NONE" when accepted; else the firmware's reason name
    res: int
    confirmed: bool = True


SessionEvent = ReceivedPacket | RoutingResult | ConfigComplete | DeviceRebooted | DeviceLog | QueueReply


@dataclass(frozen=True, slots=True)
class OutgoingPacket:
    """An encoded `ToRadio.packet` frame, ready to write."""

    packet_id: int
    portnum: int
    to: int
    frame: bytes


@dataclass(slots=True)
class SessionStats:
    frames_in: int = 0
    bad_frames: int = 0  # frames whose payload is not a FromRadio protobuf
    log_lines: int = 0
    packets_in: int = 0  # packets handed up (our ports and text)
    packets_ignored: int = 0  # other ports, or routing results for packets that are not ours
    packets_undecodable: int = 0  # still encrypted: the radio has no key for that channel
    routing_results: int = 0
    queue_status: int = 0
    handshakes: int = 0
    reboots: int = 0


def _name(table: Mapping[int, str], value: int) -> str:
    # proto3 enums are open: a newer firmware can send numbers this protobuf version has no name for
    return table.get(value, f"UNKNOWN_{value}")


class Session:
    """The protocol state of one radio across reconnects (node DB and sent-id memory persist)."""

    def __init__(
        self,
        *,
        portnums: Iterable[int] = (PRIVATE_PORT,),
        rng: random.Random | None = None,
        remember_sent: int = 4096,
    ) -> None:
        self._ports = frozenset(portnums)
        for port in self._ports:
            if not 1 <= port <= MAX_PORTNUM:
                raise EncodeError(f"portnum {port} outside 1..{MAX_PORTNUM}")
        # Packet ids are part of the AES-CTR nonce on the channel: reuse leaks plaintext, so the default
        # source is the OS CSPRNG; tests inject a seeded Random.
        self._rng = rng if rng is not None else random.SystemRandom()
        self._remember_sent = remember_sent
        self._sent: OrderedDict[int, None] = OrderedDict()
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._nonce = 0
        self.state = SessionState.IDLE
        self.window = TxWindow()
        self.stats = SessionStats()
        self.my_node: int | None = None
        self.my_info: mesh_pb2.MyNodeInfo | None = None
        self.metadata: mesh_pb2.DeviceMetadata | None = None
        self.config = localonly_pb2.LocalConfig()
        self.module_config = localonly_pb2.LocalModuleConfig()
        self._channels: dict[int, channel_pb2.Channel] = {}
        self._nodes: dict[int, NodeEntry] = {}

    # -- read-only views -----------------------------------------------------------------------------

    @property
    def nonce(self) -> int:
        return self._nonce

    @property
    def nodes(self) -> Mapping[int, NodeEntry]:
        return MappingProxyType(self._nodes)

    @property
    def channels(self) -> Mapping[int, channel_pb2.Channel]:
        return MappingProxyType(self._channels)

    @property
    def decoder(self) -> FrameDecoder:
        return self._decoder

    @property
    def default_hop_limit(self) -> int:
        """The radio's configured hop limit (what its own apps use), else Meshtastic's default 3."""
        configured = self.config.lora.hop_limit
        return configured if 0 < configured <= MAX_HOP_LIMIT else DEFAULT_HOP_LIMIT

    # -- bytes to write --------------------------------------------------------------------------------

    def start(self) -> bytes:
        """A new connection: fresh decoder and queue window, then wake bytes + want_config_id."""
        self._decoder = FrameDecoder()
        self._out.clear()
        self.window.reset()
        return WAKE_BYTES + self._want_config()

    def data_to_send(self) -> bytes:
        """Bytes the protocol itself needs written (a re-handshake after `rebooted`); empties the buffer."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def heartbeat(self) -> bytes:
        # nonce 0: a plain keepalive answered by a QueueStatus (nonce 1 would make the radio broadcast
        # its NodeInfo over the air).
        msg = mesh_pb2.ToRadio()
        msg.heartbeat.nonce = 0
        msg.heartbeat.SetInParent()
        return encode_frame(msg.SerializeToString())

    def disconnect(self) -> bytes:
        """Tell the radio we are leaving, so it stops queueing packets for us at once."""
        msg = mesh_pb2.ToRadio(disconnect=True)
        return encode_frame(msg.SerializeToString())

    def encode_packet(
        self,
        payload: bytes,
        *,
        to: int = BROADCAST,
        portnum: int = PRIVATE_PORT,
        hop_limit: int | None = None,
        want_ack: bool = False,
        priority: int = 0,
        pki: bool = False,
        channel: int = 0,
        packet_id: int | None = None,
    ) -> OutgoingPacket:
        """Build a ToRadio.packet frame; raises meshd errors for anything the radio would refuse."""
        if len(payload) > DATA_PAYLOAD_LEN:
            raise TooLargeError(f"payload of {len(payload)} bytes exceeds the {DATA_PAYLOAD_LEN}-byte Meshtastic limit")
        if not 1 <= portnum <= MAX_PORTNUM:
            raise EncodeError(f"portnum {portnum} outside 1..{MAX_PORTNUM}")
        if not 0 < to <= BROADCAST:
            raise EncodeError(f"destination {to} is not a node number")
        if pki and to == BROADCAST:
            raise EncodeError("a PKI direct message needs one destination node, not broadcast")
        hops = self.default_hop_limit if hop_limit is None else hop_limit
        if not 0 <= hops <= MAX_HOP_LIMIT:
            raise EncodeError(f"hop limit {hops} outside 0..{MAX_HOP_LIMIT}")
        if not 0 <= channel <= MAX_CHANNEL_INDEX:
            raise EncodeError(f"channel index {channel} outside 0..{MAX_CHANNEL_INDEX}")
        if not 0 <= priority <= 127:
            raise EncodeError(f"priority {priority} outside 0..127")
        pid = self.new_packet_id() if packet_id is None else packet_id
        msg = mesh_pb2.ToRadio()
        pkt = msg.packet
        pkt.to = to
        pkt.id = pid
        pkt.channel = channel
        pkt.hop_limit = hops
        pkt.want_ack = want_ack
        pkt.priority = priority
        pkt.pki_encrypted = pki
        pkt.decoded.portnum = portnum
        pkt.decoded.payload = payload
        return OutgoingPacket(pid, portnum, to, encode_frame(msg.SerializeToString()))

    def new_packet_id(self) -> int:
        while True:
            pid = self._rng.getrandbits(32)
            if pid and pid not in self._sent:
                return pid

    def packet_written(self, packet: OutgoingPacket) -> None:
        """Record that `packet.frame` was handed to the transport (counts against queue room)."""
        self.window.written(packet.packet_id)
        self._sent.pop(packet.packet_id, None)
        self._sent[packet.packet_id] = None
        while len(self._sent) > self._remember_sent:
            self._sent.popitem(last=False)

    @property
    def room(self) -> int:
        """Packets that may be written now without exceeding the radio's queue."""
        return self.window.room if self.state is SessionState.READY else 0

    # -- bytes in ----------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[SessionEvent]:
        """Feed received bytes; returns the events they completed. Never raises on bad input."""
        self._decoder.push(data)
        return self._drain()

    def expire_partial(self) -> list[SessionEvent]:
        """The device went quiet in the middle of a frame: stop waiting for it and rescan (see framing)."""
        if not self._decoder.buffered or not self._decoder.abandon_partial():
            return []
        return self._drain()

    def _drain(self) -> list[SessionEvent]:
        events: list[SessionEvent] = []
        decoder = self._decoder
        while (item := decoder.pop()) is not None:
            if isinstance(item, Frame):
                self._on_frame(item.payload, events)
            else:
                self.stats.log_lines += 1
                events.append(DeviceLog(item.text))
        return events

    def _on_frame(self, payload: bytes, events: list[SessionEvent]) -> None:
        self.stats.frames_in += 1
        msg = mesh_pb2.FromRadio()
        try:
            msg.ParseFromString(payload)
        except ProtobufDecodeError:
            self.stats.bad_frames += 1
            log.debug("malformed FromRadio frame of %d bytes; rescanning it for frame starts", len(payload))
            # Most likely a frame cut short that swallowed the start of the next one: look again.
            self._decoder.unread(payload)
            return
        which = msg.WhichOneof("payload_variant")
        if which == "packet":
            event = self._on_packet(msg.packet)
            if event is not None:
                events.append(event)
        elif which == "queueStatus":
            self.stats.queue_status += 1
            qs = msg.queueStatus
            for r in self.window.on_status(res=qs.res, free=qs.free, maxlen=qs.maxlen, packet_id=qs.mesh_packet_id):
                events.append(self._queue_reply(r))
        elif which == "config_complete_id":
            self._on_config_complete(msg.config_complete_id, events)
        elif which == "my_info":
            self.my_info = msg.my_info
            self.my_node = msg.my_info.my_node_num or None
        elif which == "node_info":
            self._on_node_info(msg.node_info)
        elif which == "metadata":
            self.metadata = msg.metadata
        elif which == "channel":
            self._channels[msg.channel.index] = msg.channel
        elif which == "config":
            self._copy_section(msg.config, self.config)
        elif which == "moduleConfig":
            self._copy_section(msg.moduleConfig, self.module_config)
        elif which == "rebooted":
            self._on_rebooted(events)
        elif which == "log_record":
            rec = msg.log_record
            events.append(DeviceLog(rec.message.rstrip("\n"), _name(_LOG_LEVELS, rec.level), "log_record"))
        elif which == "clientNotification":
            note = msg.clientNotification
            events.append(DeviceLog(note.message, _name(_LOG_LEVELS, note.level), "notification"))
        # deviceuiConfig, fileInfo, xmodem, MQTT proxy, lockdown status: nothing meshd uses

    def _want_config(self) -> bytes:
        nonce = 0
        while nonce == 0 or nonce in _SPECIAL_NONCES or nonce == self._nonce:
            nonce = self._rng.getrandbits(32)
        self._nonce = nonce
        self.state = SessionState.CONFIGURING
        self._channels.clear()
        self.stats.handshakes += 1
        return encode_frame(mesh_pb2.ToRadio(want_config_id=nonce).SerializeToString())

    def _on_config_complete(self, nonce: int, events: list[SessionEvent]) -> None:
        if self.state is not SessionState.CONFIGURING or nonce != self._nonce:
            log.debug("ignoring config_complete_id %d (ours is %d, state %s)", nonce, self._nonce, self.state)
            return
        self.state = SessionState.READY
        events.append(ConfigComplete(self.my_node or 0, len(self._nodes)))

    def _on_rebooted(self, events: list[SessionEvent]) -> None:
        self.stats.reboots += 1
        # The radio's transmit queue is gone with it; so is our session on it.
        self.window.reset()
        self._out += WAKE_BYTES + self._want_config()
        events.append(DeviceRebooted())

    @staticmethod
    def _copy_section(src: Message, dst: Message) -> None:
        which = src.WhichOneof("payload_variant")
        # Sections the local config has no slot for (sessionkey, device_ui) are not kept.
        if which and which in dst.DESCRIPTOR.fields_by_name:
            getattr(dst, which).CopyFrom(getattr(src, which))

    def _on_node_info(self, info: mesh_pb2.NodeInfo) -> None:
        if info.num in (0, BROADCAST):
            return
        user = info.user
        self._nodes[info.num] = NodeEntry(
            num=info.num,
            user_id=user.id,
            long_name=user.long_name,
            short_name=user.short_name,
            public_key=bytes(user.public_key),
            role=int(user.role),
            hw_model=int(user.hw_model),
            last_heard=info.last_heard,
        )

    def _on_nodeinfo_packet(self, sender: int, payload: bytes) -> None:
        user = mesh_pb2.User()
        try:
            user.ParseFromString(payload)
        except ProtobufDecodeError:
            self.stats.bad_frames += 1
            return
        old = self._nodes.get(sender, NodeEntry(sender))
        self._nodes[sender] = NodeEntry(
            num=sender,
            user_id=user.id or old.user_id,
            long_name=user.long_name or old.long_name,
            short_name=user.short_name or old.short_name,
            public_key=bytes(user.public_key) or old.public_key,
            role=int(user.role),
            hw_model=int(user.hw_model) or old.hw_model,
            last_heard=old.last_heard,
        )

    def _on_packet(self, pkt: mesh_pb2.MeshPacket) -> ReceivedPacket | RoutingResult | None:
        if pkt.WhichOneof("payload_variant") != "decoded":
            self.stats.packets_undecodable += 1
            return None
        data = pkt.decoded
        port = int(data.portnum)
        sender: int = getattr(pkt, "from")  # `from` is a Python keyword
        if port == ROUTING_PORT:
            return self._on_routing(sender, data)
        if port == NODEINFO_PORT and sender not in (0, BROADCAST):
            self._on_nodeinfo_packet(sender, data.payload)
        if port not in self._ports and port != TEXT_PORT:
            self.stats.packets_ignored += 1
            return None
        self.stats.packets_in += 1
        return ReceivedPacket(
            from_node=sender,
            to_node=pkt.to,
            packet_id=pkt.id,
            portnum=port,
            payload=bytes(data.payload),
            channel=pkt.channel,
            hop_start=pkt.hop_start,
            hop_limit=pkt.hop_limit,
            rx_snr=pkt.rx_snr,
            rx_rssi=pkt.rx_rssi,
            pki_encrypted=pkt.pki_encrypted,
            public_key=bytes(pkt.public_key),
            want_ack=pkt.want_ack,
        )

    def _on_routing(self, sender: int, data: mesh_pb2.Data) -> RoutingResult | None:
        if not data.request_id or data.request_id not in self._sent:
            self.stats.packets_ignored += 1
            return None
        routing = mesh_pb2.Routing()
        try:
            routing.ParseFromString(data.payload)
        except ProtobufDecodeError:
            self.stats.bad_frames += 1
            return None
        self.stats.routing_results += 1
        return RoutingResult(data.request_id, _name(_ROUTING_ERRORS, int(routing.error_reason)), sender)

    def _queue_reply(self, r: Resolution) -> QueueReply:
        return QueueReply(r.packet_id, r.accepted, res_name(r.res, _ROUTING_ERRORS), r.res, r.confirmed)
