"""Signed envelopes: round trip, what the signature covers, one-frame size limit, hostile bytes.

DESIGN.md section 5: every envelope is signed by its origin (Ed25519) over everything but `age_s`, which relays
add to; anything tampered, truncated or random is rejected with a `MeshdError` subclass, never a protobuf one.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshd.errors import (
    DecodeError,
    EncodeError,
    MeshdError,
    SignatureError,
    TooLargeError,
    WireError,
)
from meshd.wire.envelope import (
    MAX_ENVELOPE_LEN,
    MAX_PKI_ENVELOPE_LEN,
    SIGNATURE_LEN,
    UINT32_MAX,
    Envelope,
    Kind,
    TimeQuality,
    message_id,
    parse_message_id,
    sign,
    verify,
)
from meshd.wire.pb import meshd_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u32 = st.integers(min_value=0, max_value=UINT32_MAX)
kinds = st.sampled_from(list(Kind))
time_qualities = st.sampled_from(list(TimeQuality))


@st.composite
def envelopes(draw: st.DrawFn, max_body: int = 100) -> Envelope:
    return Envelope(
        origin=draw(u32),
        seq=draw(u32),
        kind=draw(kinds),
        body=draw(st.binary(max_size=max_body)),
        age_s=draw(u32),
        time_quality=draw(time_qualities),
        unverified=draw(st.booleans()),
        # 0 is "absent" on the wire (proto3 implicit presence), so a present observed_at is 1..UINT32_MAX
        observed_at=draw(st.none() | st.integers(min_value=1, max_value=UINT32_MAX)),
    )


def _signed(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "origin": 412,
        "seq": 1234,
        "kind": Kind.ALERT,
        "body": bytes.fromhex("0802100118022803420574656e7473"),
        "age_s": 120,
    }
    fields.update(overrides)
    return sign(Envelope(**fields), KEY)  # type: ignore[arg-type]


def _rejected_or_same(data: bytes, original: Envelope) -> bool:
    """True if `data` is refused (does not parse, or does not verify against KEY) or means exactly `original`.

    Protobuf accepts more than one encoding of the same value (a uint32 varint with bits above 32 set is
    truncated), so a changed byte may parse to the very same envelope: that is harmless (nothing signed
    changed, and `to_bytes()` gives the canonical bytes back), anything else must be refused.
    """
    try:
        parsed = Envelope.from_bytes(data)
        verify(parsed, KEY.public_key())
    except (DecodeError, SignatureError):
        return True
    return parsed == original and parsed.to_bytes() == original.to_bytes()


# ---------------------------------------------------------------- schema and identity


def test_committed_generated_code_matches_the_proto(tmp_path):
    """`make protos` output is committed; regenerate it here and compare byte for byte."""
    proto = ROOT / "protos" / "meshd" / "v1" / "meshd.proto"
    result = subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-Iprotos/meshd/v1",
            f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", str(proto.relative_to(ROOT)),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    committed = ROOT / "meshd" / "wire" / "pb"
    for name in ("meshd_pb2.py", "meshd_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), (
            f"meshd/wire/pb/{name} is stale: run `make protos` and commit the result"
        )


def test_kind_values_are_the_body_field_names_of_the_schema():
    oneof = pb.Envelope.DESCRIPTOR.oneofs_by_name["body"]
    assert sorted(k.value for k in Kind) == sorted(f.name for f in oneof.fields)


def test_message_id_round_trip():
    assert message_id(412, 1234) == "412:1234"
    assert parse_message_id("412:1234") == (412, 1234)
    assert _signed().id == "412:1234"


@pytest.mark.parametrize("text", ["", "412", "412:", ":5", "a:1", "1:b", "1:-2", "-1:2", "1:2:3", " 1:2"])
def test_parse_message_id_rejects_malformed(text):
    with pytest.raises(DecodeError):
        parse_message_id(text)


def test_error_hierarchy_is_rooted_at_meshd_error():
    for cls in (DecodeError, EncodeError, TooLargeError, SignatureError):
        assert issubclass(cls, WireError)
        assert issubclass(cls, MeshdError)
    assert issubclass(TooLargeError, EncodeError)


# ---------------------------------------------------------------- round trip


@PROPERTY
@given(envelopes())
def test_sign_then_parse_round_trips_every_field_and_verifies(envelope):
    signed = sign(envelope, KEY)
    assert len(signed.signature) == SIGNATURE_LEN
    parsed = Envelope.from_bytes(signed.to_bytes())
    assert parsed == signed
    verify(parsed, KEY.public_key())
    assert parsed.id == message_id(envelope.origin, envelope.seq)


@PROPERTY
@given(envelopes())
def test_serialisation_is_deterministic(envelope):
    signed = sign(envelope, KEY)
    assert signed.to_bytes() == Envelope.from_bytes(signed.to_bytes()).to_bytes()
    assert sign(envelope, KEY).to_bytes() == signed.to_bytes()  # Ed25519 is deterministic too


@pytest.mark.parametrize("kind", list(Kind))
def test_empty_body_still_names_its_kind(kind):
    parsed = Envelope.from_bytes(sign(Envelope(1, 1, kind, b""), KEY).to_bytes())
    assert parsed.kind is kind
    assert parsed.body == b""


# ---------------------------------------------------------------- what the signature covers


@PROPERTY
@given(envelopes(), u32)
def test_age_change_keeps_the_signature(envelope, new_age):
    signed = sign(envelope, KEY)
    aged = Envelope.from_bytes(replace(signed, age_s=new_age).to_bytes())
    assert aged.age_s == new_age
    verify(aged, KEY.public_key())


def test_with_added_age_accumulates_saturates_and_ignores_negative():
    signed = _signed(age_s=120)
    assert signed.with_added_age(30).age_s == 150
    assert signed.with_added_age(-50).age_s == 120
    assert signed.with_added_age(UINT32_MAX).age_s == UINT32_MAX
    verify(Envelope.from_bytes(signed.with_added_age(3600).to_bytes()), KEY.public_key())


@pytest.mark.parametrize(
    "change",
    [
        {"origin": 413},
        {"seq": 1235},
        {"kind": Kind.NEEDS},
        {"body": bytes.fromhex("0802100118022803420574656e7475")},
        {"body": b""},
        {"time_quality": TimeQuality.GPS},
        {"unverified": True},
        {"observed_at": 1_700_000_000},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_other_field_change_breaks_the_signature(change):
    signed = _signed()
    tampered = Envelope.from_bytes(replace(signed, **change).to_bytes())
    with pytest.raises(SignatureError):
        verify(tampered, KEY.public_key())


def test_wrong_key_is_rejected():
    with pytest.raises(SignatureError):
        verify(_signed(), OTHER_KEY.public_key())


def test_other_signature_is_rejected():
    signed = _signed()
    forged = replace(signed, signature=OTHER_KEY.sign(signed.signing_bytes()))
    with pytest.raises(SignatureError):
        verify(Envelope.from_bytes(forged.to_bytes()), KEY.public_key())


def test_every_single_byte_change_is_rejected_when_age_is_zero():
    """With age_s = 0 there is no unsigned byte on the wire: every flip of every byte must be refused."""
    signed = _signed(age_s=0, observed_at=1_700_000_000, time_quality=TimeQuality.NTP)
    raw = signed.to_bytes()
    for index in range(len(raw)):
        for mask in (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF):
            data = bytearray(raw)
            data[index] ^= mask
            assert _rejected_or_same(bytes(data), signed), f"byte {index} ^ {mask:#x} accepted"


def test_byte_change_outside_the_age_field_is_rejected():
    signed = _signed(age_s=120)
    raw = signed.to_bytes()
    age_field = bytes([0x20, 120])  # field 4, varint 120
    start = raw.index(age_field)
    for index in range(len(raw)):
        if start <= index < start + len(age_field):
            continue
        for mask in (0x01, 0x80, 0xFF):
            data = bytearray(raw)
            data[index] ^= mask
            assert _rejected_or_same(bytes(data), signed), f"byte {index} ^ {mask:#x} accepted"


@PROPERTY
@given(envelopes(max_body=60), st.data())
def test_a_mutated_envelope_never_verifies_with_different_signed_content(envelope, data):
    """Flip, insert or delete bytes: either refused, or the signed content is byte-for-byte the original's."""
    signed = sign(envelope, KEY)
    raw = bytearray(signed.to_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(raw) - 1))
        operation = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if operation == "flip":
            raw[index] ^= data.draw(st.integers(1, 255))
        elif operation == "insert":
            raw.insert(index, data.draw(st.integers(0, 255)))
        elif len(raw) > 1:
            del raw[index]
    try:
        parsed = Envelope.from_bytes(bytes(raw))
        verify(parsed, KEY.public_key())
    except (DecodeError, SignatureError):
        return
    assert parsed.signing_bytes() == signed.signing_bytes()
    assert parsed.signature == signed.signature


# ---------------------------------------------------------------- hostile and malformed bytes


def test_every_truncation_is_a_decode_error():
    raw = _signed().to_bytes()
    for length in range(len(raw)):
        with pytest.raises(DecodeError):
            Envelope.from_bytes(raw[:length])


def test_empty_and_oversize_input_are_decode_errors():
    with pytest.raises(DecodeError):
        Envelope.from_bytes(b"")
    with pytest.raises(DecodeError):
        Envelope.from_bytes(_signed().to_bytes() + bytes(600))


def test_unsigned_envelope_is_a_decode_error():
    with pytest.raises(DecodeError):
        Envelope.from_bytes(Envelope(412, 1, Kind.NEEDS, b"\x08\x01").to_bytes())


def test_short_signature_is_a_decode_error():
    with pytest.raises(DecodeError):
        Envelope.from_bytes(replace(_signed(), signature=bytes(63)).to_bytes())


def test_unknown_wire_version_is_a_decode_error():
    with pytest.raises(DecodeError, match="version"):
        Envelope.from_bytes(b"\x08\x01" + _signed().to_bytes())


def test_unknown_kind_is_a_decode_error():
    msg = pb.Envelope(origin=412, seq=1, signature=bytes(64))
    raw = msg.SerializeToString() + b"\xc2\x3e\x01\x00"  # field 1000 (no such kind), 1 byte
    with pytest.raises(DecodeError, match="no body"):
        Envelope.from_bytes(raw)


def test_unknown_time_quality_is_a_decode_error():
    with pytest.raises(DecodeError, match="time quality"):
        Envelope.from_bytes(b"\x28\x09" + _signed().to_bytes())


@PROPERTY
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_meshd_errors(data):
    try:
        envelope = Envelope.from_bytes(data)
    except MeshdError:
        return
    with pytest.raises(SignatureError):
        verify(envelope, KEY.public_key())


# ---------------------------------------------------------------- one frame, never truncated


@pytest.mark.parametrize("max_len", [MAX_ENVELOPE_LEN, MAX_PKI_ENVELOPE_LEN])
def test_body_is_accepted_up_to_the_frame_limit_and_refused_one_byte_over(max_len):
    def size_with(body_len: int) -> int:
        return len(replace(Envelope(412, 1234, Kind.NEEDS, bytes(body_len)), signature=bytes(64)).to_bytes())

    fitting = max(n for n in range(256) if size_with(n) <= max_len)
    signed = sign(Envelope(412, 1234, Kind.NEEDS, bytes(fitting)), KEY, max_len=max_len)
    assert len(signed.to_bytes()) <= max_len
    assert Envelope.from_bytes(signed.to_bytes()).body == bytes(fitting)
    with pytest.raises(TooLargeError, match="one-frame limit"):
        sign(Envelope(412, 1234, Kind.NEEDS, bytes(fitting + 1)), KEY, max_len=max_len)


@PROPERTY
@given(envelopes(max_body=240), st.sampled_from([MAX_ENVELOPE_LEN, MAX_PKI_ENVELOPE_LEN]))
def test_sign_fits_one_frame_or_refuses_never_truncates(envelope, max_len):
    would_be = len(replace(envelope, signature=bytes(64)).to_bytes())
    try:
        signed = sign(envelope, KEY, max_len=max_len)
    except TooLargeError:
        assert would_be > max_len
        return
    raw = signed.to_bytes()
    assert len(raw) == would_be <= max_len
    assert Envelope.from_bytes(raw).body == envelope.body


@pytest.mark.parametrize(
    "change",
    [
        {"origin": -1},
        {"origin": UINT32_MAX + 1},
        {"seq": -1},
        {"seq": UINT32_MAX + 1},
        {"age_s": -5},
        {"age_s": UINT32_MAX + 1},
        {"observed_at": -1},
        {"observed_at": UINT32_MAX + 1},
        {"seq": True},
    ],
    ids=str,
)
def test_sign_refuses_out_of_range_fields(change):
    envelope = replace(Envelope(412, 1234, Kind.NEEDS, b""), **change)
    with pytest.raises(EncodeError):
        sign(envelope, KEY)
