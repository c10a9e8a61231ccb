"""Flushing the outbox to a real Mosquitto: backlog after an outage, broker restarts mid-flush, custody only on
a PUBACK that means it, priority order, the byte budget.

Brokers that must go down are private Mosquittos on free ports with persistence (tests/uplink_support.py);
the rest use the shared broker on 127.0.0.1:1883 under a unique topic prefix.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from meshd.store.hub import HubStore
from meshd.uplink import flush
from meshd.wire import codec
from meshd.wire.envelope import Envelope, Kind, sign, verify
from tests.uplink_support import (
    CAMP,
    Collector,
    Mosquitto,
    assert_no_leftover_tasks,
    counter_reaches,
    delivered_ids,
    fill_store,
    forget_session,
    make_bridge,
    make_world,
    outbox_size,
    read_retained,
    unique_prefix,
    wait_until,
)

SHARED_PORT = 1883
N = 10_000


def all_ids(n: int, origin: int = CAMP) -> set[str]:
    return {f"{origin}:{seq}" for seq in range(1, n + 1)}


async def test_backlog_queued_while_broker_down_is_flushed_when_it_comes_up(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    world = make_world()
    prefix = unique_prefix()
    broker = Mosquitto(tmp_path / "broker")
    collector = Collector(broker.port, f"{prefix}/v1/camp/+/needs")
    collector.keep_docs = True
    # HQ's persistent session exists before the outage, so the broker queues for it from the first message.
    with broker:
        await collector.subscribe_once()
    async with HubStore(tmp_path / "hub.db") as store:
        await fill_store(store, world.camp_keys[CAMP], N, batch=5)
        async with make_bridge(world, store, broker.port, prefix) as bridge:
            await wait_until(lambda: bridge.counters["connect_failures"] >= 3, within=10)
            assert not bridge.connected
            assert await outbox_size(store) == N // 5  # nothing marked while the broker is down

            broker.start()
            collecting = asyncio.create_task(collector.run())
            try:
                await wait_until(lambda: bridge.counters["delivered"] >= N, within=40)
                await wait_until(lambda: len(collector.ids) >= N, within=20)
            finally:
                collecting.cancel()
                await asyncio.gather(collecting, return_exceptions=True)
            assert bridge.connected
            assert bridge.last_success_monotonic is not None
        broker.stop()
        assert collector.ids == all_ids(N)
        assert await outbox_size(store) == 0
        assert await delivered_ids(store) == all_ids(N)
        assert (await store.counters())["published"] == N
        # They never left this hub by radio, so no other hub can hold them: no Delivered notice is queued
        # (tests/test_store_receive.py covers the ids a hub did carry by radio).
        assert await store.untold_news(limit=2 * N) == {}
    assert bridge.counters["puback"] >= N
    assert bridge.counters["bytes"] > 0

    # The payload is the MQTT contract: report JSON with the signed envelope anyone can re-verify.
    doc = collector.docs[0]
    assert set(doc) >= {"id", "origin", "seq", "kind", "age_s", "time_quality", "provenance", "body", "envelope"}
    assert doc["kind"] == "needs"
    assert doc["provenance"] == "verified"
    assert doc["gateway"] == CAMP
    assert doc["id"] == f"{doc['origin']}:{doc['seq']}"
    env = Envelope.from_bytes(base64.b64decode(doc["envelope"]))
    verify(env, world.camp_keys[CAMP].public_key())
    report = codec.unbatch(env)[doc["batch_index"]]
    assert report.id == doc["id"]
    await assert_no_leftover_tasks(before)


async def test_broker_restarted_five_times_mid_flush_loses_nothing(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    world = make_world()
    prefix = unique_prefix()
    broker = Mosquitto(tmp_path / "broker")
    collector = Collector(broker.port, f"{prefix}/v1/camp/+/needs")
    with broker:
        await collector.subscribe_once()
    broker.start()
    collecting = asyncio.create_task(collector.run())
    snapshots: list[set[str]] = []
    try:
        async with HubStore(tmp_path / "hub.db") as store:
            await fill_store(store, world.camp_keys[CAMP], N, batch=1)
            async with make_bridge(world, store, broker.port, prefix) as bridge:
                for k in range(1, 6):
                    await wait_until(counter_reaches(bridge, "delivered", k * N // 7, connected=True), within=30)
                    # SIGTERM: Mosquitto saves its persistence file, like a broker that survives a restart.
                    broker.stop(signal.SIGTERM)
                    # Everything the store calls delivered now was PUBACKed, so it is with the subscriber
                    # already or in the broker's saved queue for its persistent session.
                    snapshots.append(await delivered_ids(store))
                    await wait_until(counter_reaches(bridge, "link_losses", k), within=10)
                    await asyncio.sleep(0.1)
                    broker.start()
                await wait_until(lambda: bridge.counters["delivered"] >= N, within=30)
            assert bridge.counters["connects"] >= 5
            assert bridge.counters["link_losses"] >= 5
            assert await outbox_size(store) == 0
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: len(collector.ids) >= N, within=20)
    finally:
        collecting.cancel()
        await asyncio.gather(collecting, return_exceptions=True)
        broker.stop()
    assert broker.starts == 7  # the session setup, the start, and five restarts
    missing = sorted(all_ids(N) - collector.ids, key=lambda i: int(i.split(":")[1]))
    assert not missing, f"{len(missing)} never arrived, e.g. {missing[:3]}..{missing[-3:]}; {collector.messages=}"
    for snapshot in snapshots:
        assert snapshot <= collector.ids
    # At least once: a report whose PUBACK was lost with the broker is published again (duplicates are
    # fine, HQ deduplicates by id); the bridge published more than N exactly when that happened.
    assert bridge.counters["published"] >= N
    assert collector.messages >= N
    await assert_no_leftover_tasks(before)


async def test_refused_publish_is_not_custody_and_the_rest_still_flows(tmp_path: Path) -> None:
    """MQTT 5 PUBACK 0x87 (ACL): with 3.1.1 Mosquitto would answer "success" and drop the message."""
    world = make_world((CAMP, 8))
    prefix = unique_prefix()
    acl = tmp_path / "acl"
    # This hub may publish its own camp's topics and read broadcasts; camp 8's topics are refused.
    acl.write_text(f"topic readwrite {prefix}/v1/camp/{CAMP}/#\ntopic read {prefix}/v1/hq/#\n")
    broker = Mosquitto(tmp_path / "broker", extra=f"acl_file {acl}\n")
    collector = Collector(broker.port, f"{prefix}/v1/camp/+/needs")
    with broker:
        collecting = asyncio.create_task(collector.run())
        await collector.subscribed.wait()
        async with HubStore(tmp_path / "hub.db") as store:
            await fill_store(store, world.camp_keys[CAMP], 30, batch=1)
            key8 = world.camp_keys[8]
            for seq in range(1, 11):
                await store.accept(sign(Envelope(8, seq, Kind.NEEDS, b""), key8), priority=20)
            async with make_bridge(world, store, broker.port, prefix) as bridge:
                await wait_until(lambda: bridge.counters["delivered"] >= 30 and bridge.counters["refused"] >= 10)
                await asyncio.sleep(0.3)
                assert bridge.counters["delivered"] == 30
                assert bridge.connected  # a refusal is about one message, not the link
            left = await store.pending(limit=100)
            assert sorted(e.key for e in left) == [(8, s) for s in range(1, 11)]
            assert not [s for s in range(1, 11) if await store.is_delivered(8, s)]
        collecting.cancel()
        await asyncio.gather(collecting, return_exceptions=True)
    assert collector.ids == all_ids(30)


async def test_no_subscriber_means_no_custody_until_hq_subscribes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PUBACK 0x10: the broker took it and gave it to nobody, so HQ does not have it: keep it, retry later."""
    monkeypatch.setattr(flush, "REFUSED_RETRY_S", 0.3)
    world = make_world()
    prefix = unique_prefix()
    async with HubStore(tmp_path / "hub.db") as store:
        await fill_store(store, world.camp_keys[CAMP], 20, batch=4)
        async with make_bridge(world, store, SHARED_PORT, prefix) as bridge:
            await wait_until(lambda: bridge.counters["no_subscribers"] >= 20)
            assert bridge.counters["delivered"] == 0
            assert await outbox_size(store) == 5
            collector = Collector(SHARED_PORT, f"{prefix}/v1/camp/+/needs")
            collecting = asyncio.create_task(collector.run())
            await wait_until(lambda: bridge.counters["delivered"] >= 20)
            await wait_until(lambda: len(collector.ids) >= 20)
            collecting.cancel()
            await asyncio.gather(collecting, return_exceptions=True)
        assert await outbox_size(store) == 0
    await forget_session(bridge)


async def test_priority_order_kinds_and_held_entries(tmp_path: Path) -> None:
    """Alerts first, then sealed, then needs, each on its topic; a broadcast in the outbox is left alone."""
    world = make_world()
    prefix = unique_prefix()
    key = world.camp_keys[CAMP]
    seal_to = world.registry.hq_seal_public()
    collector = Collector(SHARED_PORT, f"{prefix}/v1/camp/+/+")
    collector.keep_docs = True
    collecting = asyncio.create_task(collector.run())
    await collector.subscribed.wait()
    async with HubStore(tmp_path / "hub.db") as store:
        await fill_store(store, key, 40, batch=1)

        def build(kind: Kind, body: Mapping[str, Any]) -> Callable[[int], Envelope]:
            return lambda seq: codec.build_envelope(kind, body, origin=CAMP, seq=seq, key=key, seal_to=seal_to)

        alert = {"type": "fire", "severity": "extreme", "urgency": "immediate", "certainty": "observed"}
        for _ in range(3):
            await store.originate(CAMP, build(Kind.ALERT, alert), priority=50)
            sealed_body = {"kind": "child_tracing", "text": "child found"}
            await store.originate(CAMP, build(Kind.SEALED, sealed_body), priority=40)
        await store.accept(sign(Envelope(0, 9, Kind.BROADCAST, b"\n\x02hi"), world.hq), priority=50)
        async with make_bridge(world, store, SHARED_PORT, prefix, inflight=1) as bridge:
            await wait_until(lambda: len(collector.ids) >= 46)
            await wait_until(lambda: bridge.counters["delivered"] >= 46)
            await asyncio.sleep(0.2)
            assert bridge.counters["not_published"] == 1
        pending = await store.pending(limit=10)
        assert [e.key for e in pending] == [(0, 9)]  # not ours to publish or to mark delivered
    await forget_session(bridge)
    collecting.cancel()
    await asyncio.gather(collecting, return_exceptions=True)
    kinds = [d["kind"] for d in collector.docs]
    assert kinds[:6] == ["alert"] * 3 + ["sealed"] * 3
    assert set(kinds[6:]) == {"needs"}
    sealed = [d for d in collector.docs if d["kind"] == "sealed"]
    assert all(d["body"]["sealed"] is True and "text" not in d["body"] for d in sealed)
    assert "child found" not in str(collector.docs)
    topics = {d["kind"] for d in collector.docs}
    assert topics == {"alert", "sealed", "needs"}


async def test_byte_budget_holds_needs_but_not_alerts(tmp_path: Path) -> None:
    world = make_world()
    prefix = unique_prefix()
    key = world.camp_keys[CAMP]
    collector = Collector(SHARED_PORT, f"{prefix}/v1/camp/+/+")
    collecting = asyncio.create_task(collector.run())
    await collector.subscribed.wait()
    async with HubStore(tmp_path / "hub.db") as store:
        await fill_store(store, key, 50, batch=1)
        async with make_bridge(world, store, SHARED_PORT, prefix, bytes_per_hour=3000) as bridge:
            await wait_until(lambda: bridge.counters["budget_waits"] >= 1)
            await asyncio.sleep(0.3)
            sent = bridge.counters["delivered"]
            size = bridge.counters["bytes"] / sent
            # Never more than one message past the budget, and then it stops.
            assert 3000 <= bridge.counters["bytes"] < 3000 + size
            alert = {"type": "security_incident", "severity": "severe"}
            env = await store.originate(
                CAMP,
                lambda seq: codec.build_envelope(Kind.ALERT, alert, origin=CAMP, seq=seq, key=key),
                priority=50,
            )
            bridge.wake()
            await wait_until(lambda: f"{CAMP}:{env.seq}" in collector.ids, within=5)
            await asyncio.sleep(0.3)
            assert bridge.counters["delivered"] == sent + 1  # the alert, and no needs report with it
    await forget_session(bridge)
    collecting.cancel()
    await asyncio.gather(collecting, return_exceptions=True)


async def test_clean_stop_says_offline_and_leaves_no_tasks(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    world = make_world()
    prefix = unique_prefix()
    async with HubStore(tmp_path / "hub.db") as store:
        bridge = make_bridge(world, store, SHARED_PORT, prefix)
        async with bridge:
            await wait_until(lambda: bridge.connected)
        assert not bridge.connected
    status = await read_retained(SHARED_PORT, f"{prefix}/v1/camp/{CAMP}/status")
    assert status == {"online": False, "camp_id": CAMP, "reason": "stopped"}
    await forget_session(bridge)
    await assert_no_leftover_tasks(before)
