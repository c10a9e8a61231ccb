"""Sealed bodies (DESIGN.md section 5): only the HQ protection key opens them, relays see only a size.

X25519 (fresh ephemeral key) + HKDF-SHA256 + ChaCha20-Poly1305, with the origin camp as associated data.
"""

from __future__ import annotations

import contextlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshd.errors import DecodeError, EncodeError, MeshdError, SealError
from meshd.wire import seal
from meshd.wire.codec import (
    BatchEntry,
    Provenance,
    build_envelope,
    decode_body,
    encode_body,
    make_batch_body,
    report_json,
    unbatch,
)
from meshd.wire.envelope import MAX_ENVELOPE_LEN, UINT32_MAX, Envelope, Kind, sign
from meshd.wire.pb import meshd_pb2 as pb

SIGN_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
HQ = X25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
HQ_PUBLIC = HQ.public_key()
STRANGER = X25519PrivateKey.from_private_bytes(bytes(range(96, 128)))
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u32 = st.integers(min_value=0, max_value=UINT32_MAX)
# A protection report of about 60 bytes of plaintext: no names, but enough to act on.
CONTENT = {
    "kind": "protection",
    "text": "woman threatened near well 3 at night, asks escort",
    "reporter_node": 0xA1B2C3D4,
}
PLAINTEXT_OVERHEAD = seal.KEY_LEN + seal.TAG_LEN


def _box(body: bytes) -> bytes:
    msg = pb.Sealed()
    msg.ParseFromString(body)
    return msg.box


def _sealed_envelope(content: dict[str, object] = CONTENT, origin: int = 412) -> Envelope:
    return build_envelope(Kind.SEALED, content, origin=origin, seq=77, key=SIGN_KEY, seal_to=HQ_PUBLIC, age_s=120)


# ---------------------------------------------------------------- round trip


@PROPERTY
@given(st.binary(max_size=200), u32)
def test_seal_then_open_round_trips(plaintext, origin):
    body = seal.seal_bytes(plaintext, HQ_PUBLIC, origin)
    assert seal.open_bytes(body, HQ, origin) == plaintext


@PROPERTY
@given(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(list(seal.SEALED_KINDS)),
            "text": st.text(max_size=seal.MAX_SEALED_TEXT_BYTES).filter(
                lambda t: len(t.encode()) <= seal.MAX_SEALED_TEXT_BYTES
            ),
        },
        optional={"reporter_node": u32, "camp": u32},
    )
)
def test_sealed_content_round_trips(content):
    plaintext = seal.encode_sealed_content(content)
    assert seal.decode_sealed_content(plaintext) == content
    body = encode_body(Kind.SEALED, content, 412, seal_to=HQ_PUBLIC)
    assert decode_body(Kind.SEALED, body, 412, open_key=HQ) == content


def test_sealed_content_defaults_to_a_protection_report():
    assert seal.decode_sealed_content(seal.encode_sealed_content({"text": "x"})) == {"kind": "protection", "text": "x"}


def test_sealed_envelope_opens_only_for_hq():
    envelope = Envelope.from_bytes(_sealed_envelope().to_bytes())
    assert envelope.kind is Kind.SEALED
    assert len(envelope.to_bytes()) <= MAX_ENVELOPE_LEN
    assert decode_body(Kind.SEALED, envelope.body, 412, open_key=HQ) == CONTENT
    with pytest.raises(SealError):
        decode_body(Kind.SEALED, envelope.body, 412, open_key=STRANGER)


def test_relays_without_the_key_see_only_sealed_and_size():
    envelope = _sealed_envelope()
    box = _box(envelope.body)
    assert decode_body(Kind.SEALED, envelope.body, 412) == {"sealed": True, "size": len(box)}
    [report] = unbatch(envelope)
    obj = report_json(report, provenance=Provenance.VERIFIED)
    assert obj["body"] == {"sealed": True, "size": len(box)}
    assert obj["kind"] == "sealed"
    raw = envelope.to_bytes()
    for word in ("woman", "well 3", "escort"):
        assert word.encode() not in raw


def test_report_json_with_the_wrong_key_says_so_instead_of_failing():
    [report] = unbatch(_sealed_envelope())
    body = report_json(report, provenance=Provenance.VERIFIED, open_key=STRANGER)["body"]
    assert body["sealed"] is True
    assert "open_error" in body
    assert "text" not in body


def test_every_seal_uses_a_fresh_ephemeral_key():
    first = seal.seal_bytes(b"same words", HQ_PUBLIC, 412)
    second = seal.seal_bytes(b"same words", HQ_PUBLIC, 412)
    assert _box(first)[: seal.KEY_LEN] != _box(second)[: seal.KEY_LEN]
    assert _box(first) != _box(second)
    assert seal.open_bytes(first, HQ, 412) == seal.open_bytes(second, HQ, 412) == b"same words"


def test_padding_hides_the_exact_length():
    sizes = {len(_box(seal.seal_bytes(bytes(n), HQ_PUBLIC, 1))) for n in range(seal.PAD_BLOCK - 1)}
    assert sizes == {PLAINTEXT_OVERHEAD + seal.PAD_BLOCK}
    for n in range(100):
        size = len(_box(seal.seal_bytes(bytes(n), HQ_PUBLIC, 1)))
        assert (size - PLAINTEXT_OVERHEAD) % seal.PAD_BLOCK == 0
        assert size - PLAINTEXT_OVERHEAD > n


def test_sealed_batch_item_opens_under_its_origin():
    item = encode_body(Kind.SEALED, CONTENT, 412, seal_to=HQ_PUBLIC)
    envelope = sign(Envelope(412, 10, Kind.BATCH, make_batch_body([BatchEntry(Kind.SEALED, item)])), SIGN_KEY)
    [report] = unbatch(envelope)
    assert report_json(report, provenance=Provenance.VERIFIED, open_key=HQ)["body"] == CONTENT


# ---------------------------------------------------------------- rejected with SealError


def test_wrong_key_is_a_seal_error():
    with pytest.raises(SealError):
        seal.open_bytes(seal.seal_bytes(b"x", HQ_PUBLIC, 412), STRANGER, 412)


def test_a_box_moved_under_another_origin_does_not_open():
    body = _sealed_envelope(origin=412).body
    with pytest.raises(SealError):
        decode_body(Kind.SEALED, body, 413, open_key=HQ)
    # and re-signed by camp 413 as its own report: the signature is valid, the box still refuses
    moved = sign(Envelope(413, 1, Kind.SEALED, body), SIGN_KEY)
    [report] = unbatch(moved)
    assert "open_error" in report_json(report, provenance=Provenance.VERIFIED, open_key=HQ)["body"]


def test_every_tampered_box_byte_is_a_seal_error():
    body = seal.seal_bytes(seal.encode_sealed_content(CONTENT), HQ_PUBLIC, 412)
    box = _box(body)
    for index in range(len(box)):
        tampered = bytearray(box)
        tampered[index] ^= 0x01
        with pytest.raises(SealError):
            seal.open_bytes(pb.Sealed(box=bytes(tampered)).SerializeToString(), HQ, 412)


@PROPERTY
@given(st.data())
def test_any_tampering_is_a_seal_error(data):
    box = bytearray(_box(seal.seal_bytes(b"protection details", HQ_PUBLIC, 412)))
    index = data.draw(st.integers(0, len(box) - 1))
    box[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SealError):
        seal.open_bytes(pb.Sealed(box=bytes(box)).SerializeToString(), HQ, 412)


def test_every_truncation_is_a_seal_error():
    box = _box(seal.seal_bytes(b"protection details", HQ_PUBLIC, 412))
    for length in range(len(box)):
        with pytest.raises(SealError):
            seal.open_bytes(pb.Sealed(box=box[:length]).SerializeToString(), HQ, 412)


def test_invalid_ephemeral_key_is_a_seal_error():
    # The all-zero X25519 point gives an all-zero shared secret, which cryptography refuses.
    box = bytes(seal.KEY_LEN) + bytes(seal.TAG_LEN + seal.PAD_BLOCK)
    with pytest.raises(SealError):
        seal.open_bytes(pb.Sealed(box=box).SerializeToString(), HQ, 412)


def test_bad_padding_inside_a_valid_box_is_a_seal_error():
    ephemeral = X25519PrivateKey.generate()
    raw = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    hq_raw = HQ_PUBLIC.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key, nonce = seal._derive(ephemeral.exchange(HQ_PUBLIC), raw, hq_raw)
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, bytes(seal.PAD_BLOCK), (412).to_bytes(4, "big"))
    with pytest.raises(SealError, match="padding"):
        seal.open_bytes(pb.Sealed(box=raw + ciphertext).SerializeToString(), HQ, 412)


@PROPERTY
@given(st.binary(max_size=250), u32)
def test_random_bodies_raise_only_seal_or_decode_errors(data, origin):
    with pytest.raises(SealError):
        seal.open_bytes(data, HQ, origin)
    with contextlib.suppress(DecodeError):
        assert seal.sealed_size(data) >= PLAINTEXT_OVERHEAD
    with contextlib.suppress(SealError):
        seal.decode_sealed_content(data)


def test_sealed_size_of_a_malformed_body_is_a_decode_error():
    with pytest.raises(DecodeError):
        seal.sealed_size(b"\x0a\x05ab")  # says 5 bytes, has 2
    with pytest.raises(DecodeError):
        decode_body(Kind.SEALED, pb.Sealed(box=bytes(10)).SerializeToString(), 412)


# ---------------------------------------------------------------- what can be sealed


@pytest.mark.parametrize(
    "content",
    [
        {"text": "x", "name": "Kim"},
        {"kind": "gossip", "text": "x"},
        {"text": 5},
        {"text": "x" * (seal.MAX_SEALED_TEXT_BYTES + 1)},
        {"text": "x", "reporter_node": -1},
        {"text": "x", "reporter_node": True},
        {"text": "x", "camp": UINT32_MAX + 1},
    ],
    ids=str,
)
def test_bad_sealed_content_is_an_encode_error(content):
    with pytest.raises(EncodeError):
        encode_body(Kind.SEALED, content, 412, seal_to=HQ_PUBLIC)


def test_sealed_content_of_random_bytes_raises_only_meshd_errors():
    for data in (b"\x08\x07", b"\x12\x02\xff\xfe", b"\xff", b"\x12\x05ab"):
        with pytest.raises(MeshdError):
            seal.decode_sealed_content(data)


def test_longest_allowed_text_still_fits_one_frame_and_longer_is_refused():
    text = "x" * seal.MAX_SEALED_TEXT_BYTES
    env = _sealed_envelope({"kind": "protection", "text": text, "reporter_node": 0xFFFFFFFF, "camp": 65000})
    assert len(env.to_bytes()) <= 231
    with pytest.raises(EncodeError):
        _sealed_envelope({"kind": "protection", "text": text + "x"})


@pytest.mark.parametrize("origin", [-1, UINT32_MAX + 1])
def test_out_of_range_origin_is_an_encode_error(origin):
    """BUG: the associated data does origin.to_bytes(4, "big"), which raises OverflowError, not EncodeError."""
    with pytest.raises(EncodeError):
        encode_body(Kind.SEALED, CONTENT, origin, seal_to=HQ_PUBLIC)


def test_shorthand_sealed_text_limit_fits_one_frame_after_sealing():
    """BUG: text.SEALED_TEXT_MAX_BYTES (90) promises a sealed entry of that length fits one frame; it does not.

    A 90-byte child-tracing entry with the reporting handset's node number and camp is 103 bytes of plaintext,
    padded to 112, a 163-byte Sealed body and a 243-byte envelope (seq and age in the millions), over the
    231-byte frame (let alone 219 for a PKI direct message): the hub would accept the field team's text and
    then fail to seal it. With 16-byte padding, 82 bytes of text is the most that fits 231 with reporter
    node and camp (66 for 219).
    """
    from meshd.wire.text import SEALED_TEXT_MAX_BYTES

    content = {
        "kind": "child_tracing",
        "text": "x" * SEALED_TEXT_MAX_BYTES,
        "reporter_node": 0xA1B2C3D4,
        "camp": 412,
    }
    envelope = build_envelope(
        Kind.SEALED, content, origin=412, seq=1_000_000, key=SIGN_KEY, seal_to=HQ_PUBLIC, age_s=1_000_000
    )
    assert len(envelope.to_bytes()) <= MAX_ENVELOPE_LEN
