"""A simulated network of camps on LongFast: delivery, latency, duplicates and airtime of the relay.

Run: .venv/bin/python bench/sim_network.py [--quick] [--camps 20] [--speedup 40] [--seed 3] [--no-relays]

Scenario (issue 4, "Benchmarks"):
- Topology ("valley"): the camps on a jittered grid 6 km apart in hilly terrain; a camp hears the camps
  next to it on the grid (explicit links, `links_only`), and hill relays (Meshtastic ROUTER radios, one per
  10 camps) each hear the camps around them. Every link loses 20 % of frames (`--loss`), on top of the
  simulator's collisions, half-duplex and carrier sense. Paths from far camps to an uplink take several
  hops. Hubs run `[relay] neighbour_radio_hops = 1`, so a camp reached through a relay radio is a neighbour.
  Hub radios are CLIENT_MUTE, as firmware-config ships them (`--hub-role CLIENT` to compare).
- Two uplink hubs: camp 1 in one corner (always up) and the camp in the opposite corner, whose uplink
  flaps (`--flap-up`/`--flap-down` scenario seconds up/down, starting up). HQ custody is simulated: an
  uplink hub "publishes" whatever is in its outbox while its uplink is connected (the PUBACK path:
  `HubStore.mark_delivered(published=True)`, which feeds the DELIVERED notices), like tests/support/hubs.py.
- Every hub is a real `Hub` (SQLite store, relay, field desk) in this process with a real `RadioLink` over
  TCP to its own virtual radio; simulator and hubs share one event loop and one speed-up factor.
- Field traffic: each camp's teams send 5-10 reports (`--quick`: 3-5), in two bursts at random moments of
  the first 15 scenario minutes after a warm-up, a report every 5-40 s within a burst, about one in seven an
  alert; each report is a shorthand text ("N W4 F3 P1200", "A CHOLERA 3") parsed with the field parser
  and originated at the hub (what the field desk does with a handset's message).

Measured:
- delivered ratio (reports HQ got / reports originated), latency p50/p95 (scenario seconds from originate,
  durable at the origin hub, to first publication at an uplink), duplicates at the uplinks before HQ's
  de-duplication by message id, and duplicate rows after it.
- airtime: every frame on the air from the first report to the end of the run (`AirRecord`s of the
  simulator: hub radios, and relay or hub radios repeating them), classified by what it carries: report
  data (first send per hub and envelope), data retransmissions, custody notices, beacons (STATUS), delivered
  notices; the boot-time beacon wave of the warm-up is reported apart. The run ends when HQ has every report
  and every origin hub knows it (the field team's "delivered" receipt; at most 6 notice intervals more), plus
  two notice intervals, so that the DELIVERED notices of the last reports and their repeats are counted too.
- ideal: each report's own signed envelope (single, not batched) sent once per radio hop on the shortest
  path (BFS over the link table; relay radios count as hops) from its camp to the nearest uplink hub; also
  "ideal (live uplink)": to the nearest uplink that was up when the report was originated.
- naive flooding: the same report texts sent at the same moments as Meshtastic text broadcasts (want_ack,
  so the originator repeats until it hears a rebroadcast, as the phone apps do), hop limit
  max(3, farthest camp's hops to an uplink), through managed flooding in the same simulated topology with
  every radio in its stock role (hub radios CLIENT: Meshtastic without meshd; virtual time): total airtime,
  and how many reached an uplink hub's radio.

- field receipts: reports whose origin hub knows at the end that HQ has them (Delivered news back home).

Ends with `RESULT delivered_ratio=... p50_s=... p95_s=... duplicates=... airtime_vs_ideal=... flooding_vs_ideal=...
receipts=...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.config import HubConfig, HubSection, RadioSection, RelaySection, TimingSection
from meshd.daemon.hub import Hub
from meshd.errors import MeshdError
from meshd.radio import airtime
from meshd.radio.api import BROADCAST, TEXT_PORT
from meshd.radio.sim import AirRecord, LinkSpec, NodeSpec, SimNetwork, Topology, node_num_for
from meshd.radio.sim.topology import destination_point
from meshd.relay.relay import RelayTiming
from meshd.wire import codec, linkauth
from meshd.wire.envelope import Envelope, Kind
from meshd.wire.registry import Camp, Registry
from meshd.wire.text import AlertEntry, NeedsEntry, parse_shorthand

PRESET = "LONG_FAST"
PORTNUM = 256
SPACING_M = 6000.0
CENTER = (38.30, 127.90)
BOOT_S = 60.0  # hubs boot at random moments of the first minute (before the warm-up ends)
DATA_KINDS = {Kind.NEEDS, Kind.ALERT, Kind.SEALED, Kind.BATCH}
# [timing] of the hubs: the shipped defaults (meshd.config.TimingSection); `--timing NAME=S` overrides one
TIMING = RelayTiming.from_config(TimingSection())
RECEIPT_WAIT_INTERVALS = 6  # notice intervals to wait after HQ has everything for the receipts at the origins
ALERTS = ("A CHOLERA 3", "A FIRE", "A CHILD", "A SECURITY", "A FLOOD 2", "A DIARRHOEA 5")
SECTORS = ("W", "F", "S", "C", "M", "H")


# ------------------------------------------------------------------------------------------ scenario


@dataclass(frozen=True)
class Scenario:
    camps: int
    reports: tuple[int, int]  # per camp, inclusive range
    speedup: float
    seed: int
    loss: float
    relays: bool
    hub_role: str
    timing: RelayTiming
    flap_up_s: float
    flap_down_s: float
    warmup_s: float = 180.0
    burst_window_s: float = 900.0
    deadline_s: float = 2400.0  # after the last report is originated


@dataclass(frozen=True)
class Net:
    topology: Topology
    hubs: dict[int, str]  # camp -> topology id of its hub radio
    relays: tuple[str, ...]
    stable_uplink: int
    flapping_uplink: int
    adjacency: dict[str, set[str]]

    def hops_from(self, sources: list[str]) -> dict[str, int]:
        """Radio hops from the nearest of `sources` to every node (BFS over the link table)."""
        dist = dict.fromkeys(sources, 0)
        queue = deque(sources)
        while queue:
            node = queue.popleft()
            for other in self.adjacency[node]:
                if other not in dist:
                    dist[other] = dist[node] + 1
                    queue.append(other)
        return dist


def valley_topology(camps: int, seed: int, loss: float, *, relays: bool, hub_role: str = "CLIENT") -> Net:
    """Camps on a jittered grid (rows of 5), neighbours on the grid linked, hill relays over groups of camps."""
    cols = 5 if camps >= 10 else max(2, math.ceil(camps / 2))
    rows = math.ceil(camps / cols)
    rng = random.Random(f"valley:{seed}")
    nodes: list[NodeSpec] = []
    grid: dict[tuple[int, int], str] = {}
    where: dict[str, tuple[float, float]] = {}
    hubs: dict[int, str] = {}
    for index in range(camps):
        row, col = divmod(index, cols)
        x = (col + rng.uniform(-0.15, 0.15)) * SPACING_M
        y = (row + rng.uniform(-0.15, 0.15)) * SPACING_M
        lat, lon = destination_point(*destination_point(*CENTER, 90.0, x), 0.0, y)
        camp = index + 1
        hub_id = f"c{camp}-hub"
        nodes.append(
            NodeSpec(id=hub_id, num=node_num_for(f"valley{seed}-{hub_id}"), long_name=f"Camp {camp} hub",
                     short_name=f"C{camp}"[:4], role=hub_role, kind="hub", camp=camp, lat=lat, lon=lon, alt_m=300.0)
        )  # fmt: skip
        grid[(row, col)] = hub_id
        where[hub_id] = (x, y)
        hubs[camp] = hub_id
    links: list[LinkSpec] = []
    adjacency: dict[str, set[str]] = {n.id: set() for n in nodes}

    def link(a: str, b: str) -> None:
        links.append(LinkSpec(a=a, b=b, loss=loss))
        adjacency[a].add(b)
        adjacency[b].add(a)

    for (row, col), hub_id in grid.items():
        for other in ((row, col + 1), (row + 1, col)):
            if other in grid:
                link(hub_id, grid[other])
    relay_ids: list[str] = []
    if relays:
        count = max(1, camps // 10)
        for r in range(count):
            # centred over its share of the columns, between the middle rows: hears the camps within 1.6 spacings
            x = ((r + 0.5) * cols / count - 0.5) * SPACING_M
            y = (rows - 1) / 2 * SPACING_M
            lat, lon = destination_point(*destination_point(*CENTER, 90.0, x), 0.0, y)
            relay_id = f"relay{r + 1}"
            nodes.append(
                NodeSpec(id=relay_id, num=node_num_for(f"valley{seed}-{relay_id}"), long_name=f"Hill relay {r + 1}",
                         short_name=f"RL{r + 1}"[:4], role="ROUTER", kind="relay", lat=lat, lon=lon, alt_m=900.0,
                         antenna_gain_db=8.0)
            )  # fmt: skip
            adjacency[relay_id] = set()
            for hub_id, (hx, hy) in where.items():
                if math.hypot(hx - x, hy - y) <= 1.6 * SPACING_M:
                    link(relay_id, hub_id)
            relay_ids.append(relay_id)
    topology = Topology(nodes=tuple(nodes), links=tuple(links), name=f"valley-{camps}", preset=PRESET,
                        region="KR", links_only=True)  # fmt: skip
    return Net(topology, hubs, tuple(relay_ids), 1, camps, adjacency)


@dataclass(frozen=True)
class Planned:
    camp: int
    at: float  # scenario seconds after the start of the run
    text: str


def plan_reports(s: Scenario) -> list[Planned]:
    rng = random.Random(f"reports:{s.seed}")
    planned: list[Planned] = []
    for camp in range(1, s.camps + 1):
        count = rng.randint(*s.reports)
        first = rng.randint(1, count - 1) if count > 1 else 1
        for burst_size in (first, count - first):
            t = s.warmup_s + rng.uniform(0.0, s.burst_window_s)
            for _ in range(burst_size):
                planned.append(Planned(camp, t, report_text(rng)))
                t += rng.uniform(5.0, 40.0)
    planned.sort(key=lambda p: p.at)
    return planned


def report_text(rng: random.Random) -> str:
    if rng.random() < 0.14:
        return rng.choice(ALERTS)
    sectors = rng.sample(SECTORS, rng.randint(2, 6))
    parts = ["N", *(f"{s}{rng.randint(0, 5)}" for s in sectors)]
    if rng.random() < 0.7:
        parts.append(f"P{rng.randrange(300, 15000, 10)}")
    if rng.random() < 0.2:
        parts.append(f"K{rng.randint(1, 30)}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ HQ and uplinks


@dataclass
class HQ:
    """Stands in for the broker + `meshd hq`: verifies, counts every publication, de-duplicates by id."""

    registry: Registry
    clock: Clock
    publications: Counter[str] = field(default_factory=Counter)
    first_at: dict[str, float] = field(default_factory=dict)
    rows: dict[str, str] = field(default_factory=dict)  # id -> kind, one row per report (the upsert)
    rejected: int = 0

    def publish(self, envelope: Envelope) -> list[tuple[int, int]]:
        try:
            self.registry.verify_envelope(envelope)
            reports = codec.unbatch(envelope)
        except MeshdError:
            self.rejected += 1
            return []
        for report in reports:
            self.publications[report.id] += 1
            self.first_at.setdefault(report.id, self.clock.now())
            self.rows.setdefault(report.id, report.kind.value)
        return [(r.origin, r.seq) for r in reports]


class BenchUplink:
    """A hub's satellite uplink: while `connected`, publishes its outbox (QoS 1: PUBACK = custody)."""

    def __init__(self, hub: Hub, hq: HQ) -> None:
        self.hub = hub
        self.hq = hq
        self.connected = True
        self.changes: list[tuple[float, bool]] = []

    def set_connected(self, up: bool) -> None:
        self.connected = up
        self.changes.append((self.hq.clock.now(), up))
        if self.hub.relay is not None:
            self.hub.relay.wake()

    async def run(self) -> None:
        while True:
            store = self.hub.store
            if self.connected and store is not None:
                for entry in await store.pending(unpublished_only=True, limit=100):
                    if not self.connected:
                        break
                    ids = self.hq.publish(Envelope.from_bytes(entry.envelope))
                    await store.mark_delivered(ids, published=True)
            await asyncio.sleep(0.01)

    def up_at(self, t: float) -> bool:
        state = True
        for when, up in self.changes:
            if when > t:
                break
            state = up
        return state


async def flap(uplink: BenchUplink, clock: Clock, up_s: float, down_s: float) -> None:
    while True:
        await clock.sleep(up_s)
        uplink.set_connected(False)
        await clock.sleep(down_s)
        uplink.set_connected(True)


# ------------------------------------------------------------------------------------------ meshd run


@dataclass
class Originated:
    planned: Planned
    id: str
    at: float  # hub clock, scenario seconds
    envelope_len: int
    alert: bool


@dataclass
class MeshdRun:
    originated: list[Originated]
    hq: HQ
    air: list[AirRecord]
    t_first_report: float  # simulator time
    t_end: float
    counters: Counter[str]
    lag_p99_ms: float
    lag_max_ms: float
    wall_s: float
    flapping: BenchUplink
    hub_radios: dict[int, str]  # node number -> camp hub id
    relay_radios: set[int]
    holders: dict[str, list[int]] = field(default_factory=dict)  # undelivered id -> camps still carrying it
    per_hub: dict[int, Counter[str]] = field(default_factory=dict)  # camp -> its relay's counters
    origin_error: str = ""
    channel: dict[str, int] = field(default_factory=dict)  # the simulator's totals (whole run)
    receipts: int = 0  # reports whose origin hub knows HQ has them, at the end
    no_receipt: dict[str, list[str]] = field(default_factory=dict)  # id -> camps that know HQ has it
    receipts_at_s: float = 0.0  # scenario s from the start when the last receipt came (or the wait ended)


def provision(root: Path, camps: list[int]) -> tuple[Registry, Path]:
    """Keys for HQ and every camp, and the HQ-signed camp registry (what `meshd keygen`/`registry` make)."""
    hq = keyfiles.generate(root / "hq")
    registry = Registry(hq.sign_public, hq.seal_public)
    for camp in camps:
        pair = keyfiles.generate(root / f"keys{camp}", camp)
        registry = registry.with_camp(Camp(camp, f"Camp {camp}", pair.sign_public))
    registry = registry.signed(hq.sign)
    path = root / "registry.json"
    path.write_bytes(registry.to_json_bytes())
    return registry, path


def hub_config(root: Path, registry_path: Path, camp: int, port: int, s: Scenario) -> HubConfig:
    timing = {f.name: getattr(s.timing, f.name) for f in dataclasses.fields(RelayTiming)}
    return HubConfig(
        hub=HubSection(camp_id=camp, keys=root / f"keys{camp}", registry=registry_path, store=root / f"camp{camp}.db"),
        radio=RadioSection(device=f"tcp://127.0.0.1:{port}", preset=PRESET, region="KR"),
        relay=RelaySection(neighbour_radio_hops=1 if s.relays else 0),
        timing=TimingSection(speedup=s.speedup, **timing),
    )


async def run_meshd(s: Scenario, net: Net, plan: list[Planned], root: Path, *, progress: bool) -> MeshdRun:
    camps = list(range(1, s.camps + 1))
    registry, registry_path = provision(root, camps)
    clock = Clock(s.speedup)
    wall0 = time.monotonic()
    async with SimNetwork(net.topology, speedup=s.speedup, seed=s.seed, pty=False, record_air=True) as sim:
        sim.clock.lag.keep_samples = True
        ports = {c: sim.radio(net.hubs[c]).tcp_port or 0 for c in camps}
        hubs = {c: Hub(hub_config(root, registry_path, c, ports[c], s), clock=clock) for c in camps}
        hq = HQ(registry, clock)
        uplinks = {c: BenchUplink(hubs[c], hq) for c in (net.stable_uplink, net.flapping_uplink)}
        for camp, uplink in uplinks.items():
            hubs[camp].uplink = uplink
        offset = clock.now() - sim.clock.now  # hub clock - simulator clock
        t0 = clock.now()
        originated: list[Originated] = []
        errors: list[str] = []
        async with run_hubs(list(hubs.values()), clock, BOOT_S, s.seed) as background:
            for uplink in uplinks.values():
                background.append(asyncio.create_task(uplink.run()))
            flapping = uplinks[net.flapping_uplink]
            background.append(asyncio.create_task(flap(flapping, clock, s.flap_up_s, s.flap_down_s)))

            async def field_teams() -> None:
                for planned in plan:
                    await clock.sleep(t0 + planned.at - clock.now())
                    entry = parse_shorthand(planned.text)
                    hub = hubs[planned.camp]
                    assert hub.relay is not None
                    assert isinstance(entry, NeedsEntry | AlertEntry)
                    kind = Kind.ALERT if isinstance(entry, AlertEntry) else Kind.NEEDS
                    try:
                        env = await hub.relay.originate(kind, entry.body)
                    except MeshdError as exc:
                        errors.append(f"camp {planned.camp}: {exc}")
                        continue
                    originated.append(Originated(planned, env.id, clock.now(), len(env.to_bytes()), kind is Kind.ALERT))

            teams = asyncio.create_task(field_teams())
            background.append(teams)
            last_report = t0 + plan[-1].at
            deadline = last_report + s.deadline_s
            next_note = clock.now()
            while clock.now() < deadline:
                await clock.sleep(5.0)
                for task in background:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise RuntimeError(f"{task.get_name()} stopped") from task.exception()
                done = teams.done() and len(hq.rows) >= len(originated)
                if progress and clock.now() >= next_note:
                    next_note += 120.0
                    print(
                        f"  t={clock.now() - t0:6.0f} s  originated {len(originated):3d}/{len(plan)}  "
                        f"at HQ {len(hq.rows):3d}  on air {len(sim.on_air):5d} frames  "
                        f"(wall {time.monotonic() - wall0:5.0f} s)",
                        flush=True,
                    )
                if done:
                    break
            # The field team's "delivered" receipt needs the news back at the origin hub: wait for it (a few
            # notice intervals at most), then let the last notices and their repeats go out: they count too.
            cap = clock.now() + RECEIPT_WAIT_INTERVALS * s.timing.notice_interval_s
            while await receipts(originated, hubs) < len(originated) and clock.now() < cap:
                await clock.sleep(5.0)
            receipts_at = clock.now() - t0
            await clock.sleep(2 * s.timing.notice_interval_s + 20.0)
            known_at_origin = await receipts(originated, hubs)
            no_receipt = await news_stops(originated, hubs)
            t_end = sim.clock.now
            counters: Counter[str] = Counter()
            per_hub: dict[int, Counter[str]] = {}
            for camp, hub in hubs.items():
                if hub.relay is not None:
                    counters.update(hub.relay.counters)
                    per_hub[camp] = Counter(hub.relay.counters)
            holders = await who_holds([o.id for o in originated if o.id not in hq.rows], hubs)
        air = list(sim.on_air)
        stats = sim.stats
        channel = {
            "transmissions": stats.transmissions,
            "receptions": stats.receptions,
            "link losses": stats.losses,
            "collisions": stats.collisions,
            "half-duplex": stats.half_duplex_losses,
        }
        lag = sim.clock.lag
        first = min((o.at for o in originated), default=t0 + s.warmup_s) - offset
        kinds = {n.num: n for n in net.topology.nodes}
    return MeshdRun(
        originated=originated,
        hq=hq,
        air=air,
        t_first_report=first,
        t_end=t_end,
        counters=counters,
        per_hub=per_hub,
        lag_p99_ms=lag.percentile(99) * 1000,
        lag_max_ms=lag.max_s * 1000,
        wall_s=time.monotonic() - wall0,
        flapping=flapping,
        hub_radios={num: spec.id for num, spec in kinds.items() if spec.kind == "hub"},
        relay_radios={num for num, spec in kinds.items() if spec.kind == "relay"},
        holders=holders,
        origin_error="; ".join(errors),
        channel=channel,
        receipts=known_at_origin,
        no_receipt=no_receipt,
        receipts_at_s=receipts_at,
    )


async def receipts(originated: list[Originated], hubs: dict[int, Hub]) -> int:
    """Reports whose origin hub knows HQ has them (what its field desk tells the team as "delivered")."""
    known = 0
    for o in originated:
        store = hubs[o.planned.camp].store
        origin, _, seq = o.id.partition(":")
        if store is not None and await store.is_delivered(int(origin), int(seq)):
            known += 1
    return known


async def news_stops(originated: list[Originated], hubs: dict[int, Hub]) -> dict[str, list[str]]:
    """For each report whose origin hub does not know HQ has it: the camps that do know (where the news
    stopped on its way back), each with the camp it was to tell next and whether it did (or gave up)."""
    camp_of = {hub.relay.radio.my_node: camp for camp, hub in hubs.items() if hub.relay is not None}
    out: dict[str, list[str]] = {}
    for o in originated:
        origin, _, seq = o.id.partition(":")
        home = hubs[o.planned.camp].store
        if home is None or await home.is_delivered(int(origin), int(seq)):
            continue
        knowing: list[str] = []
        for camp, hub in hubs.items():
            state = await hub.store.news_state(int(origin), int(seq)) if hub.store is not None else None
            if state is None:
                continue
            tell, told = state
            knowing.append(
                f"{camp}"
                + (f" (to tell camp {camp_of.get(tell, hex(tell))}: {'done' if told else 'not yet'})" if tell else "")
            )
        out[o.id] = knowing
    return out


async def who_holds(ids: list[str], hubs: dict[int, Hub]) -> dict[str, list[int]]:
    """For each undelivered report, the hubs whose outbox still carries it (not handed over to anyone).
    None at all means custody was lost: every hub that had it believes another one took it."""
    held: dict[str, list[int]] = {i: [] for i in ids}
    for camp, hub in hubs.items():
        if hub.store is None or not ids:
            continue
        for entry in await hub.store.pending(limit=100_000):
            for origin, seq in entry.report_keys():
                key = f"{origin}:{seq}"
                if key in held:
                    held[key].append(camp)
    return held


@contextlib.asynccontextmanager
async def run_hubs(hubs: list[Hub], clock: Clock, boot_s: float, seed: int) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run every hub (and whatever the caller adds to the list) until the block ends. The hubs boot at
    random moments of the first `boot_s` scenario seconds, as camps' Pis do, not in lockstep."""
    rng = random.Random(f"boot:{seed}")

    async def boot(hub: Hub, delay: float) -> None:
        await clock.sleep(delay)
        await hub.run()

    tasks = [asyncio.create_task(boot(h, rng.uniform(0.0, boot_s)), name=f"hub-{h.config.hub.camp_id}") for h in hubs]
    try:
        while not all(h.relay is not None for h in hubs):
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.01)
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# ------------------------------------------------------------------------------------------ flooding run


@dataclass
class FloodRun:
    hop_limit: int
    airtime_s: float
    frames: int
    reached_uplink: int
    reports: int


async def run_flooding(s: Scenario, net: Net, plan: list[Planned], hop_limit: int) -> FloodRun:
    """The same texts as Meshtastic channel broadcasts, managed flooding only (virtual time)."""
    async with SimNetwork(net.topology, speedup=math.inf, seed=s.seed, pty=False, base_port=None,
                          record_air=True) as sim:  # fmt: skip
        sent: list[tuple[int, int]] = []  # (origin node, packet id)

        def send(planned: Planned) -> None:
            radio = sim.radio(net.hubs[planned.camp])
            pid = radio.send(planned.text.encode(), to=BROADCAST, portnum=TEXT_PORT, hop_limit=hop_limit, want_ack=True)
            sent.append((radio.num, pid))

        for planned in plan:
            sim.clock.call_at(planned.at, send, planned)
        await sim.sleep(plan[-1].at + 300.0)
        uplink_radios = [sim.radio(net.hubs[c]) for c in (net.stable_uplink, net.flapping_uplink)]
        heard = {
            (int(getattr(d.packet, "from")), int(d.packet.id))
            for radio in uplink_radios
            for d in radio.delivered
            if d.packet.decoded.portnum == TEXT_PORT
        }
        uplink_nums = {r.num for r in uplink_radios}
        reached = sum(1 for key in sent if key in heard or key[0] in uplink_nums)
        return FloodRun(hop_limit, sum(r.airtime_s for r in sim.on_air), len(sim.on_air), reached, len(sent))


# ------------------------------------------------------------------------------------------ analysis


def classify(run: MeshdRun, net: Net) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Airtime per category (list of frame airtimes) in the measured window, and in the warm-up."""
    node_id = {spec.num: spec.id for spec in net.topology.nodes}

    def linked_directly(a: int, b: int) -> bool:
        return node_id.get(b, "") in net.adjacency.get(node_id.get(a, ""), set())

    window: dict[str, list[float]] = {}
    warmup: dict[str, list[float]] = {}
    first_sends: set[tuple[int, int, int]] = set()
    for record in run.air:
        if record.time > run.t_end:
            continue
        target = window if record.time >= run.t_first_report else warmup
        if record.portnum != PORTNUM:
            category = f"other (port {record.portnum})"
        else:
            env: Envelope | None = None
            kind: Kind | None = None
            try:
                if linkauth.is_link_frame(record.payload):
                    kind = linkauth.frame_kind(record.payload)
                else:
                    env = Envelope.from_bytes(record.payload)
                    kind = env.kind
            except MeshdError:
                pass
            if kind is None:
                category = "undecodable"
            elif env is not None and env.kind in DATA_KINDS:
                if record.relayed:
                    category = "report data: " + repeater(run, record)
                    if linked_directly(record.from_node, record.to_node):
                        category += " (to a hub its sender also reaches directly)"
                else:
                    key = (record.from_node, env.origin, env.seq)
                    category = "report data: retransmission" if key in first_sends else "report data: first send"
                    if record.hop_limit > 0 and linked_directly(record.from_node, record.to_node):
                        category += " (the long way, to a hub it also reaches directly)"
                    first_sends.add(key)
            else:
                name = {Kind.CUSTODY: "custody notices", Kind.STATUS: "beacons", Kind.DELIVERED: "delivered notices"}
                category = name.get(kind, kind.value)
                if record.relayed:
                    category += ": " + repeater(run, record)
        target.setdefault(category, []).append(record.airtime_s)
    return window, warmup


def repeater(run: MeshdRun, record: AirRecord) -> str:
    return "repeated by a hill relay" if record.transmitter in run.relay_radios else "repeated by another hub's radio"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main_report(s: Scenario, net: Net, run: MeshdRun, flood: FloodRun) -> None:
    modem = airtime.preset(PRESET)
    uplink_ids = [net.hubs[net.stable_uplink], net.hubs[net.flapping_uplink]]
    hops_any = net.hops_from(uplink_ids)
    hops_stable = net.hops_from([net.hubs[net.stable_uplink]])
    hops_flap = net.hops_from([net.hubs[net.flapping_uplink]])
    ideal = ideal_live = 0.0
    for o in run.originated:
        frame = airtime.payload_airtime_s(o.envelope_len, modem, PORTNUM)
        hub_id = net.hubs[o.planned.camp]
        ideal += frame * hops_any[hub_id]
        live = hops_any[hub_id] if run.flapping.up_at(o.at) else hops_stable[hub_id]
        ideal_live += frame * live
    n = len(run.originated)
    delivered = sum(1 for o in run.originated if o.id in run.hq.rows)
    latencies = [run.hq.first_at[o.id] - o.at for o in run.originated if o.id in run.hq.first_at]
    duplicates = sum(c - 1 for c in run.hq.publications.values())
    window, warmup = classify(run, net)
    total = sum(sum(v) for v in window.values())
    per_report = total / delivered if delivered else math.inf

    print("\n## Scenario\n")
    hub_links = sum(1 for lk in net.topology.links if lk.a.endswith("-hub") and lk.b.endswith("-hub"))
    path_hops = [hops_any[net.hubs[c]] for c in net.hubs if c not in (net.stable_uplink, net.flapping_uplink)]
    print_table(
        ["item", "value"],
        [
            ["camps (hubs) / hill relays (ROUTER)", f"{s.camps} / {len(net.relays)}"],
            [
                "links (hub-hub + relay-hub), loss each",
                f"{len(net.topology.links)} ({hub_links} + {len(net.topology.links) - hub_links}), {s.loss:.0%}",
            ],
            [
                "radio hops to nearest uplink (non-uplink camps): mean / max",
                f"{statistics.mean(path_hops):.2f} / {max(path_hops)}",
            ],
            [
                "hops to the stable uplink only: mean / max",
                f"{statistics.mean(hops_stable[net.hubs[c]] for c in net.hubs):.2f} / "
                f"{max(hops_stable[net.hubs[c]] for c in net.hubs)}",
            ],
            [
                "uplinks",
                f"camp {net.stable_uplink} (always up), camp {net.flapping_uplink} "
                f"(up {s.flap_up_s:.0f} s / down {s.flap_down_s:.0f} s, {len(run.flapping.changes)} changes)",
            ],
            [
                "reports originated (alerts)",
                f"{n} ({sum(o.alert for o in run.originated)}), {s.reports[0]}-{s.reports[1]} per camp in 2 bursts",
            ],
            ["code (git)", code_version()],
            ["preset / speed-up / seed / hub radio role", f"{PRESET} / {s.speedup:g}x / {s.seed} / {s.hub_role}"],
            [
                "[timing] (scenario s)",
                ", ".join(f"{f.name}={getattr(s.timing, f.name):g}" for f in dataclasses.fields(RelayTiming)),
            ],
            ["simulator lateness p99 / max (real ms)", f"{run.lag_p99_ms:.0f} / {run.lag_max_ms:.0f}"],
            [
                "measured window (scenario s) / wall time of the meshd run",
                f"{run.t_end - run.t_first_report:.0f} / {run.wall_s:.0f} s",
            ],
        ],
    )
    del hops_flap
    print("\n## Delivery\n")
    print_table(
        ["metric", "value"],
        [
            ["delivered to HQ", f"{delivered} / {n} ({delivered / n:.1%})" if n else "0"],
            [
                "latency p50 / p95 / max (scenario s)",
                f"{percentile(latencies, 50):.0f} / {percentile(latencies, 95):.0f} / {max(latencies, default=0):.0f}",
            ],
            ["alert latency p50 / max (scenario s)", alert_latency(run)],
            ["duplicate publications at the uplinks (before HQ dedup)", str(duplicates)],
            [
                "duplicate rows at HQ (after dedup)",
                str(sum(run.hq.publications.values()) - duplicates - len(run.hq.rows)),
            ],
            ["rejected at HQ (signature)", str(run.hq.rejected)],
            [
                "field receipts: origin hub knows HQ has the report, at the end (last one at scenario s)",
                f"{run.receipts} / {len(run.originated)} ({run.receipts_at_s:.0f})"
                + "".join(f"; {i} known at camps {camps}" for i, camps in run.no_receipt.items()),
            ],
            [
                "undelivered at the end: still carried by a hub (late) / carried by none (custody lost)",
                f"{sum(1 for h in run.holders.values() if h)} / {sum(1 for h in run.holders.values() if not h)}"
                + (
                    " (" + ", ".join(f"{i} at {h or 'none'}" for i, h in run.holders.items()) + ")"
                    if run.holders
                    else ""
                ),
            ],
        ],
    )
    print("\n## Airtime of the relay (first report -> end of run)\n")
    rows = []
    for category in sorted(window, key=lambda c: -sum(window[c])):
        frames = window[category]
        rows.append([category, str(len(frames)), f"{sum(frames):.1f}", f"{sum(frames) / total:.0%}",
                     f"{sum(frames) / delivered:.2f}" if delivered else "-"])  # fmt: skip
    rows.append(["**total**", str(sum(len(v) for v in window.values())), f"{total:.1f}", "100%", f"{per_report:.2f}"])
    print_table(["frames carrying", "frames", "airtime s", "share", "s per delivered report"], rows)
    boot = sum(sum(v) for v in warmup.values())
    print(f"\nwarm-up before the first report (boot beacon wave, not counted above): "
          f"{sum(len(v) for v in warmup.values())} frames, {boot:.1f} s")  # fmt: skip
    c = run.counters
    print(
        "relay counters (all hubs): "
        + ", ".join(f"{k}={c[k]}" for k in ("originated", "batches_built", "forwarded", "retransmissions",
                                           "accepted", "duplicates", "taken_back", "custody_acks_sent",
                                           "custody_handed_over", "beacons_sent", "delivered_notices_sent",
                                           "delivered_learnt", "budget_waits", "send_errors", "errors"))
    )  # fmt: skip
    shown = {"originated", "batches_built", "forwarded", "retransmissions", "accepted", "duplicates", "taken_back",
             "custody_acks_sent", "custody_handed_over", "beacons_sent", "delivered_notices_sent",
             "delivered_learnt", "budget_waits", "send_errors", "errors", "frames_sent"}  # fmt: skip
    print("other relay counters: " + (", ".join(f"{k}={v}" for k, v in sorted(c.items()) if k not in shown) or "-"))
    busiest = sorted(run.per_hub.items(), key=lambda kv: -kv[1]["retransmissions"])[:4]
    print(
        "most retransmissions: "
        + "; ".join(
            f"camp {camp}: {k['retransmissions']} (taken back {k['taken_back']}, duplicates {k['duplicates']}, "
            f"budget waits {k['budget_waits']})"
            for camp, k in busiest
        )
    )
    if run.channel:
        print("channel (whole run, simulator): " + ", ".join(f"{k} {v}" for k, v in run.channel.items()))
    print("\n## Against the ideal and naive flooding\n")
    print_table(
        ["", "airtime s", "s per report", "× ideal"],
        [
            ["ideal: own frame once per hop to the nearest uplink", f"{ideal:.1f}", f"{ideal / n:.2f}", "1.00"],
            [
                "ideal (live uplink at origination)",
                f"{ideal_live:.1f}",
                f"{ideal_live / n:.2f}",
                f"{ideal_live / ideal:.2f}",
            ],
            ["meshd relay (everything it sent)", f"{total:.1f}", f"{per_report:.2f}", f"{total / ideal:.2f}"],
            [
                f"naive flooding of the texts (hop limit {flood.hop_limit}, want_ack); "
                f"{flood.reached_uplink}/{flood.reports} reached an uplink radio",
                f"{flood.airtime_s:.1f}",
                f"{flood.airtime_s / n:.2f}",
                f"{flood.airtime_s / ideal:.2f}",
            ],
        ],
    )
    if run.origin_error:
        print(f"\norigination errors: {run.origin_error}")
    print(
        f"\nRESULT delivered_ratio={delivered / n:.3f} p50_s={percentile(latencies, 50):.0f} "
        f"p95_s={percentile(latencies, 95):.0f} duplicates={duplicates} airtime_vs_ideal={total / ideal:.2f} "
        f"flooding_vs_ideal={flood.airtime_s / ideal:.2f} "
        f"duplicate_rows={sum(run.hq.publications.values()) - duplicates - len(run.hq.rows)} "
        f"lost={sum(1 for h in run.holders.values() if not h)} receipts={run.receipts / max(1, n):.3f}"
    )


def alert_latency(run: MeshdRun) -> str:
    values = [run.hq.first_at[o.id] - o.at for o in run.originated if o.alert and o.id in run.hq.first_at]
    if not values:
        return "-"
    return f"{percentile(values, 50):.0f} / {max(values):.0f}"


async def main_async(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    s = Scenario(
        camps=args.camps or (8 if args.quick else 20),
        reports=(3, 5) if args.quick else (5, 10),
        speedup=args.speedup,
        seed=args.seed,
        loss=args.loss,
        relays=not args.no_relays,
        hub_role=args.hub_role,
        timing=dataclasses.replace(TIMING, **dict(parse_timing(t) for t in args.timing)),
        flap_up_s=args.flap_up,
        flap_down_s=args.flap_down,
        burst_window_s=args.window or (900.0 if args.quick else 3600.0),
    )
    net = valley_topology(s.camps, s.seed, s.loss, relays=s.relays, hub_role=s.hub_role)
    plan = plan_reports(s)
    uplink_ids = [net.hubs[net.stable_uplink], net.hubs[net.flapping_uplink]]
    hops = net.hops_from(uplink_ids)
    flood_hops = min(7, max(3, *(hops[h] for h in net.hubs.values())))
    print(f"{s.camps} camps, {len(net.relays)} relays, {len(plan)} reports, speed-up {s.speedup:g}x; meshd run ...")
    root = Path(tempfile.mkdtemp(prefix="meshd-bench-simnet-"))
    try:
        run = await run_meshd(s, net, plan, root, progress=not args.quiet)
    finally:
        if args.keep:
            print(f"stores, logs and on-air record kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print("naive flooding run (virtual time) ...")
    # Naive flooding is Meshtastic without meshd: every radio in its stock role (hub radios CLIENT, repeating).
    flood_net = valley_topology(s.camps, s.seed, s.loss, relays=s.relays, hub_role="CLIENT")
    flood = await run_flooding(s, flood_net, plan, flood_hops)
    main_report(s, net, run, flood)
    return 0


def parse_timing(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if name not in {f.name for f in dataclasses.fields(RelayTiming)}:
        raise SystemExit(f"--timing {text}: no such [timing] value")
    return name, float(value)


def code_version() -> str:
    """The commit the benchmark ran against (the relay changes often), `+dirty` with local edits under meshd/."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "meshd"], cwd=root, capture_output=True, text=True, check=False
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 camps, 3-5 reports each")
    parser.add_argument("--camps", type=int, default=0, help="number of camps (default 20, --quick 8)")
    parser.add_argument("--speedup", type=float, default=40.0, help="scenario speed-up (default 40)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--window", type=float, default=0.0, help="scenario s over which the bursts start (default 3600, --quick 900)"
    )
    parser.add_argument("--loss", type=float, default=0.2, help="loss probability of every link (default 0.2)")
    parser.add_argument("--no-relays", action="store_true", help="no hill relays: camps reach only grid neighbours")
    parser.add_argument("--flap-up", type=float, default=600.0, help="flapping uplink: scenario s up (default 600)")
    parser.add_argument("--flap-down", type=float, default=300.0, help="... and down (default 300)")
    parser.add_argument(
        "--hub-role",
        default="CLIENT_MUTE",
        choices=("CLIENT", "CLIENT_MUTE"),
        help="hub radios' role (default CLIENT_MUTE, as firmware-config/*/hub.yaml)",
    )
    parser.add_argument("--timing", action="append", default=[], metavar="NAME=S", help="override a [timing] value")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--keep", action="store_true", help="keep the hubs' stores (to investigate a lost report)")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
