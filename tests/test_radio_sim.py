"""RadioLink against the simulator's virtual radios (TCP and pty), across the simulated mesh."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshd.errors import RadioRefusedError
from meshd.radio.api import BROADCAST, LinkState, ReceivedPacket, RoutingResult
from meshd.radio.backoff import Backoff
from meshd.radio.link import RadioLink
from meshd.radio.sim import SimNetwork, line_topology
from tests.radio_fake import until


@contextlib.asynccontextmanager
async def linked(url: str, **overrides: Any) -> AsyncIterator[RadioLink]:
    settings: dict[str, Any] = {"heartbeat_s": 5.0, "reply_timeout_s": 3.0, "backoff": Backoff(rng=random.Random(3))}
    settings.update(overrides)
    async with RadioLink(url, **settings) as link:
        async with asyncio.timeout(5):
            await link.wait_ready()
        yield link


async def next_packet(link: RadioLink, kind: type, within: float = 10.0) -> Any:
    async with asyncio.timeout(within):
        while True:
            event = await link.next_event()
            if isinstance(event, kind):
                return event


@pytest.fixture
async def net() -> AsyncIterator[SimNetwork]:
    async with SimNetwork(line_topology(2), speedup=100, seed=11) as network:
        yield network


async def test_tcp_and_pty_links_exchange_packets_over_the_mesh(net: SimNetwork) -> None:
    a, b = net.radios
    assert b.pty_path is not None
    async with linked(f"tcp://127.0.0.1:{a.tcp_port}") as link_a, linked(b.pty_path) as link_b:
        assert (link_a.my_node, link_b.my_node) == (a.num, b.num)
        assert link_a.nodes[b.num].public_key == b.public_key  # node DB with PKI keys from the handshake

        pid = await link_a.send(b"envelope over LoRa", to=BROADCAST)
        got = await next_packet(link_b, ReceivedPacket)
        assert (got.from_node, got.packet_id, got.payload, got.portnum) == (a.num, pid, b"envelope over LoRa", 256)
        assert got.hop_start == 3
        assert got.rx_snr != 0.0

        dm = await link_b.send(b"direct", to=a.num, want_ack=True, pki=True)
        got = await next_packet(link_a, ReceivedPacket)
        assert (got.payload, got.pki_encrypted, got.public_key) == (b"direct", True, b.public_key)
        ack = await next_packet(link_b, RoutingResult)
        assert (ack.packet_id, ack.ok, ack.from_node) == (dm, True, a.num)

        text = await link_a.send_text("received #412:7", to=b.num)
        got = await next_packet(link_b, ReceivedPacket)
        assert (got.portnum, got.payload, got.packet_id) == (1, b"received #412:7", text)
    await assert_no_tasks_left_but_sim()


async def assert_no_tasks_left_but_sim() -> None:
    await asyncio.sleep(0)
    ours = [t for t in asyncio.all_tasks() if "radio-link" in t.get_name() and not t.done()]
    assert ours == []


async def test_heartbeats_keep_the_session_inside_the_radio_idle_timeout() -> None:
    async with SimNetwork(line_topology(2), speedup=100, seed=5, api_timeout_s=0.8) as network:
        port = network.radios[0].tcp_port
        async with linked(f"tcp://127.0.0.1:{port}", heartbeat_s=0.25) as kept:
            await asyncio.sleep(2.0)
            assert kept.metrics.reconnects == 0
            assert kept.state is LinkState.READY
        async with linked(f"tcp://127.0.0.1:{port}", heartbeat_s=60.0) as quiet:
            await until(lambda: quiet.metrics.reconnects >= 1, within=5)  # the radio dropped the silent client


async def test_radio_restart_on_tcp_resumes_and_delivers_what_was_queued(net: SimNetwork) -> None:
    a, b = net.radios
    async with linked(f"tcp://127.0.0.1:{a.tcp_port}") as link_a, linked(f"tcp://127.0.0.1:{b.tcp_port}") as link_b:
        await net.stop_radio(a.spec.id)  # meshtasticd restarted / radio powered off
        await until(lambda: link_a.state is not LinkState.READY)
        queued = asyncio.create_task(link_a.send(b"queued during the outage"))
        await asyncio.sleep(0.7)
        assert not queued.done()
        await net.start_radio(a.spec.id)
        returned = time.monotonic()
        async with asyncio.timeout(3.0):
            await link_a.wait_ready()
        assert time.monotonic() - returned <= 3.0
        pid = await asyncio.wait_for(queued, 3)
        got = await next_packet(link_b, ReceivedPacket)
        assert (got.packet_id, got.payload) == (pid, b"queued during the outage")


async def test_pty_radio_unplugged_and_back(net: SimNetwork) -> None:
    a, b = net.radios
    assert a.pty_path is not None
    async with linked(a.pty_path) as link_a, linked(f"tcp://127.0.0.1:{b.tcp_port}") as link_b:
        await net.stop_radio(a.spec.id)
        await until(lambda: link_a.state is not LinkState.READY)
        queued = asyncio.create_task(link_a.send(b"after replug"))
        await asyncio.sleep(0.5)
        await net.start_radio(a.spec.id)
        returned = time.monotonic()
        async with asyncio.timeout(3.0):
            await link_a.wait_ready()
        assert time.monotonic() - returned <= 3.0
        await asyncio.wait_for(queued, 3)
        assert (await next_packet(link_b, ReceivedPacket)).payload == b"after replug"


async def test_reboot_reruns_the_handshake(net: SimNetwork) -> None:
    a, _ = net.radios
    async with linked(f"tcp://127.0.0.1:{a.tcp_port}") as link:
        net.reboot(a.spec.id)
        await until(lambda: link.metrics.device_reboots == 1)
        async with asyncio.timeout(5):
            await link.wait_ready()
        assert link.metrics.handshakes == 2
        await asyncio.wait_for(link.send(b"after reboot"), 3)


async def test_unreachable_destination_gets_max_retransmit(net: SimNetwork) -> None:
    a, b = net.radios
    net.set_link(a.spec.id, b.spec.id, loss=1.0)
    async with linked(f"tcp://127.0.0.1:{a.tcp_port}") as link:
        pid = await link.send(b"nobody hears this", to=b.num, want_ack=True)
        nak = await next_packet(link, RoutingResult, within=20)
        assert (nak.packet_id, nak.error) == (pid, "MAX_RETRANSMIT")


async def test_duty_cycle_refusal_surfaces() -> None:
    # EU_868 allows 10 % of an hour; LONG_SLOW frames of ~200 bytes spend it in a few dozen packets.
    async with SimNetwork(line_topology(2), region="EU_868", preset="LONG_SLOW", speedup=2000, seed=2) as network:
        a = network.radios[0]
        async with linked(f"tcp://127.0.0.1:{a.tcp_port}", reply_timeout_s=5.0) as link:
            naks: list[RoutingResult] = []

            async def collect() -> None:
                while True:
                    event = await link.next_event()
                    if isinstance(event, RoutingResult) and not event.ok:
                        naks.append(event)

            collector = asyncio.create_task(collect())
            refused: str | None = None
            try:
                async with asyncio.timeout(30):
                    while refused is None and not naks:
                        try:
                            await link.send(bytes(200))
                        except RadioRefusedError as exc:  # firmware: QueueStatus.res = DUTY_CYCLE_LIMIT
                            refused = exc.reason
                        await asyncio.sleep(0.02)
                    await until(lambda: bool(naks), within=5)  # and a Routing NAK for the same packet
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector
            assert naks[0].error == "DUTY_CYCLE_LIMIT"
            assert refused in (None, "DUTY_CYCLE_LIMIT")
