"""Shared pieces for the uplink tests and bench: keys and a registry, a hub store full of signed reports,
a private Mosquitto that can be stopped and restarted, and a persistent-session subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshd.store.hub import HubStore
from meshd.wire import bodies
from meshd.wire.codec import BatchEntry, make_batch_body
from meshd.wire.envelope import Envelope, Kind, sign
from meshd.wire.registry import Camp, Registry, public_raw

MOSQUITTO = "/usr/sbin/mosquitto"
CAMP = 7


@dataclass
class World:
    hq: Ed25519PrivateKey
    camp_keys: dict[int, Ed25519PrivateKey]
    registry: Registry

    @property
    def hq_public(self) -> bytes:
        return public_raw(self.hq.public_key())


def make_world(camps: tuple[int, ...] = (CAMP,)) -> World:
    hq = Ed25519PrivateKey.generate()
    registry = Registry(public_raw(hq.public_key()), public_raw(X25519PrivateKey.generate().public_key()))
    keys = {}
    for camp in camps:
        keys[camp] = Ed25519PrivateKey.generate()
        registry = registry.with_camp(Camp(camp, f"Camp {camp}", public_raw(keys[camp].public_key())))
    return World(hq, keys, registry.signed(hq))


def needs_body(i: int) -> bytes:
    return bodies.encode_needs({"severity": {"water": i % 6, "food": 3}, "population": {"individuals": i}}, CAMP)


async def fill_store(store: HubStore, key: Ed25519PrivateKey, n_reports: int, *, batch: int = 5, origin: int = CAMP) -> int:
    """Queue `n_reports` needs reports from `origin` as signed batches of `batch`; returns envelopes stored."""

    async def one(size: int) -> None:
        def build(seq: int) -> Envelope:
            if size == 1:
                return sign(Envelope(origin, seq, Kind.NEEDS, needs_body(seq)), key)
            body = make_batch_body([BatchEntry(Kind.NEEDS, needs_body(seq + i)) for i in range(size)])
            return sign(Envelope(origin, seq, Kind.BATCH, body), key)

        await store.originate(origin, build, priority=20, n_items=size)

    sizes = [batch] * (n_reports // batch) + ([n_reports % batch] if n_reports % batch else [])
    # Many writes in flight at once: the store's group commit turns them into a few fsyncs.
    for start in range(0, len(sizes), 500):
        await asyncio.gather(*(one(s) for s in sizes[start : start + 500]))
    return len(sizes)


async def outbox_size(store: HubStore) -> int:
    return int(await store.db.read(lambda c: c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]))


async def delivered_ids(store: HubStore) -> set[str]:
    rows = await store.db.read(lambda c: c.execute("SELECT origin, seq FROM delivered").fetchall())
    return {f"{o}:{s}" for o, s in rows}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@dataclass
class Mosquitto:
    """A private broker on a free port, with on-disk persistence so queued messages survive a restart."""

    root: Path
    port: int = field(default_factory=free_port)
    extra: str = ""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.root}/\n"
            "max_queued_messages 0\n"  # unlimited: a persistent subscriber may be behind by 10k messages
            "max_inflight_messages 100\n"
            f"log_dest file {self.root}/mosquitto.log\n" + self.extra
        )

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: Mosquitto writes its persistence file on the way out (a SIGKILL would lose in-memory state)."""
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Collector:
    """A subscriber with a persistent session that keeps reconnecting and records every report id."""

    def __init__(self, port: int, topic: str, client_id: str | None = None) -> None:
        self.port = port
        self.topic = topic
        self.client_id = client_id or f"collector-{uuid.uuid4().hex[:8]}"
        self.ids: set[str] = set()
        self.messages = 0
        self.docs: list[dict[str, Any]] = []
        self.keep_docs = False
        self.subscribed = asyncio.Event()

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", self.port, identifier=self.client_id, clean_session=False)

    async def subscribe_once(self) -> None:
        """Create the persistent session (then leave): the broker queues for it from now on."""
        async with self._client() as client:
            await client.subscribe(self.topic, qos=1)

    async def run(self) -> None:
        while True:
            try:
                async with self._client() as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        doc = json.loads(message.payload)
                        self.messages += 1
                        self.ids.add(doc["id"])
                        if self.keep_docs:
                            self.docs.append(doc)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(interval)


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0
