"""`RadioLink`: the `Radio` protocol over a real (or virtual) Meshtastic radio, serial or TCP.

One supervisor task per link connects, handshakes, reads, heartbeats, notices a lost device and
reconnects with backoff, for as long as the link is open. Each connection runs three tasks in one
TaskGroup (reader, send pump, watchdog); the first to fail ends the connection and the others with it.

Delivery semantics of `send()` (details in `meshd.radio.sendqueue`):
  * Arguments are validated at once (`TooLargeError`, `EncodeError`); nothing is queued then.
  * The packet waits, by priority, until the session is READY and the radio's queue has room
    (QueueStatus back-pressure: never more in flight than the radio says it has free).
  * `send()` returns the packet id once the radio's QueueStatus accepted it into its transmit queue,
    or raises `RadioRefusedError` (duty cycle, TX disabled, PKI failure, queue still full).
  * Nothing handed to `send()` is dropped while the link is open: if the device disappears or reboots
    before accepting it, the packet is written again once the link is READY again and the caller just
    keeps waiting (wrap it in `asyncio.timeout` to bound that). Cancelling the caller withdraws a
    packet not yet written; one already written may still go out.
  * Beyond the radio's queue, delivery is the relay's business (want_ack, RoutingResult, custody):
    a packet the radio accepted is lost if the radio reboots before putting it on the air.
  * Closing the link fails every unfinished `send()` with `RadioError`.

Events: `next_event()` reads a bounded queue (`event_queue_size`). The reader never blocks on it (a
blocked reader would stall the QueueStatus replies that `send()` waits for); when it is full the oldest
event is dropped and counted in `events_dropped`. Peers retry unacknowledged reports, so a dropped
packet is late, not lost, but size the queue so that it does not happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType

from meshtastic.protobuf import config_pb2

from meshd.errors import RadioError
from meshd.radio.api import (
    BROADCAST,
    PRIVATE_PORT,
    TEXT_PORT,
    LinkState,
    LinkStateChanged,
    Priority,
    RadioEvent,
    ReceivedPacket,
    RoutingResult,
)
from meshd.radio.backoff import Backoff
from meshd.radio.framing import FrameStats
from meshd.radio.sendqueue import TEXT_INTERVAL_S, SendQueue
from meshd.radio.session import (
    ConfigComplete,
    DeviceLog,
    DeviceRebooted,
    NodeEntry,
    QueueReply,
    Session,
    SessionEvent,
    SessionState,
)
from meshd.radio.transport import DeviceAddress, close_stream, open_device, parse_device_url

log = logging.getLogger(__name__)
device_log = logging.getLogger("meshd.radio.device")

_LOG_LEVELS = {"CRITICAL": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING}


@dataclass(slots=True)
class LinkMetrics:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bad_frames: int = 0  # frames that were not a FromRadio protobuf
    oversize_frames: int = 0  # frame headers with a length over 512 (resynchronised)
    log_lines: int = 0
    connects: int = 0
    connect_failures: int = 0
    reconnects: int = 0  # connections lost (and retried) while the link was open
    handshakes: int = 0
    device_reboots: int = 0
    heartbeats: int = 0
    packets_sent: int = 0  # accepted into the radio's queue
    packets_resent: int = 0  # written again after a reconnect, reboot or full queue
    packets_refused: int = 0
    packets_unconfirmed: int = 0  # counted accepted without their own QueueStatus reply
    packets_received: int = 0
    routing_results: int = 0
    events_dropped: int = 0


class _ConnectionLost(Exception):
    """Ends one connection; the supervisor backs off and reconnects."""


class RadioLink:
    """A Meshtastic radio over serial or TCP, kept connected; implements `meshd.radio.api.Radio`."""

    def __init__(
        self,
        url: str,
        *,
        portnums: Iterable[int] = (PRIVATE_PORT,),
        heartbeat_s: float = 300.0,
        reply_timeout_s: float = 10.0,
        handshake_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        text_interval_s: float = TEXT_INTERVAL_S,
        partial_frame_s: float = 2.0,
        event_queue_size: int = 4096,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.address: DeviceAddress = parse_device_url(url)
        self._session = Session(portnums=portnums, rng=rng)
        self._heartbeat_s = heartbeat_s
        self._reply_timeout_s = reply_timeout_s
        self._handshake_timeout_s = handshake_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._partial_frame_s = partial_frame_s
        self._backoff = backoff if backoff is not None else Backoff()
        self._events: asyncio.Queue[RadioEvent] = asyncio.Queue(maxsize=event_queue_size)
        self._metrics = LinkMetrics()
        self._frame_stats = FrameStats()  # decoders of finished connections
        self._state = LinkState.DISCONNECTED
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._sends = SendQueue(self._session, text_interval_s=text_interval_s)
        self._supervisor: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._closed = False
        self._last_rx = 0.0
        self._last_queue_status = 0.0
        self._hb_sent_at = 0.0
        self._hb_waiting = False
        self._configure_started = 0.0
        self._failure_logged = False

    # -- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> RadioLink:
        if self._supervisor is not None or self._closed:
            raise RadioError("a RadioLink can be entered once")
        self._supervisor = asyncio.create_task(self._supervise(), name=f"radio-link {self.address}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Say goodbye to the radio, stop every task, fail unfinished sends. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._sends.fail_all("radio link closed before the radio accepted the packet")
        self._ready.set()  # wakes wait_ready() callers, which then see the link is closed
        self._set_state(LinkState.CLOSED)

    # -- the Radio protocol ----------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def my_node(self) -> int | None:
        return self._session.my_node

    @property
    def nodes(self) -> Mapping[int, NodeEntry]:
        """The radio's node DB (num -> user, public key), refreshed at each handshake and by NODEINFO."""
        return self._session.nodes

    @property
    def device_role(self) -> str:
        """The radio's configured role (CLIENT, CLIENT_MUTE, ROUTER, ...) as its config reported it; a role
        newer than our protobufs reads `ROLE_<number>` instead of stopping the hub."""
        number = self._session.config.device.role
        try:
            return str(config_pb2.Config.DeviceConfig.Role.Name(number))
        except ValueError:
            return f"ROLE_{number}"

    @property
    def session(self) -> Session:
        """Protocol state (config, channels, metadata); read it, do not drive it."""
        return self._session

    @property
    def metrics(self) -> LinkMetrics:
        """A snapshot of the counters."""
        s = self._session.stats
        q = self._sends.stats
        return dataclasses.replace(
            self._metrics,
            packets_sent=q.sent,
            packets_resent=q.resent,
            packets_refused=q.refused,
            packets_unconfirmed=q.unconfirmed,
            frames_in=s.frames_in,
            bad_frames=s.bad_frames,
            log_lines=s.log_lines,
            handshakes=s.handshakes,
            device_reboots=s.reboots,
            oversize_frames=self._frame_stats.oversize + self._session.decoder.stats.oversize,
        )

    async def wait_ready(self) -> None:
        """Wait until the session is READY (wrap in asyncio.timeout to bound it); RadioError once closed."""
        if not self._closed:
            await self._ready.wait()
        if self._closed:
            raise RadioError("radio link is closed")

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
        if self._closed or self._supervisor is None:
            raise RadioError("radio link is not open")
        encode = functools.partial(
            self._session.encode_packet,
            payload,
            to=to,
            portnum=portnum,
            hop_limit=hop_limit,
            want_ack=want_ack,
            priority=int(priority),
            pki=pki,
            channel=channel,
        )
        future = self._sends.add(encode, int(priority))  # validates now: TooLargeError etc. raise here
        self._wake.set()
        return await future

    async def send_text(self, text: str, *, to: int, want_ack: bool = True, channel: int = 0) -> int:
        priority = Priority.RELIABLE if want_ack else Priority.DEFAULT
        return await self.send(
            text.encode("utf-8"), to=to, portnum=TEXT_PORT, want_ack=want_ack, priority=priority, channel=channel
        )

    async def next_event(self) -> RadioEvent:
        if self._closed and self._events.empty():
            raise RadioError("radio link is closed")
        return await self._events.get()

    # -- supervisor ------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._set_state(LinkState.CONNECTING, str(self.address))
            try:
                reader, writer = await open_device(self.address, timeout_s=self._connect_timeout_s)
            except RadioError as exc:
                self._metrics.connect_failures += 1
                if not self._failure_logged:  # once per outage, not once a second
                    log.warning("%s; retrying with backoff", exc)
                    self._failure_logged = True
                await self._back_off(str(exc))
                continue
            self._metrics.connects += 1
            reason = "connection ended"
            try:
                await self._run_connection(reader, writer)
            except* _ConnectionLost as group:
                reason = str(group.exceptions[0])
            except* (OSError, RadioError) as group:
                reason = f"I/O error: {group.exceptions[0]}"
            except* Exception as group:  # a bug must not silence the hub's radio for good: log, reconnect
                log.exception("radio connection failed unexpectedly")
                reason = f"internal error: {group.exceptions[0]!r}"
            finally:
                await self._end_connection(writer)
            self._backoff.disconnected(loop.time())
            self._metrics.reconnects += 1
            log.warning("radio %s lost: %s", self.address, reason)
            self._failure_logged = True
            self._set_state(LinkState.DISCONNECTED, reason)
            await self._back_off(reason)

    async def _back_off(self, reason: str) -> None:
        delay = self._backoff.next_delay()
        self._set_state(LinkState.BACKOFF, f"retry in {delay:.2f} s ({reason})")
        await asyncio.sleep(delay)

    async def _run_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self._writer = writer
        now = loop.time()
        self._last_rx = self._hb_sent_at = self._last_queue_status = self._configure_started = now
        self._hb_waiting = False
        self._set_state(LinkState.CONFIGURING, str(self.address))
        self._write(self._session.start())
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read_loop(reader))
            tasks.create_task(self._pump_loop())
            tasks.create_task(self._watchdog_loop())

    async def _end_connection(self, writer: asyncio.StreamWriter) -> None:
        if self._closed and not writer.transport.is_closing():
            # Polite goodbye so the radio stops queueing packets for a client that is gone.
            with contextlib.suppress(OSError, TimeoutError):
                writer.write(self._session.disconnect())
                async with asyncio.timeout(0.5):
                    await writer.drain()
        self._writer = None
        self._ready.clear()
        await close_stream(writer)
        self._sends.requeue_in_flight()
        self._accumulate_decoder_stats()

    def _accumulate_decoder_stats(self) -> None:
        d = self._session.decoder.stats
        self._frame_stats.oversize += d.oversize
        d.oversize = 0

    # -- connection tasks ------------------------------------------------------------------------------

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        session = self._session
        while True:
            # Mid-frame, a quiet spell means the frame was cut short (device reset): stop waiting for it.
            quiet_s = self._partial_frame_s if session.decoder.buffered else None
            try:
                async with asyncio.timeout(quiet_s):
                    data = await reader.read(4096)
            except TimeoutError:
                self._handle(session.expire_partial())
                continue
            except OSError as exc:  # serial.SerialException is an OSError too
                raise _ConnectionLost(f"read failed: {exc}") from exc
            if not data:
                raise _ConnectionLost("device closed the connection")
            self._last_rx = loop.time()
            self._hb_waiting = False
            self._metrics.bytes_in += len(data)
            self._handle(session.receive(data))

    def _handle(self, events: list[SessionEvent]) -> None:
        for event in events:
            self._on_event(event)
        out = self._session.data_to_send()
        if out:
            self._write(out)
        self._wake.set()

    async def _pump_loop(self) -> None:
        """Write queued packets while the radio has room; the only writer of packets."""
        loop = asyncio.get_running_loop()
        while True:
            wait_s = self._sends.write_ready(loop.time(), self._write)
            if wait_s is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
            self._wake.clear()
            if self._writer is not None and self._writer.transport.get_write_buffer_size():
                await self._writer.drain()

    async def _watchdog_loop(self) -> None:
        loop = asyncio.get_running_loop()
        tick = max(0.02, min(1.0, self._heartbeat_s / 4, self._reply_timeout_s / 4))
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            configuring = self._session.state is not SessionState.READY
            if configuring and now - self._configure_started > self._handshake_timeout_s:
                raise _ConnectionLost(f"no complete configuration within {self._handshake_timeout_s:g} s")
            if self._hb_waiting and now - self._hb_sent_at > self._reply_timeout_s:
                raise _ConnectionLost(f"radio silent for {self._reply_timeout_s:g} s after a heartbeat")
            if not self._hb_waiting and now - self._hb_sent_at >= self._heartbeat_s:
                self._heartbeat(now)
            if configuring:
                continue
            probe = self._sends.settle_silent(now, self._reply_timeout_s, self._last_rx)
            # Waiting for room, the radio's "room again" status may have been dropped: ask too.
            starved = self._sends.waiting and self._session.room == 0
            if probe or (starved and now - self._last_queue_status > self._reply_timeout_s / 2):
                self._probe(now)
            self._wake.set()  # overdue packets settled: let the pump see the room

    def _probe(self, now: float) -> None:
        if not self._hb_waiting:
            self._heartbeat(now)

    def _heartbeat(self, now: float) -> None:
        self._metrics.heartbeats += 1
        self._hb_sent_at = now
        self._hb_waiting = True
        self._write(self._session.heartbeat())

    def _write(self, data: bytes) -> None:
        if self._writer is None:
            raise _ConnectionLost("no connection")
        if self._writer.transport.is_closing():
            raise _ConnectionLost("transport closed")
        self._writer.write(data)
        self._metrics.frames_out += 1
        self._metrics.bytes_out += len(data)

    # -- events ----------------------------------------------------------------------------------------

    def _on_event(self, event: SessionEvent) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(event, ReceivedPacket):
            self._metrics.packets_received += 1
            self._emit(event)
        elif isinstance(event, RoutingResult):
            self._metrics.routing_results += 1
            self._emit(event)
        elif isinstance(event, QueueReply):
            self._last_queue_status = loop.time()
            self._sends.on_reply(event)
        elif isinstance(event, ConfigComplete):
            self._backoff.connected(loop.time())
            self._failure_logged = False
            self._ready.set()
            self._set_state(LinkState.READY, f"node !{event.my_node:08x}, {event.nodes} nodes")
            self._heartbeat(loop.time())  # its QueueStatus tells us how much room the radio has
        elif isinstance(event, DeviceRebooted):
            self._ready.clear()
            self._configure_started = loop.time()
            self._sends.requeue_in_flight()
            self._set_state(LinkState.CONFIGURING, "device rebooted")
        elif isinstance(event, DeviceLog):
            level = _LOG_LEVELS.get(event.level, logging.DEBUG)
            device_log.log(level, "%s", event.text)

    def _set_state(self, state: LinkState, detail: str = "") -> None:
        if state is self._state and state is not LinkState.BACKOFF:
            return
        self._state = state
        log.debug("radio %s: %s %s", self.address, state.value, detail)
        self._emit(LinkStateChanged(state, detail))

    def _emit(self, event: RadioEvent) -> None:
        if self._events.full():
            self._events.get_nowait()
            self._metrics.events_dropped += 1
            if self._metrics.events_dropped in (1, 10, 100) or self._metrics.events_dropped % 1000 == 0:
                log.warning("radio event queue full: %d events dropped so far", self._metrics.events_dropped)
        self._events.put_nowait(event)
