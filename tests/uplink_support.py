"""Shared pieces for the uplink tests and bench: keys and a registry, a hub store full of signed reports,
a private Mosquitto that can be stopped and restarted, and a persistent-session subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshd.config import UplinkSection
from meshd.radio.backoff import Backoff
from meshd.store.hub import HubStore
from meshd.uplink import UplinkBridge
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


async def fill_store(
    store: HubStore, key: Ed25519PrivateKey, n_reports: int, *, batch: int = 5, origin: int = CAMP
) -> int:
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
            # Started as root, Mosquitto would switch to user "mosquitto" and could not write its
            # persistence file here; as any other user this line is ignored.
            f"user {getpass.getuser()}\n"
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
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
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
        self.statuses: list[dict[str, Any]] = []
        self.keep_docs = False
        self.subscribed = asyncio.Event()

    def _client(self) -> aiomqtt.Client:
        # A short timeout: aiomqtt waits that long for a CONNACK or SUBACK even when the broker just died.
        client = aiomqtt.Client("127.0.0.1", self.port, identifier=self.client_id, clean_session=False, timeout=2)
        # Acknowledge a message only once it is recorded (as `meshd hq` does after its commit): with paho's
        # automatic PUBACK, messages still in aiomqtt's queue when the broker restarts were acknowledged and
        # then dropped with the connection, and the test blamed the bridge for them.
        client._client.manual_ack_set(True)
        return client

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
                        if "id" not in doc:  # the hub's own online/offline status on .../status
                            self.statuses.append(doc)
                        else:
                            self.messages += 1
                            self.ids.add(doc["id"])
                            if self.keep_docs:
                                self.docs.append(doc)
                        if message.qos > 0:
                            client._client.ack(message.mid, message.qos)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)


def counter_reaches(bridge: UplinkBridge, name: str, value: int, *, connected: bool = False) -> Callable[[], bool]:
    """A predicate for `wait_until`: the bridge's counter `name` is at least `value` (and it is connected)."""
    return lambda: bridge.counters[name] >= value and (bridge.connected or not connected)


async def read_retained(port: int, topic: str, within: float = 5.0) -> dict[str, Any]:
    """The retained JSON message on `topic` (what a dashboard sees when it subscribes)."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(within):
            async for message in client.messages:
                assert message.retain
                assert isinstance(message.payload, bytes)
                doc: dict[str, Any] = json.loads(message.payload)
                return doc
    raise AssertionError("unreachable: the message iterator ended")


async def wait_until(predicate: Callable[[], bool], within: float = 20.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(interval)


def make_bridge(
    world: World,
    store: HubStore,
    port: int,
    prefix: str,
    *,
    on_broadcast: Callable[[Envelope], Awaitable[None]] | None = None,
    pinned: bytes | None = None,
    **section: Any,
) -> UplinkBridge:
    """A bridge with a unique client id and test-speed reconnects and polling."""
    section.setdefault("client_id", f"hub-{prefix}-{uuid.uuid4().hex[:6]}")
    section.setdefault("url", f"mqtt://127.0.0.1:{port}")
    config = UplinkSection(prefix=prefix, **section)

    async def ignore(env: Envelope) -> None:
        return None

    return UplinkBridge(
        config,
        camp_id=CAMP,
        store=store,
        registry=world.registry,
        pinned_hq_key=pinned,
        on_broadcast=on_broadcast or ignore,
        status=lambda: {"queue_depth": 0},
        backoff=Backoff(initial_s=0.05, max_s=0.3, healthy_after_s=5.0),
        poll_s=0.1,
    )


async def forget_session(bridge: UplinkBridge, port: int | None = None) -> None:
    """End the bridge's week-long persistent session on a shared broker (a clean-start connection)."""
    target = bridge.target
    async with aiomqtt.Client(target.host, port or target.port, identifier=target.client_id, clean_session=True):
        pass


async def assert_no_leftover_tasks(before: set[asyncio.Task[Any]]) -> None:
    """Every task started since `before` has finished (aiomqtt's cancel a loop iteration or two later)."""
    current = asyncio.current_task()
    deadline = time.monotonic() + 2.0
    while True:
        left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert left == [], f"tasks left behind: {left}"


class TcpProxy:
    """127.0.0.1:port -> target; `cut()` drops every connection at once (a link that dies, no DISCONNECT)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.stalled: set[int] = set()  # ids of client-side writers that get nothing more from the broker

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if id(dst) in self.stalled:
                        continue  # swallowed: to the client the broker has gone silent
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def stall(self) -> None:
        """Keep the open connections but pass nothing more from the broker to the client: a wedged broker or
        path (no PUBACK, no error, no closed socket). New connections pass normally."""
        self.stalled.update(id(writer) for writer in self.writers[0::2])  # the client-side writer of each pair

    async def cut(self, *, refuse_new: bool = True) -> None:
        if refuse_new and self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in self.writers:
            writer.transport.abort()
        self.writers = []
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def self_signed(root: Path, name: str, *, issuer: tuple[Any, Any] | None = None) -> tuple[Path, Path]:
    """A certificate (CA if no issuer) and its key as PEM files; SAN 127.0.0.1 and localhost."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = root / f"{name}.crt", root / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def load_cert(path: Path) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())
