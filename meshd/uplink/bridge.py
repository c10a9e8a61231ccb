"""`UplinkBridge`: the hub's MQTT link to HQ (DESIGN.md sections 2, 6, 7).

One connection at a time, each a fresh `CustodyClient` (MQTT 5, persistent session, last will):

    connect -> retained status {"online": true, ...} -> subscribe to the HQ broadcast topic
            -> flush the outbox and gate broadcasts until the link drops or the bridge stops
            -> record the custody that did arrive -> back off with jitter -> connect again

The link is "detected by connecting": there is no separate probe. A drop shows up as the message
iterator ending (paho noticed EOF, an error or a missed keepalive), which ends the connection's task
group and so cancels the flush; nothing unacknowledged was marked, so the next connection resumes from
the store. A clean stop says `{"online": false}` itself (a clean DISCONNECT suppresses the will).

Accepted broadcasts are handed to `on_broadcast` by a task that outlives connections, so a link drop
never interrupts the relay while it stores one; the broker gets our PUBACK for a broadcast only after
`on_broadcast` returned (manual ack), so a crash before that makes the broker deliver it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from meshd.config import UplinkSection
from meshd.errors import MeshdError
from meshd.radio.backoff import Backoff
from meshd.store.hub import HubStore
from meshd.uplink.budget import HourlyByteBudget
from meshd.uplink.client import CustodyClient
from meshd.uplink.downlink import BroadcastGate, BroadcastRejected
from meshd.uplink.flush import Flusher
from meshd.uplink.target import broker_target
from meshd.wire.codec import Provenance
from meshd.wire.envelope import HQ_ORIGIN, Envelope
from meshd.wire.registry import Registry

log = logging.getLogger(__name__)
# paho logs every dropped socket at ERROR ("failed to receive on socket"); a satellite link drops daily and
# the bridge already logs each loss once as a warning, so paho only speaks up for what is really critical.
PAHO_LOG = logging.getLogger("meshd.uplink.paho")
PAHO_LOG.setLevel(logging.CRITICAL)

KEEPALIVE_S = 30  # a silent satellite drop is noticed within ~1.5x this; pings cost ~100 B/min
TIMEOUT_S = 30.0  # CONNACK/SUBACK/status PUBACK; TLS over a geostationary hop takes several 600 ms RTTs
SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our broadcast subscription (and queued broadcasts) a week
STOP_GRACE_S = 2.0  # on shutdown, let in-flight PUBACKs arrive so fewer reports are published twice
BROADCAST_PRIORITY = 50  # meshd.relay.priority.Prio.ALERT; the relay is a sibling layer, not imported here


class _Stopping(Exception):  # control flow: leaves the connection's task group on shutdown
    pass


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> str:
    """The first real error inside (possibly nested) task-group exception groups, for the log line."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    # aiomqtt's "Disconnected during message iteration" carries the reason (e.g. "Session taken over"
    # when another client uses our client id) only as its cause.
    return f"{exc} ({exc.__cause__})" if exc.__cause__ is not None else str(exc)


def default_backoff() -> Backoff:
    # Reconnecting costs a TLS handshake on a metered link: start at 1 s, never hammer faster than a minute.
    return Backoff(initial_s=1.0, max_s=60.0, healthy_after_s=60.0)


class UplinkBridge:
    """The hub side of the MQTT contract; use as `async with UplinkBridge(...) as uplink:`."""

    def __init__(
        self,
        config: UplinkSection,
        *,
        camp_id: int,
        store: HubStore,
        registry: Registry,
        pinned_hq_key: bytes | None,
        on_broadcast: Callable[[Envelope], Awaitable[None]],
        status: Callable[[], dict[str, Any]],
        provenance_of: Callable[[int, bool], Provenance] | None = None,
        on_custody: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
        require_subscriber: bool = True,
        poll_s: float = 1.0,
    ) -> None:
        self.config = config
        self.camp_id = camp_id
        self.target = broker_target(config, camp_id)
        self.topics = self.target.topics
        self.store = store
        self.registry = registry
        self.on_broadcast = on_broadcast
        self.status = status
        self.backoff = backoff or default_backoff()
        self.counters: Counter[str] = Counter()
        self.gate = BroadcastGate(store, pinned_hq_key if pinned_hq_key is not None else registry.hq_sign_key)
        self.flusher = Flusher(
            store=store,
            topics=self.topics,
            inflight=config.inflight,
            budget=HourlyByteBudget(config.bytes_per_hour),
            provenance_of=provenance_of or self._provenance,
            counters=self.counters,
            require_subscriber=require_subscriber,
            poll_s=poll_s,
            on_custody=on_custody,
        )
        self.connected = False
        self._connected_at: float | None = None
        self._last_connect: float | None = None
        self._client: CustodyClient | None = None
        self._stop = asyncio.Event()
        self._broadcasts: asyncio.Queue[tuple[Envelope, CustodyClient, int, int]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ public surface

    @property
    def rejected_broadcasts(self) -> Counter[str]:
        """Downlink messages rejected, by reason (see `downlink.Rejected`)."""
        return self.gate.rejected

    @property
    def last_success_monotonic(self) -> float | None:
        """When the broker last took custody of something (or we last connected): for `STATUS` replies."""
        times = [t for t in (self.flusher.last_custody, self._last_connect) if t is not None]
        return max(times) if times else None

    def wake(self) -> None:
        """The outbox has something new: publish it now instead of at the next poll."""
        self.flusher.wake()

    async def __aenter__(self) -> Self:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self.run(), name="meshd-uplink"),
            asyncio.create_task(self._broadcast_worker(), name="meshd-uplink-broadcasts"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Say offline, let in-flight PUBACKs land, disconnect; cancel and await every task."""
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        run, worker = tasks
        worker.cancel()
        try:
            # Bounded: a dead link must not hold up the daemon's shutdown.
            async with asyncio.timeout(STOP_GRACE_S * 4):
                await asyncio.shield(run)
        except TimeoutError:
            run.cancel()
        finally:
            for task in (run, worker):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # ------------------------------------------------------------ connection loop

    async def run(self) -> None:
        """Connect, serve, reconnect with capped backoff and jitter, until `stop()`."""
        while not self._stop.is_set():
            try:
                await self._session()
            except* (aiomqtt.MqttError, MeshdError) as group:
                first = _first_leaf(group)
                if self._connected_at is None:
                    self.counters["connect_failures"] += 1
                    log.warning("uplink: cannot connect to %s: %s", self.target.describe(), first)
                else:
                    self.counters["link_losses"] += 1
                    log.warning("uplink: link to %s lost: %s", self.target.describe(), first)
            if self._connected_at is not None:
                self.backoff.disconnected(time.monotonic())
            self._connected_at = None
            if self._stop.is_set():
                break
            delay = self.backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    def _new_client(self) -> CustodyClient:
        will = json.dumps({"online": False, "camp_id": self.camp_id}).encode()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        return CustodyClient(
            self.target.host,
            self.target.port,
            identifier=self.target.client_id,
            username=self.target.username,
            password=self.target.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            will=aiomqtt.Will(self.topics.status, will, qos=1, retain=True),
            tls_context=self.target.tls,
            keepalive=KEEPALIVE_S,
            timeout=TIMEOUT_S,
            max_inflight_messages=self.config.inflight,
            # Downlink traffic is a few broadcasts; a flood of junk must not grow memory without bound.
            max_queued_incoming_messages=256,
            logger=PAHO_LOG,
        )

    async def _session(self) -> None:
        client = self._new_client()
        try:
            await client.__aenter__()
        except BaseException:
            # aiomqtt leaves the socket open when CONNACK never came (timeout or cancellation).
            client.abort()
            raise
        self._client = client
        self.connected = True
        self._connected_at = self._last_connect = time.monotonic()
        self.backoff.connected(self._connected_at)
        self.counters["connects"] += 1
        if self.counters["connects"] > 1:
            self.counters["reconnects"] += 1
        log.info("uplink: connected to %s", self.target.describe())
        stopping = False
        try:
            await self._serve(client)
        except* _Stopping:
            stopping = True
        finally:
            self.connected = False
            self._client = None
            if stopping:
                await self._say_offline(client)
            else:
                # Not a clean stop: drop the socket without DISCONNECT, so the broker publishes our will.
                client.abort()
            await self.flusher.settle()
            await client.close(graceful=stopping, grace_s=STOP_GRACE_S)

    async def _serve(self, client: CustodyClient) -> None:
        online = {"online": True, "camp_id": self.camp_id, **self.status()}
        # default=str: a status value that is not JSON (a Path, an enum) must not take the uplink down.
        status = json.dumps(online, default=str).encode()
        await client.guarded(client.publish(self.topics.status, status, qos=1, retain=True))
        await client.guarded(client.subscribe(self.topics.broadcast, qos=1))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._downlink(client), name="meshd-uplink-downlink")
            tg.create_task(self.flusher.run(client), name="meshd-uplink-flush")
            await self._stop.wait()
            self.flusher.pause()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_GRACE_S):
                    await self.flusher.quiet()
            raise _Stopping

    async def _say_offline(self, client: CustodyClient) -> None:
        offline = json.dumps({"online": False, "camp_id": self.camp_id, "reason": "stopped"}).encode()
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(self.topics.status, offline, qos=1, retain=True, timeout=STOP_GRACE_S)

    # ------------------------------------------------------------ downlink

    async def _downlink(self, client: CustodyClient) -> None:
        """Gate every message on the broadcast topic; ends with MqttError when the link drops."""
        async for message in client.messages:
            payload = message.payload
            data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
            try:
                env = await self.gate.check(data)
            except BroadcastRejected as verdict:
                self.gate.count(verdict, str(message.topic))
                client.ack(message.mid, message.qos)  # refused for good: the broker must not send it again
                continue
            self._broadcasts.put_nowait((env, client, message.mid, message.qos))

    async def _broadcast_worker(self) -> None:
        while True:
            env, client, mid, qos = await self._broadcasts.get()
            try:
                await self.on_broadcast(env)
                # The relay normally records the id itself; make sure the replay floor survives a restart.
                if not await self.store.is_seen(HQ_ORIGIN, env.seq):
                    await self.store.accept(env, priority=BROADCAST_PRIORITY, carry=False)
            except MeshdError as exc:
                self.counters["broadcasts_failed"] += 1
                self.gate.forget(env.seq)
                log.error("uplink: broadcast %s could not be handed to the mesh: %s", env.id, exc)  # noqa: TRY400
                continue
            self.counters["broadcasts_accepted"] += 1
            log.info("uplink: HQ broadcast %s accepted for the mesh", env.id)
            if client is self._client:
                client.ack(mid, qos)

    # ------------------------------------------------------------ helpers

    def _provenance(self, origin: int, unverified: bool) -> Provenance:
        # The relay verified every envelope against the registry before storing it, so the outbox is
        # trusted here (re-verifying 100k signatures would halve the flush rate); HQ re-verifies anyway.
        if origin not in self.registry.camps:
            return Provenance.UNKNOWN_ORIGIN
        return Provenance.UNVERIFIED if unverified else Provenance.VERIFIED
