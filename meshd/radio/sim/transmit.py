"""A radio's transmit path, after the firmware's RadioLibInterface and AirTime:

- a priority queue of at most 16 packets (a full queue evicts a lower-priority packet, else refuses);
- before each transmission a contention delay: a random number of slots (2.5 symbols + 7.6 ms each)
  from a window sized by channel utilisation for our own packets, or by the received SNR for relays
  (`getTxDelayMsecWeighted`: ROUTER 0..2·CW slots, others 2·CWmax + 0..2^CW slots);
- carrier sense when the delay expires: if the channel is busy, wait another delay;
- duty cycle: transmit time in 60 one-minute buckets; a packet is refused while the last hour's share
  is over the regional limit (checked when the packet is handed over, as the firmware does).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshtastic.protobuf import mesh_pb2

from meshd.radio.airtime import ModemPreset
from meshd.radio.sim.channel import AirFrame, DutyCycleMeter
from meshd.radio.sim.clock import SimTimer

if TYPE_CHECKING:
    from meshd.radio.sim.node import VirtualRadio

MAX_TX_QUEUE = 16
CW_MIN = 3
CW_MAX = 8
PROCESSING_TIME_S = 4.5  # the firmware's PROCESSING_TIME_MSEC in the retransmission timeout


def arduino_map(value: float, in_min: int, in_max: int, out_min: int, out_max: int) -> int:
    """Arduino's integer `map()` (truncating, no clamping), which the firmware uses to size windows."""
    x = int(value)
    num = (x - in_min) * (out_max - out_min)
    den = in_max - in_min
    quotient = abs(num) // den
    return (quotient if num >= 0 else -quotient) + out_min


def slot_time_s(modem: ModemPreset) -> float:
    """Contention slot: CAD of 2.5 symbols + 7.6 ms propagation/turnaround/MAC, truncated to whole ms."""
    symbol_ms = modem.symbol_s * 1000.0
    return int(2.5 * symbol_ms + 0.2 + 0.4 + 7.0) / 1000.0


@dataclass(slots=True)
class TxEntry:
    priority: int
    seq: int
    packet: mesh_pb2.MeshPacket  # on-air form
    phy_len: int
    relay_snr: float | None  # set for rebroadcasts: the SNR the original was heard with

    @property
    def key(self) -> tuple[int, int]:
        return (int(getattr(self.packet, "from")), int(self.packet.id))


class Transmitter:
    def __init__(self, radio: VirtualRadio) -> None:
        self.radio = radio
        self.slot_s = slot_time_s(radio.ctx.modem)
        self.queue: list[TxEntry] = []
        self.duty = DutyCycleMeter()
        self._seq = 0
        self._timer: SimTimer | None = None
        self._heard: deque[tuple[float, float]] = deque()  # (start, airtime) for channel utilisation
        self._epoch = 0

    def reset(self) -> None:
        """Power cycle: forget the queue, the timers and the duty-cycle history."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._epoch += 1
        self.queue.clear()
        self._heard.clear()
        self.duty.reset(self.radio.clock.now)

    # -------------------------------------------------------------- accounting

    def duty_ok(self) -> bool:
        limit = self.radio.ctx.duty_cycle_percent
        return limit >= 100.0 or self.duty.utilization_percent(self.radio.clock.now) <= limit

    def duty_cycle_percent(self) -> float:
        return self.duty.utilization_percent(self.radio.clock.now)

    def note_heard(self, airtime_s: float) -> None:
        self._heard.append((self.radio.clock.now, airtime_s))

    def channel_utilization_percent(self) -> float:
        """Airtime heard or sent during the last minute, in percent."""
        now = self.radio.clock.now
        while self._heard and self._heard[0][0] < now - 60.0:
            self._heard.popleft()
        return sum(a for _, a in self._heard) / 60.0 * 100.0

    def retransmission_delay_s(self, phy_len: int) -> float:
        """The firmware's getRetransmissionMsec for a frame of `phy_len` bytes."""
        cw = arduino_map(self.channel_utilization_percent(), 0, 100, CW_MIN, CW_MAX)
        slots = 2**cw + 2 * CW_MAX + 2 ** ((CW_MAX + CW_MIN) // 2)
        return float(2 * self.radio.channel.airtime_s(phy_len) + slots * self.slot_s + PROCESSING_TIME_S)

    # -------------------------------------------------------------- queue

    def has_room_for(self, priority: int) -> bool:
        return len(self.queue) < MAX_TX_QUEUE or any(e.priority < priority for e in self.queue)

    def enqueue(self, packet: mesh_pb2.MeshPacket, phy_len: int, relay_snr: float | None) -> bool:
        priority = int(packet.priority)
        if len(self.queue) >= MAX_TX_QUEUE:
            victims = [e for e in self.queue if e.priority < priority]
            if not victims:
                return False
            self.queue.remove(min(victims, key=lambda e: (e.priority, -e.seq)))
        self._seq += 1
        self.queue.append(TxEntry(priority, self._seq, packet, phy_len, relay_snr))
        self._kick()
        return True

    def in_queue(self, key: tuple[int, int]) -> bool:
        return any(e.key == key for e in self.queue)

    def cancel_relay(self, key: tuple[int, int]) -> bool:
        """Drop a queued rebroadcast of (from, id) that has not started yet."""
        for entry in self.queue:
            if entry.key == key and entry.relay_snr is not None:
                self.queue.remove(entry)
                return True
        return False

    def _head(self) -> TxEntry:
        return max(self.queue, key=lambda e: (e.priority, -e.seq))

    # -------------------------------------------------------------- sending

    def _kick(self) -> None:
        radio = self.radio
        if self._timer is not None or not self.queue or not radio.powered:
            return
        if radio.channel.is_transmitting(radio.num):
            return
        self._timer = radio.clock.call_later(self._contention_delay(self._head()), self._ready, self._epoch)

    def _contention_delay(self, entry: TxEntry) -> float:
        rng = self.radio.rng
        if entry.relay_snr is None:
            cw = arduino_map(self.channel_utilization_percent(), 0, 100, CW_MIN, CW_MAX)
            return rng.randrange(2**cw) * self.slot_s
        cw = arduino_map(entry.relay_snr, -20, 10, CW_MIN, CW_MAX)
        if self.radio.role == "ROUTER":
            return rng.randrange(max(1, 2 * cw)) * self.slot_s
        return (2 * CW_MAX + rng.randrange(2 ** max(cw, 0))) * self.slot_s

    def _ready(self, epoch: int) -> None:
        if epoch != self._epoch:
            return
        self._timer = None
        radio = self.radio
        if not self.queue or not radio.powered:
            return
        if radio.channel.is_busy(radio.num):
            self._timer = radio.clock.call_later(self._contention_delay(self._head()), self._ready, epoch)
            return
        entry = self._head()
        self.queue.remove(entry)
        airtime = radio.channel.transmit(AirFrame(entry.packet, entry.phy_len, radio.num))
        self.duty.log_tx(radio.clock.now, airtime)
        self.note_heard(airtime)
        radio.clock.call_later(airtime, self._done, epoch)

    def _done(self, epoch: int) -> None:
        if epoch == self._epoch:
            self._kick()
