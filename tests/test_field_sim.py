"""Field handset → hub → uplink, end to end through the simulator.

Two field handsets are driven by the real `meshtastic` library over TCP (as the phone app or CLI would be);
the hub is a real `Hub` (store, relay) whose `RadioLink` talks to its own virtual radio over TCP. One
handset is in the hub's roster, the other is not. On the simulated channel we record what an eavesdropper
holding the channel key would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from meshtastic.protobuf import portnums_pb2

from meshd.clock import Clock
from meshd.daemon.hub import Hub
from meshd.field.desk import FieldDesk
from meshd.field.roster import Handset, Roster
from meshd.radio import airtime
from meshd.radio.api import TEXT_PORT
from meshd.radio.backoff import Backoff
from meshd.radio.link import RadioLink
from meshd.radio.sim import SimNetwork, line_topology
from meshd.store.hub import HubStore
from meshd.wire import codec
from meshd.wire.envelope import Envelope, Kind
from tests.simutil import Collector, eventually, tcp_interface
from tests.support.hubs import FakeUplink, make_hub, provision, running

CAMP = 412
SPEEDUP = 50
SECRET = "xq7 gate 2 tent row B night threats"


@contextlib.asynccontextmanager
async def field_desk_for(hub: Hub, roster: Roster) -> AsyncIterator[FieldDesk]:
    """The desk of a running hub (built here until the hub builds its own as `hub.field_desk`)."""
    builtin = getattr(hub, "field_desk", None)
    if isinstance(builtin, FieldDesk):
        yield builtin
        return
    relay, store = hub.relay, hub.store
    assert relay is not None
    assert store is not None
    desk = FieldDesk(CAMP, relay, store, relay.radio, roster, per_sender_per_hour=30, last_uplink=lambda: None)
    hub.text_handler = desk.handle_text
    store.on_delivered = desk.delivered_soon
    task = asyncio.create_task(desk.run(delivered_every_s=0.5))
    try:
        yield desk
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RecordingUplink(FakeUplink):
    """FakeUplink that also keeps each report as HQ would receive it."""

    def __init__(self, hub: Hub, received: Counter[str]) -> None:
        super().__init__(hub, received)
        self.reports: dict[str, codec.Report] = {}

    async def run(self) -> None:
        while True:
            store = self.hub.store
            if store is not None:
                for entry in await store.pending(unpublished_only=True, limit=100):
                    reports = codec.unbatch(Envelope.from_bytes(entry.envelope))
                    for report in reports:
                        self.received[report.id] += 1
                        self.reports[report.id] = report
                    await store.mark_delivered([(r.origin, r.seq) for r in reports], published=True)
            await asyncio.sleep(0.01)


def files_holding(db_path: Path, needle: bytes) -> list[Path]:
    """The database file, its WAL and shared-memory file, as raw bytes: which of them contain `needle`."""
    return [path for path in db_path.parent.glob(db_path.name + "*") if needle in path.read_bytes()]


@dataclass
class Scene:
    hq_seal_key: X25519PrivateKey
    hub: Hub
    desk: FieldDesk
    net: SimNetwork
    known: Any
    stranger: Any
    rx_known: Collector
    rx_stranger: Collector
    uplink: RecordingUplink


def texts(rx: Collector, sender: int) -> list[str]:
    return [p["decoded"]["text"] for p in rx.matching(lambda p: p["from"] == sender)]


def send_dm(iface: Any, text: str, to: int, *, pki: bool) -> Any:
    """A text DM. Firmware ≥ 2.5 encrypts DMs with PKI by itself once it knows the peer's key; the library's
    sendText has no such switch, so the PKI case is asked for explicitly through sendData."""
    if not pki:
        return iface.sendText(text, destinationId=to, wantAck=True)
    return iface.sendData(
        text.encode("utf-8"),
        destinationId=to,
        portNum=portnums_pb2.PortNum.TEXT_MESSAGE_APP,
        wantAck=True,
        pkiEncrypted=True,
    )


async def test_field_reports_from_stock_handsets_reach_the_uplink(tmp_path: Path) -> None:
    p = provision(tmp_path, [CAMP])
    received_at_hq: Counter[str] = Counter()
    # n0 = rostered handset, n1 = hub radio, n2 = unknown handset; both handsets hear the hub
    topology = line_topology(3, name="field")
    async with SimNetwork(topology, speedup=SPEEDUP, seed=3, pty=False, record_air=True) as net:
        known_radio, hub_radio, stranger_radio = net.radios
        roster_path = tmp_path / "roster.json"
        Roster([Handset(known_radio.num, "Water team 2", known_radio.public_key)], path=roster_path).save()
        config = p.config(CAMP)
        config = dataclasses.replace(
            config,
            radio=dataclasses.replace(config.radio, device=f"tcp://127.0.0.1:{hub_radio.tcp_port}"),
            field=dataclasses.replace(config.field, roster=roster_path),
        )
        link = RadioLink(
            config.radio.device,
            portnums=(config.radio.portnum,),
            heartbeat_s=5.0,
            text_interval_s=2.1 / SPEEDUP,  # the firmware's text spacing, in simulated time
            backoff=Backoff(rng=random.Random(3)),
        )
        async with link:
            async with asyncio.timeout(10):
                await link.wait_ready()
            hub = make_hub(p, CAMP, link, Clock(speedup=SPEEDUP))
            hub.config = config
            uplink = RecordingUplink(hub, received_at_hq)
            hub.uplink = uplink
            known, stranger = await asyncio.gather(
                asyncio.to_thread(tcp_interface, known_radio.tcp_port),
                asyncio.to_thread(tcp_interface, stranger_radio.tcp_port),
            )
            rx_known = Collector(known, topic="meshtastic.receive.text")
            rx_stranger = Collector(stranger, topic="meshtastic.receive.text")
            try:
                async with running([hub]), field_desk_for(hub, Roster.load(roster_path)) as desk:
                    uplink_task = asyncio.create_task(uplink.run())
                    try:
                        await run_scenario(
                            Scene(p.hq.seal, hub, desk, net, known, stranger, rx_known, rx_stranger, uplink)
                        )
                    finally:
                        uplink_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await uplink_task
            finally:
                rx_known.close()
                rx_stranger.close()
                await asyncio.gather(asyncio.to_thread(known.close), asyncio.to_thread(stranger.close))
    # after the hub closed its store (WAL checkpointed into the main file), the secret is still nowhere
    assert files_holding(tmp_path / f"camp{CAMP}.db", SECRET.encode()) == []


async def run_scenario(scene: Scene) -> None:
    hub, desk, net, known, stranger = scene.hub, scene.desk, scene.net, scene.known, scene.stranger
    rx_known, rx_stranger, uplink = scene.rx_known, scene.rx_stranger, scene.uplink
    received_at_hq = uplink.received
    hub_num = net.radios[1].num
    store = hub.store
    assert isinstance(store, HubStore)

    await asyncio.to_thread(send_dm, known, "N W4 F3", hub_num, pki=True)
    assert await eventually(lambda: texts(rx_known, hub_num)[:1] == [f"received #{CAMP}:1"])
    await asyncio.to_thread(send_dm, stranger, "필요 물4", hub_num, pki=False)
    assert await eventually(lambda: texts(rx_stranger, hub_num)[:1] == [f"접수 #{CAMP}:2"])
    await asyncio.to_thread(send_dm, known, f"P! {SECRET}", hub_num, pki=True)
    assert await eventually(lambda: f"received #{CAMP}:3" in texts(rx_known, hub_num))

    # the reports reached the uplink, each once
    assert await eventually(lambda: len(received_at_hq) == 3)
    assert set(received_at_hq) == {f"{CAMP}:1", f"{CAMP}:2", f"{CAMP}:3"}
    assert all(n == 1 for n in received_at_hq.values())

    # and HQ custody came back to the handsets as delivered receipts, in their language
    def delivered(rx: Collector) -> list[str]:
        return [t for t in texts(rx, hub_num) if t.startswith(("delivered", "전달"))]

    assert await eventually(lambda: len(" ".join(delivered(rx_known)).split("#")) == 3)
    assert sorted(" ".join(delivered(rx_known)).replace("delivered", "").split()) == [f"#{CAMP}:1", f"#{CAMP}:3"]
    assert await eventually(lambda: delivered(rx_stranger) == [f"전달 #{CAMP}:2"])

    # provenance: the rostered PKI sender is verified, the unknown one is not (the flag is signed)
    rows = await store.db.read(
        lambda conn: conn.execute(
            "SELECT seq, from_node, language, kind, verified FROM inbound ORDER BY seq"
        ).fetchall()
    )
    known_num, stranger_num = net.radios[0].num, net.radios[2].num
    assert rows == [
        (1, known_num, "en", "needs", 1),
        (2, stranger_num, "ko", "needs", 0),
        (3, known_num, "en", "sealed", 1),
    ]
    assert desk.counters["verified"] == 2
    assert desk.counters["unverified"] == 1

    at_hq = uplink.reports
    assert [at_hq[f"{CAMP}:{seq}"].envelope.unverified for seq in (1, 2, 3)] == [False, True, False]
    needs = codec.decode_body(Kind.NEEDS, at_hq[f"{CAMP}:2"].body, CAMP)
    assert needs == {"camp": CAMP, "severity": {"water": 4}}
    # the sealed report opens only with HQ's protection key
    sealed = at_hq[f"{CAMP}:3"]
    assert sealed.kind is Kind.SEALED
    assert set(codec.decode_body(Kind.SEALED, sealed.body, CAMP)) == {"sealed", "size"}  # without the key
    opened = codec.decode_body(Kind.SEALED, sealed.body, CAMP, open_key=scene.hq_seal_key)
    assert opened == {"kind": "protection", "text": SECRET, "reporter_node": known_num}

    # nobody on the channel saw the protection text: not in any frame, PKI or not
    secret = SECRET.encode()
    assert net.on_air, "the scenario transmitted nothing?"
    assert not any(secret in rec.payload for rec in net.on_air)
    assert any(rec.pki and rec.from_node == known_num for rec in net.on_air)
    # while the hub runs, neither the database nor its WAL holds it
    assert files_holding(store.db.path, secret) == []

    # the replies to the handsets count against the hub's airtime budget, beside the relay's own frames
    relay = hub.relay
    assert relay is not None
    replies = texts(rx_known, hub_num) + texts(rx_stranger, hub_num)
    assert desk.counters["replies_sent"] == len(replies)
    reply_airtime = sum(
        airtime.payload_airtime_s(len(text.encode("utf-8")), relay.preset, TEXT_PORT) for text in replies
    )
    spent_by_others = relay.budget.used(relay.clock.now()) - relay.airtime_used_s
    assert spent_by_others == pytest.approx(reply_airtime)
