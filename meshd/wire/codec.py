"""High-level wire API: JSON-shaped reports <-> signed envelopes, batches, and the MQTT/CLI JSON mapping."""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshd.errors import DecodeError, EncodeError, SealError
from meshd.wire import bodies, seal
from meshd.wire.envelope import (
    MAX_ENVELOPE_LEN,
    UINT32_MAX,
    Envelope,
    Kind,
    TimeQuality,
    message_id,
    parse_pb,
    sign,
)
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
    return [
        Report(envelope.origin, seq, kind, body, age, envelope, index)
        for seq, kind, body, age, index in _batch_items(envelope.body, envelope.seq, envelope.age_s)
    ]


_Item = tuple[int, Kind, bytes, int, int | None]  # seq, kind, body, age_s, batch index


def _batch_items(body: bytes, seq: int, age_s: int) -> list[_Item]:
    msg = pb.Batch()
    try:
        msg.ParseFromString(body)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"batch body does not decode: {exc}") from None
    if not msg.items:
        raise DecodeError("empty batch")
    if seq + len(msg.items) - 1 > 0xFFFFFFFF:
        raise DecodeError("batch seqs overflow")
    items: list[_Item] = []
    for index, item in enumerate(msg.items):
        which = item.WhichOneof("body")
        if which is None:
            raise DecodeError(f"batch item {index} has no body")
        age = min(age_s + item.extra_age_s, 0xFFFFFFFF)
        items.append((seq + index, Kind(which), getattr(item, which), age, index))
    return items


# ---------------------------------------------------------------- JSON mapping (MQTT contract)


def report_json(
    report: Report,
    *,
    provenance: Provenance,
    open_key: X25519PrivateKey | None = None,
) -> JsonDict:
    """The JSON object HQ integrates against (README "MQTT contract"): `report_json_bytes`, parsed."""
    obj: JsonDict = json.loads(report_json_bytes(report, provenance=provenance, open_key=open_key))
    return obj


# Compact, UTF-8 as is (Korean notes stay readable in a broker's log); one encoder for every payload:
# json.dumps() with options builds a new encoder on each call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def report_json_bytes(
    report: Report,
    *,
    provenance: Provenance,
    open_key: X25519PrivateKey | None = None,
    envelope_b64: str | None = None,
    gateway: int | None = None,
) -> bytes:
    """The MQTT payload of one report: the contract's JSON (docs/mqtt.md), UTF-8, compact.

    `envelope_b64` is `envelope_base64(report.envelope)` when the caller already has it (the reports of a
    batch share their envelope); `gateway` is the publishing hub's camp id (docs/mqtt.md).
    """
    env = report.envelope
    return _report_text(
        report.origin,
        report.seq,
        report.kind,
        _body_text(report.kind, report.body, report.origin, open_key),
        report.age_s,
        batch_index=report.batch_index,
        time_quality=env.time_quality,
        observed_at=env.observed_at,
        provenance=provenance,
        envelope_b64=envelope_base64(env) if envelope_b64 is None else envelope_b64,
        gateway=gateway,
    )


def _report_text(
    origin: int,
    seq: int,
    kind: Kind,
    body_text: str,
    age_s: int,
    *,
    batch_index: int | None,
    time_quality: TimeQuality,
    observed_at: int | None,
    provenance: Provenance,
    envelope_b64: str,
    gateway: int | None,
) -> bytes:
    # Written as text around the encoded body rather than as a dict through the encoder: the uplink
    # renders every report it publishes, and its backlog flush is bounded by this (bench/uplink_flush.py).
    # Everything interpolated is an int, a fixed enum word or base64: nothing JSON would escape.
    text = (
        f'{{"id":"{origin}:{seq}","origin":{origin},"seq":{seq},"kind":"{kind.value}","age_s":{age_s},'
        f'"time_quality":"{time_quality.value}","provenance":"{provenance.value}"'
    )
    if observed_at is not None:
        text += f',"observed_at":{observed_at}'
    text += f',"body":{body_text},"envelope":"{envelope_b64}"'
    if batch_index is not None:
        text += f',"batch_index":{batch_index}'
    if gateway is not None:
        text += f',"gateway":{gateway}'
    return (text + "}").encode()


@dataclass(frozen=True, slots=True)
class UplinkMessage:
    origin: int
    kind: Kind
    payload: bytes  # report_json_bytes of the report


PUBLISHED_KINDS = frozenset({Kind.NEEDS, Kind.ALERT, Kind.SEALED, Kind.STATUS})


def uplink_bodies(envelope: Envelope) -> str | None:
    """The `body` JSON of each report the uplink publishes for `envelope`, one per line (JSON text never
    holds a raw newline), for `render_uplink(..., bodies=...)`. None for an envelope that carries no
    published report (notices, broadcasts) or does not decode: it is then rendered (or refused) when
    published. The store keeps this beside the envelope (see meshd.store.schema, migration 4)."""
    try:
        reports = unbatch(envelope)
        if not all(report.kind in PUBLISHED_KINDS for report in reports):
            return None
        return "\n".join(_body_text(r.kind, r.body, r.origin, None) for r in reports)
    except DecodeError:
        return None


def _body_text(kind: Kind, body: bytes, origin: int, open_key: X25519PrivateKey | None) -> str:
    try:
        decoded = decode_body(kind, body, origin, open_key=open_key)
    except SealError:
        decoded = {"sealed": True, "size": seal.sealed_size(body), "open_error": "wrong key or tampered"}
    return _JSON.encode(decoded)


def render_uplink(
    raw: bytes,
    *,
    min_age_s: int,
    provenance_of: Callable[[int, bool], Provenance],
    gateway: int,
    bodies: str | None = None,
) -> list[UplinkMessage]:
    """The MQTT payloads for stored envelope bytes `raw`: `report_json_bytes` of each report of
    `unbatch(Envelope.from_bytes(raw))`, published `min_age_s` old if it is older than the envelope says.

    Straight from the protobuf message, without building envelopes and reports: the uplink's backlog
    flush does this for every envelope, and its rate is bounded by it. `provenance_of(origin, unverified)`
    is asked once. `bodies` is `uplink_bodies` of the same envelope, rendered earlier (the store keeps
    it): the bodies are then not decoded again. Raises `DecodeError` for bytes that are not an envelope.
    """
    msg, kind, time_quality = parse_pb(raw)
    age = msg.age_s
    if min_age_s > age:
        # Publish the age as of now (dwell in this store included); age_s is outside the signature.
        age = msg.age_s = min(min_age_s, UINT32_MAX)
        raw = msg.SerializeToString(deterministic=True)  # what Envelope.to_bytes() gives
    envelope_b64 = base64.b64encode(raw).decode("ascii")
    origin, seq = msg.origin, msg.seq
    body = getattr(msg, kind.value)
    items: list[_Item] = [(seq, kind, body, age, None)] if kind is not Kind.BATCH else _batch_items(body, seq, age)
    provenance = provenance_of(origin, msg.unverified)
    observed_at = msg.observed_at or None
    texts = bodies.split("\n") if bodies is not None else []
    if len(texts) != len(items):
        texts = [_body_text(item_kind, item_body, origin, None) for _, item_kind, item_body, _, _ in items]
    return [
        UplinkMessage(
            origin,
            item_kind,
            _report_text(
                origin,
                item_seq,
                item_kind,
                text,
                item_age,
                batch_index=index,
                time_quality=time_quality,
                observed_at=observed_at,
                provenance=provenance,
                envelope_b64=envelope_b64,
                gateway=gateway,
            ),
        )
        for (item_seq, item_kind, _, item_age, index), text in zip(items, texts, strict=True)
    ]


def envelope_base64(envelope: Envelope) -> str:
    return base64.b64encode(envelope.to_bytes()).decode("ascii")


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
