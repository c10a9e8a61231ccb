"""Signed envelopes: the unit of identity, integrity and dedup (DESIGN.md section 5).

Pure: bytes in, values out. The signature covers the deterministic serialisation of the envelope with
`signature` and `age_s` cleared, so relays can add dwell time without breaking it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshd.errors import DecodeError, EncodeError, SignatureError, TooLargeError
from meshd.wire.pb import meshd_pb2 as pb

SIGNATURE_LEN = 64
UINT32_MAX = 0xFFFFFFFF
# One Meshtastic Data payload on a private port (see meshd.radio.airtime.max_app_payload).
MAX_ENVELOPE_LEN = 231
MAX_PKI_ENVELOPE_LEN = 219
HQ_ORIGIN = 0


class Kind(enum.StrEnum):
    """What an envelope carries; the value is also the name of its body field in the schema."""

    NEEDS = "needs"
    ALERT = "alert"
    SEALED = "sealed"
    BATCH = "batch"
    BROADCAST = "broadcast"
    DELIVERED = "delivered"
    STATUS = "status"
    CUSTODY = "custody"


class TimeQuality(enum.StrEnum):
    NONE = "none"
    DEVICE = "device"
    GPS = "gps"
    NTP = "ntp"


_TQ_TO_PB = {
    TimeQuality.NONE: pb.TIME_QUALITY_NONE,
    TimeQuality.DEVICE: pb.TIME_QUALITY_DEVICE,
    TimeQuality.GPS: pb.TIME_QUALITY_GPS,
    TimeQuality.NTP: pb.TIME_QUALITY_NTP,
}
_TQ_FROM_PB = {v: k for k, v in _TQ_TO_PB.items()}
_KIND_OF_FIELD = {kind.value: kind for kind in Kind}


def message_id(origin: int, seq: int) -> str:
    """The message id used everywhere above the wire: ``"origin:seq"``."""
    return f"{origin}:{seq}"


def parse_message_id(text: str) -> tuple[int, int]:
    origin, sep, seq = text.partition(":")
    if not sep or not origin.isdigit() or not seq.isdigit():
        raise DecodeError(f"message id {text!r} is not of the form ORIGIN:SEQ")
    return int(origin), int(seq)


@dataclass(frozen=True, slots=True)
class Envelope:
    origin: int
    seq: int
    kind: Kind
    body: bytes
    age_s: int = 0
    time_quality: TimeQuality = TimeQuality.NONE
    unverified: bool = False
    observed_at: int | None = None
    signature: bytes = field(default=b"", repr=False)

    @property
    def id(self) -> str:
        return message_id(self.origin, self.seq)

    def _to_pb(self, *, for_signing: bool) -> pb.Envelope:
        msg = pb.Envelope(origin=self.origin, seq=self.seq, unverified=self.unverified)
        msg.time_quality = _TQ_TO_PB[self.time_quality]
        if self.observed_at is not None:
            msg.observed_at = self.observed_at
        setattr(msg, self.kind.value, self.body)
        if not for_signing:
            msg.age_s = self.age_s
            msg.signature = self.signature
        return msg

    def signing_bytes(self) -> bytes:
        return self._to_pb(for_signing=True).SerializeToString(deterministic=True)

    def to_bytes(self) -> bytes:
        return self._to_pb(for_signing=False).SerializeToString(deterministic=True)

    def with_added_age(self, seconds: int) -> Envelope:
        """The same envelope, `seconds` older (a relay adds its store dwell time)."""
        return replace(self, age_s=min(self.age_s + max(seconds, 0), UINT32_MAX))

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse an envelope; raises `DecodeError` for anything that is not one."""
        msg, kind, time_quality = parse_pb(data)
        # Positional: the uplink parses every envelope it publishes.
        return cls(
            msg.origin,
            msg.seq,
            kind,
            getattr(msg, kind.value),
            msg.age_s,
            time_quality,
            msg.unverified,
            msg.observed_at or None,
            msg.signature,
        )


def parse_pb(data: bytes) -> tuple[pb.Envelope, Kind, TimeQuality]:
    """The checks of `Envelope.from_bytes`, returning the protobuf message itself (with its kind and time
    quality) for callers that only read a few fields and do not need an `Envelope` (the uplink's flush)."""
    if not data:
        raise DecodeError("empty envelope")
    if len(data) > 512:
        raise DecodeError(f"envelope of {len(data)} bytes is larger than any radio frame")
    msg = pb.Envelope()
    try:
        msg.ParseFromString(data)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"not a meshd envelope: {exc}") from None
    if msg.version != pb.WIRE_VERSION_1:
        raise DecodeError(f"unsupported wire version {msg.version}")
    which = msg.WhichOneof("body")
    if which is None:
        raise DecodeError("envelope has no body (unknown kind or not a meshd envelope)")
    if len(msg.signature) != SIGNATURE_LEN:
        raise DecodeError(f"signature is {len(msg.signature)} bytes, expected {SIGNATURE_LEN}")
    time_quality = _TQ_FROM_PB.get(msg.time_quality)
    if time_quality is None:
        raise DecodeError(f"unknown time quality {msg.time_quality}")
    return msg, _KIND_OF_FIELD[which], time_quality


def _check_uint32(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT32_MAX:
        raise EncodeError(f"{name} must be an integer 0..{UINT32_MAX}, got {value!r}")


def sign(envelope: Envelope, key: Ed25519PrivateKey, *, max_len: int = MAX_ENVELOPE_LEN) -> Envelope:
    """Return `envelope` signed by `key`; refuses (never truncates) one that would not fit one frame."""
    for name in ("origin", "seq", "age_s"):
        _check_uint32(name, getattr(envelope, name))
    if envelope.observed_at is not None:
        _check_uint32("observed_at", envelope.observed_at)
    signed = replace(envelope, signature=key.sign(envelope.signing_bytes()))
    size = len(signed.to_bytes())
    if size > max_len:
        raise TooLargeError(
            f"{envelope.kind.value} envelope would be {size} bytes, over the {max_len}-byte one-frame limit; "
            "shorten the note or text, or send fewer items per batch"
        )
    return signed


def verify(envelope: Envelope, public_key: Ed25519PublicKey) -> None:
    """Raise `SignatureError` unless the envelope is signed by `public_key`."""
    try:
        public_key.verify(envelope.signature, envelope.signing_bytes())
    except InvalidSignature:
        raise SignatureError(f"signature of {envelope.id} does not verify (forged or tampered)") from None
