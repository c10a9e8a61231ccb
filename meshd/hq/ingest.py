"""Turn one MQTT message into verified report records, trusting nothing in the JSON but the envelope.

The JSON fields a hub publishes (`provenance`, `body`, `age_s`, ...) are a convenience for humans and
dashboards; HQ recomputes all of them from the base64 envelope: parse it, verify it against the
HQ-signed camp registry, unbatch it, decode (and, at the protection desk, open) the body. Anything that
fails is rejected with a reason, counted and logged in one line; nothing here raises for bad input.
"""

from __future__ import annotations

import binascii
import datetime as dt
import enum
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshd import keys
from meshd.errors import (
    DecodeError,
    MeshdError,
    RegistryError,
    SealError,
    SignatureError,
    UnknownOriginError,
)
from meshd.hq.records import STORED_KINDS, BroadcastRecord, ReportRecord
from meshd.wire import seal
from meshd.wire.codec import Provenance, Report, decode_body, envelope_from_json, unbatch
from meshd.wire.envelope import HQ_ORIGIN, Envelope, Kind
from meshd.wire.registry import Registry

log = logging.getLogger(__name__)
UINT32_MAX = 0xFFFFFFFF


class Reject(enum.StrEnum):
    """Why a message was not stored. Counted as `rejected.<value>`."""

    EMPTY = "empty"  # zero-length payload (a retained message being cleared)
    BAD_TOPIC = "bad_topic"  # not a topic of the v1 contract
    BAD_JSON = "bad_json"  # not UTF-8 JSON, or not an object
    NO_ENVELOPE = "no_envelope"  # JSON without an "envelope" string (e.g. a hub's last will)
    BAD_ENVELOPE = "bad_envelope"  # envelope not base64, or not a meshd envelope
    BAD_SIGNATURE = "bad_signature"  # forged or tampered: the origin's key did not sign this
    BAD_BODY = "bad_body"  # signed, but the body does not decode
    ID_MISMATCH = "id_mismatch"  # the JSON id / batch_index names no report in the envelope
    UNEXPECTED_KIND = "unexpected_kind"  # e.g. a broadcast on a camp topic, a report on the downlink


class Flag(enum.StrEnum):
    """Accepted, but worth counting."""

    UNKNOWN_ORIGIN = "unknown_origin"  # origin not in the registry: kept, marked, signature unchecked
    UNVERIFIED = "unverified"  # the hub did not know the field handset
    TOPIC_MISMATCH = "topic_mismatch"  # topic camp/kind disagree with the signed envelope
    SEALED_OPENED = "sealed_opened"
    SEALED_KEPT_CLOSED = "sealed_kept_closed"  # no protection key configured here
    SEAL_OPEN_FAILED = "seal_open_failed"  # protection key configured, box does not open with it


@dataclass(slots=True)
class IngestResult:
    topic: str
    reports: list[ReportRecord] = field(default_factory=list)
    broadcasts: list[BroadcastRecord] = field(default_factory=list)
    reject: Reject | None = None
    detail: str = ""
    flags: list[Flag] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.reject is None


@dataclass(frozen=True, slots=True)
class Topics:
    """The v1 topic layout under a prefix (DESIGN.md section 7)."""

    prefix: str = "meshd"

    @property
    def camp_filter(self) -> str:
        return f"{self.prefix}/v1/camp/+/+"

    @property
    def broadcast(self) -> str:
        return f"{self.prefix}/v1/hq/broadcast"

    def camp(self, camp_id: int, leaf: str) -> str:
        return f"{self.prefix}/v1/camp/{camp_id}/{leaf}"

    def parse_camp(self, topic: str) -> tuple[int, str] | None:
        """(camp id, leaf) of a camp topic, or None."""
        head = f"{self.prefix}/v1/camp/"
        if not topic.startswith(head):
            return None
        camp_text, sep, leaf = topic[len(head) :].partition("/")
        if not sep or not camp_text.isdigit() or leaf not in STORED_KINDS or len(camp_text) > 10:
            return None
        camp = int(camp_text)
        return (camp, leaf) if camp <= UINT32_MAX else None


def load_registry(path: Path, hq_keys: Path | None = None) -> Registry:
    """Read and verify the camp registry; with `hq_keys`, pin it to that HQ key directory's sign.pub."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read registry {path}: {exc.strerror}") from None
    registry = Registry.from_json_bytes(data)
    registry.verify(keys.load_sign_public(hq_keys) if hq_keys is not None else None)
    return registry


class Ingestor:
    """Stateless apart from its keys: safe to share, and to run in several workers at once."""

    def __init__(
        self,
        registry: Registry,
        *,
        prefix: str = "meshd",
        open_key: X25519PrivateKey | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.registry = registry
        self.topics = Topics(prefix)
        self.open_key = open_key
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    # ------------------------------------------------------------------ entry point

    def ingest(self, topic: str, payload: bytes, received_at: dt.datetime | None = None) -> IngestResult:
        """Never raises for bad input: the result says what was accepted or why it was rejected."""
        result = IngestResult(topic)
        when = received_at or self._clock()
        try:
            if topic == self.topics.broadcast:
                self._ingest_broadcast(result, payload, when)
            else:
                self._ingest_camp(result, topic, payload, when)
        except _Rejected as exc:
            result.reject, result.detail = exc.reason, exc.detail
            result.reports.clear()
            result.broadcasts.clear()
            level = logging.DEBUG if exc.reason in (Reject.EMPTY, Reject.NO_ENVELOPE) else logging.WARNING
            log.log(level, "rejected message on %s: %s (%s)", topic, exc.reason.value, exc.detail)
        except MeshdError as exc:  # a wire error nobody expected here: still one line, never a crash
            result.reject, result.detail = Reject.BAD_ENVELOPE, str(exc)
            result.reports.clear()
            log.warning("rejected message on %s: %s", topic, exc)
        return result

    # ------------------------------------------------------------------ camp topics

    def _ingest_camp(self, result: IngestResult, topic: str, payload: bytes, when: dt.datetime) -> None:
        where = self.topics.parse_camp(topic)
        if where is None:
            raise _Rejected(Reject.BAD_TOPIC, "not a v1 camp topic")
        topic_camp, leaf = where
        obj = _json_object(payload)
        env = _envelope(obj)
        provenance = self._provenance(env, result)
        for report in _select(env, obj):
            if report.kind.value not in STORED_KINDS:
                raise _Rejected(Reject.UNEXPECTED_KIND, f"{report.kind.value} is not a report HQ stores")
            if report.origin != topic_camp or report.kind.value != leaf:
                result.flags.append(Flag.TOPIC_MISMATCH)
            result.reports.append(self._record(report, provenance, when, obj, result))

    def _provenance(self, env: Envelope, result: IngestResult) -> Provenance:
        try:
            self.registry.verify_envelope(env)
        except UnknownOriginError:
            result.flags.append(Flag.UNKNOWN_ORIGIN)
            return Provenance.UNKNOWN_ORIGIN
        except SignatureError as exc:
            raise _Rejected(Reject.BAD_SIGNATURE, str(exc)) from None
        if env.unverified:
            result.flags.append(Flag.UNVERIFIED)
            return Provenance.UNVERIFIED
        return Provenance.VERIFIED

    def _record(
        self, report: Report, provenance: Provenance, when: dt.datetime, obj: Mapping[str, Any], result: IngestResult
    ) -> ReportRecord:
        body = self._body(report, result)
        camp = body.get("camp")
        env = report.envelope
        gateway = obj.get("gateway")
        return ReportRecord(
            id=report.id,
            origin=report.origin,
            seq=report.seq,
            kind=report.kind.value,
            camp=camp if isinstance(camp, int) and not isinstance(camp, bool) else report.origin,
            provenance=provenance.value,
            age_s=report.age_s,
            time_quality=env.time_quality.value,
            received_at=when,
            observed_est=when - dt.timedelta(seconds=report.age_s),
            observed_at=dt.datetime.fromtimestamp(env.observed_at, dt.UTC) if env.observed_at else None,
            body=body,
            envelope=env.to_bytes(),
            batch_index=report.batch_index,
            gateway=gateway if isinstance(gateway, int) and not isinstance(gateway, bool) and gateway >= 0 else None,
        )

    def _body(self, report: Report, result: IngestResult) -> dict[str, Any]:
        if report.kind is not Kind.SEALED:
            try:
                return decode_body(report.kind, report.body, report.origin)
            except DecodeError as exc:
                raise _Rejected(Reject.BAD_BODY, f"{report.id}: {exc}") from None
        try:
            size = seal.sealed_size(report.body)
        except DecodeError as exc:
            raise _Rejected(Reject.BAD_BODY, f"{report.id}: {exc}") from None
        if self.open_key is None:
            result.flags.append(Flag.SEALED_KEPT_CLOSED)
            return {"sealed": True, "size": size}
        try:
            opened = decode_body(report.kind, report.body, report.origin, open_key=self.open_key)
        except SealError:
            result.flags.append(Flag.SEAL_OPEN_FAILED)
            return {"sealed": True, "size": size, "open_error": "does not open with this protection key"}
        result.flags.append(Flag.SEALED_OPENED)
        return opened

    # ------------------------------------------------------------------ downlink topic

    def _ingest_broadcast(self, result: IngestResult, payload: bytes, when: dt.datetime) -> None:
        env = _envelope(_json_object(payload))
        if env.origin != HQ_ORIGIN or env.kind is not Kind.BROADCAST:
            raise _Rejected(Reject.UNEXPECTED_KIND, f"{env.kind.value} from origin {env.origin} on the downlink")
        try:
            self.registry.verify_envelope(env)
        except SignatureError as exc:
            raise _Rejected(Reject.BAD_SIGNATURE, f"broadcast not signed by the HQ key: {exc}") from None
        try:
            body = decode_body(Kind.BROADCAST, env.body, HQ_ORIGIN)
        except DecodeError as exc:
            raise _Rejected(Reject.BAD_BODY, str(exc)) from None
        result.broadcasts.append(BroadcastRecord(env.id, env.seq, when, body, env.to_bytes()))


class _Rejected(Exception):
    """Internal control flow: never escapes `Ingestor.ingest`."""

    def __init__(self, reason: Reject, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _json_object(payload: bytes) -> dict[str, Any]:
    if not payload:
        raise _Rejected(Reject.EMPTY, "empty payload")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Rejected(Reject.BAD_JSON, f"not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise _Rejected(Reject.BAD_JSON, "JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise _Rejected(Reject.BAD_JSON, "payload is not a JSON object")
    return obj


def _envelope(obj: Mapping[str, Any]) -> Envelope:
    if not isinstance(obj.get("envelope"), str):
        raise _Rejected(Reject.NO_ENVELOPE, 'no "envelope" string in the payload')
    try:
        return envelope_from_json(obj)
    except (DecodeError, binascii.Error, ValueError) as exc:
        raise _Rejected(Reject.BAD_ENVELOPE, str(exc)) from None


def _select(env: Envelope, obj: Mapping[str, Any]) -> list[Report]:
    """The report(s) this message is about: by batch_index, else by id, else every report in the envelope."""
    try:
        reports = unbatch(env)
    except DecodeError as exc:
        raise _Rejected(Reject.BAD_BODY, str(exc)) from None
    claimed_id = obj.get("id")
    index = obj.get("batch_index")
    if isinstance(index, int) and not isinstance(index, bool):
        chosen = [r for r in reports if r.batch_index == index]
    elif isinstance(claimed_id, str):
        chosen = [r for r in reports if r.id == claimed_id]
    else:
        return reports
    if not chosen or (isinstance(claimed_id, str) and chosen[0].id != claimed_id):
        raise _Rejected(Reject.ID_MISMATCH, f"id {claimed_id!r} / batch_index {index!r} not in envelope {env.id}")
    return chosen
