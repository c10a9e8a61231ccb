"""Per-radio mesh behaviour, after the firmware's Flooding/NextHop/ReliableRouter:

- managed flooding: a broadcast, or a packet not addressed to us, is rebroadcast once with hop_limit − 1
  after an SNR-weighted contention delay (lower SNR → shorter delay, so the farthest node goes first;
  ROUTERs use a shorter window than everyone else); CLIENT_MUTE never rebroadcasts;
- duplicate suppression by (from, id); hearing someone else rebroadcast a packet we still have queued
  cancels our own copy (not for ROUTER, which always rebroadcasts once);
- a repeat heard straight from the originator (hop_start == hop_limit) is relayed again if our copy
  already went out, so the originator gets its implicit ACK after a lost rebroadcast;
- want_ack: the originator transmits up to 3 times. Hearing any other node rebroadcast our packet is an
  implicit ACK (a Routing NONE from ourselves, for broadcasts and direct messages alike, as in the
  firmware); the destination of a direct message answers with a real ACK routed back by flooding; if
  neither arrives, the host gets a NAK with MAX_RETRANSMIT.

Simplification: direct messages are always flooded (the 2.6+ next-hop learning is not modelled), so the
airtime of a direct message over several hops is an upper bound.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from meshtastic.protobuf import mesh_pb2, portnums_pb2

from meshd.radio.api import BROADCAST
from meshd.radio.sim.clock import SimTimer

if TYPE_CHECKING:
    from meshd.radio.sim.node import VirtualRadio

NUM_RELIABLE_TX = 3  # transmissions of a want_ack packet by its originator, the first one included
SEEN_HISTORY = 1000  # (from, id) pairs remembered for duplicate suppression
ROUTING_PORT = portnums_pb2.PortNum.ROUTING_APP
RoutingError = mesh_pb2.Routing.Error
Priority = mesh_pb2.MeshPacket.Priority


# ---------------------------------------------------------------- PKI


def _shared_key(private_key: bytes, peer_public: bytes) -> bytes:
    secret = X25519PrivateKey.from_private_bytes(private_key).exchange(X25519PublicKey.from_public_bytes(peer_public))
    return hashlib.sha256(secret).digest()


def _pki_nonce(packet_id: int, from_node: int, extra: bytes) -> bytes:
    return struct.pack("<II", packet_id, from_node) + extra + b"\x00"


def pki_encrypt(
    private_key: bytes, peer_public: bytes, packet_id: int, from_node: int, data: bytes, *, extra: bytes
) -> bytes:
    """AES-256-CCM (8-byte tag) under SHA-256 of the X25519 secret; 4-byte extra nonce appended.
    Same construction and 12-byte overhead as the firmware's PKI direct messages (not byte-compatible)."""
    sealed = AESCCM(_shared_key(private_key, peer_public), tag_length=8).encrypt(
        _pki_nonce(packet_id, from_node, extra), data, None
    )
    return sealed + extra


def pki_decrypt(private_key: bytes, peer_public: bytes, packet_id: int, from_node: int, blob: bytes) -> bytes | None:
    if len(blob) < 12:
        return None
    extra, sealed = blob[-4:], blob[:-4]
    try:
        return AESCCM(_shared_key(private_key, peer_public), tag_length=8).decrypt(
            _pki_nonce(packet_id, from_node, extra), sealed, None
        )
    except (InvalidTag, ValueError):
        return None


# ---------------------------------------------------------------- router


@dataclass(slots=True)
class _Pending:
    packet: mesh_pb2.MeshPacket  # the on-air form
    phy_len: int
    remaining: int
    timer: SimTimer | None = None


def hop_limit_for_response(hop_start: int, hop_limit: int, configured: int) -> int:
    """The firmware's getHopLimitForResponse: enough hops to get back, a little slack if cheap."""
    if hop_start != 0 and hop_start >= hop_limit:
        used = hop_start - hop_limit
        if used > configured:
            return used
        if used + 2 < configured:
            return used + 2
    return configured


class MeshRouter:
    def __init__(self, radio: VirtualRadio) -> None:
        self.radio = radio
        self.seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self.pending: dict[tuple[int, int], _Pending] = {}

    def reset(self) -> None:
        for pending in self.pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self.pending.clear()
        self.seen.clear()

    # -------------------------------------------------------------- bookkeeping

    def mark_seen(self, key: tuple[int, int]) -> bool:
        """Remember (from, id); True if it was already known."""
        if key in self.seen:
            self.seen.move_to_end(key)
            return True
        self.seen[key] = None
        if len(self.seen) > SEEN_HISTORY:
            self.seen.popitem(last=False)
        return False

    # -------------------------------------------------------------- originating

    def start_retransmission(self, packet: mesh_pb2.MeshPacket, phy_len: int) -> None:
        key = (getattr(packet, "from"), packet.id)
        self.stop_retransmission(key)
        pending = _Pending(packet, phy_len, NUM_RELIABLE_TX - 1)
        self.pending[key] = pending
        self._arm(key, pending)

    def stop_retransmission(self, key: tuple[int, int]) -> bool:
        pending = self.pending.pop(key, None)
        if pending is None:
            return False
        if pending.timer is not None:
            pending.timer.cancel()
        return True

    def _arm(self, key: tuple[int, int], pending: _Pending) -> None:
        delay = self.radio.retransmission_delay_s(pending.phy_len)
        pending.timer = self.radio.clock.call_later(delay, self._retransmit, key)

    def _retransmit(self, key: tuple[int, int]) -> None:
        pending = self.pending.get(key)
        if pending is None:
            return
        radio = self.radio
        if pending.remaining <= 0:
            del self.pending[key]
            radio.stats.naks += 1
            radio.routing_to_host(key[1], RoutingError.MAX_RETRANSMIT, channel=pending.packet.channel)
            return
        pending.remaining -= 1
        if not radio.in_tx_queue(key):
            copy = mesh_pb2.MeshPacket()
            copy.CopyFrom(pending.packet)
            result = radio.send_originated(copy, pending.phy_len, nak_refusal=True)
            if result == RoutingError.DUTY_CYCLE_LIMIT:
                del self.pending[key]  # the host already has its NAK
                return
            if result == 0:
                radio.stats.retransmissions += 1
        self._arm(key, pending)

    def send_ack(self, request: mesh_pb2.MeshPacket, error: int = RoutingError.NONE) -> None:
        """Answer a want_ack packet addressed to us, routed back to its sender."""
        radio = self.radio
        ack = mesh_pb2.MeshPacket(
            to=getattr(request, "from"),
            id=radio.new_packet_id(),
            channel=request.channel,
            priority=Priority.ACK,
            hop_limit=hop_limit_for_response(request.hop_start, request.hop_limit, radio.hop_limit),
        )
        ack.decoded.portnum = ROUTING_PORT
        ack.decoded.payload = mesh_pb2.Routing(error_reason=error).SerializeToString()
        ack.decoded.request_id = request.id
        ack.decoded.bitfield = 0
        setattr(ack, "from", radio.num)
        ack.hop_start = ack.hop_limit
        self.mark_seen((radio.num, ack.id))
        if radio.send_originated(ack, radio.phy_len(ack), nak_refusal=False) == 0:
            radio.stats.acks_sent += 1

    # -------------------------------------------------------------- receiving

    def on_receive(self, packet: mesh_pb2.MeshPacket) -> None:
        radio = self.radio
        me = radio.num
        sender = getattr(packet, "from")
        key = (sender, packet.id)
        to_us = packet.to == me
        if sender == me:
            # Someone rebroadcast one of ours: the implicit ACK.
            radio.stats.rx_duplicates += 1
            if self.stop_retransmission(key):
                radio.routing_to_host(packet.id, RoutingError.NONE, channel=packet.channel)
            return
        if self.mark_seen(key):
            radio.stats.rx_duplicates += 1
            self._on_duplicate(packet, key, to_us=to_us)
            return

        decoded = packet.HasField("decoded")
        for_host = to_us or packet.to == BROADCAST
        host_copy = packet
        if for_host and not decoded:
            opened = radio.open_pki(packet)
            if opened is None:
                if to_us and packet.want_ack:
                    self.send_ack(packet, RoutingError.PKI_UNKNOWN_PUBKEY)
                self.perhaps_rebroadcast(packet)
                return
            host_copy = opened
            decoded = True
        if decoded and to_us and host_copy.decoded.portnum == ROUTING_PORT and host_copy.decoded.request_id:
            self.stop_retransmission((me, host_copy.decoded.request_id))
        if for_host:
            radio.deliver_to_host(host_copy)
        if to_us and packet.want_ack and decoded:
            self.send_ack(packet)
        answer = decoded and not to_us and (packet.decoded.request_id or packet.decoded.reply_id)
        if answer and radio.cancel_relay((packet.to, packet.decoded.request_id)):
            # The destination answered: our relay of the original is no longer needed.
            radio.stats.relays_cancelled += 1
        self.perhaps_rebroadcast(packet)

    def _on_duplicate(self, packet: mesh_pb2.MeshPacket, key: tuple[int, int], *, to_us: bool) -> None:
        radio = self.radio
        from_originator = packet.hop_start == packet.hop_limit
        if from_originator:
            # The originator is repeating: our relay (or ACK) was probably not heard. Do it again.
            if not radio.in_tx_queue(key):
                if to_us and packet.want_ack and packet.HasField("decoded"):
                    self.send_ack(packet)
                elif not to_us:
                    self.perhaps_rebroadcast(packet)
        elif radio.role != "ROUTER" and radio.cancel_relay(key):
            radio.stats.relays_cancelled += 1

    def perhaps_rebroadcast(self, packet: mesh_pb2.MeshPacket) -> bool:
        radio = self.radio
        if packet.to == radio.num or getattr(packet, "from") == radio.num:
            return False
        if packet.hop_limit <= 0 or packet.id == 0 or radio.role == "CLIENT_MUTE":
            return False
        relay = mesh_pb2.MeshPacket()
        relay.CopyFrom(packet)
        relay.hop_limit -= 1
        relay.relay_node = radio.num & 0xFF
        relay.ClearField("rx_snr")
        relay.ClearField("rx_rssi")
        relay.ClearField("transport_mechanism")
        return radio.send_relay(relay, snr=packet.rx_snr)
