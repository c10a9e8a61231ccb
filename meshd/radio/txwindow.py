"""How many more packets the radio's transmit queue has room for, from its `QueueStatus` replies.

The firmware answers every `ToRadio.packet` with `QueueStatus{res, free, maxlen, mesh_packet_id}` (in
the order the packets were written), answers a heartbeat with an unnumbered one (`mesh_packet_id = 0`,
and it may overtake replies still queued), and sends an unnumbered one by itself when a full queue gets
room again. Replies can be lost: the firmware drops the oldest when its per-client reply queue is full
and says nothing at all for a packet id it saw recently (our re-send after a reconnect).

The estimate is therefore deliberately conservative: room = last reported free - packets written since
that report was produced. A numbered reply reflects every packet up to and including its own, so the
packets written after it are exactly what is still in flight. An unnumbered reply reflects an unknown
prefix of what we wrote, so nothing in flight is assumed covered by it; that can only under-estimate
the room, never exceed what the radio has.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# ERRNO values of the firmware (MeshTypes.h) share QueueStatus.res with Routing.Error codes.
ERRNO_OK = 0
ERRNO_UNKNOWN = 32  # also what a full transmit queue returns: retry when there is room
ERRNO_NO_INTERFACES = 33
ERRNO_DISABLED = 34  # tx disabled; Routing.Error PKI_FAILED has the same number
ERRNO_SHOULD_RELEASE = 35  # success: delivered locally without the TX queue (not PKI_UNKNOWN_PUBKEY)
_ERRNO_NAMES = {
    ERRNO_UNKNOWN: "ERRNO_UNKNOWN",
    ERRNO_NO_INTERFACES: "NO_INTERFACES",
    ERRNO_DISABLED: "TX_DISABLED",
}


@dataclass(frozen=True, slots=True)
class Resolution:
    """What became of one packet we wrote: accepted into the radio's queue, or refused with `res`."""

    packet_id: int
    res: int
    confirmed: bool = True  # False: its own reply never came, a later one showed the radio processed it

    @property
    def accepted(self) -> bool:
        return self.res in (ERRNO_OK, ERRNO_SHOULD_RELEASE)


def res_name(res: int, routing_names: dict[int, str]) -> str:
    """A readable name for a QueueStatus.res value (firmware ERRNO first, then Routing.Error)."""
    if res in (ERRNO_OK, ERRNO_SHOULD_RELEASE):
        return "NONE"
    if res in _ERRNO_NAMES:
        return _ERRNO_NAMES[res]
    return routing_names.get(res, f"ERRNO_{res}")


class TxWindow:
    """Queue-room bookkeeping for one connection (reset when the transport or the device restarts)."""

    def __init__(self, *, assumed_free: int = 1) -> None:
        # Before the first QueueStatus we allow `assumed_free` packets: enough to get a reply that says more.
        self._assumed_free = assumed_free
        self._free: int | None = None
        self.maxlen: int | None = None
        self._in_flight: OrderedDict[int, None] = OrderedDict()  # written, own reply not seen, write order

    def reset(self) -> None:
        self._free = None
        self.maxlen = None
        self._in_flight.clear()

    @property
    def room(self) -> int:
        base = self._assumed_free if self._free is None else self._free
        return max(base - len(self._in_flight), 0)

    @property
    def in_flight(self) -> tuple[int, ...]:
        return tuple(self._in_flight)

    @property
    def reported_free(self) -> int | None:
        return self._free

    def written(self, packet_id: int) -> None:
        self._in_flight.pop(packet_id, None)
        self._in_flight[packet_id] = None

    def forget(self, packet_id: int) -> bool:
        """Stop counting a packet whose reply will not come (the caller decided its fate)."""
        return self._in_flight.pop(packet_id, 0) is None

    def on_status(self, *, res: int, free: int, maxlen: int, packet_id: int) -> list[Resolution]:
        """Apply one QueueStatus; returns the packets it resolved (in write order)."""
        if maxlen:
            self.maxlen = maxlen
        if packet_id == 0 or packet_id not in self._in_flight:
            # Unnumbered (heartbeat / room-again) or a reply to something no longer tracked: the radio's
            # current free count, with nothing we have in flight assumed to be included in it.
            self._free = free
            return []
        resolved: list[Resolution] = []
        while self._in_flight:
            first, _ = self._in_flight.popitem(last=False)
            if first == packet_id:
                resolved.append(Resolution(first, res))
                break
            # Replies come in write order, so an earlier packet without one was processed and its
            # reply dropped by the firmware: most likely accepted, but we cannot know.
            resolved.append(Resolution(first, ERRNO_OK, confirmed=False))
        self._free = free
        return resolved
