"""`meshd hq broadcast`: an HQ-signed message to every camp, published on the MQTT downlink.

The envelope has origin 0 (HQ) and is signed by the HQ key pinned on every hub; hubs relay nothing on the
downlink that does not verify. Its seq must grow from one broadcast to the next (hubs keep a replay window
per origin), so it comes from a counter file, `broadcast.seq`, next to the HQ key: locked, incremented and
written *before* publishing, so a seq is never reused even when a publish fails. When the file does not
exist yet (first broadcast, or a new machine) the counter starts at the current Unix time, which is larger
than any counter value used before as long as HQ sent fewer than one broadcast per second on average.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshd.errors import KeyFileError, UplinkError
from meshd.hq.config import BrokerAddress
from meshd.hq.ingest import Topics
from meshd.wire.codec import Provenance, build_envelope, report_json, unbatch
from meshd.wire.envelope import HQ_ORIGIN, UINT32_MAX, Envelope, Kind

SEQ_FILE = "broadcast.seq"


def next_seq(key_dir: Path, explicit: int | None = None, now: float | None = None) -> int:
    """Reserve the next broadcast seq (or record an explicit one) under an exclusive file lock."""
    path = key_dir / SEQ_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot open broadcast counter {path}: {exc.strerror}; give --seq N") from None
    with os.fdopen(fd, "r+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        text = handle.read().strip()
        last = int(text) if text.isdigit() else None
        if explicit is not None:
            seq = explicit
        elif last is None:
            seq = int(now if now is not None else time.time())
        else:
            seq = last + 1
        if not 1 <= seq <= UINT32_MAX:
            raise KeyFileError(f"broadcast seq {seq} out of range 1..{UINT32_MAX}")
        if last is None or seq > last:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{seq}\n")
            handle.flush()
            os.fsync(handle.fileno())
    return seq


def build_broadcast(body: Mapping[str, Any], *, key: Ed25519PrivateKey, seq: int) -> Envelope:
    """The signed Kind.BROADCAST envelope (origin 0); the body is checked by the wire codec."""
    return build_envelope(Kind.BROADCAST, body, origin=HQ_ORIGIN, seq=seq, key=key)


def broadcast_payload(envelope: Envelope, sent_at: dt.datetime | None = None) -> bytes:
    """Downlink JSON: the uplink's report mapping (envelope in base64 + decoded body) and `sent_at`."""
    report = unbatch(envelope)[0]
    obj = report_json(report, provenance=Provenance.VERIFIED)
    obj["sent_at"] = (sent_at or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def publish_broadcast(
    broker: BrokerAddress,
    prefix: str,
    payload: bytes,
    *,
    tls_params: aiomqtt.TLSParameters | None = None,
    timeout_s: float = 15.0,
) -> str:
    """Publish QoS 1 (not retained) and wait for the broker's PUBACK; returns the topic."""
    topic = Topics(prefix).broadcast
    if broker.tls and tls_params is None:
        tls_params = aiomqtt.TLSParameters()
    try:
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=f"meshd-hq-broadcast-{os.getpid()}",
            username=broker.username,
            password=broker.password,
            tls_params=tls_params,
            timeout=timeout_s,
        ) as client:
            await client.publish(topic, payload, qos=1, retain=False, timeout=timeout_s)
    except aiomqtt.MqttError as exc:
        raise UplinkError(f"could not publish the broadcast to {broker.host}:{broker.port}: {exc}") from None
    return topic
