"""`meshd hq run`: subscribe to every camp's reports, verify, de-duplicate, store — acknowledging late.

Delivery semantics (DESIGN.md section 6, "exactly-once at HQ"):

- The session is persistent (clean_session=False, a fixed client id) and the subscription is QoS 1, so the
  broker keeps messages for HQ while the worker is down or reconnecting.
- paho (under aiomqtt) normally sends PUBACK as soon as a PUBLISH arrives, before the application has seen
  it; a crash between that PUBACK and the database commit would lose the message, because the broker
  considers it delivered. aiomqtt 2.5 does not expose paho's `manual_ack`, so the worker switches it on
  on the underlying paho client and sends each PUBACK itself, in arrival order, only after the batch that
  contains the message is committed. A crash before the commit means the broker redelivers; a crash after
  the commit but before the PUBACK means a redelivered duplicate, which the upsert turns into a counted
  no-op. At-least-once delivery + idempotent storage = exactly one row per report.
- Messages are taken in batches of whatever has arrived (at most the broker's in-flight window, 20 by
  default in Mosquitto), one transaction per batch, so throughput does not pay one commit per message.
- With `shared_group`, several workers subscribe to `$share/<group>/...` and the broker splits the feed
  between them; each worker needs its own client id. Nothing here assumes it is the only worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from meshd.aio import wait_event
from meshd.errors import StoreError
from meshd.hq.config import HQConfig, MqttSection, default_client_id, parse_broker_url
from meshd.hq.db import HQStore, open_store
from meshd.hq.ingest import Ingestor, Topics

log = logging.getLogger(__name__)
MAX_BATCH = 256
STOP_GRACE_S = 5.0


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with jitter (each delay drawn from [cap/2, cap] of the current step)."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    _current: float = 0.0

    def next(self) -> float:
        self._current = self.initial_s if self._current == 0 else min(self._current * self.factor, self.max_s)
        return self._current * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._current = 0.0


def subscription_filters(prefix: str, shared_group: str = "") -> list[str]:
    """The topic filters a worker subscribes to: every camp topic and the downlink (to archive broadcasts)."""
    topics = Topics(prefix)
    filters = [topics.camp_filter, topics.broadcast]
    if shared_group:
        filters = [f"$share/{shared_group}/{f}" for f in filters]
    return filters


def tls_parameters(mqtt: MqttSection) -> aiomqtt.TLSParameters:
    """TLS for mqtts:// — the configured CA (else the system's) and an optional client certificate."""
    return aiomqtt.TLSParameters(
        ca_certs=str(mqtt.ca_file) if mqtt.ca_file else None,
        certfile=str(mqtt.cert_file) if mqtt.cert_file else None,
        keyfile=str(mqtt.key_file) if mqtt.key_file else None,
    )


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode("utf-8")


class HQWorker:
    """One HQ ingest worker. `run(stop)` returns when `stop` is set; errors are retried, never raised."""

    def __init__(
        self,
        config: HQConfig,
        ingestor: Ingestor,
        *,
        client_id: str | None = None,
        database: str | None = None,
        backoff: Backoff | None = None,
        max_batch: int = MAX_BATCH,
        store_factory: Callable[[str], HQStore] = open_store,
    ) -> None:
        self.config = config
        self.ingestor = ingestor
        self.client_id = client_id or config.mqtt.client_id or default_client_id()
        self.database = database or config.hq.database
        self.backoff = backoff or Backoff()
        self.max_batch = max_batch
        self._store_factory = store_factory
        self.broker = parse_broker_url(config.mqtt.url, username=config.mqtt.username, password=config.mqtt.password)
        self.filters = subscription_filters(config.mqtt.prefix, config.mqtt.shared_group)
        self.counters: collections.Counter[str] = collections.Counter()
        self.subscribed = asyncio.Event()  # set while a session is subscribed (tests and health checks)
        self.sessions = 0
        self.stop_grace_s = STOP_GRACE_S

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        store: HQStore | None = None
        try:
            while not stop.is_set():
                try:
                    if store is None:
                        store = self._store_factory(self.database)
                        await store.open()
                    await self._session_until(store, stop)
                except aiomqtt.MqttError as exc:
                    self.counters["mqtt_disconnects"] += 1
                    log.warning("MQTT connection to %s:%d lost or refused: %s", self.broker.host, self.broker.port, exc)
                except StoreError as exc:
                    self.counters["store_errors"] += 1
                    log.warning("HQ database error: %s; unacknowledged messages will be redelivered", exc)
                    if store is not None:
                        with contextlib.suppress(StoreError, OSError):
                            await store.close()
                    store = None
                finally:
                    self.subscribed.clear()
                if not stop.is_set():
                    delay = self.backoff.next()
                    log.info("reconnecting in %.1f s", delay)
                    await wait_event(stop, delay)
        finally:
            if store is not None:
                await store.close()
            log.info("HQ worker %s stopped: %s", self.client_id, dict(sorted(self.counters.items())))

    async def _session_until(self, store: HQStore, stop: asyncio.Event) -> None:
        """Run one session; on stop, let it finish the batch in hand (it sees `stop` between batches), but
        do not wait longer than `stop_grace_s`, e.g. for a connection attempt to an unreachable broker."""
        session = asyncio.create_task(self._session(store, stop), name="meshd-hq-session")
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not session.done():
                await asyncio.wait({session}, timeout=self.stop_grace_s)
        finally:
            stopper.cancel()
            if not session.done():
                session.cancel()  # nothing is lost: un-acknowledged messages are redelivered
                await asyncio.wait({session})
        if not session.cancelled():
            session.result()  # re-raise a lost connection or a database error to the retry loop

    def _client(self) -> aiomqtt.Client:
        mqtt = self.config.mqtt
        tls = tls_parameters(mqtt) if self.broker.tls else None
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            clean_session=False,  # persistent session: the broker queues QoS 1 messages while we are away
            username=self.broker.username,
            password=self.broker.password,
            keepalive=mqtt.keepalive_s,
            tls_params=tls,
        )
        # aiomqtt 2.5 has no manual-ack option; paho has it. Acks are sent after the DB commit (see module doc).
        client._client.manual_ack_set(True)
        return client

    async def retire(self, idle_s: float = 2.0) -> int:
        """Scale down: drain this worker's persistent session, then delete it. Returns messages drained.

        A persistent session outlives its worker, and with a shared subscription the broker (Mosquitto, at
        least) keeps assigning a share of new messages to it while nobody is connected: a worker removed
        for good would sit on reports forever. So: connect with the session, unsubscribe (no new
        assignments), store and acknowledge what was queued for it until `idle_s` passes with nothing, and
        finally connect once with a clean session, which deletes it on the broker."""
        store = self._store_factory(self.database)
        await store.open()
        try:
            client = self._client()
            async with client:
                await client.unsubscribe(self.filters)
                queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
                reader = asyncio.create_task(self._read(client, queue), name="meshd-hq-reader")
                never = asyncio.Event()
                try:
                    while (batch := await self._next_batch(queue, never, reader, idle_s)) is not None:
                        await self._handle(client, store, batch)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await reader
        finally:
            await store.close()
        mqtt = self.config.mqtt
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            clean_session=True,  # deletes the persistent session and anything still queued for it
            username=self.broker.username,
            password=self.broker.password,
            tls_params=tls_parameters(mqtt) if self.broker.tls else None,
        ):
            pass
        log.info(
            "HQ worker %s retired: %d messages drained, session removed", self.client_id, self.counters["received"]
        )
        return self.counters["received"]

    async def _session(self, store: HQStore, stop: asyncio.Event) -> None:
        client = self._client()
        async with client:
            await client.subscribe([(f, 1) for f in self.filters])
            self.sessions += 1
            self.backoff.reset()
            self.subscribed.set()
            log.info("HQ worker %s subscribed to %s", self.client_id, ", ".join(self.filters))
            queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
            reader = asyncio.create_task(self._read(client, queue), name="meshd-hq-reader")
            try:
                while True:
                    batch = await self._next_batch(queue, stop, reader)
                    if batch is None:
                        return
                    await self._handle(client, store, batch)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await reader

    @staticmethod
    async def _read(client: aiomqtt.Client, queue: asyncio.Queue[aiomqtt.Message]) -> None:
        async for message in client.messages:
            queue.put_nowait(message)

    async def _next_batch(
        self,
        queue: asyncio.Queue[aiomqtt.Message],
        stop: asyncio.Event,
        reader: asyncio.Task[None],
        idle_s: float | None = None,
    ) -> list[aiomqtt.Message] | None:
        """Whatever has arrived (at least one message); None when stopping or idle for `idle_s`.

        Re-raises the reader's error (a lost connection)."""
        if queue.empty():
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopper, reader}, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()  # an un-popped item stays in the queue
                if reader.done() and not stop.is_set():
                    exc = reader.exception() if not reader.cancelled() else None
                    raise exc or aiomqtt.MqttError("message stream ended")
                return None
            batch = [getter.result()]
        else:
            batch = [queue.get_nowait()]
        if stop.is_set():
            return None  # unprocessed, unacknowledged: the broker keeps them for the next session
        while len(batch) < self.max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        return batch

    async def _handle(self, client: aiomqtt.Client, store: HQStore, batch: list[aiomqtt.Message]) -> None:
        counts: collections.Counter[str] = collections.Counter()
        reports, broadcasts = [], []
        for message in batch:
            result = self.ingestor.ingest(message.topic.value, _payload_bytes(message.payload))
            counts["received"] += 1
            if result.reject is not None:
                counts[f"rejected.{result.reject.value}"] += 1
            for flag in result.flags:
                counts[f"flag.{flag.value}"] += 1
            reports.extend(result.reports)
            broadcasts.extend(result.broadcasts)
        outcome = await store.commit(reports, broadcasts=broadcasts, counters=counts, worker=self.client_id)
        # Durable now: acknowledge, in arrival order (MQTT 3.1.1 section 4.6).
        for message in batch:
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)
        counts["stored"] += outcome.inserted
        counts["duplicate"] += outcome.duplicates
        self.counters.update(counts)
        if outcome.inserted:
            log.debug("stored %d new reports (%d duplicates)", outcome.inserted, outcome.duplicates)
