"""What the layers above see of a radio: values and a `Radio` protocol, no serial or TCP details.

The relay and field-entry code depend on this module only, so they run unchanged against a real
radio (`RadioLink` over serial/TCP), a virtual radio of the simulator, or an in-memory fake in unit tests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

BROADCAST = 0xFFFFFFFF
PRIVATE_PORT = 256  # PRIVATE_APP
TEXT_PORT = 1  # TEXT_MESSAGE_APP
ROUTING_PORT = 5  # ROUTING_APP


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"  # not yet started, or the transport is gone
    CONNECTING = "connecting"  # opening serial port / TCP socket
    CONFIGURING = "configuring"  # want_config sent, waiting for config_complete_id
    READY = "ready"  # session up: packets flow
    BACKOFF = "backoff"  # waiting before the next reconnect attempt
    CLOSED = "closed"  # closed on purpose


class Priority(enum.IntEnum):
    """`MeshPacket.Priority` values of the firmware."""

    BACKGROUND = 10
    DEFAULT = 64
    RELIABLE = 70
    HIGH = 100
    ALERT = 110


@dataclass(frozen=True, slots=True)
class ReceivedPacket:
    """A decoded packet the radio delivered to us (our private port or a text message)."""

    from_node: int
    to_node: int
    packet_id: int
    portnum: int
    payload: bytes
    channel: int = 0
    hop_start: int = 0
    hop_limit: int = 0
    rx_snr: float = 0.0
    rx_rssi: int = 0
    pki_encrypted: bool = False
    public_key: bytes = b""
    want_ack: bool = False

    @property
    def hops_away(self) -> int:
        return max(self.hop_start - self.hop_limit, 0)


@dataclass(frozen=True, slots=True)
class RoutingResult:
    """The fate of a packet we sent with want_ack: ACK (`error == "NONE"`) or a NAK reason."""

    packet_id: int
    error: str  # Routing.Error name: NONE, MAX_RETRANSMIT, DUTY_CYCLE_LIMIT, NO_RESPONSE, TOO_LARGE, ...
    from_node: int = 0

    @property
    def ok(self) -> bool:
        return self.error == "NONE"


@dataclass(frozen=True, slots=True)
class LinkStateChanged:
    state: LinkState
    detail: str = ""


RadioEvent = ReceivedPacket | RoutingResult | LinkStateChanged


class Radio(Protocol):
    """A Meshtastic radio as the relay uses it."""

    @property
    def state(self) -> LinkState: ...

    @property
    def my_node(self) -> int | None:
        """Our node number once the session is configured."""
        ...

    async def send(
        self,
        payload: bytes,
        *,
        to: int = BROADCAST,
        portnum: int = PRIVATE_PORT,
        hop_limit: int | None = None,
        want_ack: bool = False,
        priority: Priority = Priority.DEFAULT,
        pki: bool = False,
        channel: int = 0,
    ) -> int:
        """Queue one packet on the radio, waiting for room in its queue; returns the packet id."""
        ...

    async def send_text(self, text: str, *, to: int, want_ack: bool = True, channel: int = 0) -> int:
        """Send a TEXT_MESSAGE_APP message (replies to field teams)."""
        ...

    async def next_event(self) -> RadioEvent:
        """The next received packet, routing result or link state change."""
        ...
