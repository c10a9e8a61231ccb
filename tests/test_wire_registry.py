"""The HQ-signed camp registry (DESIGN.md section 5): sign/verify, edits detected, pinned HQ key, origins."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.errors import RegistryError, SignatureError, UnknownOriginError
from meshd.wire.codec import build_envelope
from meshd.wire.envelope import HQ_ORIGIN, Kind
from meshd.wire.registry import Camp, Registry, b64, public_raw

HQ_SIGN = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
HQ_SEAL = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
CAMP_412 = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
CAMP_413 = Ed25519PrivateKey.from_private_bytes(bytes(range(96, 128)))
ROGUE_HQ = Ed25519PrivateKey.from_private_bytes(bytes(range(128, 160)))


def _registry(hq: Ed25519PrivateKey = HQ_SIGN) -> Registry:
    registry = Registry(public_raw(hq.public_key()), public_raw(HQ_SEAL.public_key()))
    registry = registry.with_camp(Camp(412, "Camp Alpha", public_raw(CAMP_412.public_key()), 39.02, 125.75))
    return registry.with_camp(Camp(413, "캠프 베타", public_raw(CAMP_413.public_key())))


def _signed_json() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(_registry().signed(HQ_SIGN).to_json_bytes())
    return loaded


def _reload(obj: object) -> Registry:
    return Registry.from_json_bytes(json.dumps(obj).encode())


# ---------------------------------------------------------------- sign and verify


def test_signed_registry_verifies_and_survives_the_file_round_trip():
    signed = _registry().signed(HQ_SIGN)
    signed.verify()
    loaded = Registry.from_json_bytes(signed.to_json_bytes())
    assert loaded == signed
    loaded.verify(pinned_hq_key=public_raw(HQ_SIGN.public_key()))
    assert loaded.camps[413].name == "캠프 베타"
    assert (loaded.camps[412].lat, loaded.camps[412].lon) == (39.02, 125.75)
    assert loaded.hq_seal_public().public_bytes_raw() == HQ_SEAL.public_key().public_bytes_raw()


def test_the_file_names_hq_keys_camps_and_signature():
    obj = _signed_json()
    assert set(obj) == {"version", "hq", "camps", "signature"}
    assert obj["hq"] == {
        "sign_key": b64(public_raw(HQ_SIGN.public_key())),
        "seal_key": b64(public_raw(HQ_SEAL.public_key())),
    }
    camps = obj["camps"]
    assert isinstance(camps, list)
    assert [c["id"] for c in camps] == [412, 413]


def test_unsigned_registry_does_not_verify():
    with pytest.raises(RegistryError, match="not signed"):
        _registry().verify()


def test_adding_a_camp_drops_the_signature():
    signed = _registry().signed(HQ_SIGN)
    changed = signed.with_camp(Camp(414, "Camp Gamma", public_raw(CAMP_413.public_key())))
    assert changed.signature == b""
    with pytest.raises(RegistryError):
        changed.verify()


def test_only_the_named_hq_key_may_sign():
    with pytest.raises(RegistryError, match="not the HQ signing key"):
        _registry().signed(CAMP_412)


@pytest.mark.parametrize(
    "edit",
    [
        lambda o: o["camps"][0].update(name="Camp Omega"),
        lambda o: o["camps"][0].update(sign_key=b64(public_raw(ROGUE_HQ.public_key()))),
        lambda o: o["camps"][0].update(lat=40.0),
        lambda o: o["camps"][1].update(id=999),
        lambda o: o["camps"].pop(),
        lambda o: o["camps"].append({"id": 666, "name": "x", "sign_key": b64(bytes(32))}),
        lambda o: o["hq"].update(seal_key=b64(public_raw(X25519PrivateKey.generate().public_key()))),
        lambda o: o.update(signature=b64(HQ_SIGN.sign(b"something else"))),
    ],
    ids=["name", "camp-key", "location", "camp-id", "camp-removed", "camp-added", "hq-seal-key", "signature"],
)
def test_an_edited_registry_does_not_verify(edit):
    obj = _signed_json()
    edit(obj)
    with pytest.raises(RegistryError, match="does not verify"):
        _reload(obj).verify()


def test_pinned_hq_key_mismatch_fails_even_if_self_consistent():
    """A rogue 'HQ' can sign a registry naming itself; only the key pinned at provisioning catches that."""
    rogue = _registry(hq=ROGUE_HQ).signed(ROGUE_HQ)
    rogue.verify()  # self-consistent
    with pytest.raises(RegistryError, match="pinned"):
        rogue.verify(pinned_hq_key=public_raw(HQ_SIGN.public_key()))


# ---------------------------------------------------------------- envelopes against the registry


def test_envelope_from_a_registered_camp_verifies():
    registry = _registry().signed(HQ_SIGN)
    envelope = build_envelope(Kind.NEEDS, {"severity": {"water": 4}}, origin=412, seq=1, key=CAMP_412)
    registry.verify_envelope(envelope)
    registry.verify_envelope(envelope.with_added_age(300))


def test_envelope_signed_by_another_camp_is_a_signature_error():
    registry = _registry().signed(HQ_SIGN)
    forged = build_envelope(Kind.NEEDS, {"severity": {"water": 4}}, origin=412, seq=1, key=CAMP_413)
    with pytest.raises(SignatureError):
        registry.verify_envelope(forged)


def test_unknown_origin_raises_unknown_origin_error():
    registry = _registry().signed(HQ_SIGN)
    envelope = build_envelope(Kind.NEEDS, {"severity": {"water": 4}}, origin=500, seq=1, key=CAMP_412)
    with pytest.raises(UnknownOriginError, match="500"):
        registry.verify_envelope(envelope)


def test_broadcast_must_be_signed_by_hq():
    registry = _registry().signed(HQ_SIGN)
    body = {"text": "Distribution at 10:00", "severity": "minor"}
    registry.verify_envelope(build_envelope(Kind.BROADCAST, body, origin=HQ_ORIGIN, seq=3, key=HQ_SIGN))
    for impostor in (CAMP_412, ROGUE_HQ):
        with pytest.raises(SignatureError):
            registry.verify_envelope(build_envelope(Kind.BROADCAST, body, origin=HQ_ORIGIN, seq=3, key=impostor))


def test_camp_with_an_invalid_key_is_a_signature_error_not_a_crash():
    registry = replace(_registry(), camps={412: Camp(412, "bad", b"\xff" * 32)})
    envelope = build_envelope(Kind.NEEDS, {}, origin=412, seq=1, key=CAMP_412)
    with pytest.raises(SignatureError):
        registry.verify_envelope(envelope)


# ---------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"not json",
        b"[]",
        b'{"version": 2, "hq": {}, "camps": []}',
        b'{"version": 1, "camps": []}',
        b'{"version": 1, "hq": {"sign_key": "AAAA", "seal_key": "AAAA"}, "camps": []}',
    ],
    ids=["empty", "not-utf8", "not-json", "list", "version", "no-hq", "short-keys"],
)
def test_malformed_file_is_a_registry_error(data):
    with pytest.raises(RegistryError):
        Registry.from_json_bytes(data)


@pytest.mark.parametrize(
    "camp",
    [
        {"id": 0, "name": "HQ is 0", "sign_key": b64(bytes(32))},
        {"id": True, "name": "x", "sign_key": b64(bytes(32))},
        {"id": 2**32, "name": "x", "sign_key": b64(bytes(32))},
        {"id": 5, "name": 7, "sign_key": b64(bytes(32))},
        {"id": 5, "name": "x", "sign_key": "not base64!"},
        {"id": 5, "name": "x", "sign_key": b64(bytes(31))},
        {"id": 5, "name": "x", "sign_key": b64(bytes(32)), "lat": "39"},
        "camp",
    ],
    ids=str,
)
def test_malformed_camp_is_a_registry_error(camp):
    obj = _signed_json()
    obj["camps"] = [camp]
    with pytest.raises(RegistryError):
        _reload(obj)


def test_duplicate_camp_is_a_registry_error():
    obj = _signed_json()
    camps = obj["camps"]
    assert isinstance(camps, list)
    obj["camps"] = [camps[0], camps[0]]
    with pytest.raises(RegistryError, match="twice"):
        _reload(obj)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "version": st.just(1) | json_values,
            "hq": json_values,
            "camps": st.lists(json_values, max_size=3) | json_values,
            "signature": json_values,
        },
    )
)
def test_any_json_raises_only_registry_errors(obj):
    try:
        registry = _reload(obj)
    except RegistryError:
        return
    with pytest.raises(RegistryError):
        registry.verify(pinned_hq_key=public_raw(HQ_SIGN.public_key()))


def test_deeply_nested_json_is_a_registry_error():
    """BUG: json.loads raises RecursionError (not caught) on a pathologically nested file: a traceback."""
    with pytest.raises(RegistryError):
        Registry.from_json_bytes(b"[" * 100_000)
