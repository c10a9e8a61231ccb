"""The shared LoRa channel: airtime, loss, collisions, half-duplex, duty cycle, statistics.

Collision rule (documented choice): a frame is lost at a receiver if any other transmission that the
receiver can hear overlaps it in time, unless the frame is at least `CAPTURE_DB` (6 dB) stronger than
every overlapping one there (LoRa capture effect); the stronger frame then survives, the weaker is lost.
Timing within the frame (preamble lock) is not modelled. A radio is half-duplex: a frame is lost at a
receiver that transmits at any moment while the frame is on the air. Frames that survive are then
subject to the link's loss probability (see `propagation`).

Carrier sense: before a radio transmits, it checks whether it currently hears a transmission above the
demodulation floor (the firmware's "actively receiving" test) and, if so, backs off another contention
window. Hidden nodes (that cannot hear each other) still collide at a common neighbour.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from meshtastic.protobuf import mesh_pb2

from meshd.radio.airtime import ModemPreset, time_on_air_s
from meshd.radio.sim.clock import SimClock
from meshd.radio.sim.propagation import LinkModel, LinkQuality

logger = logging.getLogger(__name__)

CAPTURE_DB = 6.0
WEAK_P = 0.05  # below this reception probability a frame counts as "too weak", not as "lost"
MINUTES_IN_HOUR = 60


@dataclass(frozen=True, slots=True)
class AirFrame:
    """One LoRa frame: the Meshtastic header fields plus either the channel payload (`decoded`, readable
    by anyone holding the channel key) or PKI ciphertext (`encrypted`). Shared by all receivers: copy
    `packet` before changing it."""

    packet: mesh_pb2.MeshPacket
    phy_len: int
    transmitter: int

    @property
    def is_relay(self) -> bool:
        return self.transmitter != int(getattr(self.packet, "from"))


@dataclass(frozen=True, slots=True)
class AirRecord:
    """What an eavesdropper with the channel key records of one transmission."""

    time: float
    airtime_s: float
    transmitter: int
    from_node: int
    to_node: int
    packet_id: int
    hop_limit: int
    portnum: int | None  # None when the payload is PKI ciphertext
    payload: bytes  # Data.payload for channel packets, the ciphertext for PKI direct messages
    pki: bool

    @property
    def relayed(self) -> bool:
        return self.transmitter != self.from_node


@dataclass(slots=True)
class NodeStats:
    tx_frames: int = 0
    tx_airtime_s: float = 0.0
    relayed_frames: int = 0
    retransmissions: int = 0
    rx_frames: int = 0
    rx_collisions: int = 0
    rx_half_duplex: int = 0
    rx_lost: int = 0
    rx_duplicates: int = 0
    relays_cancelled: int = 0
    delivered_to_host: int = 0
    duty_cycle_refusals: int = 0
    queue_full: int = 0
    naks: int = 0
    acks_sent: int = 0


@dataclass(slots=True)
class NetworkStats:
    """Totals over the channel plus a `NodeStats` per node number."""

    transmissions: int = 0
    airtime_s: float = 0.0
    receptions: int = 0
    collisions: int = 0
    half_duplex_losses: int = 0
    losses: int = 0  # frames a receiver could normally decode (p >= 5 %) lost to the link's loss probability
    too_weak: int = 0  # frames arriving below sensitivity (p < 5 %) that were not decoded
    nodes: dict[int, NodeStats] = field(default_factory=dict)

    def node(self, num: int) -> NodeStats:
        stats = self.nodes.get(num)
        if stats is None:
            stats = self.nodes[num] = NodeStats()
        return stats

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["nodes"] = {f"!{num:08x}": asdict(s) for num, s in sorted(self.nodes.items())}
        return out


class DutyCycleMeter:
    """Transmit time in 60 one-minute buckets, like the firmware's `AirTime::utilizationTX`."""

    def __init__(self) -> None:
        self._buckets = [0.0] * MINUTES_IN_HOUR
        self._minute = 0

    def _sync(self, now: float) -> None:
        minute = int(now // 60)
        elapsed = minute - self._minute
        if elapsed >= MINUTES_IN_HOUR:
            self._buckets = [0.0] * MINUTES_IN_HOUR
        else:
            for i in range(1, elapsed + 1):
                self._buckets[(self._minute + i) % MINUTES_IN_HOUR] = 0.0
        self._minute = max(self._minute, minute)

    def log_tx(self, now: float, airtime_s: float) -> None:
        self._sync(now)
        self._buckets[self._minute % MINUTES_IN_HOUR] += airtime_s

    def utilization_percent(self, now: float) -> float:
        """Share of the last hour spent transmitting."""
        self._sync(now)
        return sum(self._buckets) / 3600.0 * 100.0

    def reset(self, now: float) -> None:
        self._buckets = [0.0] * MINUTES_IN_HOUR
        self._minute = int(now // 60)


class ChannelListener(Protocol):
    def on_frame(self, frame: AirFrame, quality: LinkQuality) -> None: ...


@dataclass(slots=True)
class _Transmission:
    frame: AirFrame
    start: float
    end: float
    receptions: list[_Reception] = field(default_factory=list)


@dataclass(slots=True)
class _Reception:
    tx: _Transmission
    receiver: int
    quality: LinkQuality
    corrupted: str = ""  # "", "collision" or "half_duplex"


class LoraChannel:
    def __init__(
        self,
        clock: SimClock,
        links: LinkModel,
        modem: ModemPreset,
        *,
        seed: int,
        stats: NetworkStats,
        record_air: bool = False,
    ) -> None:
        self.clock = clock
        self.links = links
        self.modem = modem
        self.stats = stats
        self.air_log: list[AirRecord] | None = [] if record_air else None
        self.observers: list[Callable[[AirRecord], None]] = []
        self._rng = random.Random(f"channel:{seed}")
        self._listeners: dict[int, ChannelListener] = {}
        self._sending: dict[int, _Transmission] = {}
        self._receiving: dict[int, list[_Reception]] = {}

    # -------------------------------------------------------------- membership

    def attach(self, num: int, listener: ChannelListener) -> None:
        self._listeners[num] = listener
        self._receiving.setdefault(num, [])

    def detach(self, num: int) -> None:
        """A radio powered off: it hears nothing more (frames already on its air are lost)."""
        self._listeners.pop(num, None)
        for rx in self._receiving.pop(num, []):
            rx.corrupted = rx.corrupted or "off"

    # -------------------------------------------------------------- queries

    def airtime_s(self, phy_len: int) -> float:
        return time_on_air_s(phy_len, self.modem)

    def is_transmitting(self, num: int) -> bool:
        return num in self._sending

    def is_busy(self, num: int) -> bool:
        """Carrier sense at `num`: transmitting, or hearing a frame above the demodulation floor."""
        if num in self._sending:
            return True
        floor = self.links.floor_db
        return any(rx.quality.snr_db >= floor for rx in self._receiving.get(num, ()))

    # -------------------------------------------------------------- transmission

    def transmit(self, frame: AirFrame) -> float:
        """Put `frame` on the air now; returns its time on air in seconds."""
        sender = frame.transmitter
        now = self.clock.now
        airtime = self.airtime_s(frame.phy_len)
        tx = _Transmission(frame, now, now + airtime)
        # Half-duplex: whatever the sender was receiving is lost.
        for rx in self._receiving.get(sender, ()):
            rx.corrupted = rx.corrupted or "half_duplex"
        for receiver, quality in self.links.audience(sender).items():
            if receiver not in self._listeners:
                continue
            rx = _Reception(tx, receiver, quality)
            if receiver in self._sending:
                rx.corrupted = "half_duplex"
            for other in self._receiving[receiver]:
                if quality.rssi_dbm - other.quality.rssi_dbm < CAPTURE_DB:
                    rx.corrupted = rx.corrupted or "collision"
                if other.quality.rssi_dbm - quality.rssi_dbm < CAPTURE_DB:
                    other.corrupted = other.corrupted or "collision"
            self._receiving[receiver].append(rx)
            tx.receptions.append(rx)
        self._sending[sender] = tx
        self.stats.transmissions += 1
        self.stats.airtime_s += airtime
        node = self.stats.node(sender)
        node.tx_frames += 1
        node.tx_airtime_s += airtime
        if frame.is_relay:
            node.relayed_frames += 1
        self._record(frame, now, airtime)
        if logger.isEnabledFor(logging.DEBUG):
            p = frame.packet
            heard = " ".join(
                f"!{rx.receiver:08x}" + (f"({rx.corrupted})" if rx.corrupted else "") for rx in tx.receptions
            )
            logger.debug(
                "t=%.3f tx !%08x from=!%08x id=%08x to=%08x hop_limit=%d %d B %.0f ms -> %s",
                now, sender, getattr(p, "from"), p.id, p.to, p.hop_limit, frame.phy_len, airtime * 1000, heard,
            )  # fmt: skip
        self.clock.call_at(tx.end, self._finish, tx)
        return airtime

    def _finish(self, tx: _Transmission) -> None:
        sender = tx.frame.transmitter
        if self._sending.get(sender) is tx:
            del self._sending[sender]
        for rx in tx.receptions:
            active = self._receiving.get(rx.receiver)
            if active is not None and rx in active:
                active.remove(rx)
            listener = self._listeners.get(rx.receiver)
            if listener is None or rx.corrupted == "off":
                continue
            node = self.stats.node(rx.receiver)
            if rx.corrupted and rx.quality.p_receive < WEAK_P:
                self.stats.too_weak += 1  # would not have been decoded anyway: not a collision victim
                continue
            if rx.corrupted and logger.isEnabledFor(logging.DEBUG):
                logger.debug("t=%.3f lost at !%08x <- !%08x id=%08x: %s", self.clock.now, rx.receiver, sender,
                             tx.frame.packet.id, rx.corrupted)  # fmt: skip
            if rx.corrupted == "collision":
                self.stats.collisions += 1
                node.rx_collisions += 1
            elif rx.corrupted == "half_duplex":
                self.stats.half_duplex_losses += 1
                node.rx_half_duplex += 1
            elif self._rng.random() < rx.quality.p_receive:
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("t=%.3f rx !%08x <- !%08x id=%08x snr=%.1f", self.clock.now, rx.receiver,
                                 sender, tx.frame.packet.id, rx.quality.snr_db)  # fmt: skip
                self.stats.receptions += 1
                node.rx_frames += 1
                listener.on_frame(tx.frame, rx.quality)
            elif rx.quality.p_receive < WEAK_P:
                self.stats.too_weak += 1
            else:
                self.stats.losses += 1
                node.rx_lost += 1

    def _record(self, frame: AirFrame, now: float, airtime: float) -> None:
        if self.air_log is None and not self.observers:
            return
        p = frame.packet
        decoded = p.HasField("decoded")
        record = AirRecord(
            time=now,
            airtime_s=airtime,
            transmitter=frame.transmitter,
            from_node=getattr(p, "from"),
            to_node=p.to,
            packet_id=p.id,
            hop_limit=p.hop_limit,
            portnum=p.decoded.portnum if decoded else None,
            payload=bytes(p.decoded.payload) if decoded else bytes(p.encrypted),
            pki=not decoded,
        )
        if self.air_log is not None:
            self.air_log.append(record)
        for observer in self.observers:
            observer(record)
