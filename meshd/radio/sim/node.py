"""A virtual Meshtastic radio: the device side of the stream API plus its LoRa transmit path.

Host-facing behaviour follows the firmware's PhoneAPI: a `ToRadio.packet` is answered with a
`queueStatus` (res 0 = queued; 32 = transmit queue full, packet dropped), refusals come back as a Routing
NAK packet (TOO_LARGE, NO_CHANNEL, DUTY_CYCLE_LIMIT, PKI_*), heartbeats get a `queueStatus`, packets for
the host wait in a 32-entry queue while no host has completed the handshake.

The mesh behaviour is in `router`, the transmit queue, contention and duty cycle in `transmit`.
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from meshtastic.protobuf import admin_pb2, mesh_pb2, portnums_pb2

from meshd.errors import RadioError
from meshd.radio.airtime import DATA_PAYLOAD_LEN, MAX_PHY_PAYLOAD, MESH_HEADER_LEN, PKI_OVERHEAD, ModemPreset
from meshd.radio.api import BROADCAST
from meshd.radio.sim.channel import AirFrame, LoraChannel, NetworkStats, NodeStats
from meshd.radio.sim.clock import SimClock, SimTimer
from meshd.radio.sim.device import (
    FIRMWARE_VERSION,
    DeviceState,
    handle_admin,
    handshake_messages,
    make_device_state,
)
from meshd.radio.sim.propagation import LinkQuality
from meshd.radio.sim.router import MeshRouter, pki_decrypt, pki_encrypt
from meshd.radio.sim.topology import NodeSpec
from meshd.radio.sim.transmit import MAX_TX_QUEUE, Transmitter

logger = logging.getLogger(__name__)

MAX_RX_TOPHONE = 32
ERRNO_UNKNOWN = 32  # firmware ErrorCode for "transmit queue full"
MAX_HOP_LIMIT = 7
DELIVERED_LOG = 10_000

RoutingError = mesh_pb2.Routing.Error
Priority = mesh_pb2.MeshPacket.Priority
TRANSPORT_LORA = mesh_pb2.MeshPacket.TransportMechanism.TRANSPORT_LORA


class HostSession(Protocol):
    """A host connection as the radio sees it (implemented in `server`)."""

    configured: bool
    kind: str

    def send(self, message: mesh_pb2.FromRadio) -> None: ...

    def send_text(self, text: str) -> None: ...

    def end(self) -> None: ...


@dataclass(slots=True)
class SimContext:
    """What every radio of one network shares."""

    clock: SimClock
    channel: LoraChannel
    modem: ModemPreset
    preset_name: str
    region: str
    duty_cycle_percent: float
    hop_limit: int
    channel_name: str
    stats: NetworkStats
    seed: int
    public_keys: dict[int, bytes] = field(default_factory=dict)
    specs: dict[int, NodeSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveredPacket:
    time: float
    packet: mesh_pb2.MeshPacket

    @property
    def is_routing(self) -> bool:
        return bool(self.packet.decoded.portnum == portnums_pb2.PortNum.ROUTING_APP)

    @property
    def routing_error(self) -> str | None:
        if not self.is_routing:
            return None
        routing = mesh_pb2.Routing.FromString(self.packet.decoded.payload)
        return str(RoutingError.Name(routing.error_reason))


class VirtualRadio:
    """One simulated radio. Create through `SimNetwork`; endpoints (pty, TCP) live in `server`."""

    def __init__(self, ctx: SimContext, spec: NodeSpec, private_key: bytes) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.channel = ctx.channel
        self.device: DeviceState = make_device_state(
            spec,
            private_key=private_key,
            region=ctx.region,
            preset=ctx.preset_name,
            hop_limit=ctx.hop_limit,
            channel_name=ctx.channel_name,
        )
        self.stats: NodeStats = ctx.stats.node(spec.num)
        self.router = MeshRouter(self)
        self.tx = Transmitter(self)
        self.sessions: list[HostSession] = []
        self.delivered: deque[DeliveredPacket] = deque(maxlen=DELIVERED_LOG)
        self.host_observers: list[Callable[[DeliveredPacket], None]] = []
        self.powered = False
        self.tcp_port: int | None = None
        self.pty_path: str | None = None
        self.pty_device: str | None = None
        self._last_assigned_id = 0
        self._boot = 0
        self._init_runtime()

    # -------------------------------------------------------------- identity

    @property
    def spec(self) -> NodeSpec:
        return self.device.spec

    @property
    def num(self) -> int:
        return self.device.spec.num

    node_num = num

    @property
    def node_id(self) -> str:
        return self.device.spec.node_id

    @property
    def name(self) -> str:
        return self.device.spec.long_name

    @property
    def role(self) -> str:
        return self.device.spec.role

    @property
    def public_key(self) -> bytes:
        return self.device.public_key

    @property
    def hop_limit(self) -> int:
        return int(self.device.config.lora.hop_limit)

    def __repr__(self) -> str:
        return f"VirtualRadio({self.node_id} {self.spec.id!r})"

    # -------------------------------------------------------------- lifecycle

    def _init_runtime(self) -> None:
        self.rng = random.Random(f"radio:{self.ctx.seed}:{self.num}:{self._boot}")
        self._packet_counter = self.rng.randrange(0x7FFFFFFF)
        self._session_passkey = self.rng.randbytes(8)
        self._from_radio_id = 0
        self.tx.reset()
        self._to_host: deque[mesh_pb2.FromRadio] = deque(maxlen=MAX_RX_TOPHONE)
        self._timers: list[SimTimer] = []
        self.router.reset()

    def _teardown_runtime(self) -> None:
        self.tx.reset()
        for timer in self._timers:
            timer.cancel()
        self.router.reset()
        self._boot += 1
        self.device.reboot_count += 1

    def power_on(self) -> None:
        if self.powered:
            return
        self._init_runtime()
        self.channel.attach(self.num, self)
        self.powered = True

    def power_off(self) -> None:
        if not self.powered:
            return
        self.channel.detach(self.num)
        self._teardown_runtime()
        self.powered = False
        for session in list(self.sessions):
            session.configured = False

    def reboot(self) -> None:
        """Restart the firmware: queues, history and duty buckets are lost; hosts get `rebooted`."""
        self.power_off()
        self.power_on()
        for session in list(self.sessions):
            session.send_text(self.boot_banner())
            session.send(mesh_pb2.FromRadio(rebooted=True))

    def boot_banner(self) -> str:
        return (
            f"INFO  | meshd simulated radio {self.node_id} ({self.name}) firmware {FIRMWARE_VERSION} "
            f"region {self.ctx.region} preset {self.ctx.preset_name} boot {self.device.reboot_count}"
        )

    # -------------------------------------------------------------- host sessions

    def attach_session(self, session: HostSession) -> None:
        self.sessions.append(session)

    def detach_session(self, session: HostSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)

    def handle_to_radio(self, session: HostSession | None, message: mesh_pb2.ToRadio) -> None:
        """One ToRadio message from a host."""
        self.clock.catch_up()
        if not self.powered:
            return
        which = message.WhichOneof("payload_variant")
        if which == "packet":
            res = self._from_host(message.packet)
            if session is not None:
                self._send_queue_status(session, res, self._last_assigned_id)
        elif which == "want_config_id":
            if session is not None:
                self._handshake(session, message.want_config_id)
        elif which == "heartbeat":
            if session is not None:
                self._send_queue_status(session, 0, 0)
        elif which == "disconnect" and session is not None:
            session.configured = False
            session.end()
        # xmodemPacket and mqttClientProxyMessage are accepted and ignored.

    def _send_queue_status(self, session: HostSession, res: int, packet_id: int) -> None:
        status = mesh_pb2.QueueStatus(
            res=res, free=MAX_TX_QUEUE - len(self.tx.queue), maxlen=MAX_TX_QUEUE, mesh_packet_id=packet_id
        )
        self._send(session, mesh_pb2.FromRadio(queueStatus=status))

    def _send(self, session: HostSession, message: mesh_pb2.FromRadio) -> None:
        self._from_radio_id += 1
        message.id = self._from_radio_id
        session.send(message)

    def _handshake(self, session: HostSession, nonce: int) -> None:
        session.configured = False
        others = [(spec, self.ctx.public_keys[num]) for num, spec in sorted(self.ctx.specs.items()) if num != self.num]
        for message in handshake_messages(self.device, nonce, others):
            self._send(session, message)
        session.configured = True
        while self._to_host:
            self._send(session, self._to_host.popleft())

    def deliver_to_host(self, packet: mesh_pb2.MeshPacket) -> None:
        """Hand a packet to the host(s); it waits in the 32-entry queue while none is connected."""
        copy = mesh_pb2.MeshPacket()
        copy.CopyFrom(packet)
        record = DeliveredPacket(self.clock.now, copy)
        self.delivered.append(record)
        self.stats.delivered_to_host += 1
        for observer in list(self.host_observers):
            observer(record)
        message = mesh_pb2.FromRadio(packet=copy)
        live = [s for s in self.sessions if s.configured]
        if not live:
            self._to_host.append(message)
            return
        for session in live:
            out = mesh_pb2.FromRadio()
            out.CopyFrom(message)
            self._send(session, out)

    def routing_to_host(self, request_id: int, error: int, *, channel: int = 0) -> None:
        """A Routing ACK/NAK generated by this radio itself (implicit ACK, NAK of a refused packet)."""
        packet = mesh_pb2.MeshPacket(
            to=self.num, id=self.new_packet_id(), channel=channel, priority=Priority.ACK, rx_time=0
        )
        setattr(packet, "from", self.num)
        packet.decoded.portnum = portnums_pb2.PortNum.ROUTING_APP
        packet.decoded.payload = mesh_pb2.Routing(error_reason=error).SerializeToString()
        packet.decoded.request_id = request_id
        self.deliver_to_host(packet)

    # -------------------------------------------------------------- packets from the host

    def send(
        self,
        payload: bytes,
        *,
        to: int = BROADCAST,
        portnum: int = 256,
        hop_limit: int | None = None,
        want_ack: bool = False,
        priority: int = 0,
        pki: bool = False,
        channel: int = 0,
        packet_id: int = 0,
        want_response: bool = False,
    ) -> int:
        """Act as the host: hand the radio a packet (like `ToRadio.packet`). Returns the packet id; the
        outcome (ACK/NAK) arrives in `delivered`."""
        packet = mesh_pb2.MeshPacket(
            to=to,
            id=packet_id,
            channel=channel,
            want_ack=want_ack,
            priority=priority,
            hop_limit=self.hop_limit if hop_limit is None else hop_limit,
            pki_encrypted=pki,
        )
        packet.decoded.portnum = portnum
        packet.decoded.payload = payload
        packet.decoded.want_response = want_response
        if not self.powered:
            raise RadioError(f"{self} is powered off")
        self.handle_to_radio(None, mesh_pb2.ToRadio(packet=packet))
        return self._last_assigned_id

    def new_packet_id(self) -> int:
        """Like the firmware's generatePacketId: a rolling 10-bit counter under 22 random bits."""
        self._packet_counter = (self._packet_counter + 1) & 0x3FF
        return (self._packet_counter | (self.rng.randrange(0x7FFFFFFF) << 10)) & 0xFFFFFFFF or 1

    def _from_host(self, original: mesh_pb2.MeshPacket) -> int:
        packet = mesh_pb2.MeshPacket()
        packet.CopyFrom(original)
        if packet.id == 0:
            packet.id = self.new_packet_id()
        self._last_assigned_id = packet.id
        if packet.to == self.num:
            self._handle_local(packet)
            return 0
        if not packet.HasField("decoded"):
            return self._refuse(packet, RoutingError.BAD_REQUEST)
        if packet.channel != 0 and not packet.pki_encrypted:
            return self._refuse(packet, RoutingError.NO_CHANNEL)
        if packet.want_ack and packet.hop_limit == 0:
            packet.hop_limit = self.hop_limit
        packet.hop_limit = min(packet.hop_limit, MAX_HOP_LIMIT)
        if packet.priority == Priority.UNSET:
            routing = packet.decoded.portnum == portnums_pb2.PortNum.ROUTING_APP
            packet.priority = Priority.ACK if routing else (Priority.RELIABLE if packet.want_ack else Priority.DEFAULT)
        packet.decoded.bitfield = 2 if packet.decoded.want_response else 0
        if len(packet.decoded.payload) > DATA_PAYLOAD_LEN:
            return self._refuse(packet, RoutingError.TOO_LARGE)
        if packet.pki_encrypted:
            peer_key = bytes(packet.public_key) or self.ctx.public_keys.get(packet.to, b"")
            if packet.to == BROADCAST:
                return self._refuse(packet, RoutingError.PKI_FAILED)
            if len(peer_key) != 32:
                return self._refuse(packet, RoutingError.PKI_SEND_FAIL_PUBLIC_KEY)
        phy_len = self.phy_len(packet)
        if phy_len > MAX_PHY_PAYLOAD:
            return self._refuse(packet, RoutingError.TOO_LARGE)
        if not self.tx.has_room_for(packet.priority):
            self.stats.queue_full += 1
            return ERRNO_UNKNOWN
        setattr(packet, "from", self.num)
        packet.hop_start = packet.hop_limit
        self.router.mark_seen((self.num, packet.id))
        on_air = self._on_air_form(packet)
        if self.send_originated(on_air, phy_len, nak_refusal=True) == 0 and packet.want_ack:
            self.router.start_retransmission(on_air, phy_len)
        return 0

    def _refuse(self, packet: mesh_pb2.MeshPacket, error: int) -> int:
        self.stats.naks += 1
        self.routing_to_host(packet.id, error, channel=packet.channel)
        return 0

    def _handle_local(self, packet: mesh_pb2.MeshPacket) -> None:
        """A packet for this radio itself: admin requests get answers; anything else is just ACKed."""
        if packet.HasField("decoded") and packet.decoded.portnum == portnums_pb2.PortNum.ADMIN_APP:
            try:
                request = admin_pb2.AdminMessage.FromString(packet.decoded.payload)
            except Exception:  # noqa: BLE001 - protobuf raises DecodeError (not exported in typing stubs)
                self._refuse(packet, RoutingError.BAD_REQUEST)
                return
            outcome = handle_admin(self.device, request, self._session_passkey)
            if outcome.reboot_after_s is not None:
                self._timers.append(self.clock.call_later(outcome.reboot_after_s, self.reboot))
            if outcome.response is not None:
                reply = mesh_pb2.MeshPacket(to=self.num, id=self.new_packet_id(), channel=packet.channel)
                setattr(reply, "from", self.num)
                reply.priority = Priority.RESPONSE
                reply.decoded.portnum = portnums_pb2.PortNum.ADMIN_APP
                reply.decoded.payload = outcome.response.SerializeToString()
                reply.decoded.request_id = packet.id
                self.deliver_to_host(reply)
                return
            if not outcome.handled:
                self._refuse(packet, RoutingError.BAD_REQUEST)
                return
        if packet.want_ack:
            self.routing_to_host(packet.id, RoutingError.NONE, channel=packet.channel)

    def _on_air_form(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket:
        """What goes on the air: header fields plus the Data, or PKI ciphertext for a PKI message."""
        air = mesh_pb2.MeshPacket()
        air.CopyFrom(packet)
        air.ClearField("public_key")
        air.ClearField("pki_encrypted")
        air.ClearField("rx_time")
        if air.to == BROADCAST:
            air.want_ack = False  # never on the air for broadcasts
        if packet.pki_encrypted:
            peer_key = bytes(packet.public_key) or self.ctx.public_keys[packet.to]
            extra = self.rng.randbytes(4)
            data = packet.decoded.SerializeToString()
            air.ClearField("decoded")
            air.encrypted = pki_encrypt(self.device.private_key, peer_key, packet.id, self.num, data, extra=extra)
            air.channel = 0
        return air

    def open_pki(self, packet: mesh_pb2.MeshPacket) -> mesh_pb2.MeshPacket | None:
        """Decrypt a PKI direct message addressed to us; None if we cannot."""
        sender = getattr(packet, "from")
        sender_key = self.ctx.public_keys.get(sender)
        if packet.to != self.num or sender_key is None:
            return None
        data = pki_decrypt(self.device.private_key, sender_key, packet.id, sender, bytes(packet.encrypted))
        if data is None:
            return None
        opened = mesh_pb2.MeshPacket()
        opened.CopyFrom(packet)
        opened.ClearField("encrypted")
        opened.decoded.ParseFromString(data)
        opened.pki_encrypted = True
        opened.public_key = sender_key
        return opened

    def phy_len(self, packet: mesh_pb2.MeshPacket) -> int:
        """Bytes on the air: the 16-byte header plus the encoded Data (plus 12 for PKI)."""
        if packet.HasField("decoded"):
            length = MESH_HEADER_LEN + int(packet.decoded.ByteSize())
            return length + (PKI_OVERHEAD if packet.pki_encrypted else 0)
        return MESH_HEADER_LEN + len(packet.encrypted)

    # -------------------------------------------------------------- transmit queue

    def send_originated(self, packet: mesh_pb2.MeshPacket, phy_len: int, *, nak_refusal: bool) -> int:
        """Router::send for a packet we originate: duty-cycle check, then the transmit queue.
        Returns 0, DUTY_CYCLE_LIMIT (NAKed to the host when `nak_refusal`) or ERRNO_UNKNOWN (queue full)."""
        if not self.tx.duty_ok():
            self.stats.duty_cycle_refusals += 1
            if nak_refusal:
                self._refuse(packet, RoutingError.DUTY_CYCLE_LIMIT)
            return int(RoutingError.DUTY_CYCLE_LIMIT)
        if self.tx.enqueue(packet, phy_len, None):
            return 0
        self.stats.queue_full += 1
        return ERRNO_UNKNOWN

    def send_relay(self, packet: mesh_pb2.MeshPacket, *, snr: float) -> bool:
        if not self.tx.duty_ok():
            self.stats.duty_cycle_refusals += 1
            return False
        if self.tx.enqueue(packet, self.phy_len(packet), snr):
            return True
        self.stats.queue_full += 1
        return False

    def in_tx_queue(self, key: tuple[int, int]) -> bool:
        return self.tx.in_queue(key)

    def cancel_relay(self, key: tuple[int, int]) -> bool:
        return self.tx.cancel_relay(key)

    @property
    def queue_depth(self) -> int:
        return len(self.tx.queue)

    def duty_cycle_percent(self) -> float:
        """Share of the last hour this radio has transmitted (what the duty-cycle check uses)."""
        return self.tx.duty_cycle_percent()

    def retransmission_delay_s(self, phy_len: int) -> float:
        return self.tx.retransmission_delay_s(phy_len)

    # -------------------------------------------------------------- channel side

    def on_frame(self, frame: AirFrame, quality: LinkQuality) -> None:
        if not self.powered:
            return
        packet = mesh_pb2.MeshPacket()
        packet.CopyFrom(frame.packet)
        packet.rx_snr = round(quality.snr_db * 4) / 4  # the SX126x reports SNR in quarter dB
        packet.rx_rssi = round(quality.rssi_dbm)
        packet.transport_mechanism = TRANSPORT_LORA
        self.tx.note_heard(self.channel.airtime_s(frame.phy_len))
        self.router.on_receive(packet)


def random_private_key(seed: int, num: int) -> bytes:
    """A deterministic X25519 private key per (seed, node) — simulation only, never for real keys."""
    if seed < 0:
        return os.urandom(32)
    return random.Random(f"key:{seed}:{num}").randbytes(32)
