"""The uplink's payload renderer (`report_json_bytes`, `render_uplink`) against the contract as a dict.

The renderer writes the JSON as text around the encoded body, for speed; these tests hold it to what
`json.dumps` of the contract's object gives, byte for byte, for any body, age, clock quality, batch
and provenance, and `render_uplink` (straight from stored bytes) to `report_json_bytes` of the reports
`unbatch(Envelope.from_bytes(...))` gives.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshd.errors import DecodeError, TooLargeError
from meshd.wire.codec import (
    BatchEntry,
    Provenance,
    Report,
    decode_body,
    encode_body,
    make_batch_body,
    render_uplink,
    report_json,
    report_json_bytes,
    unbatch,
    uplink_bodies,
)
from meshd.wire.envelope import UINT32_MAX, Envelope, Kind, TimeQuality, sign
from tests.test_wire_bodies import alert_bodies, needs_bodies, status_bodies

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _oracle(report: Report, provenance: Provenance, gateway: int | None) -> bytes:
    """The contract's object built as a dict (docs/mqtt.md field order), dumped compactly."""
    env = report.envelope
    obj: dict[str, Any] = {
        "id": f"{report.origin}:{report.seq}",
        "origin": report.origin,
        "seq": report.seq,
        "kind": str(report.kind.value),
        "age_s": report.age_s,
        "time_quality": str(env.time_quality.value),
        "provenance": str(provenance.value),
    }
    if env.observed_at is not None:
        obj["observed_at"] = env.observed_at
    obj["body"] = decode_body(report.kind, report.body, report.origin)
    obj["envelope"] = base64.b64encode(env.to_bytes()).decode("ascii")
    if report.batch_index is not None:
        obj["batch_index"] = report.batch_index
    if gateway is not None:
        obj["gateway"] = gateway
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


bodies_of_any_kind = st.one_of(
    needs_bodies.map(lambda b: (Kind.NEEDS, b)),
    alert_bodies.map(lambda b: (Kind.ALERT, b)),
    status_bodies.map(lambda b: (Kind.STATUS, b)),
)
clocks = st.one_of(
    st.just((TimeQuality.NONE, None)),
    st.tuples(st.sampled_from([TimeQuality.DEVICE, TimeQuality.GPS, TimeQuality.NTP]), st.integers(1, UINT32_MAX)),
)


def _envelope(kind: Kind, body: dict[str, Any], *, origin: int, seq: int, age: int, clock: Any) -> Envelope:
    quality, observed = clock
    raw = encode_body(kind, body, origin)
    return sign(Envelope(origin, seq, kind, raw, age, quality, observed_at=observed), KEY)


@PROPERTY
@given(
    bodies_of_any_kind,
    st.tuples(st.integers(1, UINT32_MAX), st.integers(0, UINT32_MAX - 10), st.integers(0, UINT32_MAX)),
    clocks,
    st.tuples(st.sampled_from(list(Provenance)), st.none() | st.integers(0, UINT32_MAX)),
)
def test_report_json_bytes_is_the_contract_object_dumped(kind_body, numbers, clock, how):
    kind, body = kind_body
    origin, seq, age = numbers
    provenance, gateway = how
    [report] = unbatch(_envelope(kind, body, origin=origin, seq=seq, age=age, clock=clock))
    payload = report_json_bytes(report, provenance=provenance, gateway=gateway)
    assert payload == _oracle(report, provenance, gateway)
    # and the dict form is the same object
    assert json.loads(payload) == {
        **report_json(report, provenance=provenance),
        **({"gateway": gateway} if gateway is not None else {}),
    }


def test_notes_that_json_must_escape_come_out_escaped():
    body = {"note": 'tank "B" \\ 물 없음\n\t\x01'}
    [report] = unbatch(_envelope(Kind.NEEDS, body, origin=412, seq=1, age=0, clock=(TimeQuality.NONE, None)))
    payload = report_json_bytes(report, provenance=Provenance.VERIFIED)
    assert json.loads(payload)["body"]["note"] == body["note"]
    assert "물 없음".encode() in payload  # UTF-8 as is, not \u-escaped


@PROPERTY
@given(
    st.lists(bodies_of_any_kind.filter(lambda kb: kb[0] is not Kind.STATUS), min_size=1, max_size=3),
    st.integers(0, 10_000),
    st.integers(0, 20_000),
    clocks,
    st.booleans(),
)
def test_render_uplink_equals_the_reports_of_the_aged_envelope(items, stored_age, min_age, clock, unverified):
    origin, seq = 412, 1000
    quality, observed = clock
    if len(items) == 1:
        kind, body = items[0]
        unsigned = Envelope(
            origin, seq, kind, encode_body(kind, body, origin), stored_age, quality, unverified, observed
        )
    else:
        batch = make_batch_body(
            [BatchEntry(k, encode_body(k, b, origin), extra_age_s=i) for i, (k, b) in enumerate(items)]
        )
        unsigned = Envelope(origin, seq, Kind.BATCH, batch, stored_age, quality, unverified, observed)
    try:
        env = sign(unsigned, KEY, max_len=512)  # larger than a radio frame: the renderer does not care
    except TooLargeError:
        assume(False)
    asked: list[tuple[int, bool]] = []

    def provenance_of(o: int, u: bool) -> Provenance:
        asked.append((o, u))
        return Provenance.UNVERIFIED if u else Provenance.VERIFIED

    rendered = render_uplink(env.to_bytes(), min_age_s=min_age, provenance_of=provenance_of, gateway=7)
    # the bodies rendered when the envelope was stored give the same payloads
    stored = uplink_bodies(env)
    assert stored is not None
    assert (
        render_uplink(env.to_bytes(), min_age_s=min_age, provenance_of=provenance_of, gateway=7, bodies=stored)
        == rendered
    )
    aged = replace(env, age_s=max(stored_age, min_age))
    expected = unbatch(aged)
    assert [(m.origin, m.kind) for m in rendered] == [(r.origin, r.kind) for r in expected]
    provenance = Provenance.UNVERIFIED if unverified else Provenance.VERIFIED
    assert [m.payload for m in rendered] == [_oracle(r, provenance, 7) for r in expected]
    assert asked == [(origin, unverified)] * 2


def test_stored_bodies_are_used_and_a_mismatched_count_is_ignored():
    env = _envelope(Kind.NEEDS, {"note": "x"}, origin=5, seq=1, age=0, clock=(TimeQuality.NONE, None))
    verified = lambda o, u: Provenance.VERIFIED  # noqa: E731
    [used] = render_uplink(env.to_bytes(), min_age_s=0, provenance_of=verified, gateway=7, bodies='{"camp":99}')
    assert json.loads(used.payload)["body"] == {"camp": 99}  # taken as stored, not decoded again
    [fresh] = render_uplink(env.to_bytes(), min_age_s=0, provenance_of=verified, gateway=7, bodies="{}\n{}")
    assert json.loads(fresh.payload)["body"] == {"camp": 5, "note": "x"}  # two bodies for one report: rendered


def test_envelopes_without_published_reports_have_no_stored_bodies():
    notice = sign(Envelope(5, 0, Kind.CUSTODY, encode_body(Kind.CUSTODY, {"ids": ["5:1"]}, 5)), KEY)
    assert uplink_bodies(notice) is None
    broken = sign(Envelope(5, 1, Kind.NEEDS, b"\xff\xff"), KEY)
    assert uplink_bodies(broken) is None
    with pytest.raises(DecodeError):
        render_uplink(broken.to_bytes(), min_age_s=0, provenance_of=lambda o, u: Provenance.VERIFIED, gateway=7)


@pytest.mark.parametrize("raw", [b"", b"\x00" * 600, b"not an envelope", bytes(range(40))])
def test_render_uplink_refuses_what_is_not_an_envelope(raw):
    with pytest.raises(DecodeError):
        render_uplink(raw, min_age_s=0, provenance_of=lambda o, u: Provenance.VERIFIED, gateway=7)


def test_render_uplink_caps_the_age_at_uint32():
    env = _envelope(Kind.NEEDS, {"note": "x"}, origin=5, seq=1, age=10, clock=(TimeQuality.NONE, None))
    [message] = render_uplink(
        env.to_bytes(), min_age_s=UINT32_MAX + 99, provenance_of=lambda o, u: Provenance.VERIFIED, gateway=7
    )
    obj = json.loads(message.payload)
    assert obj["age_s"] == UINT32_MAX
    assert Envelope.from_bytes(base64.b64decode(obj["envelope"])).age_s == UINT32_MAX
