"""HQ ingest rate: verify + de-duplicate + store, into SQLite and PostgreSQL, fed directly and through Mosquitto.

Run: .venv/bin/python bench/hq_ingest.py [--messages N] [--pg postgresql://...] [--no-broker]

Workload: N needs reports from 10 camps as the uplink publishes them (report JSON with the base64 envelope),
of which 20 % are repeats of earlier reports (the same report uplinked by a second hub), so every run pays for
duplicates too. Each message is parsed, its envelope verified against the registry, decoded, and upserted.

- "direct": `Ingestor.ingest` + `HQStore.commit` in batches of 20 messages, the in-flight window a
  Mosquitto subscriber gets by default (max_inflight_messages 20): one durable commit per batch
  (SQLite WAL synchronous=FULL; PostgreSQL synchronous_commit=on).
- "mqtt": the real `HQWorker` (persistent session, QoS 1, PUBACK only after the commit) subscribed to a
  Mosquitto the benchmark starts on a free port, configured as docs/mqtt.md recommends for HQ
  (`max_queued_messages` raised from its default of 1000), while one publisher sends the N messages as fast
  as the broker takes them; the rate is N / (first publish -> last message stored).
- "Ed25519 verify": the bare signature check on the same envelopes (keys parsed, signed bytes prepared in
  advance), the floor cost of any honest ingest; "verify_envelope" adds the registry lookup and the
  serialisation of the signed bytes.

The PostgreSQL runs use a throw-away schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshd import keys
from meshd.hq.config import HQConfig, HQSection, MqttSection
from meshd.hq.db import open_store
from meshd.hq.ingest import Ingestor, Topics
from meshd.hq.worker import Backoff, HQWorker
from meshd.wire.codec import Provenance, build_envelope, report_json, unbatch
from meshd.wire.envelope import Envelope, Kind
from meshd.wire.registry import Camp, Registry

QUIET = logging.getLogger("bench.hq_ingest.publisher")
QUIET.setLevel(logging.ERROR)
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = 20
CAMPS = 10
BODY = {
    "population": {"individuals": 12500, "households": 2900, "female": 6600, "children": 5200},
    "severity": {"water": 4, "food": 3, "shelter": 2, "health": 4, "sanitation": 3},
    "indicators": {"water_lpd": 8, "people_per_latrine": 65},
    "unaccompanied_children": 14,
    "location": {"lat": 39.02, "lon": 125.75},
}


def make_workload(root: Path, n: int, prefix: str) -> tuple[Registry, list[tuple[str, bytes]], list[Envelope]]:
    hq = keys.generate(root / "hq")
    registry = Registry(hq.sign_public, hq.seal_public)
    pairs = {}
    for camp in range(1, CAMPS + 1):
        pairs[camp] = keys.generate(root / f"c{camp}", camp)
        registry = registry.with_camp(Camp(camp, f"Camp {camp}", pairs[camp].sign_public))
    registry = registry.signed(hq.sign)
    topics = Topics(prefix)
    rng = random.Random(7)
    unique = int(n * 0.8)
    messages, envelopes = [], []
    for i in range(unique):
        camp = i % CAMPS + 1
        env = build_envelope(
            Kind.NEEDS,
            {**BODY, "note": f"r{i}"},
            origin=camp,
            seq=i // CAMPS + 1,
            key=pairs[camp].sign,
            age_s=rng.randrange(0, 7200),
        )
        payload = json.dumps(report_json(unbatch(env)[0], provenance=Provenance.VERIFIED)).encode()
        messages.append((topics.camp(camp, "needs"), payload))
        envelopes.append(env)
    messages += [messages[rng.randrange(unique)] for _ in range(n - unique)]
    rng.shuffle(messages)
    return registry, messages, envelopes


def bare_verify_rate(registry: Registry, envelopes: list[Envelope]) -> float:
    """Ed25519 verify alone: parsed keys, signed bytes prepared in advance."""
    keys_by_origin = {c.camp_id: Ed25519PublicKey.from_public_bytes(c.sign_key) for c in registry.camps.values()}
    work = [(keys_by_origin[e.origin], e.signature, e.signing_bytes()) for e in envelopes]
    start = time.perf_counter()
    for key, signature, data in work:
        key.verify(signature, data)
    return len(work) / (time.perf_counter() - start)


def envelope_verify_rate(registry: Registry, envelopes: list[Envelope]) -> float:
    """`Registry.verify_envelope`: registry lookup + serialisation of the signed bytes + Ed25519 verify."""
    start = time.perf_counter()
    for env in envelopes:
        registry.verify_envelope(env)
    return len(envelopes) / (time.perf_counter() - start)


async def direct_rate(
    url: str, registry: Registry, messages: list[tuple[str, bytes]], prefix: str
) -> tuple[float, int]:
    ingestor = Ingestor(registry, prefix=prefix)
    async with open_store(url) as store:
        start = time.perf_counter()
        for i in range(0, len(messages), BATCH):
            reports = []
            for topic, payload in messages[i : i + BATCH]:
                reports.extend(ingestor.ingest(topic, payload).reports)
            await store.commit(reports, counters={"received": len(messages[i : i + BATCH])}, worker="bench")
        elapsed = time.perf_counter() - start
        rows = len(await store.report_ids())
    return len(messages) / elapsed, rows


async def mqtt_rate(
    url: str, registry: Registry, messages: list[tuple[str, bytes]], prefix: str, port: int
) -> tuple[float, int]:
    import aiomqtt

    old = messages[0][0].split("/v1/", 1)[0]
    messages = [(prefix + t[len(old) :], p) for t, p in messages]  # this run's own topics

    config = HQConfig(MqttSection(url=f"mqtt://127.0.0.1:{port}", prefix=prefix), HQSection(database=url))
    client_id = f"bench-hq-{uuid.uuid4().hex[:8]}"
    worker = HQWorker(config, Ingestor(registry, prefix=prefix), client_id=client_id, backoff=Backoff(0.05, 0.5))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.subscribed.wait(), 10)
        async with aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=f"bench-pub-{uuid.uuid4().hex[:8]}",
            max_inflight_messages=100,
            max_concurrent_outgoing_calls=100,
            logger=QUIET,  # aiomqtt warns about every pending publish beyond 10; a backlog is the point here
        ) as pub:
            start = time.perf_counter()
            await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in messages))
            while worker.counters["received"] < len(messages):  # noqa: ASYNC110 - polling a counter, not an event
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - start
    finally:
        stop.set()
        await task
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=True):
                pass
    async with open_store(url) as store:
        rows = len(await store.report_ids())
    return len(messages) / elapsed, rows


@contextlib.contextmanager
def own_broker(root: Path) -> Iterator[int]:
    """A Mosquitto configured as HQ's broker should be (see docs/mqtt.md): a queue deep enough for a backlog.

    With Mosquitto's default `max_queued_messages 1000`, a subscriber that acknowledges only after its commit
    (as the HQ worker does) sees the broker silently drop what does not fit in that queue during a burst."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    conf = root / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("could not start mosquitto for the benchmark") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@contextlib.contextmanager
def pg_schema(base: str) -> Iterator[str]:
    schema = f"hqbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


async def run(args: argparse.Namespace) -> int:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry, messages, envelopes = make_workload(root, args.messages, prefix)
        unique = len({p for _, p in messages})
        # Best of 3 for the cheap CPU-only rows: this machine's cores are shared, so single runs are noisy.
        verify = max(bare_verify_rate(registry, envelopes) for _ in range(3))
        rows: list[tuple[str, str, float, int]] = [
            ("Ed25519 verify", "-", verify, len(envelopes)),
            ("verify_envelope", "-", max(envelope_verify_rate(registry, envelopes) for _ in range(3)), len(envelopes)),
        ]
        results: dict[str, float] = {}
        sqlite_rate, n = await direct_rate(f"sqlite:///{root / 'direct.db'}", registry, messages, prefix)
        rows.append(("direct", "SQLite", sqlite_rate, n))
        results["hq_sqlite_per_s"] = sqlite_rate
        with pg_schema(args.pg) as url:
            pg_rate, n = await direct_rate(url, registry, messages, prefix)
        rows.append(("direct", "PostgreSQL", pg_rate, n))
        results["hq_pg_per_s"] = pg_rate
        if not args.no_broker:
            with own_broker(root) as port:
                mq_sqlite, n = await mqtt_rate(f"sqlite:///{root / 'mqtt.db'}", registry, messages, prefix + "s", port)
                rows.append(("via Mosquitto", "SQLite", mq_sqlite, n))
                results["hq_sqlite_mqtt_per_s"] = mq_sqlite
                with pg_schema(args.pg) as url:
                    mq_pg, n = await mqtt_rate(url, registry, messages, prefix + "p", port)
                rows.append(("via Mosquitto", "PostgreSQL", mq_pg, n))
                results["hq_pg_mqtt_per_s"] = mq_pg
    print(f"HQ ingest: {len(messages)} messages ({unique} distinct reports, the rest duplicates), batch {BATCH}")
    print(f"{'path':<15} {'database':<11} {'msg/s':>9} {'% of verify':>12} {'rows':>6}")
    print("-" * 57)
    for path, db, rate, count in rows:
        print(f"{path:<15} {db:<11} {rate:>9.0f} {100 * rate / verify:>11.0f}% {count:>6}")
    bad = [r for r in rows[2:] if r[3] != unique]
    if bad:
        print(f"ERROR: row count differs from {unique} distinct reports: {bad}", file=sys.stderr)
        return 1
    extra = " ".join(f"{k}={v:.0f}" for k, v in results.items() if k not in ("hq_sqlite_per_s", "hq_pg_per_s"))
    print(
        f"RESULT hq_sqlite_per_s={results['hq_sqlite_per_s']:.0f} hq_pg_per_s={results['hq_pg_per_s']:.0f} "
        f"verify_per_s={verify:.0f} {extra}".rstrip()
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL base URL (a temporary schema is used)")
    parser.add_argument("--no-broker", action="store_true", help="skip the runs through Mosquitto")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
