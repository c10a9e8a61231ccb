"""`meshd hq run` against the real local Mosquitto (127.0.0.1:1883) and the real PostgreSQL.

Every test uses its own topic prefix, so tests never see each other's traffic, and removes the persistent
sessions it created."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from meshd.errors import StoreError
from meshd.hq.config import HQConfig
from meshd.hq.db import HQStore, open_store
from meshd.hq.db_sqlite import SQLiteStore
from meshd.hq.ingest import Ingestor, Topics
from meshd.hq.records import BroadcastRecord, InsertOutcome, ReportRecord
from meshd.hq.worker import Backoff, HQWorker, subscription_filters
from meshd.wire.envelope import Kind
from tests.hq_support import (
    NEEDS,
    World,
    envelope,
    forget_sessions,
    make_world,
    needs_payload,
    payloads,
    pg_url,  # noqa: F401 - fixture
    publisher,
    tamper,
    unique_prefix,
    wait_until,
)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


@contextlib.asynccontextmanager
async def running(
    config: HQConfig, world: World, *, client_id: str, store_factory: Callable[[str], HQStore] = open_store
) -> AsyncIterator[HQWorker]:
    ingestor = Ingestor(world.registry, prefix=config.mqtt.prefix)
    worker = HQWorker(config, ingestor, client_id=client_id, backoff=Backoff(0.05, 0.2), store_factory=store_factory)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.subscribed.wait(), 10)
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_subscription_filters() -> None:
    assert subscription_filters("meshd") == ["meshd/v1/camp/+/+", "meshd/v1/hq/broadcast"]
    assert subscription_filters("x", "hq") == ["$share/hq/x/v1/camp/+/+", "$share/hq/x/v1/hq/broadcast"]


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next() for _ in range(10)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(d <= 4.0 for d in delays)
    assert delays[-1] >= 2.0
    backoff.reset()
    assert backoff.next() <= 0.5


async def _publish(items: Sequence[tuple[str, bytes]], client_id: str) -> None:
    async with publisher(client_id) as client:
        for topic, payload in items:
            await client.publish(topic, payload, qos=1)


async def test_two_hubs_two_workers_shared_subscription_postgres(world: World, pg_url: str) -> None:  # noqa: F811
    prefix, group = unique_prefix(), f"g{uuid.uuid4().hex[:8]}"
    topics = Topics(prefix)
    config = world.config(pg_url, prefix=prefix, shared_group=group)
    # The same reports reach HQ through two hubs: hub A has 101:1-60 and 102:1-30, hub B 101:31-90 and 102:1-30.
    reports = {(o, s): needs_payload(world, o, s) for o in (101, 102) for s in range(1, 91) if o == 101 or s <= 30}
    hub_a = [(topics.camp(o, "needs"), p) for (o, s), p in reports.items() if (o == 101 and s <= 60) or o == 102]
    hub_b = [(topics.camp(o, "needs"), p) for (o, s), p in reports.items() if (o == 101 and s > 30) or o == 102]
    ids = (f"w1-{uuid.uuid4().hex[:8]}", f"w2-{uuid.uuid4().hex[:8]}")
    try:
        async with running(config, world, client_id=ids[0]) as w1, running(config, world, client_id=ids[1]) as w2:
            await asyncio.gather(_publish(hub_a, "hubA-" + prefix), _publish(hub_b, "hubB-" + prefix))
            total = len(hub_a) + len(hub_b)
            await wait_until(lambda: w1.counters["received"] + w2.counters["received"] >= total, within=20)
            assert w1.counters["received"] > 0
            assert w2.counters["received"] > 0  # the broker split the feed
        async with open_store(pg_url) as store:
            stored = await store.report_ids()
            stats = await store.stats()
    finally:
        await forget_sessions(*ids)
    assert sorted(stored) == sorted(f"{o}:{s}" for o, s in reports)
    assert len(stored) == len(set(stored)) == 120
    assert stats["stored"] == 120
    assert stats["duplicate"] == total - 120
    assert stats["received"] == total


async def test_sqlite_worker_rejects_forgeries_and_counts_them(world: World, tmp_path: Path) -> None:
    prefix = unique_prefix()
    topics = Topics(prefix)
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    config = world.config(url, prefix=prefix)
    good = needs_payload(world, 101, 1)
    forged = payloads(envelope(world, Kind.NEEDS, NEEDS, origin=102, seq=1, key=world.stranger.sign))[0][1]
    alert = payloads(envelope(world, Kind.ALERT, {"type": "fire", "count": 1}, origin=103, seq=4))[0][1]
    hq_broadcast = payloads(envelope(world, Kind.BROADCAST, {"text": "hi"}, origin=0, seq=9, key=world.hq.sign))[0][1]
    fake_broadcast = payloads(envelope(world, Kind.BROADCAST, {"text": "x"}, origin=0, seq=9, key=world.stranger.sign))
    items = [
        (topics.camp(101, "needs"), good),
        (topics.camp(101, "needs"), good),  # the same report again
        (topics.camp(102, "needs"), forged),
        (topics.camp(101, "needs"), tamper(needs_payload(world, 101, 2))),
        (topics.camp(101, "needs"), b"{garbage"),
        (topics.camp(101, "needs"), b'{"envelope": "!!"}'),
        (topics.camp(103, "alert"), alert),
        (topics.broadcast, hq_broadcast),
        (topics.broadcast, fake_broadcast[0][1]),
    ]
    client_id = f"hq-{uuid.uuid4().hex[:8]}"
    try:
        async with running(config, world, client_id=client_id) as worker:
            await _publish(items, "hub-" + prefix)
            await wait_until(lambda: worker.counters["received"] >= len(items))
        async with open_store(url) as store:
            ids = await store.report_ids()
            stats = await store.stats()
            broadcasts = await store.broadcasts()
    finally:
        await forget_sessions(client_id)
    assert ids == ["101:1", "103:4"]
    assert stats["rejected.bad_signature"] == 3  # forged, tampered, fake broadcast
    assert stats["rejected.bad_json"] == 1
    assert stats["rejected.bad_envelope"] == 1
    assert stats["duplicate"] == 1
    assert [b.id for b in broadcasts] == ["0:9"]


class FlakyStore(SQLiteStore):
    """Fails its first commit, as a database that goes away mid-batch would."""

    failures = 1

    async def commit(
        self,
        reports: Sequence[ReportRecord],
        *,
        broadcasts: Sequence[BroadcastRecord] = (),
        counters: dict[str, int] | None = None,  # type: ignore[override]
        worker: str = "hq",
    ) -> InsertOutcome:
        if FlakyStore.failures > 0:
            FlakyStore.failures -= 1
            raise StoreError("simulated: database went away before the commit")
        return await super().commit(reports, broadcasts=broadcasts, counters=counters, worker=worker)


async def test_message_is_acked_only_after_commit_so_a_failed_commit_is_redelivered(
    world: World, tmp_path: Path
) -> None:
    """With paho's default (PUBACK on receipt) this report would be lost: the broker thinks HQ has it."""
    prefix = unique_prefix()
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    config = world.config(url, prefix=prefix)
    client_id = f"hq-{uuid.uuid4().hex[:8]}"
    FlakyStore.failures = 1

    def factory(database: str) -> HQStore:
        return FlakyStore(Path(database.removeprefix("sqlite:///")))

    try:
        async with running(config, world, client_id=client_id, store_factory=factory) as worker:
            await _publish([(Topics(prefix).camp(101, "needs"), needs_payload(world, 101, 77))], "hub-" + prefix)
            await wait_until(lambda: worker.counters["stored"] == 1, within=15)
            assert worker.counters["store_errors"] == 1
            assert worker.sessions >= 2  # reconnected to the same persistent session
        async with open_store(url) as store:
            assert await store.report_ids() == ["101:77"]
    finally:
        await forget_sessions(client_id)


async def test_reports_published_while_hq_is_down_arrive_when_it_returns(world: World, tmp_path: Path) -> None:
    prefix = unique_prefix()
    topics = Topics(prefix)
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    config = world.config(url, prefix=prefix)
    client_id = f"hq-{uuid.uuid4().hex[:8]}"
    try:
        async with running(config, world, client_id=client_id):
            pass  # creates the persistent session and its subscription, then stops cleanly
        await _publish([(topics.camp(101, "needs"), needs_payload(world, 101, s)) for s in range(1, 21)], "h-" + prefix)
        async with running(config, world, client_id=client_id) as worker:
            await wait_until(lambda: worker.counters["stored"] == 20)
    finally:
        await forget_sessions(client_id)


async def test_stop_returns_promptly_and_leaves_no_tasks(world: World, tmp_path: Path) -> None:
    config = world.config(f"sqlite:///{tmp_path / 'hq.db'}", prefix=unique_prefix())
    client_id = f"hq-{uuid.uuid4().hex[:8]}"
    before = asyncio.all_tasks()
    try:
        async with running(config, world, client_id=client_id):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0)
        assert asyncio.all_tasks() - before == set()
    finally:
        await forget_sessions(client_id)


async def test_unreachable_broker_is_retried_not_raised(world: World, tmp_path: Path) -> None:
    config = world.config(f"sqlite:///{tmp_path / 'hq.db'}", prefix=unique_prefix())
    from dataclasses import replace

    config = replace(config, mqtt=replace(config.mqtt, url="mqtt://127.0.0.1:1"))
    worker = HQWorker(config, Ingestor(world.registry), client_id="never-connects", backoff=Backoff(0.01, 0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await wait_until(lambda: worker.counters["mqtt_disconnects"] >= 3)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_retiring_a_shared_worker_drains_its_session(world: World, tmp_path: Path) -> None:
    """Mosquitto keeps assigning a share of the feed to an offline persistent session: a worker removed for good
    must drain and delete its session, or the reports assigned to it would wait there forever."""
    prefix, group = unique_prefix(), f"g{uuid.uuid4().hex[:8]}"
    topics = Topics(prefix)
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    config = world.config(url, prefix=prefix, shared_group=group)
    ids = (f"w1-{uuid.uuid4().hex[:8]}", f"w2-{uuid.uuid4().hex[:8]}")
    first = [(topics.camp(101, "needs"), needs_payload(world, 101, s)) for s in range(1, 21)]
    later = [(topics.camp(101, "needs"), needs_payload(world, 101, s)) for s in range(21, 31)]
    try:
        async with running(config, world, client_id=ids[1]):
            pass  # worker 2 existed once: its session and shared subscription stay on the broker
        async with running(config, world, client_id=ids[0]) as w1:
            await _publish(first, "hub-" + prefix)
            await wait_until(lambda: w1.counters["received"] >= 5)
            await asyncio.sleep(0.3)
            assert w1.counters["received"] < 20  # the offline session got its share
            retiring = HQWorker(config, Ingestor(world.registry, prefix=prefix), client_id=ids[1])
            drained = await retiring.retire(idle_s=0.5)
            assert drained == 20 - w1.counters["received"]
            await _publish(later, "hub-" + prefix)
            await wait_until(lambda: w1.counters["stored"] == 20 - drained + 10)
        async with open_store(url) as store:
            assert len(await store.report_ids()) == 30
    finally:
        await forget_sessions(*ids)


async def test_stop_while_connecting_to_a_silent_broker_is_prompt(world: World, tmp_path: Path) -> None:
    """A broker that accepts TCP but never answers CONNECT: stopping must not wait for the connect timeout."""
    import socket
    from dataclasses import replace

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        config = world.config(f"sqlite:///{tmp_path / 'hq.db'}", prefix=unique_prefix())
        config = replace(config, mqtt=replace(config.mqtt, url=f"mqtt://127.0.0.1:{port}"))
        worker = HQWorker(config, Ingestor(world.registry), client_id="silent", backoff=Backoff(0.01, 0.05))
        worker.stop_grace_s = 0.5
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.3)
        stop.set()
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(task, 8)
        assert asyncio.get_running_loop().time() - started < 2.0
