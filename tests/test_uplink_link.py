"""The link itself: last will when the connection dies, reconnect with backoff, retained status, TLS with a
client certificate against a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from meshd.store.hub import HubStore
from meshd.uplink import flush
from tests.uplink_support import (
    CAMP,
    Collector,
    Mosquitto,
    TcpProxy,
    assert_no_leftover_tasks,
    counter_reaches,
    fill_store,
    forget_session,
    load_cert,
    make_bridge,
    make_world,
    read_retained,
    self_signed,
    unique_prefix,
    wait_until,
)

PORT = 1883


async def test_last_will_marks_the_hub_offline_when_the_link_dies(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    world = make_world()
    prefix = unique_prefix()
    status_topic = f"{prefix}/v1/camp/{CAMP}/status"
    proxy = TcpProxy(PORT)  # the satellite modem: it can die without a word to anyone
    await proxy.start()
    async with HubStore(tmp_path / "hub.db") as store:
        bridge = make_bridge(world, store, proxy.port, prefix)
        async with bridge:
            await wait_until(lambda: bridge.connected)
            online = await read_retained(PORT, status_topic)
            assert online == {"online": True, "camp_id": CAMP, "queue_depth": 0}

            await proxy.cut()  # both sockets dropped, no DISCONNECT: the broker must fire the will
            await wait_until(lambda: not bridge.connected)
            assert await read_retained(PORT, status_topic) == {"online": False, "camp_id": CAMP}
            assert bridge.counters["link_losses"] == 1
            await wait_until(lambda: bridge.counters["connect_failures"] >= 2)  # backing off, retrying

            await proxy.start()  # the link is back (the same port)
            await wait_until(lambda: bridge.connected, within=10)
            assert bridge.counters["reconnects"] == 1
            assert (await read_retained(PORT, status_topic))["online"] is True
        assert await read_retained(PORT, status_topic) == {"online": False, "camp_id": CAMP, "reason": "stopped"}
    await proxy.cut()
    await forget_session(bridge, PORT)
    await assert_no_leftover_tasks(before)


@contextlib.asynccontextmanager
async def broker_behind_a_proxy(tmp_path: Path, prefix: str) -> AsyncIterator[tuple[TcpProxy, Collector]]:
    """A private broker reached through a proxy the test can cut or stall, and HQ's collector on the broker.

    Private: the shared broker keeps Mosquitto's default max_queued_messages (1000) and silently drops QoS 1
    messages for a subscriber that falls behind, while the publisher still gets "success"."""
    with Mosquitto(tmp_path / "broker") as broker:
        proxy = TcpProxy(broker.port)
        await proxy.start()
        collector = Collector(broker.port, f"{prefix}/v1/camp/+/needs")
        collecting = asyncio.create_task(collector.run())
        await collector.subscribed.wait()
        try:
            yield proxy, collector
        finally:
            collecting.cancel()
            await asyncio.gather(collecting, return_exceptions=True)
            await proxy.cut()


async def test_flush_resumes_after_the_link_dies_mid_flush(tmp_path: Path) -> None:
    world = make_world()
    prefix = unique_prefix()
    async with broker_behind_a_proxy(tmp_path, prefix) as (proxy, collector):
        async with HubStore(tmp_path / "hub.db") as store:
            await fill_store(store, world.camp_keys[CAMP], 6000, batch=2)
            async with make_bridge(world, store, proxy.port, prefix) as bridge:
                for k, mark in enumerate((1000, 2000, 3000), start=1):
                    await wait_until(counter_reaches(bridge, "delivered", mark, connected=True))
                    await proxy.cut(refuse_new=False)
                    await wait_until(counter_reaches(bridge, "link_losses", k))
                await wait_until(lambda: bridge.counters["delivered"] >= 6000)
                assert bridge.counters["link_losses"] >= 3
            with contextlib.suppress(TimeoutError):
                await wait_until(lambda: len(collector.ids) == 6000)
            assert not await store.pending(limit=10)
    missing = sorted({f"{CAMP}:{i}" for i in range(1, 6001)} - collector.ids, key=lambda i: int(i.split(":")[1]))
    assert not missing, f"{len(missing)} never arrived, e.g. {missing[:3]}..{missing[-3:]}; {dict(bridge.counters)}"


async def test_a_broker_that_goes_silent_mid_flush_is_left_and_the_flush_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No PUBACK, no error, the socket still open (a wedged broker or satellite modem): after ACK_TIMEOUT_S
    with publishes outstanding the bridge drops the connection, reconnects and publishes the rest."""
    monkeypatch.setattr(flush, "ACK_TIMEOUT_S", 1.5)
    world = make_world()
    prefix = unique_prefix()
    async with broker_behind_a_proxy(tmp_path, prefix) as (proxy, collector):
        async with HubStore(tmp_path / "hub.db") as store:
            await fill_store(store, world.camp_keys[CAMP], 3000, batch=1)
            async with make_bridge(world, store, proxy.port, prefix, inflight=10) as bridge:
                await wait_until(counter_reaches(bridge, "delivered", 500, connected=True))
                proxy.stall()
                await wait_until(counter_reaches(bridge, "link_losses", 1), within=20)
                stalled_at = bridge.counters["delivered"]
                await wait_until(lambda: bridge.counters["delivered"] >= 3000, within=60)
            assert not await store.pending(limit=10)
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: len(collector.ids) == 3000)
    assert stalled_at < 3000  # the stall did land mid-flush
    assert collector.ids == {f"{CAMP}:{i}" for i in range(1, 3001)}


async def test_mqtts_with_client_certificate(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca_cert, ca_key = self_signed(certs, "meshd-test-ca")
    issuer = (load_cert(ca_cert), serialization.load_pem_private_key(ca_key.read_bytes(), password=None))
    server_cert, server_key = self_signed(certs, "broker", issuer=issuer)
    hub_cert, hub_key = self_signed(certs, "hub", issuer=issuer)
    broker = Mosquitto(
        tmp_path / "broker",
        extra=f"cafile {ca_cert}\ncertfile {server_cert}\nkeyfile {server_key}\nrequire_certificate true\n",
    )
    world = make_world()
    prefix = unique_prefix()
    url = f"mqtts://127.0.0.1:{broker.port}"
    with broker:
        async with HubStore(tmp_path / "hub.db") as store:
            with_cert = make_bridge(
                world, store, broker.port, prefix, url=url, ca_file=ca_cert, cert_file=hub_cert, key_file=hub_key
            )
            async with with_cert:
                await wait_until(lambda: with_cert.connected, within=10)
            # The broker requires a client certificate: without one the hub cannot get in.
            without = make_bridge(world, store, broker.port, prefix, url=url, ca_file=ca_cert)
            async with without:
                await wait_until(lambda: without.counters["connect_failures"] >= 2, within=10)
                assert not without.connected
            # And the hub does not talk to a broker its CA did not sign.
            other_ca, _ = self_signed(certs, "other-ca")
            wrong_ca = make_bridge(
                world, store, broker.port, prefix, url=url, ca_file=other_ca, cert_file=hub_cert, key_file=hub_key
            )
            async with wrong_ca:
                await wait_until(lambda: wrong_ca.counters["connect_failures"] >= 2, within=10)
                assert wrong_ca.counters["connects"] == 0
