"""Shared pieces for the HQ tests: a small world of keys and a signed registry, report payloads as hubs
publish them, a unique PostgreSQL schema per test, and MQTT helpers against the real local Mosquitto."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest

from meshd import keys
from meshd.hq.config import HQConfig, HQSection, MqttSection
from meshd.hq.records import ReportRecord
from meshd.wire.codec import BatchEntry, Provenance, build_envelope, make_batch_body, report_json, unbatch
from meshd.wire.envelope import Envelope, Kind, sign
from meshd.wire.registry import Camp, Registry

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"

NEEDS = {
    "population": {"individuals": 12500, "households": 2900, "female": 6600, "children": 5200, "arrivals_24h": 340},
    "severity": {"water": 4, "food": 3, "shelter": 2, "clothing": 3, "health": 4, "sanitation": 3, "protection": 2},
    "indicators": {"water_lpd": 8, "people_per_latrine": 65, "shelter_m2_pp": 2.2, "food_days": 3},
    "unaccompanied_children": 14,
    "disease": {"awd_7d": 23, "deaths_24h": 1},
    "location": {"lat": 39.02, "lon": 125.75},
    "note": "well 2 dry",
}


@dataclass
class World:
    root: Path
    hq: keys.KeyPairs
    hq_dir: Path
    camps: dict[int, keys.KeyPairs]
    stranger: keys.KeyPairs  # a camp key that is not in the registry
    registry: Registry
    registry_path: Path

    def config(self, database: str, *, prefix: str, shared_group: str = "", protection: bool = False) -> HQConfig:
        return HQConfig(
            mqtt=MqttSection(
                url=f"mqtt://{BROKER_HOST}:{BROKER_PORT}", prefix=prefix, shared_group=shared_group, keepalive_s=10
            ),
            hq=HQSection(
                registry=self.registry_path,
                database=database,
                protection_key=self.hq_dir if protection else None,
                hq_keys=self.hq_dir,
            ),
        )


def make_world(root: Path, camp_ids: tuple[int, ...] = (101, 102, 103)) -> World:
    hq_dir = root / "hq"
    hq = keys.generate(hq_dir)
    camps = {}
    registry = Registry(hq.sign_public, hq.seal_public)
    names = {101: "Hilltop", 102: "Riverside", 103: "School"}
    for camp_id in camp_ids:
        pair = keys.generate(root / f"camp{camp_id}", camp_id)
        camps[camp_id] = pair
        lat, lon = (39.0 + camp_id / 1000, 125.7 + camp_id / 1000) if camp_id != 103 else (None, None)
        registry = registry.with_camp(Camp(camp_id, names.get(camp_id, f"Camp {camp_id}"), pair.sign_public, lat, lon))
    registry = registry.signed(hq.sign)
    path = root / "registry.json"
    path.write_bytes(registry.to_json_bytes())
    stranger = keys.generate(root / "stranger", 999)
    return World(root, hq, hq_dir, camps, stranger, registry, path)


def envelope(world: World, kind: Kind, body: dict[str, Any], *, origin: int, seq: int, **kw: Any) -> Envelope:
    key = kw.pop("key", None) or world.camps[origin].sign
    seal_to = world.registry.hq_seal_public() if kind is Kind.SEALED else None
    return build_envelope(kind, body, origin=origin, seq=seq, key=key, seal_to=seal_to, **kw)


def payloads(env: Envelope, provenance: Provenance = Provenance.VERIFIED) -> list[tuple[str, bytes]]:
    """(leaf, JSON payload) for every report in `env`, exactly as a hub's uplink publishes them."""
    return [(r.kind.value, json.dumps(report_json(r, provenance=provenance)).encode()) for r in unbatch(env)]


def needs_payload(world: World, origin: int, seq: int, **body: Any) -> bytes:
    return payloads(envelope(world, Kind.NEEDS, {**NEEDS, **body}, origin=origin, seq=seq))[0][1]


def batch_envelope(world: World, origin: int, seq: int, bodies: list[dict[str, Any]]) -> Envelope:
    from meshd.wire.codec import encode_body

    entries = [BatchEntry(Kind.NEEDS, encode_body(Kind.NEEDS, b, origin)) for b in bodies]
    raw = make_batch_body(entries)
    return sign(Envelope(origin, seq, Kind.BATCH, raw), world.camps[origin].sign, max_len=512)


def tamper(payload: bytes) -> bytes:
    """Flip one byte inside the signed body of the base64 envelope, keeping it well-formed protobuf."""
    obj = json.loads(payload)
    env = Envelope.from_bytes(base64.b64decode(obj["envelope"]))
    body = bytearray(env.body)
    body[-1] ^= 0x01
    forged = Envelope(env.origin, env.seq, env.kind, bytes(body), env.age_s, env.time_quality, signature=env.signature)
    obj["envelope"] = base64.b64encode(forged.to_bytes()).decode()
    return json.dumps(obj).encode()


def record(
    rid: str,
    *,
    kind: str = "needs",
    body: dict[str, Any] | None = None,
    age_s: int = 60,
    provenance: str = "verified",
    received: dt.datetime | None = None,
) -> ReportRecord:
    origin, seq = (int(x) for x in rid.split(":"))
    received = received or dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.UTC)
    body = dict(body if body is not None else {"camp": origin, **NEEDS})
    return ReportRecord(
        id=rid,
        origin=origin,
        seq=seq,
        kind=kind,
        camp=int(body.get("camp", origin)),
        provenance=provenance,
        age_s=age_s,
        time_quality="none",
        received_at=received,
        observed_est=received - dt.timedelta(seconds=age_s),
        observed_at=None,
        body=body,
        envelope=b"\x08\x01",
    )


# ---------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A database URL whose search_path is a fresh schema, dropped afterwards."""
    schema = f"hqtest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema() as url:
        yield url


# ---------------------------------------------------------------- MQTT


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def publisher(client_id: str | None = None) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(BROKER_HOST, BROKER_PORT, identifier=client_id or f"pub-{uuid.uuid4().hex[:8]}") as c:
        yield c


async def forget_sessions(*client_ids: str) -> None:
    """Remove persistent sessions the test created, so the shared broker does not keep them forever."""
    for client_id in client_ids:
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client(BROKER_HOST, BROKER_PORT, identifier=client_id, clean_session=True):
                pass


async def wait_until(predicate: Any, within: float = 10.0, interval: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
