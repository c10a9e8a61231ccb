"""Sealed bodies for HQ protection officers (DESIGN.md section 5).

X25519 with a fresh ephemeral key per message, HKDF-SHA256 deriving both the ChaCha20-Poly1305 key and
nonce (the ephemeral key is never reused, so a derived nonce is safe and saves 12 bytes on the air), and
the origin camp as associated data so a box cannot be replayed under another camp's name. The plaintext
is padded to a multiple of 16 bytes so sizes say little about what is inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshd.errors import DecodeError, EncodeError, SealError
from meshd.wire.pb import meshd_pb2 as pb

KEY_LEN = 32
TAG_LEN = 16
PAD_BLOCK = 16
PAD_MARKER = 0x80
MAX_SEALED_TEXT_BYTES = 82  # with reporter and camp, padded and sealed, still one 231-byte frame
_INFO = b"meshd v1 sealed"

SEALED_KINDS = {"protection": pb.SEALED_KIND_PROTECTION, "child_tracing": pb.SEALED_KIND_CHILD_TRACING}


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _derive(shared: bytes, ephemeral: bytes, recipient: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=32 + 12, salt=None, info=_INFO + ephemeral + recipient).derive(shared)
    return okm[:32], okm[32:]


def _pad(data: bytes) -> bytes:
    padded = data + bytes([PAD_MARKER])
    return padded + bytes(-len(padded) % PAD_BLOCK)


def _unpad(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped or stripped[-1] != PAD_MARKER:
        raise SealError("sealed plaintext has bad padding")
    return stripped[:-1]


def _aad(origin: int) -> bytes:
    if not 0 <= origin <= 0xFFFFFFFF:
        raise EncodeError(f"origin must be 0..4294967295, got {origin}")
    return origin.to_bytes(4, "big")


def seal_bytes(plaintext: bytes, recipient: X25519PublicKey, origin: int) -> bytes:
    """Encrypt `plaintext` to `recipient`; returns the serialised `Sealed` body."""
    ephemeral = X25519PrivateKey.generate()
    eph_pub = _raw_public(ephemeral.public_key())
    key, nonce = _derive(ephemeral.exchange(recipient), eph_pub, _raw_public(recipient))
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, _pad(plaintext), _aad(origin))
    return pb.Sealed(box=eph_pub + ciphertext).SerializeToString(deterministic=True)


def open_bytes(body: bytes, private_key: X25519PrivateKey, origin: int) -> bytes:
    """Decrypt a `Sealed` body; raises `SealError` for a wrong key or any tampering."""
    msg = pb.Sealed()
    try:
        msg.ParseFromString(body)
    except (ProtobufDecodeError, RuntimeError, ValueError):
        raise SealError("sealed body does not decode") from None
    box = msg.box
    if len(box) < KEY_LEN + TAG_LEN + PAD_BLOCK:
        raise SealError(f"sealed box of {len(box)} bytes is too short")
    eph_pub = box[:KEY_LEN]
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:
        raise SealError("sealed box has an invalid ephemeral key") from None
    key, nonce = _derive(shared, eph_pub, _raw_public(private_key.public_key()))
    try:
        padded = ChaCha20Poly1305(key).decrypt(nonce, box[KEY_LEN:], _aad(origin))
    except InvalidTag:
        raise SealError("sealed body does not open with this key (wrong key or tampered)") from None
    return _unpad(padded)


def sealed_size(body: bytes) -> int:
    """Size of the box, the only thing a relay can learn about a sealed body."""
    msg = pb.Sealed()
    try:
        msg.ParseFromString(body)
    except (ProtobufDecodeError, RuntimeError, ValueError):
        raise DecodeError("sealed body does not decode") from None
    if len(msg.box) < KEY_LEN + TAG_LEN:
        raise DecodeError("sealed box too short")
    return len(msg.box)


def encode_sealed_content(content: Mapping[str, Any]) -> bytes:
    """The plaintext of a sealed report from its JSON form: {"kind", "text", "reporter_node"?, "camp"?}."""
    allowed = {"kind", "text", "reporter_node", "camp"}
    unknown = sorted(set(content) - allowed)
    if unknown:
        raise EncodeError(f"unknown field {unknown[0]!r} in sealed content (allowed: {', '.join(sorted(allowed))})")
    kind = content.get("kind", "protection")
    if kind not in SEALED_KINDS:
        raise EncodeError(f"sealed kind must be one of {', '.join(SEALED_KINDS)}, got {kind!r}")
    text = content.get("text", "")
    if not isinstance(text, str) or len(text.encode()) > MAX_SEALED_TEXT_BYTES:
        raise EncodeError(f"sealed text must be a string of at most {MAX_SEALED_TEXT_BYTES} bytes")
    msg = pb.SealedContent(kind=SEALED_KINDS[kind], text=text)
    for name in ("reporter_node", "camp"):
        if name in content:
            value = content[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
                raise EncodeError(f"{name} must be an integer 0..4294967295")
            setattr(msg, name, value)
    return msg.SerializeToString(deterministic=True)


def decode_sealed_content(plaintext: bytes) -> dict[str, Any]:
    msg = pb.SealedContent()
    try:
        msg.ParseFromString(plaintext)
    except (ProtobufDecodeError, RuntimeError, ValueError):
        raise SealError("sealed content does not decode") from None
    kinds = {v: k for k, v in SEALED_KINDS.items()}
    if msg.kind not in kinds:
        raise SealError(f"unknown sealed kind {msg.kind}")
    out: dict[str, Any] = {"kind": kinds[msg.kind], "text": msg.text}
    if msg.HasField("reporter_node"):
        out["reporter_node"] = msg.reporter_node
    if msg.HasField("camp"):
        out["camp"] = msg.camp
    return out
