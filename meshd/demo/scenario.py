"""The demo scenario: six camps on LongFast, a relay on a hill, two satellite uplinks that come and go,
a local Mosquitto, `meshd hq` into SQLite, and scripted field teams in Korean and English.

Every hub runs the real hub code (`meshd.daemon.hub.Hub`: store, relay, field desk, MQTT uplink) with a
real `RadioLink` to its virtual radio; HQ runs the real worker. Nothing is faked but the radio waves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.config import (
    FieldSection,
    HubConfig,
    HubSection,
    RadioSection,
    RelaySection,
    TimingSection,
    UplinkSection,
)
from meshd.daemon.hub import Hub
from meshd.demo.broker import Broker
from meshd.demo.field import FieldTeam, run_script
from meshd.demo.satlink import SatLink
from meshd.errors import MeshdError
from meshd.field.roster import Handset, Roster
from meshd.hq import export
from meshd.hq.config import HQConfig, HQSection, MqttSection
from meshd.hq.db import open_store
from meshd.hq.ingest import Ingestor, load_registry
from meshd.hq.worker import HQWorker
from meshd.radio.api import PRIVATE_PORT
from meshd.radio.sim import SimNetwork, bundled_topology_path, load_topology
from meshd.wire import linkauth
from meshd.wire.envelope import parse_message_id
from meshd.wire.registry import Camp, Registry

log = logging.getLogger(__name__)
UPLINK_CAMPS = (1, 4)
UNROSTERED = {"c5-hs1", "c6-hs1"}  # handsets the hubs do not know: their reports arrive "unverified"


@dataclass
class DemoOptions:
    minutes: float = 2.0
    speedup: float = 5.0
    out: Path = Path("demo-out")
    seed: int = 7
    live: bool = True


@dataclass
class DemoResult:
    sent: int = 0
    delivered: int = 0
    deduplicated: int = 0
    duplicate_rows: int = 0
    lost: int = 0
    error_replies: int = 0
    airtime_s: float = 0.0
    airtime_by_kind: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    exports: Path | None = None
    broadcasts_shown: int = 0
    lost_ids: list[str] = field(default_factory=list)
    # for each lost id, the camps whose hub still carries it at the end ([]: carried by none, custody lost)
    carried_by: dict[str, list[int]] = field(default_factory=dict)

    @property
    def airtime_per_report_s(self) -> float:
        return self.airtime_s / self.delivered if self.delivered else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q * 100) - 1]

    def result_line(self) -> str:
        return (
            f"RESULT sent={self.sent} delivered={self.delivered} deduplicated={self.deduplicated} "
            f"duplicate_rows={self.duplicate_rows} lost={self.lost} error_replies={self.error_replies} "
            f"airtime_per_report_s={self.airtime_per_report_s:.2f} p50_s={self.percentile(0.5):.1f} "
            f"p95_s={self.percentile(0.95):.1f}"
        )


@dataclass
class Scene:
    """Everything the live view reads."""

    options: DemoOptions
    started: float
    hubs: dict[int, Hub]
    satlinks: dict[int, SatLink]
    teams: dict[str, FieldTeam]
    hq_db: str
    net: SimNetwork
    phase: str = "starting"
    hq_recent: list[dict[str, Any]] = field(default_factory=list)
    hq_count: int = 0
    hq_first_seen: dict[str, float] = field(default_factory=dict)
    queue_depth: dict[int, int] = field(default_factory=dict)
    hub_acknowledged: dict[str, float] = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def acknowledged(self) -> dict[str, float]:
        """Field reports the hubs stored and acknowledged -> when (the handset's receipt, if it arrived)."""
        out = dict(self.hub_acknowledged)
        for team in self.teams.values():
            for report_id, at in team.receipts().items():
                out[report_id] = min(at, out.get(report_id, at))
        return out


def provision(workdir: Path, camps: dict[int, tuple[float, float]]) -> tuple[Registry, dict[int, Path]]:
    hq = keyfiles.generate(workdir / "keys" / "hq")
    registry = Registry(hq.sign_public, hq.seal_public)
    dirs: dict[int, Path] = {}
    for camp, (lat, lon) in sorted(camps.items()):
        directory = workdir / "keys" / f"camp{camp}"
        pair = keyfiles.generate(directory, camp)
        registry = registry.with_camp(Camp(camp, f"Camp {camp}", pair.sign_public, lat, lon))
        dirs[camp] = directory
    registry = registry.signed(hq.sign)
    (workdir / "registry.json").write_bytes(registry.to_json_bytes())
    return registry, dirs


def demo_timing(speedup: float) -> TimingSection:
    return TimingSection(
        speedup=speedup,
        custody_ack_delay_s=2.0,
        custody_timeout_s=20.0,
        beacon_interval_s=300.0,
        beacon_min_gap_s=10.0,
        notice_interval_s=30.0,
        batch_wait_s=5.0,
        maintenance_s=120.0,
    )


async def run_demo(options: DemoOptions, on_tick: Callable[[Scene], None] | None = None) -> DemoResult:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    workdir = (options.out / stamp).resolve()
    workdir.mkdir(parents=True, exist_ok=False)
    topology = load_topology(bundled_topology_path("six_camps"))
    hub_nodes = {n.camp: n for n in topology.nodes if n.kind == "hub" and n.camp is not None}
    camps = {camp: (node.lat or 0.0, node.lon or 0.0) for camp, node in hub_nodes.items()}
    registry, key_dirs = provision(workdir, camps)
    total_s = options.minutes * 60.0
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(Broker(workdir))
        satlinks = {c: await stack.enter_async_context(SatLink(broker.port)) for c in UPLINK_CAMPS}
        net = await stack.enter_async_context(
            SimNetwork(topology, speedup=options.speedup, seed=options.seed, pty=False, record_air=True)
        )
        hub_radio = {camp: net.radio(node.id) for camp, node in hub_nodes.items()}
        handset_specs = [n for n in topology.nodes if n.kind == "handset" and n.camp is not None]
        roster_path = workdir / "roster.json"
        Roster(
            [
                Handset(net.radio(n.id).num, n.long_name, net.radio(n.id).public_key)
                for n in handset_specs
                if n.id not in UNROSTERED
            ],
            path=roster_path,
        ).save()
        hubs: dict[int, Hub] = {}
        for camp in sorted(hub_nodes):
            uplink = UplinkSection()
            if camp in satlinks:
                uplink = UplinkSection(url=f"mqtt://127.0.0.1:{satlinks[camp].port}", client_id=f"demo-camp-{camp}")
            config = HubConfig(
                hub=HubSection(camp_id=camp, keys=key_dirs[camp], registry=workdir / "registry.json",
                               store=workdir / f"camp{camp}.db", name=f"Camp {camp}"),
                radio=RadioSection(device=f"tcp://127.0.0.1:{hub_radio[camp].tcp_port}", preset="LONG_FAST"),
                relay=RelaySection(duty_cycle_pct=10.0, retry_max_s=120.0),
                uplink=uplink,
                field=FieldSection(roster=roster_path, per_sender_per_hour=30),
                timing=demo_timing(options.speedup),
            )  # fmt: skip
            hubs[camp] = Hub(config, clock=Clock(options.speedup))
        hq_db = f"sqlite:///{workdir / 'hq.db'}"
        hq_config = HQConfig(
            mqtt=MqttSection(url=f"mqtt://127.0.0.1:{broker.port}", client_id="demo-hq"),
            hq=HQSection(registry=workdir / "registry.json", database=hq_db,
                         protection_key=workdir / "keys" / "hq", hq_keys=workdir / "keys" / "hq"),
        )  # fmt: skip
        ingestor = Ingestor(
            load_registry(hq_config.hq.registry, hq_config.hq.hq_keys),
            open_key=keyfiles.load_seal_private(workdir / "keys" / "hq"),
        )
        worker = HQWorker(hq_config, ingestor)
        teams: dict[str, FieldTeam] = {}
        for spec in handset_specs:
            port = net.radio(spec.id).tcp_port
            if spec.camp in hub_radio and port is not None:
                teams[spec.id] = FieldTeam(spec.id, port, hub_radio[spec.camp].num)
        scene = Scene(options, time.monotonic(), hubs, satlinks, teams, hq_db, net)
        stop_hq = asyncio.Event()
        stop_field = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        try:
            tasks.append(asyncio.create_task(worker.run(stop_hq), name="hq"))
            tasks += [asyncio.create_task(h.run(), name=f"hub{c}") for c, h in hubs.items()]
            await asyncio.gather(*(asyncio.to_thread(t.connect) for t in teams.values()))
            scene.phase = "field teams reporting"
            sender = asyncio.create_task(run_script(teams, total_s * 0.45, stop_field), name="field")
            tasks.append(sender)
            tasks.append(asyncio.create_task(_flap(scene, total_s), name="satellite"))
            tasks.append(asyncio.create_task(_watch_hq(scene), name="hq-view"))
            deadline = scene.started + total_s
            while time.monotonic() < deadline:
                _check(tasks)
                if on_tick is not None:
                    on_tick(scene)
                if sender.done() and scene.phase == "field teams reporting":
                    scene.phase = "waiting for everything to reach HQ"
                if sender.done() and _teams_answered(scene) and await _all_at_hq(scene):
                    break
                await asyncio.sleep(0.5)
            stop_field.set()
            # bounded wait so that `lost` means lost, not late
            scene.phase = "final flush (bounded)"
            for link in satlinks.values():
                link.restore()
            grace = time.monotonic() + max(90.0, total_s)
            while time.monotonic() < grace and not await _all_at_hq(scene):
                _check(tasks)
                if on_tick is not None:
                    on_tick(scene)
                await asyncio.sleep(0.5)
            scene.phase = "summary"
            if on_tick is not None:
                on_tick(scene)
            return await _summarise(scene, workdir, registry)
        finally:
            stop_field.set()
            stop_hq.set()
            for task in tasks:
                if task.get_name() != "hq":
                    task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 10)
            await asyncio.gather(*(asyncio.to_thread(t.close) for t in teams.values()), return_exceptions=True)


def _check(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _flap(scene: Scene, total_s: float) -> None:
    """Satellite windows: camp 1 loses its link for a while, then camp 4, overlapping a little."""
    schedule = [(0.15, 1, "cut"), (0.30, 4, "cut"), (0.40, 1, "restore"), (0.55, 4, "restore")]
    for fraction, camp, action in schedule:
        delay = scene.started + fraction * total_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        link = scene.satlinks[camp]
        link.cut() if action == "cut" else link.restore()


async def _watch_hq(scene: Scene) -> None:
    store = open_store(scene.hq_db)
    seen: set[str] = set()
    async with store:
        while True:
            records = await store.reports()
            for record in records:
                if record.id not in seen:
                    seen.add(record.id)
                    scene.hq_first_seen[record.id] = time.monotonic()
                    scene.hq_recent.append(
                        {"id": record.id, "kind": record.kind, "camp": record.camp, "age_s": record.age_s,
                         "provenance": record.provenance, "at": time.monotonic()}
                    )  # fmt: skip
            scene.hq_recent = scene.hq_recent[-8:]
            scene.hq_count = len(seen)
            for camp, hub in scene.hubs.items():
                if hub.store is not None:
                    scene.queue_depth[camp] = sum((await hub.store.queue_depth()).values())
                    for report_id in await hub.store.inbound_ids():
                        scene.hub_acknowledged.setdefault(report_id, time.monotonic())
            await asyncio.sleep(1.0)


async def _hq_ids(db_url: str) -> list[str]:
    async with open_store(db_url) as store:
        return await store.report_ids()


def _teams_answered(scene: Scene) -> bool:
    """Every message the field teams sent has had its receipt or its error reply. Until then a message may
    still be on its way to its hub (a handset's queue behind a busy channel): ending the demo then would
    leave it out of the count instead of showing it delivered."""
    return all(len(t.receipts()) + len(t.error_replies()) >= len(t.sent) for t in scene.teams.values())


async def _all_at_hq(scene: Scene) -> bool:
    wanted = set(scene.acknowledged())
    if not wanted:
        return False
    return wanted <= set(await _hq_ids(scene.hq_db))


async def _carriers(scene: Scene, report_ids: list[str]) -> dict[str, list[int]]:
    """Which hubs still carry each of these reports: late (still on its way) or custody lost (none)."""
    wanted = {parse_message_id(report_id): report_id for report_id in report_ids}
    carried: dict[str, list[int]] = {report_id: [] for report_id in report_ids}
    for camp, hub in sorted(scene.hubs.items()):
        if hub.store is None or not wanted:
            continue
        for entry in await hub.store.pending(limit=100_000):
            for key in entry.report_keys():
                if key in wanted:
                    carried[wanted[key]].append(camp)
    return carried


async def _summarise(scene: Scene, workdir: Path, registry: Registry) -> DemoResult:
    result = DemoResult()
    acknowledged = scene.acknowledged()
    async with open_store(scene.hq_db) as store:
        records = await store.reports()
        ids = await store.report_ids()
        stats = await store.stats()
        latest = await store.latest_needs()
        by_id = {r.id: r for r in records}
        result.sent = len(acknowledged)
        result.delivered = len(set(acknowledged) & set(by_id))
        result.lost_ids = sorted(set(acknowledged) - set(by_id))
        result.lost = len(result.lost_ids)
        result.carried_by = await _carriers(scene, result.lost_ids)
        result.duplicate_rows = len(ids) - len(set(ids))
        result.deduplicated = int(stats.get("duplicates", 0))
        for report_id, stored_at in acknowledged.items():
            # from the hub's "received" receipt to HQ's database (polled each second), in real seconds
            at_hq = scene.hq_first_seen.get(report_id)
            if at_hq is not None:
                result.latencies.append(max(0.0, at_hq - stored_at))
        out = workdir / "exports"
        out.mkdir()
        (out / "needs.hxl.csv").write_text(export.hxl_csv([r for r in records if r.kind == "needs"], registry))
        (out / "camps.geojson").write_text(json.dumps(export.geojson(latest, registry), indent=2))
        for name, xml in export.cap_alerts(
            [r for r in records if r.kind == "alert"], registry, sender="meshd-demo@meshd.invalid"
        ):
            (out / name).write_bytes(xml)
        result.exports = out
    result.error_replies = sum(len(t.error_replies()) for t in scene.teams.values())
    # everything meshd put on the air: the hub radios' frames and the relay radio repeating them
    handset_nums = {scene.net.radio(t).num for t in scene.teams}
    air_log = (workdir / "on-air.csv").open("w")
    air_log.write("time_s,transmitter,from,to,hop_limit,portnum,kind,airtime_s\n")
    for rec in scene.net.on_air:
        kind_name = ""
        if rec.portnum == PRIVATE_PORT:
            with contextlib.suppress(MeshdError):
                kind_name = linkauth.frame_kind(rec.payload).value
        air_log.write(
            f"{rec.time:.2f},{rec.transmitter:08x},{rec.from_node:08x},{rec.to_node:08x},{rec.hop_limit},"
            f"{rec.portnum},{kind_name},{rec.airtime_s:.3f}\n"
        )
        if rec.from_node in handset_nums or rec.portnum != PRIVATE_PORT:
            continue
        result.airtime_s += rec.airtime_s
        kind = kind_name or "other"
        result.airtime_by_kind[kind] = result.airtime_by_kind.get(kind, 0.0) + rec.airtime_s
    air_log.close()
    result.broadcasts_shown = sum(h.broadcasts_shown for h in scene.hubs.values())
    for camp, hub in sorted(scene.hubs.items()):
        if hub.relay is not None:
            log.info("camp %d relay counters: %s", camp, dict(sorted(hub.relay.counters.items())))
            link_metrics = getattr(hub.relay.radio, "metrics", None)
            log.info("camp %d radio node !%08x link: %s", camp, hub.relay.radio.my_node or 0, link_metrics)
    return result
