"""The camp registry: camp id -> name, signing key, location; signed by the HQ key (DESIGN.md section 5).

Pure: JSON bytes in and out. The file is canonical JSON (sorted keys, no spaces) of everything but
`signature`, which is an Ed25519 signature by the HQ key pinned on every hub at provisioning.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from meshd.errors import RegistryError, SignatureError, UnknownOriginError
from meshd.wire.envelope import HQ_ORIGIN, Envelope, verify

REGISTRY_VERSION = 1


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: object, what: str, length: int = 32) -> bytes:
    if not isinstance(text, str):
        raise RegistryError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RegistryError(f"{what} is not valid base64") from None
    if len(raw) != length:
        raise RegistryError(f"{what} must be {length} bytes, got {len(raw)}")
    return raw


def public_raw(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class Camp:
    camp_id: int
    name: str
    sign_key: bytes  # raw Ed25519 public key
    lat: float | None = None
    lon: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.camp_id, "name": self.name, "sign_key": b64(self.sign_key)}
        if self.lat is not None and self.lon is not None:
            out["lat"], out["lon"] = self.lat, self.lon
        return out

    @classmethod
    def from_json(cls, obj: object) -> Camp:
        if not isinstance(obj, dict):
            raise RegistryError("each camp must be an object")
        camp_id = obj.get("id")
        if isinstance(camp_id, bool) or not isinstance(camp_id, int) or not 1 <= camp_id <= 0xFFFFFFFF:
            raise RegistryError(f"camp id must be an integer 1..4294967295, got {camp_id!r}")
        name = obj.get("name", "")
        if not isinstance(name, str):
            raise RegistryError(f"camp {camp_id}: name must be a string")
        lat, lon = obj.get("lat"), obj.get("lon")
        for what, value in (("lat", lat), ("lon", lon)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise RegistryError(f"camp {camp_id}: {what} must be a number")
        return cls(
            camp_id,
            name,
            unb64(obj.get("sign_key"), f"camp {camp_id} sign_key"),
            float(lat) if lat is not None else None,
            float(lon) if lon is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Registry:
    hq_sign_key: bytes  # raw Ed25519 public key of HQ
    hq_seal_key: bytes  # raw X25519 public key of the HQ protection desk
    camps: dict[int, Camp] = field(default_factory=dict)
    signature: bytes = b""

    def _body(self) -> dict[str, Any]:
        return {
            "version": REGISTRY_VERSION,
            "hq": {"sign_key": b64(self.hq_sign_key), "seal_key": b64(self.hq_seal_key)},
            "camps": [self.camps[c].to_json() for c in sorted(self.camps)],
        }

    def signing_bytes(self) -> bytes:
        return json.dumps(self._body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def to_json_bytes(self) -> bytes:
        body = self._body()
        if self.signature:
            body["signature"] = b64(self.signature)
        return (json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json_bytes(cls, data: bytes) -> Registry:
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise RegistryError(f"registry is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise RegistryError("registry must be a JSON object")
        if obj.get("version") != REGISTRY_VERSION:
            raise RegistryError(f"unsupported registry version {obj.get('version')!r}")
        hq = obj.get("hq")
        if not isinstance(hq, dict):
            raise RegistryError('registry needs an "hq" object with sign_key and seal_key')
        camps_list = obj.get("camps", [])
        if not isinstance(camps_list, list):
            raise RegistryError('"camps" must be a list')
        camps: dict[int, Camp] = {}
        for item in camps_list:
            camp = Camp.from_json(item)
            if camp.camp_id in camps:
                raise RegistryError(f"camp {camp.camp_id} is listed twice")
            camps[camp.camp_id] = camp
        sig = obj.get("signature")
        return cls(
            unb64(hq.get("sign_key"), "hq sign_key"),
            unb64(hq.get("seal_key"), "hq seal_key"),
            camps,
            unb64(sig, "signature", 64) if sig is not None else b"",
        )

    def with_camp(self, camp: Camp) -> Registry:
        camps = dict(self.camps)
        camps[camp.camp_id] = camp
        return replace(self, camps=camps, signature=b"")

    def signed(self, hq_key: Ed25519PrivateKey) -> Registry:
        if public_raw(hq_key.public_key()) != self.hq_sign_key:
            raise RegistryError("this key is not the HQ signing key named in the registry")
        return replace(self, signature=hq_key.sign(self.signing_bytes()))

    def verify(self, pinned_hq_key: bytes | None = None) -> None:
        """Raise `RegistryError` unless signed by the HQ key (the pinned one, if given)."""
        if pinned_hq_key is not None and pinned_hq_key != self.hq_sign_key:
            raise RegistryError("registry names a different HQ key than the one pinned on this hub")
        if not self.signature:
            raise RegistryError("registry is not signed (run: meshd registry sign)")
        try:
            Ed25519PublicKey.from_public_bytes(self.hq_sign_key).verify(self.signature, self.signing_bytes())
        except InvalidSignature:
            raise RegistryError("registry signature does not verify: edited after signing, or wrong HQ key") from None

    def hq_seal_public(self) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(self.hq_seal_key)

    def verify_envelope(self, envelope: Envelope) -> None:
        """Raise `SignatureError` / `UnknownOriginError` unless the origin's key signed `envelope`."""
        if envelope.origin == HQ_ORIGIN:
            verify(envelope, Ed25519PublicKey.from_public_bytes(self.hq_sign_key))
            return
        camp = self.camps.get(envelope.origin)
        if camp is None:
            raise UnknownOriginError(f"origin {envelope.origin} is not in the camp registry")
        try:
            verify(envelope, Ed25519PublicKey.from_public_bytes(camp.sign_key))
        except ValueError:
            raise SignatureError(f"registry key of camp {camp.camp_id} is invalid") from None
