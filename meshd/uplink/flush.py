"""Flushing the outbox to the broker: priority order, a bounded in-flight window, custody only on PUBACK.

One `Flusher` lives as long as the bridge; `run(client)` drives one connection. Per envelope:

1. unbatch it into reports and build each report's JSON (the MQTT contract) and topic;
2. publish every report QoS 1, never more than `inflight` PUBLISHes awaiting their PUBACK;
3. once every report of the envelope has a custody PUBACK (see `client.is_custody`), hand the envelope to
   the marker, which records all its ids with `store.mark_envelopes_published(envelopes)` (that drops the
   envelope from the outbox and queues the mesh's Delivered notice).

An envelope stays in the in-flight set until its mark is committed, so the next `store.pending()` page
never offers it again. If the connection drops, everything not yet marked is still in the store and
is published again on the next connection: at least once, never lost, never marked without a PUBACK.
Envelopes whose PUBACK says "not authorized" or "no subscriber" are retried after `REFUSED_RETRY_S`
while the rest of the outbox keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from paho.mqtt.reasoncodes import ReasonCode

from meshd.errors import DecodeError, UplinkError
from meshd.store.hub import HubStore, OutboxEntry
from meshd.uplink.budget import HourlyByteBudget
from meshd.uplink.client import CustodyClient, is_custody
from meshd.uplink.target import Topics
from meshd.wire import codec
from meshd.wire.codec import Provenance
from meshd.wire.envelope import Kind

log = logging.getLogger(__name__)

Key = tuple[int, int]
# With a full window and not one PUBACK for this long, the broker or the path is wedged: reconnect.
ACK_TIMEOUT_S = 60.0
REFUSED_RETRY_S = 60.0
MARK_GATHER_S = 0.1
MARK_CHUNK = 100


class _Window:
    """At most `size` publishes awaiting their PUBACK (one taker: the publishing loop).

    Lighter than an asyncio.Semaphore under a timeout per wait, which the flush paid for every message:
    a window that never frees (a wedged broker) is caught by `Flusher._watchdog` instead.
    """

    __slots__ = ("_waiter", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiter: asyncio.Future[None] | None = None

    async def take(self) -> None:
        while self.free <= 0:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        self.free -= 1

    def give(self) -> None:
        self.free += 1
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass(slots=True)
class _Flight:
    """One envelope on its way: how many of its reports still wait for a PUBACK."""

    entry: OutboxEntry
    remaining: int
    refusal: ReasonCode | None = None


@dataclass(slots=True)
class _Plan:
    alert: bool  # carries an alert: exempt from the byte budget
    messages: list[tuple[str, bytes]] = field(default_factory=list)


class _Query:
    """A `store.pending()` read in flight, and the ids marked delivered while it was.

    A mark that commits after the read ran leaves its envelope in the result although it is no longer
    in flight: without this set it would be published a second time.
    """

    def __init__(self, task: asyncio.Task[list[OutboxEntry]], collectors: list[set[Key]]) -> None:
        self.task = task
        self.landed: set[Key] = set()
        self.collectors = collectors
        collectors.append(self.landed)

    async def result(self) -> list[OutboxEntry]:
        try:
            entries = await self.task
        finally:
            # By identity: another read's set may be equal (both empty) but is not ours to drop.
            self.collectors[:] = [c for c in self.collectors if c is not self.landed]
        return [e for e in entries if e.key not in self.landed]


class Flusher:
    def __init__(
        self,
        *,
        store: HubStore,
        topics: Topics,
        inflight: int,
        budget: HourlyByteBudget,
        provenance_of: Callable[[int, bool], Provenance],  # (origin, unverified)
        counters: Counter[str],
        require_subscriber: bool = True,
        poll_s: float = 1.0,
        on_custody: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.topics = topics
        self.inflight = inflight
        self.budget = budget
        self.provenance_of = provenance_of
        self.counters = counters
        self.require_subscriber = require_subscriber
        self.poll_s = poll_s
        self.on_custody = on_custody
        self.clock = clock
        self.page = max(1024, 16 * inflight)  # envelopes per read; a wake() cuts a page short
        self.last_custody: float | None = None
        self.held: set[Key] = set()  # never publishable (kind without a topic, undecodable): left to the relay
        self.deferred: dict[Key, float] = {}  # refused by the broker: retry after this monotonic time
        self._wake = asyncio.Event()
        self._paused = False
        self._done: list[OutboxEntry] = []  # PUBACKed, not yet recorded in the store
        self._writes: set[asyncio.Future[list[int]]] = set()  # mark_envelopes_published calls not yet committed
        self._refusals_logged: set[int] = set()  # PUBACK reason codes already logged
        self._mark_wanted = asyncio.Event()
        self._open: set[Key] = set()  # claimed on the current connection: in flight, or PUBACKed and not marked
        self._collectors: list[set[Key]] = []  # of the reads in flight (see _Query)
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._last_progress = clock()

    # ------------------------------------------------------------ control from the bridge

    def wake(self) -> None:
        """New outbox entries (or a reason to look again): do not wait for the next poll."""
        self._wake.set()

    def pause(self) -> None:
        """Stop starting new publishes (shutdown): what is in flight may still finish."""
        self._paused = True
        self._wake.set()

    async def quiet(self) -> None:
        """Wait until nothing is in flight or waiting to be marked."""
        await self._quiet.wait()

    async def settle(self) -> None:
        """After a connection ends: record what did get its PUBACK, forget what did not."""
        await self._mark_done()
        if self._writes:
            await asyncio.wait(self._writes)
        self._open.clear()
        self._collectors.clear()  # a prefetch cancelled with the connection never unregisters itself
        self._quiet.set()

    # ------------------------------------------------------------ the loop over one connection

    async def run(self, client: CustodyClient) -> None:
        self._paused = False
        window = _Window(self.inflight)
        self._last_progress = self.clock()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._mark_loop(), name="meshd-uplink-marks")
            tg.create_task(self._watchdog(client), name="meshd-uplink-watchdog")
            query: _Query | None = None
            while True:
                self._wake.clear()
                claimed = self._claim(await (query or self._query(tg)).result())
                query = None
                if not claimed:
                    await self._idle(self.poll_s)
                    continue
                # Read the next page on the store's thread while this one is published: on a large
                # outbox the query costs about as much as publishing a few hundred reports. It starts where
                # this page ends, so it does not fetch (and skip) the page again.
                last = claimed[-1]
                query = self._query(tg, after=(last.priority, last.seq))
                sent, blocked = await self._send(client, window, claimed)
                if sent and not self._wake.is_set():
                    continue
                # Woken (something new may outrank the prefetched page) or nothing could go: read afresh.
                await query.result()
                query = None
                if not sent:
                    await self._idle(self._budget_delay() if blocked else self.poll_s)

    def _query(self, tg: asyncio.TaskGroup, after: tuple[int, int] | None = None) -> _Query:
        now = self.clock()
        self.deferred = {k: t for k, t in self.deferred.items() if t > now}
        # Rows we will skip come first in priority order more often than not: ask for enough for a full page.
        # From the top, that is everything still open; after the current page, only its last entry and any of
        # the same priority and seq from other origins (`after` includes them; a window's worth is plenty).
        skipped = len(self.held) + len(self.deferred) + (len(self._open) if after is None else self.inflight)
        limit = self.page + skipped
        task = tg.create_task(
            self.store.pending(unpublished_only=True, limit=limit, after=after), name="meshd-uplink-page"
        )
        return _Query(task, self._collectors)

    def _claim(self, entries: list[OutboxEntry]) -> list[OutboxEntry]:
        """The entries of a page that are not in flight, held or deferred, now marked ours."""
        if self._paused:
            return []
        claimed = []
        for entry in entries:
            key = entry.key
            if key not in self._open and key not in self.held and key not in self.deferred:
                self._open.add(key)
                claimed.append(entry)
                if len(claimed) == self.page:  # the read may hold more; taking them all would snowball
                    break
        if claimed:
            self._quiet.clear()
        return claimed

    async def _send(self, client: CustodyClient, window: _Window, claimed: list[OutboxEntry]) -> tuple[int, bool]:
        """Publish the claimed entries in order; returns (envelopes sent, held back by the byte budget).

        Stops early when woken: a page is up to `page` envelopes, which on a slow satellite link is
        minutes of publishing, and a new alert must not wait behind it.
        """
        sent = 0
        blocked = False
        for index, entry in enumerate(claimed):
            if self._paused or self._wake.is_set():
                for rest in claimed[index:]:
                    self._release(rest.key)
                break
            plan = self._plan(entry)
            if plan is None:
                self._release(entry.key)
                continue
            if not plan.alert and not self.budget.allows(self.clock()):
                blocked = True  # keep going: a later alert in this page is exempt and may still go
                self._release(entry.key)
                continue
            await self._publish(client, window, entry, plan)
            sent += 1
        if blocked:
            self.counters["budget_waits"] += 1
        return sent, blocked

    def _budget_delay(self) -> float:
        return max(min(self.budget.wait_s(self.clock()), self.poll_s * 60), self.poll_s)

    def _release(self, key: Key) -> None:
        self._open.discard(key)
        if not self._open:
            self._quiet.set()

    async def _idle(self, delay: float) -> None:
        """Wait for a wake-up or the poll interval."""
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _watchdog(self, client: CustodyClient) -> None:
        """Publishes outstanding and not one PUBACK for ACK_TIMEOUT_S: the broker or the path is wedged (the
        socket can stay open for hours behind a satellite modem). Ends the connection; the bridge reconnects."""
        while True:
            await asyncio.sleep(min(ACK_TIMEOUT_S / 4, 5.0))
            if client.outstanding and self.clock() - self._last_progress > ACK_TIMEOUT_S:
                raise UplinkError(f"{client.outstanding} publishes without a PUBACK for {ACK_TIMEOUT_S:.0f} s")

    async def _publish(self, client: CustodyClient, window: _Window, entry: OutboxEntry, plan: _Plan) -> None:
        flight = _Flight(entry, len(plan.messages))
        acked = partial(self._acked, flight, window)
        for topic, payload in plan.messages:
            if not client.outstanding:
                self._last_progress = self.clock()  # the watchdog times PUBACKs from here
            if window.free <= 0:
                await window.take()
            else:
                window.free -= 1
            try:
                client.publish_qos1(topic, payload, acked)
            except BaseException:
                window.give()
                raise
            nbytes = len(topic) + len(payload)
            self.budget.spend(nbytes, self.clock())
            self.counters["published"] += 1
            self.counters["bytes"] += nbytes

    def _acked(self, flight: _Flight, window: _Window, reason: ReasonCode) -> None:
        window.give()
        self._last_progress = self.clock()
        self.counters["puback"] += 1
        if not is_custody(reason, require_subscriber=self.require_subscriber):
            self.counters["refused" if reason.is_failure else "no_subscribers"] += 1
            flight.refusal = reason
        flight.remaining -= 1
        if flight.remaining:
            return
        key = flight.entry.key
        if flight.refusal is None:
            self._done.append(flight.entry)
            self._mark_wanted.set()
            return
        self._release(key)
        self.deferred[key] = self.clock() + REFUSED_RETRY_S
        if flight.refusal.value in self._refusals_logged:
            return  # one line per reason until custody flows again; the counters keep the tally
        self._refusals_logged.add(flight.refusal.value)
        log.warning(
            "uplink: broker answered %s for %d:%d (%s); kept, retrying every %.0f s (more are counted, not logged)",
            flight.refusal,
            key[0],
            key[1],
            "check the broker ACL" if flight.refusal.is_failure else "is HQ subscribed with a persistent session?",
            REFUSED_RETRY_S,
        )

    # ------------------------------------------------------------ custody

    async def _mark_loop(self) -> None:
        while True:
            await self._mark_wanted.wait()
            # Let PUBACKs gather a moment: one commit (one fsync) per batch, not per envelope.
            await asyncio.sleep(MARK_GATHER_S)
            self._mark_wanted.clear()
            await self._mark_done()

    async def _mark_done(self) -> None:
        # Everything that got its PUBACKs while the previous write was committing goes in one write.
        batch, self._done = self._done, []
        if not batch:
            return
        envelopes = [(entry.origin, entry.seq, entry.n_items) for entry in batch]
        chunks = [envelopes[i : i + MARK_CHUNK] for i in range(0, len(envelopes), MARK_CHUNK)]
        # Several writes rather than one big one keep each short; concurrent writes share one commit.
        write = asyncio.gather(*(self.store.mark_envelopes_published(chunk) for chunk in chunks))
        # The bookkeeping runs when the write ends even if this task is cancelled (the link dropped):
        # the store commits the write regardless, and counters must match what it committed.
        write.add_done_callback(partial(self._marked, batch))
        self._writes.add(write)
        await asyncio.shield(write)

    def _marked(self, batch: list[OutboxEntry], write: asyncio.Future[list[int]]) -> None:
        self._writes.discard(write)
        failed = write.cancelled() or write.exception() is not None
        for entry in batch:
            self._open.discard(entry.key)
            if not failed:
                for landed in self._collectors:
                    landed.add(entry.key)
        if not self._open:
            self._quiet.set()
        if failed:
            # Left in the outbox (or partly marked): published again later, which is harmless.
            return
        self._refusals_logged.clear()
        self.counters["delivered"] += sum(entry.n_items for entry in batch)
        self.counters["envelopes_delivered"] += len(batch)
        self.last_custody = self.clock()
        if self.on_custody is not None:
            self.on_custody()

    # ------------------------------------------------------------ what to send for one envelope

    def _plan(self, entry: OutboxEntry) -> _Plan | None:
        try:
            rendered = codec.render_uplink(
                entry.envelope,
                min_age_s=entry.age_s,
                provenance_of=self.provenance_of,
                gateway=self.topics.camp_id,
                bodies=entry.uplink_bodies,
            )
        except DecodeError as exc:
            self._hold(entry, f"does not decode ({exc})")
            return None
        plan = _Plan(alert=False)
        for message in rendered:
            topic = self.topics.report(message.origin, message.kind)
            if topic is None:
                # Broadcasts and notices travel the mesh only; they are not ours to mark delivered.
                self._hold(entry, f"is a {message.kind.value}, which has no uplink topic", level=logging.DEBUG)
                return None
            plan.alert = plan.alert or message.kind is Kind.ALERT
            plan.messages.append((topic, message.payload))
        return plan

    def _hold(self, entry: OutboxEntry, why: str, level: int = logging.ERROR) -> None:
        self.held.add(entry.key)
        self.counters["not_published"] += 1
        log.log(level, "uplink: outbox entry %d:%d %s; left to the relay", entry.origin, entry.seq, why)
