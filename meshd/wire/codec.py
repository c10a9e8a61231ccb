"""High-level wire API: JSON-shaped reports <-> signed envelopes, batches, and the MQTT/CLI JSON mapping."""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshd.errors import DecodeError, EncodeError, SealError
from meshd.wire import bodies, seal
from meshd.wire.envelope import MAX_ENVELOPE_LEN, Envelope, Kind, TimeQuality, message_id, sign
from meshd.wire.pb import meshd_pb2 as pb

JsonDict = dict[str, Any]

_ENCODERS: dict[Kind, Callable[[Mapping[str, Any], int], bytes]] = {
    Kind.NEEDS: bodies.encode_needs,
    Kind.ALERT: bodies.encode_alert,
    Kind.BROADCAST: bodies.encode_broadcast,
    Kind.STATUS: bodies.encode_status,
    Kind.DELIVERED: bodies.encode_delivered,
    Kind.CUSTODY: bodies.encode_delivered,
}
_DECODERS: dict[Kind, Callable[[bytes, int], JsonDict]] = {
    Kind.NEEDS: bodies.decode_needs,
    Kind.ALERT: bodies.decode_alert,
    Kind.BROADCAST: bodies.decode_broadcast,
    Kind.STATUS: bodies.decode_status,
    Kind.DELIVERED: bodies.decode_delivered,
    Kind.CUSTODY: bodies.decode_delivered,
}
BATCHABLE = (Kind.NEEDS, Kind.ALERT, Kind.SEALED, Kind.STATUS)


class Provenance(enum.StrEnum):
    VERIFIED = "verified"  # origin signature checked against the registry, reporter known
    UNVERIFIED = "unverified"  # signature fine, but the field handset was not in the hub's roster
    UNKNOWN_ORIGIN = "unknown_origin"  # origin not in the registry: signature could not be checked
    UNCHECKED = "unchecked"  # no registry was given (CLI decode without --registry)


def parse_kind(text: str) -> Kind:
    try:
        return Kind(text)
    except ValueError:
        raise EncodeError(f"unknown kind {text!r}; known: {', '.join(k.value for k in Kind)}") from None


def encode_body(kind: Kind, body: Mapping[str, Any], origin: int, *, seal_to: X25519PublicKey | None = None) -> bytes:
    """Body bytes for `kind` from its JSON form. Sealed bodies need the HQ protection key."""
    if isinstance(origin, bool) or not isinstance(origin, int) or not 0 <= origin <= 0xFFFFFFFF:
        raise EncodeError(f"origin must be an integer 0..4294967295, got {origin!r}")
    if kind is Kind.SEALED:
        if seal_to is None:
            raise EncodeError("a sealed report needs the HQ protection public key to seal to")
        return seal.seal_bytes(seal.encode_sealed_content(body), seal_to, origin)
    if kind is Kind.BATCH:
        raise EncodeError("build batches with make_batch_body(), not from JSON")
    return _ENCODERS[kind](body, origin)


def decode_body(kind: Kind, body: bytes, origin: int, *, open_key: X25519PrivateKey | None = None) -> JsonDict:
    """JSON form of a body. Sealed bodies are opened only with `open_key`; otherwise only their size shows."""
    if kind is Kind.SEALED:
        if open_key is None:
            return {"sealed": True, "size": seal.sealed_size(body)}
        return seal.decode_sealed_content(seal.open_bytes(body, open_key, origin))
    if kind is Kind.BATCH:
        raise DecodeError("a batch body is opened with unbatch()")
    return _DECODERS[kind](body, origin)


def build_envelope(
    kind: Kind,
    body: Mapping[str, Any],
    *,
    origin: int,
    seq: int,
    key: Ed25519PrivateKey,
    seal_to: X25519PublicKey | None = None,
    age_s: int = 0,
    time_quality: TimeQuality = TimeQuality.NONE,
    unverified: bool = False,
    max_len: int = MAX_ENVELOPE_LEN,
) -> Envelope:
    raw = encode_body(kind, body, origin, seal_to=seal_to)
    envelope = Envelope(origin, seq, kind, raw, age_s=age_s, time_quality=time_quality, unverified=unverified)
    return sign(envelope, key, max_len=max_len)


# ---------------------------------------------------------------- batches


@dataclass(frozen=True, slots=True)
class BatchEntry:
    kind: Kind
    body: bytes
    extra_age_s: int = 0


def make_batch_body(entries: Sequence[BatchEntry]) -> bytes:
    if not entries:
        raise EncodeError("a batch needs at least one report")
    msg = pb.Batch()
    for entry in entries:
        if entry.kind not in BATCHABLE:
            raise EncodeError(f"{entry.kind.value} cannot go in a batch")
        item = msg.items.add(extra_age_s=min(max(entry.extra_age_s, 0), 0xFFFFFFFF))
        setattr(item, entry.kind.value, entry.body)
    return msg.SerializeToString(deterministic=True)


@dataclass(frozen=True, slots=True)
class Report:
    """One logical report: a whole envelope, or one item of a batch envelope."""

    origin: int
    seq: int
    kind: Kind
    body: bytes
    age_s: int
    envelope: Envelope
    batch_index: int | None = None

    @property
    def id(self) -> str:
        return message_id(self.origin, self.seq)


def unbatch(envelope: Envelope) -> list[Report]:
    """The reports an envelope carries: itself, or each batch item with id (origin, seq + index)."""
    if envelope.kind is not Kind.BATCH:
        return [Report(envelope.origin, envelope.seq, envelope.kind, envelope.body, envelope.age_s, envelope)]
    msg = pb.Batch()
    try:
        msg.ParseFromString(envelope.body)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"batch body does not decode: {exc}") from None
    if not msg.items:
        raise DecodeError("empty batch")
    if envelope.seq + len(msg.items) - 1 > 0xFFFFFFFF:
        raise DecodeError("batch seqs overflow")
    reports = []
    for index, item in enumerate(msg.items):
        which = item.WhichOneof("body")
        if which is None:
            raise DecodeError(f"batch item {index} has no body")
        age = min(envelope.age_s + item.extra_age_s, 0xFFFFFFFF)
        reports.append(
            Report(envelope.origin, envelope.seq + index, Kind(which), getattr(item, which), age, envelope, index)
        )
    return reports


# ---------------------------------------------------------------- JSON mapping (MQTT contract)


def report_json(
    report: Report,
    *,
    provenance: Provenance,
    open_key: X25519PrivateKey | None = None,
) -> JsonDict:
    """The JSON object HQ integrates against (README "MQTT contract")."""
    env = report.envelope
    try:
        body = decode_body(report.kind, report.body, report.origin, open_key=open_key)
    except SealError:
        body = {"sealed": True, "size": seal.sealed_size(report.body), "open_error": "wrong key or tampered"}
    out: JsonDict = {
        "id": report.id,
        "origin": report.origin,
        "seq": report.seq,
        "kind": report.kind.value,
        "age_s": report.age_s,
        "time_quality": env.time_quality.value,
        "provenance": provenance.value,
    }
    if env.observed_at is not None:
        out["observed_at"] = env.observed_at
    out["body"] = body
    out["envelope"] = base64.b64encode(env.to_bytes()).decode("ascii")
    if report.batch_index is not None:
        out["batch_index"] = report.batch_index
    return out


def envelope_from_json(obj: Mapping[str, Any]) -> Envelope:
    """Recover the signed envelope embedded in a JSON report (so anyone can re-verify it)."""
    text = obj.get("envelope")
    if not isinstance(text, str):
        raise DecodeError('JSON report has no "envelope" string')
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise DecodeError("envelope is not valid base64") from None
    return Envelope.from_bytes(raw)
