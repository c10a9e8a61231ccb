"""Hub receive pipeline: envelopes/s through decode + verify + dedup + store + enqueue, next to bare Ed25519.

Run: .venv/bin/python bench/relay_pipeline.py [--envelopes N] [--origins K] [--repeat R] [--profile FILE]

Workload: N signed needs reports (the full example report of the foundation issue, ~128 bytes on the air)
from K origin camps, seqs interleaved round-robin as they would arrive from several neighbours, plus 10 %
retransmitted copies (a custody notice was lost) that must be recognised as duplicates. The store is a real
SQLite file (WAL, synchronous=FULL) on this machine's disk.

Rows of the table (each the best of R runs; the machine is shared, so the best run is the least disturbed):
- "Ed25519 verify (bare)": `Ed25519PublicKey.verify` on the same envelopes, keys parsed and signed bytes
  prepared in advance: the floor cost of any honest receive path.
- "Envelope.from_bytes", "registry.verify_envelope", "codec.unbatch": each step alone.
- "HubStore.receive ×1": one receive per commit (what a strictly sequential caller gets: one fsync each);
  "HubStore.receive ×64": 64 in flight, so the single writer groups them under one commit.
- "relay pipeline": the real hub path. Every envelope is delivered as a `ReceivedPacket` (a direct packet
  from one of 4 neighbour radios, as custody hand-overs arrive) into the event queue of a running `Relay`
  (`Relay.run()`: `_event_loop` → up to 64 concurrent `_on_packet` → from_bytes → verify_envelope →
  unbatch → replay window → `store.receive` (one write: held? seen? delivered? store) with group commit →
  custody notice queued). Timed from the first delivery to the last envelope accounted for (accepted or
  counted as duplicate); the custody notices it then sends (signed, batched per neighbour) are included in
  the CPU figure only if they fall inside that window.
- "steps, 64 in flight": the same steps called directly with 64 envelopes in flight, what the relay would
  reach if it handled received packets concurrently.

"CPU µs" is process CPU time (all threads, including the store's) per envelope. The ratio of the RESULT
line is relay-pipeline envelopes/s over bare verifies/s, both wall-clock rates of this run (target ≥ 0.25).

Ends with `RESULT pipeline_per_s=... verify_per_s=... ratio=...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.config import RadioSection, RelaySection
from meshd.radio.api import BROADCAST, LinkState, LinkStateChanged, Priority, RadioEvent, ReceivedPacket
from meshd.relay.relay import Relay, RelayTiming
from meshd.store.hub import AcceptResult, HubStore
from meshd.wire import codec
from meshd.wire.envelope import Envelope, Kind, sign
from meshd.wire.registry import Camp, Registry

HUB_CAMP = 1
HUB_NODE = 0x0B0B0001
NEIGHBOURS = (0x0A0A0001, 0x0A0A0002, 0x0A0A0003, 0x0A0A0004)
IN_FLIGHT = 64
DUPLICATE_SHARE = 0.10
BODY = {
    "population": {"individuals": 12500, "households": 2900, "female": 6600, "children": 5200, "arrivals_24h": 340},
    "severity": {"water": 4, "food": 3, "shelter": 2, "clothing": 3, "health": 4, "sanitation": 3, "protection": 2},
    "indicators": {"water_lpd": 8, "people_per_latrine": 65, "shelter_m2_pp": 2.2, "food_days": 3},
    "unaccompanied_children": 14,
    "disease": {"awd_7d": 23, "deaths_24h": 1},
    "location": {"lat": 39.02, "lon": 125.75},
}


@dataclass
class Workload:
    registry: Registry
    hub_keys: keyfiles.KeyPairs
    envelopes: list[bytes]  # what arrives on the air, duplicates included
    unique: int


@dataclass
class Row:
    name: str
    count: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.count / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.count * 1e6 if self.count else 0.0


def make_workload(root: Path, n: int, origins: int, seed: int = 7) -> Workload:
    hq = keyfiles.generate(root / "hq")
    registry = Registry(hq.sign_public, hq.seal_public)
    hub_keys = keyfiles.generate(root / "hub", HUB_CAMP)
    registry = registry.with_camp(Camp(HUB_CAMP, "Bench hub", hub_keys.sign_public))
    pairs = {}
    for camp in range(2, origins + 2):
        pairs[camp] = keyfiles.generate(root / f"c{camp}", camp)
        registry = registry.with_camp(Camp(camp, f"Camp {camp}", pairs[camp].sign_public))
    registry = registry.signed(hq.sign)
    rng = random.Random(seed)
    unique: list[bytes] = []
    for i in range(n):
        camp = 2 + i % origins
        seq = 1 + i // origins
        body = codec.encode_body(Kind.NEEDS, {**BODY, "unaccompanied_children": i % 50}, camp)
        env = sign(Envelope(camp, seq, Kind.NEEDS, body, age_s=rng.randrange(0, 3600)), pairs[camp].sign)
        unique.append(env.to_bytes())
    stream = list(unique)
    for _ in range(int(n * DUPLICATE_SHARE)):
        # a retransmission arrives a little after the original
        index = rng.randrange(n)
        stream.insert(min(len(stream), index + rng.randrange(1, 200)), unique[index])
    return Workload(registry, hub_keys, stream, n)


class BenchRadio:
    """A radio whose received packets come from the benchmark; what the relay sends is only counted."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[RadioEvent] = asyncio.Queue()
        self.events.put_nowait(LinkStateChanged(LinkState.READY))
        self.sent = 0

    @property
    def state(self) -> LinkState:
        return LinkState.READY

    @property
    def my_node(self) -> int | None:
        return HUB_NODE

    def deliver(self, packet: ReceivedPacket) -> None:
        self.events.put_nowait(packet)

    async def send(
        self,
        payload: bytes,
        *,
        to: int = BROADCAST,
        portnum: int = 256,
        hop_limit: int | None = None,
        want_ack: bool = False,
        priority: Priority = Priority.DEFAULT,
        pki: bool = False,
        channel: int = 0,
    ) -> int:
        del payload, to, portnum, hop_limit, want_ack, priority, pki, channel
        self.sent += 1
        return self.sent

    async def send_text(self, text: str, *, to: int, want_ack: bool = True, channel: int = 0) -> int:
        return await self.send(text.encode(), to=to, portnum=1)

    async def next_event(self) -> RadioEvent:
        return await self.events.get()


def timed(name: str, count: int, fn: Callable[[], object]) -> Row:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Row(name, count, time.perf_counter() - wall, time.process_time() - cpu)


async def atimed(name: str, count: int, fn: Callable[[], Awaitable[object]]) -> Row:
    wall, cpu = time.perf_counter(), time.process_time()
    await fn()
    return Row(name, count, time.perf_counter() - wall, time.process_time() - cpu)


def bare_verify(work: Workload) -> Row:
    parsed = [Envelope.from_bytes(raw) for raw in work.envelopes[: work.unique]]
    keys = {o: Ed25519PublicKey.from_public_bytes(c.sign_key) for o, c in work.registry.camps.items()}
    prepared = [(keys[e.origin], e.signature, e.signing_bytes()) for e in parsed]

    def run() -> None:
        for key, signature, data in prepared:
            key.verify(signature, data)

    return timed("Ed25519 verify (bare)", len(prepared), run)


def step_rows(work: Workload) -> list[Row]:
    raws = work.envelopes[: work.unique]
    parsed = [Envelope.from_bytes(raw) for raw in raws]
    registry = work.registry

    def decode() -> None:
        for raw in raws:
            Envelope.from_bytes(raw)

    def verify() -> None:
        for env in parsed:
            registry.verify_envelope(env)

    def unbatch() -> None:
        for env in parsed:
            codec.unbatch(env)

    return [
        timed("Envelope.from_bytes", len(raws), decode),
        timed("registry.verify_envelope", len(parsed), verify),
        timed("codec.unbatch", len(parsed), unbatch),
    ]


def remove_db(path: Path) -> None:
    for side in path.parent.glob(path.name + "*"):
        side.unlink()


async def store_rows(work: Workload, root: Path) -> list[Row]:
    parsed = [Envelope.from_bytes(raw) for raw in work.envelopes[: work.unique]]
    rows = []
    path = root / "accept1.db"
    async with HubStore(path) as store:

        async def accept_one_by_one() -> None:
            for env in parsed:
                await store.receive(env, n_items=1, priority=3, expiry_s=3600, from_node=1)

        async def get_one_by_one() -> None:
            for env in parsed:
                await store.get(env.origin, env.seq)

        rows.append(await atimed("HubStore.receive ×1 (one commit each)", len(parsed), accept_one_by_one))
        rows.append(await atimed("HubStore.get ×1 (read, one by one)", len(parsed), get_one_by_one))
    remove_db(path)
    path = root / "accept64.db"
    async with HubStore(path) as store:

        async def accept_in_flight() -> None:
            for start in range(0, len(parsed), IN_FLIGHT):
                chunk = parsed[start : start + IN_FLIGHT]
                await asyncio.gather(
                    *(store.receive(e, n_items=1, priority=3, expiry_s=3600, from_node=1) for e in chunk)
                )

        name = f"HubStore.receive ×{IN_FLIGHT} in flight (group commit)"
        rows.append(await atimed(name, len(parsed), accept_in_flight))
    remove_db(path)
    return rows


async def direct_steps(work: Workload, root: Path, in_flight: int) -> Row:
    """The relay's receive steps called directly, `in_flight` envelopes at a time."""
    registry = work.registry
    accepted = 0
    async with HubStore(root / "direct.db") as store:

        async def one(raw: bytes) -> None:
            nonlocal accepted
            env = Envelope.from_bytes(raw)
            registry.verify_envelope(env)
            reports = codec.unbatch(env)
            result, _ = await store.receive(env, n_items=len(reports), priority=3, expiry_s=3600, from_node=1)
            accepted += result == AcceptResult.NEW

        async def run() -> None:
            stream = work.envelopes
            for start in range(0, len(stream), in_flight):
                await asyncio.gather(*(one(raw) for raw in stream[start : start + in_flight]))

        name = "steps direct, sequential" if in_flight == 1 else f"steps direct, {in_flight} in flight"
        row = await atimed(name, len(work.envelopes), run)
    remove_db(root / "direct.db")
    return row


async def relay_pipeline(work: Workload, root: Path, profile: cProfile.Profile | None = None) -> tuple[Row, Relay]:
    radio = BenchRadio()
    async with HubStore(root / "relay.db") as store:
        relay = Relay(
            camp_id=HUB_CAMP,
            keys=work.hub_keys,
            registry=work.registry,
            store=store,
            radio=radio,
            relay_config=RelaySection(duty_cycle_pct=100.0),
            radio_config=RadioSection(),
            clock=Clock(),
            timing=RelayTiming(),
        )
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0.05)  # relay.run has read the replay window from the store
        total = len(work.envelopes)

        def done() -> int:
            return relay.counters["accepted"] + relay.counters["duplicates"] + relay.counters["errors"]

        if profile is not None:
            profile.enable()
        wall, cpu = time.perf_counter(), time.process_time()
        for i, raw in enumerate(work.envelopes):
            radio.deliver(
                ReceivedPacket(
                    from_node=NEIGHBOURS[i % len(NEIGHBOURS)],
                    to_node=HUB_NODE,
                    packet_id=i + 1,
                    portnum=256,
                    payload=raw,
                    hop_start=0,
                    hop_limit=0,
                )
            )
        while done() < total:  # noqa: ASYNC110 - polling the relay's counters; it signals nothing
            await asyncio.sleep(0.002)
        row = Row("relay pipeline (Relay._on_packet)", total, time.perf_counter() - wall, time.process_time() - cpu)
        if profile is not None:
            profile.disable()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    remove_db(root / "relay.db")
    if relay.counters["accepted"] != work.unique:
        raise SystemExit(f"relay accepted {relay.counters['accepted']} of {work.unique} unique envelopes")
    return row, relay


def best(rows: list[Row]) -> Row:
    return max(rows, key=lambda r: r.per_s)


async def main_async(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="meshd-bench-pipeline-", dir=args.dir))
    try:
        work = make_workload(root / "keys", args.envelopes, args.origins)
        print(
            f"workload: {work.unique} needs reports from {args.origins} origins "
            f"({len(work.envelopes[0])} B each) + {len(work.envelopes) - work.unique} retransmitted copies; "
            f"store in {root}; code {code_version()}"
        )
        results: dict[str, list[Row]] = {}
        relay: Relay | None = None
        profile = cProfile.Profile() if args.profile else None
        for attempt in range(args.repeat):
            # verify and pipeline back to back, so both see the same machine load
            for row in [bare_verify(work), *step_rows(work)]:
                results.setdefault(row.name, []).append(row)
            for row in await store_rows(work, root):
                results.setdefault(row.name, []).append(row)
            pipeline, relay = await relay_pipeline(work, root, profile if attempt == 0 else None)
            results.setdefault(pipeline.name, []).append(pipeline)
            for in_flight in (1, IN_FLIGHT):
                row = await direct_steps(work, root, in_flight)
                results.setdefault(row.name, []).append(row)
            results.setdefault("Ed25519 verify (bare)", []).append(bare_verify(work))
        verify = best(results["Ed25519 verify (bare)"])
        print()
        print(f"| stage (best of {args.repeat}) | items | per s | wall µs each | CPU µs each | vs bare verify |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, rows in results.items():
            r = best(rows)
            spread = statistics.pstdev([x.per_s for x in rows]) / r.per_s * 100 if len(rows) > 1 else 0.0
            print(
                f"| {name} | {r.count} | {r.per_s:,.0f} (±{spread:.0f} %) | {1e6 / r.per_s:,.1f} | {r.cpu_us:,.1f} "
                f"| {r.per_s / verify.per_s:.2f} |"
            )
        pipeline = best(results["relay pipeline (Relay._on_packet)"])
        if relay is not None:
            c = relay.counters
            print(
                f"\nrelay counters (last run): accepted={c['accepted']} duplicates={c['duplicates']} "
                f"custody_acks_sent={c['custody_acks_sent']} errors={c['errors']}"
            )
        if profile is not None:
            profile.dump_stats(args.profile)
            print(f"cProfile of the first relay-pipeline run (event-loop thread only) written to {args.profile}")
        ratio = pipeline.per_s / verify.per_s
        print(
            f"\nRESULT pipeline_per_s={pipeline.per_s:.0f} verify_per_s={verify.per_s:.0f} ratio={ratio:.2f} "
            f"pipeline_cpu_us={pipeline.cpu_us:.0f}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


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
    parser.add_argument("--envelopes", type=int, default=5000, help="unique envelopes per run (default 5000)")
    parser.add_argument("--origins", type=int, default=8, help="origin camps (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported (default 3)")
    parser.add_argument("--dir", default=None, help="directory for the stores (default: the system temp dir)")
    parser.add_argument("--profile", default=None, help="write a cProfile of the first relay-pipeline run here")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
