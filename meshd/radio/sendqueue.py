"""What happens to a packet between `RadioLink.send()` and the radio accepting it.

This is the link's delivery contract, kept apart from connection supervision so it can be read (and
changed) in one place:

  * The packet waits in a priority queue (higher `Priority` first, FIFO within one) until the session is
    READY and the radio's queue has room (`Session.room`, from QueueStatus back-pressure).
  * Text messages are spaced `text_interval_s` apart: the firmware drops a client's TEXT_MESSAGE_APP
    packets that come faster than one per 2 s (RATE_LIMIT_EXCEEDED, after a QueueStatus saying OK).
    Packets on other ports are not held up behind them.
  * The caller's future resolves with the packet id when the radio's QueueStatus accepts the packet, or
    fails with `RadioRefusedError` when it refuses it. "Queue full" (ERRNO_UNKNOWN) is retried a few
    times under a new id, because the firmware silently ignores an id it has seen recently.
  * Written but not answered when the connection drops or the radio reboots: written again later with
    the same id (the mesh suppresses a duplicate; a radio that already took it ignores it).
  * No reply although the radio answers other things (the firmware drops replies when its reply queue
    is full, and says nothing about an id it ignored): counted accepted, `unconfirmed`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from meshd.errors import RadioError, RadioRefusedError
from meshd.radio.api import TEXT_PORT
from meshd.radio.session import OutgoingPacket, QueueReply, Session
from meshd.radio.txwindow import ERRNO_UNKNOWN

log = logging.getLogger(__name__)

TEXT_INTERVAL_S = 2.1  # firmware: one TEXT_MESSAGE_APP packet per 2 s from a client
QUEUE_FULL_RETRIES = 3


@dataclass(slots=True)
class SendStats:
    sent: int = 0  # accepted into the radio's queue
    resent: int = 0  # written again after a reconnect, reboot or full queue
    refused: int = 0
    unconfirmed: int = 0  # counted accepted without their own QueueStatus reply


@dataclass(eq=False, slots=True)
class _Send:
    seq: int
    priority: int
    packet: OutgoingPacket
    future: asyncio.Future[int]
    encode: Callable[..., OutgoingPacket]  # session.encode_packet with this send's arguments bound
    writes: int = 0
    written_at: float = 0.0
    queue_full: int = 0

    def __lt__(self, other: _Send) -> bool:
        return (-self.priority, self.seq) < (-other.priority, other.seq)


class SendQueue:
    def __init__(self, session: Session, *, text_interval_s: float = TEXT_INTERVAL_S) -> None:
        self._session = session
        self._text_interval_s = text_interval_s
        self._pending: list[_Send] = []  # heap
        self._in_flight: dict[int, _Send] = {}  # written, waiting for the radio's QueueStatus
        self._seq = itertools.count()
        self._last_text_at = -1e9
        self.stats = SendStats()

    @property
    def waiting(self) -> bool:
        """Packets not yet written (some may belong to callers that gave up)."""
        return bool(self._pending)

    def add(self, encode: Callable[..., OutgoingPacket], priority: int) -> asyncio.Future[int]:
        """Queue a packet; `encode()` builds it (and validates: meshd errors raise here, nothing queued)."""
        packet = encode()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._pending, _Send(next(self._seq), priority, packet, future, encode))
        return future

    def write_ready(self, now: float, write: Callable[[bytes], None]) -> float | None:
        """Write what may go now; returns seconds until a held-back text message may go (or None).

        `write` may raise (the connection just died): every packet stays either pending or in flight,
        so the link's requeue after the connection ends finds it.
        """
        held: list[_Send] = []
        wait_s: float | None = None
        session = self._session
        try:
            while self._pending and session.room > 0:
                item = heapq.heappop(self._pending)
                if item.future.done():  # cancelled by its caller before it was written
                    continue
                if item.packet.portnum == TEXT_PORT:
                    remaining = self._last_text_at + self._text_interval_s - now
                    if remaining > 0:
                        held.append(item)
                        wait_s = remaining
                        continue
                    self._last_text_at = now
                if item.writes == 0:
                    # a default hop limit follows the radio's configuration, known only now that it is READY
                    item.packet = item.encode(packet_id=item.packet.packet_id)
                else:
                    self.stats.resent += 1
                item.writes += 1
                item.written_at = now
                self._in_flight[item.packet.packet_id] = item
                session.packet_written(item.packet)
                write(item.packet.frame)
        finally:
            for item in held:
                heapq.heappush(self._pending, item)
        return wait_s

    def on_reply(self, reply: QueueReply) -> None:
        item = self._in_flight.pop(reply.packet_id, None)
        if item is None:
            return
        if reply.accepted:
            self._accept(item, confirmed=reply.confirmed)
            return
        if reply.res == ERRNO_UNKNOWN and item.queue_full < QUEUE_FULL_RETRIES:
            # What a full transmit queue answers (the radio's own traffic took the room): retry when
            # there is room, under a new id because the firmware ignores an id it saw recently.
            item.queue_full += 1
            item.packet = item.encode(packet_id=self._session.new_packet_id())
            heapq.heappush(self._pending, item)
            return
        self.stats.refused += 1
        if not item.future.done():
            message = f"radio refused packet {reply.packet_id:08x}: {reply.reason}"
            item.future.set_exception(RadioRefusedError(message, packet_id=reply.packet_id, reason=reply.reason))

    def settle_silent(self, now: float, reply_timeout_s: float, last_rx: float) -> bool:
        """Resolve packets whose reply is overdue; returns True if the radio should be probed (heartbeat)."""
        probe = False
        for pid, item in list(self._in_flight.items()):
            age = now - item.written_at
            if age > reply_timeout_s and last_rx > item.written_at + reply_timeout_s / 2:
                # The radio answered after our probe but never mentioned this packet: it processed it.
                log.info("no QueueStatus for packet %08x; the radio is alive, counting it accepted", pid)
                del self._in_flight[pid]
                self._session.window.forget(pid)
                self._accept(item, confirmed=False)
            elif age > reply_timeout_s / 2:
                probe = True
        return probe

    def requeue_in_flight(self) -> None:
        """Written but never confirmed (connection lost, radio rebooted): write again when READY."""
        for item in self._in_flight.values():
            if not item.future.done():
                heapq.heappush(self._pending, item)
        self._in_flight.clear()

    def fail_all(self, message: str) -> None:
        for item in [*self._pending, *self._in_flight.values()]:
            if not item.future.done():
                item.future.set_exception(RadioError(message))
                item.future.exception()  # a caller that gave up must not cause "exception never retrieved"
        self._pending.clear()
        self._in_flight.clear()

    def _accept(self, item: _Send, *, confirmed: bool) -> None:
        self.stats.sent += 1
        if not confirmed:
            self.stats.unconfirmed += 1
        if not item.future.done():
            item.future.set_result(item.packet.packet_id)
