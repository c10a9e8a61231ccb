"""Body codecs and the JSON mapping HQ integrates against (issue 2, README "MQTT contract").

encode_body -> decode_body gives the same JSON back for every kind, absent fields stay absent, the field
names are exactly those of the issue, bad values are `EncodeError`s naming the field, random bytes only ever
raise `MeshdError`s, and nothing the encoder produces is larger than one radio frame.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshd.errors import DecodeError, EncodeError, MeshdError, TooLargeError
from meshd.wire import bodies
from meshd.wire.codec import (
    BATCHABLE,
    BatchEntry,
    Provenance,
    build_envelope,
    decode_body,
    encode_body,
    envelope_from_json,
    make_batch_body,
    parse_kind,
    report_json,
    unbatch,
)
from meshd.wire.envelope import (
    MAX_ENVELOPE_LEN,
    MAX_PKI_ENVELOPE_LEN,
    UINT32_MAX,
    Envelope,
    Kind,
    TimeQuality,
    sign,
)
from meshd.wire.pb import meshd_pb2 as pb

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
HQ_SEAL = X25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The two examples of issue 2, verbatim.
NEEDS_EXAMPLE: dict[str, Any] = {
    "camp": 412,
    "population": {"individuals": 12500, "households": 2900, "female": 6600, "children": 5200, "arrivals_24h": 340},
    "severity": {"water": 4, "food": 3, "shelter": 2, "clothing": 3, "health": 4, "sanitation": 3, "protection": 2},
    "indicators": {"water_lpd": 8, "people_per_latrine": 65, "shelter_m2_pp": 2.2, "food_days": 3},
    "unaccompanied_children": 14,
    "disease": {"awd_7d": 23, "deaths_24h": 1},
    "location": {"lat": 39.02, "lon": 125.75},
    "note": "...",
}
ALERT_EXAMPLE: dict[str, Any] = {
    "type": "disease_outbreak",
    "urgency": "immediate",
    "severity": "severe",
    "certainty": "likely",
    "count": 3,
    "location": {"lat": 39.02, "lon": 125.75},
    "text": "...",
}
REPORT_KEYS = ["id", "origin", "seq", "kind", "age_s", "time_quality", "provenance", "body", "envelope"]

STATUS_COUNTERS: tuple[str, ...] = bodies._STATUS_INTS

# One full JSON body per kind that has a JSON form of its own (batch is built from entries, sealed in
# test_wire_seal.py). Keyed by the kind's value so a kind added later fails `test_every_kind_has_a_sample`.
SAMPLES: dict[str, dict[str, Any]] = {
    "needs": NEEDS_EXAMPLE,
    "alert": {**ALERT_EXAMPLE, "camp": 412},
    "broadcast": {
        "text": "Cholera vaccination at the clinic tomorrow 09:00",
        "severity": "moderate",
        "urgency": "expected",
        "expires_in_s": 86400,
        "camps": [412, 413],
    },
    "delivered": {"ids": ["412:1234", "412:1240", "413:7"]},
    "custody": {"ids": ["412:1", "412:2", "500:99"], "answers": [7, 0x5678]},  # answers: low 16 bits of packet ids
    # Hub health: every counter the hub keeps (it always knows them), battery only when known.
    "status": {
        **{name: 1000 + i for i, name in enumerate(STATUS_COUNTERS)},
        "queue_depth": 17,
        "uplink_up": True,
        "battery_pct": 76,
    },
}

u32 = st.integers(min_value=0, max_value=UINT32_MAX)
origins = st.integers(min_value=1, max_value=UINT32_MAX)


def _short_text(max_bytes: int, min_size: int = 1) -> st.SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=max_bytes).filter(lambda t: len(t.encode()) <= max_bytes)


def _some(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A non-empty object with any subset of `fields`."""
    return st.fixed_dictionaries({}, optional=fields).filter(bool)


locations = st.builds(
    lambda lat, lon: {"lat": lat / 1e5, "lon": lon / 1e5},
    st.integers(-9_000_000, 9_000_000),
    st.integers(-18_000_000, 18_000_000),
)
needs_bodies = st.fixed_dictionaries(
    {},
    optional={
        "camp": origins,
        "population": _some(dict.fromkeys(bodies.POPULATION_FIELDS, u32)),
        "severity": _some({sector: st.integers(0, 5) for sector in bodies.SECTORS}),
        "indicators": _some(
            {
                "water_lpd": u32,
                "people_per_latrine": u32,
                "shelter_m2_pp": st.integers(0, 10_000).map(lambda n: n / 10) | st.integers(0, 1000),
                "food_days": u32,
            }
        ),
        "unaccompanied_children": u32,
        "disease": _some(dict.fromkeys(bodies.DISEASE_FIELDS, u32)),
        "location": locations,
        "note": _short_text(bodies.MAX_NOTE_BYTES),
    },
)
alert_bodies = st.fixed_dictionaries(
    {"type": st.sampled_from(list(bodies.ALERT_TYPES))},
    optional={
        "camp": origins,
        "urgency": st.sampled_from(list(bodies.URGENCIES)),
        "severity": st.sampled_from(list(bodies.SEVERITIES)),
        "certainty": st.sampled_from(list(bodies.CERTAINTIES)),
        "count": u32,
        "location": locations,
        "text": _short_text(bodies.MAX_ALERT_TEXT_BYTES),
    },
)
broadcast_bodies = st.fixed_dictionaries(
    {"text": _short_text(bodies.MAX_BROADCAST_TEXT_BYTES, min_size=0)},
    optional={
        "severity": st.sampled_from(list(bodies.SEVERITIES)),
        "urgency": st.sampled_from(list(bodies.URGENCIES)),
        "expires_in_s": u32,
        "camps": st.lists(u32, min_size=1, max_size=10),
    },
)
status_bodies = st.fixed_dictionaries(
    {**dict.fromkeys(STATUS_COUNTERS, u32), "uplink_up": st.booleans()},
    optional={"battery_pct": st.integers(0, 100)},
)
id_pairs = st.lists(st.tuples(u32, u32), max_size=30)


def _expected_with_camp(body: dict[str, Any], origin: int) -> dict[str, Any]:
    """Decoding names the camp: the origin's own unless the report says otherwise."""
    return {"camp": origin, **body}


def _round_trip(kind: Kind, body: dict[str, Any], origin: int = 412) -> dict[str, Any]:
    return decode_body(kind, encode_body(kind, body, origin), origin)


# ---------------------------------------------------------------- the issue's examples, verbatim


def test_issue_needs_example_round_trips_with_its_exact_field_names():
    decoded = _round_trip(Kind.NEEDS, NEEDS_EXAMPLE)
    assert decoded == NEEDS_EXAMPLE
    assert json.dumps(decoded) == json.dumps(NEEDS_EXAMPLE)  # same names, same order


def test_issue_alert_example_round_trips_with_its_exact_field_names():
    decoded = _round_trip(Kind.ALERT, ALERT_EXAMPLE)
    assert decoded == {**ALERT_EXAMPLE, "camp": 412}


def test_report_json_has_the_contract_fields():
    envelope = build_envelope(Kind.NEEDS, NEEDS_EXAMPLE, origin=412, seq=1234, key=KEY, age_s=120)
    [report] = unbatch(envelope)
    obj = report_json(report, provenance=Provenance.VERIFIED)
    assert list(obj) == REPORT_KEYS
    assert obj["id"] == "412:1234"
    assert obj["origin"] == 412
    assert obj["seq"] == 1234
    assert obj["kind"] == "needs"
    assert obj["age_s"] == 120
    assert obj["time_quality"] == "none"
    assert obj["provenance"] == "verified"
    assert obj["body"] == NEEDS_EXAMPLE
    assert base64.b64decode(obj["envelope"]) == envelope.to_bytes()
    assert json.loads(json.dumps(obj)) == obj
    assert envelope_from_json(json.loads(json.dumps(obj))) == envelope


def test_report_json_carries_observed_at_only_when_known():
    envelope = sign(
        Envelope(412, 7, Kind.STATUS, encode_body(Kind.STATUS, SAMPLES["status"], 412),
                 time_quality=TimeQuality.GPS, observed_at=1_700_000_000),
        KEY,
    )
    obj = report_json(unbatch(envelope)[0], provenance=Provenance.UNCHECKED)
    assert obj["observed_at"] == 1_700_000_000
    assert obj["time_quality"] == "gps"
    assert obj["provenance"] == "unchecked"
    without = build_envelope(Kind.STATUS, SAMPLES["status"], origin=412, seq=8, key=KEY)
    assert "observed_at" not in report_json(unbatch(without)[0], provenance=Provenance.UNCHECKED)


@pytest.mark.parametrize("obj", [{}, {"envelope": 5}, {"envelope": "not base64!"}, {"envelope": "AAAA"}])
def test_envelope_from_json_rejects_bad_input(obj):
    with pytest.raises(DecodeError):
        envelope_from_json(obj)


# ---------------------------------------------------------------- every kind round-trips


def test_every_kind_has_a_sample():
    covered_elsewhere = {Kind.BATCH, Kind.SEALED}  # batch below, sealed in test_wire_seal.py
    assert {k.value for k in Kind} - {k.value for k in covered_elsewhere} == set(SAMPLES)


@pytest.mark.parametrize("kind_name", sorted(SAMPLES))
def test_sample_round_trips_through_a_signed_envelope(kind_name):
    kind = Kind(kind_name)
    origin = 0 if kind is Kind.BROADCAST else 412
    envelope = build_envelope(kind, SAMPLES[kind_name], origin=origin, seq=1, key=KEY)
    assert len(envelope.to_bytes()) <= MAX_ENVELOPE_LEN
    parsed = Envelope.from_bytes(envelope.to_bytes())
    assert parsed.kind is kind
    assert decode_body(kind, parsed.body, origin) == SAMPLES[kind_name]


@PROPERTY
@given(needs_bodies, origins)
def test_needs_round_trip(body, origin):
    assert _round_trip(Kind.NEEDS, body, origin) == _expected_with_camp(body, origin)


@PROPERTY
@given(alert_bodies, origins)
def test_alert_round_trip(body, origin):
    # CAP 1.2 requires urgency, severity and certainty: an alert that does not say is "unknown".
    expected = {"camp": origin, "urgency": "unknown", "severity": "unknown", "certainty": "unknown", **body}
    assert _round_trip(Kind.ALERT, body, origin) == expected


@PROPERTY
@given(broadcast_bodies)
def test_broadcast_round_trip(body):
    expected = {"severity": "unknown", "urgency": "unknown", **body}
    assert _round_trip(Kind.BROADCAST, body, 0) == expected


@PROPERTY
@given(status_bodies)
def test_status_round_trip(body):
    assert _round_trip(Kind.STATUS, body) == body


@pytest.mark.parametrize("kind_name", ["delivered", "custody"])
@PROPERTY
@given(pairs=id_pairs)
def test_id_list_round_trip_sorted_and_unique(kind_name, pairs):
    if kind_name not in {k.value for k in Kind}:
        pytest.skip(f"no {kind_name} kind")
    kind = Kind(kind_name)
    body = {"ids": [f"{o}:{s}" for o, s in pairs]}
    assert _round_trip(kind, body) == {"ids": [f"{o}:{s}" for o, s in sorted(set(pairs))]}
    assert bodies.decode_delivered_ids(bodies.encode_delivered_ids(pairs)) == sorted(set(pairs))


def test_minimal_needs_is_just_the_camp():
    assert _round_trip(Kind.NEEDS, {}) == {"camp": 412}
    assert encode_body(Kind.NEEDS, {"camp": 412}, 412) == b""  # the origin's own camp costs nothing
    assert _round_trip(Kind.NEEDS, {"camp": 9}) == {"camp": 9}


def test_reported_zero_differs_from_absent():
    body = {
        "population": {"individuals": 0},
        "severity": {"water": 0},
        "indicators": {"food_days": 0, "shelter_m2_pp": 0},
        "unaccompanied_children": 0,
        "disease": {"deaths_24h": 0},
        "location": {"lat": 0, "lon": 0},
    }
    decoded = _round_trip(Kind.NEEDS, body)
    assert decoded == {"camp": 412, **body}
    for absent in ("households", "female", "children", "arrivals_24h"):
        assert absent not in decoded["population"]
    assert set(decoded["severity"]) == {"water"}
    assert "note" not in decoded


def test_status_battery_absent_stays_absent():
    body = {k: v for k, v in SAMPLES["status"].items() if k != "battery_pct"}
    assert "battery_pct" not in _round_trip(Kind.STATUS, body)
    assert _round_trip(Kind.STATUS, {**body, "battery_pct": 0})["battery_pct"] == 0


@pytest.mark.parametrize("packed", [0b111, 1 << 21, (7 << 18)])
def test_severity_out_of_range_on_the_wire_is_a_decode_error(packed):
    with pytest.raises(DecodeError, match="severity"):
        decode_body(Kind.NEEDS, pb.NeedsReport(severity=packed).SerializeToString(), 412)


def test_severity_packs_every_sector_into_three_bits():
    assert bodies.unpack_severity(bodies.pack_severity(NEEDS_EXAMPLE["severity"])) == NEEDS_EXAMPLE["severity"]
    assert bodies.pack_severity(NEEDS_EXAMPLE["severity"]) < 1 << 21


def test_unknown_enum_on_the_wire_is_a_decode_error():
    raw = pb.Alert(type=pb.ALERT_TYPE_FIRE).SerializeToString() + b"\x10\x63"  # urgency = 99
    with pytest.raises(DecodeError, match="urgency"):
        decode_body(Kind.ALERT, raw, 412)


def test_location_needs_both_coordinates_on_the_wire():
    raw = pb.NeedsReport(lat_e5=3_902_000).SerializeToString()
    assert "location" not in decode_body(Kind.NEEDS, raw, 412)


# ---------------------------------------------------------------- bad values name the field


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        (Kind.NEEDS, {"colour": 1}, "colour"),
        (Kind.NEEDS, {"population": {"men": 1}}, "men"),
        (Kind.NEEDS, {"population": 5}, "population"),
        (Kind.NEEDS, {"population": {"individuals": -1}}, "individuals"),
        (Kind.NEEDS, {"population": {"individuals": UINT32_MAX + 1}}, "individuals"),
        (Kind.NEEDS, {"population": {"individuals": "12"}}, "individuals"),
        (Kind.NEEDS, {"population": {"individuals": True}}, "individuals"),
        (Kind.NEEDS, {"severity": {"water": 6}}, "water"),
        (Kind.NEEDS, {"severity": {"water": -1}}, "water"),
        (Kind.NEEDS, {"severity": {"water": 2.5}}, "water"),
        (Kind.NEEDS, {"severity": {"electricity": 2}}, "electricity"),
        (Kind.NEEDS, {"indicators": {"shelter_m2_pp": -0.1}}, "shelter_m2_pp"),
        (Kind.NEEDS, {"indicators": {"shelter_m2_pp": "2"}}, "shelter_m2_pp"),
        (Kind.NEEDS, {"location": {"lat": 39.0}}, "location"),
        (Kind.NEEDS, {"location": {"lat": 90.5, "lon": 0}}, "lat"),
        (Kind.NEEDS, {"location": {"lat": 0, "lon": -180.5}}, "lon"),
        (Kind.NEEDS, {"location": {"lat": 0, "lon": 0, "alt": 3}}, "alt"),
        (Kind.NEEDS, {"note": "x" * 81}, "note"),
        (Kind.NEEDS, {"note": "가" * 27}, "note"),  # 81 bytes of UTF-8
        (Kind.NEEDS, {"note": 5}, "note"),
        (Kind.NEEDS, {"camp": -4}, "camp"),
        (Kind.ALERT, {"count": 3}, "type"),
        (Kind.ALERT, {"type": "earthquake"}, "type"),
        (Kind.ALERT, {"type": "fire", "urgency": "now"}, "urgency"),
        (Kind.ALERT, {"type": "fire", "certainty": "sure"}, "certainty"),
        (Kind.ALERT, {"type": "fire", "text": "x" * 81}, "text"),
        (Kind.ALERT, {"type": "fire", "name": "Kim"}, "name"),
        (Kind.BROADCAST, {"severity": "minor"}, "text"),
        (Kind.BROADCAST, {"text": "x" * 141}, "text"),
        (Kind.BROADCAST, {"text": "hi", "camps": 412}, "camps"),
        (Kind.STATUS, {"battery_pct": 101}, "battery_pct"),
        (Kind.STATUS, {"uplink_up": "yes"}, "uplink_up"),
        (Kind.DELIVERED, {}, "ids"),
        (Kind.DELIVERED, {"ids": ["412-5"]}, "412-5"),
        (Kind.DELIVERED, {"ids": [f"1:{UINT32_MAX + 1}"]}, "seq"),
        (Kind.CUSTODY, {"ids": ["1:2"], "answers": 7}, "answers"),
        (Kind.CUSTODY, {"ids": ["1:2"], "answers": [0x10000]}, "answers"),
    ],
)
def test_bad_values_are_encode_errors_naming_the_field(kind, body, field):
    with pytest.raises(EncodeError, match=field):
        encode_body(kind, body, 412)


def test_body_must_be_an_object():
    with pytest.raises(EncodeError):
        encode_body(Kind.NEEDS, ["water"], 412)  # type: ignore[arg-type]


def test_unknown_kind_name_is_an_encode_error():
    assert parse_kind("needs") is Kind.NEEDS
    with pytest.raises(EncodeError, match="unknown kind"):
        parse_kind("gossip")


def test_batch_and_sealed_are_not_plain_json_bodies():
    with pytest.raises(EncodeError):
        encode_body(Kind.BATCH, {}, 412)
    with pytest.raises(DecodeError):
        decode_body(Kind.BATCH, b"", 412)
    with pytest.raises(EncodeError, match="protection public key"):
        encode_body(Kind.SEALED, {"text": "x"}, 412)


# ---------------------------------------------------------------- random bytes


@PROPERTY
@given(st.sampled_from([k for k in Kind if k is not Kind.BATCH]), st.binary(max_size=300), st.booleans())
def test_decode_body_of_random_bytes_raises_only_meshd_errors(kind, data, with_key):
    with contextlib.suppress(MeshdError):
        decode_body(kind, data, 412, open_key=HQ_SEAL if with_key else None)


@PROPERTY
@given(st.binary(max_size=300), u32)
def test_unbatch_of_random_bytes_raises_only_meshd_errors(data, seq):
    envelope = Envelope(412, seq, Kind.BATCH, data, signature=bytes(64))
    try:
        reports = unbatch(envelope)
    except MeshdError:
        return
    for report in reports:
        with contextlib.suppress(MeshdError):
            report_json(report, provenance=Provenance.UNCHECKED, open_key=HQ_SEAL)


# ---------------------------------------------------------------- batches


def _needs_entry(severity: int, extra_age_s: int = 0) -> BatchEntry:
    return BatchEntry(Kind.NEEDS, encode_body(Kind.NEEDS, {"severity": {"water": severity}}, 412), extra_age_s)


def test_batch_round_trip_ids_ages_and_bodies():
    entries = [
        _needs_entry(4, 0),
        BatchEntry(Kind.ALERT, encode_body(Kind.ALERT, ALERT_EXAMPLE, 412), 30),
        BatchEntry(Kind.STATUS, encode_body(Kind.STATUS, SAMPLES["status"], 412), 600),
        _needs_entry(1, -5),  # a negative age makes no sense; it is clamped to 0, never wraps
    ]
    envelope = sign(Envelope(412, 1000, Kind.BATCH, make_batch_body(entries), age_s=120), KEY)
    reports = unbatch(Envelope.from_bytes(envelope.to_bytes()))
    assert [r.id for r in reports] == ["412:1000", "412:1001", "412:1002", "412:1003"]
    assert [r.kind for r in reports] == [Kind.NEEDS, Kind.ALERT, Kind.STATUS, Kind.NEEDS]
    assert [r.age_s for r in reports] == [120, 150, 720, 120]
    assert [r.batch_index for r in reports] == [0, 1, 2, 3]
    assert [r.body for r in reports] == [e.body for e in entries]
    assert decode_body(Kind.ALERT, reports[1].body, 412) == {**ALERT_EXAMPLE, "camp": 412}
    obj = report_json(reports[2], provenance=Provenance.VERIFIED)
    assert (obj["id"], obj["batch_index"], obj["age_s"], obj["body"]) == ("412:1002", 2, 720, SAMPLES["status"])
    assert base64.b64decode(obj["envelope"]) == envelope.to_bytes()


@PROPERTY
@given(
    st.lists(
        st.builds(BatchEntry, st.sampled_from(list(BATCHABLE)), st.binary(max_size=20), u32),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, UINT32_MAX - 10),
    u32,
)
def test_batch_property_round_trip(entries, seq, age):
    envelope = Envelope(412, seq, Kind.BATCH, make_batch_body(entries), age_s=age, signature=bytes(64))
    reports = unbatch(Envelope.from_bytes(envelope.to_bytes()))
    assert [(r.seq, r.kind, r.body) for r in reports] == [(seq + i, e.kind, e.body) for i, e in enumerate(entries)]
    assert [r.age_s for r in reports] == [min(age + e.extra_age_s, UINT32_MAX) for e in entries]


def test_a_plain_envelope_unbatches_to_itself():
    envelope = build_envelope(Kind.NEEDS, NEEDS_EXAMPLE, origin=412, seq=5, key=KEY, age_s=9)
    [report] = unbatch(envelope)
    assert (report.id, report.kind, report.body, report.age_s, report.batch_index) == (
        "412:5", Kind.NEEDS, envelope.body, 9, None,
    )


def test_empty_batch_is_refused():
    with pytest.raises(EncodeError):
        make_batch_body([])
    with pytest.raises(DecodeError, match="empty"):
        unbatch(Envelope(412, 1, Kind.BATCH, b"", signature=bytes(64)))


@pytest.mark.parametrize("kind", [k for k in Kind if k not in BATCHABLE])
def test_only_small_reports_go_in_a_batch(kind):
    with pytest.raises(EncodeError, match="cannot go in a batch"):
        make_batch_body([BatchEntry(kind, b"")])


def test_batch_item_without_a_body_is_a_decode_error():
    raw = pb.Batch(items=[pb.BatchItem(extra_age_s=5)]).SerializeToString()
    with pytest.raises(DecodeError, match="no body"):
        unbatch(Envelope(412, 1, Kind.BATCH, raw, signature=bytes(64)))


def test_batch_whose_seqs_would_overflow_is_a_decode_error():
    body = make_batch_body([_needs_entry(1), _needs_entry(2)])
    with pytest.raises(DecodeError, match="overflow"):
        unbatch(Envelope(412, UINT32_MAX, Kind.BATCH, body, signature=bytes(64)))


def test_batch_extra_age_beyond_uint32_is_capped_not_a_crash():
    """Ages saturate (like Envelope.with_added_age) instead of escaping as a protobuf ValueError."""
    body = make_batch_body([_needs_entry(1, UINT32_MAX + 1)])
    msg = pb.Batch()
    msg.ParseFromString(body)
    assert msg.items[0].extra_age_s == UINT32_MAX


def test_oversize_batch_is_refused_at_encode_time_never_truncated():
    full = encode_body(Kind.NEEDS, NEEDS_EXAMPLE, 412)
    fitting = 0
    for count in range(1, 10):
        body = make_batch_body([BatchEntry(Kind.NEEDS, full)] * count)
        try:
            envelope = sign(Envelope(412, 1, Kind.BATCH, body), KEY)
        except TooLargeError:
            break
        assert len(unbatch(Envelope.from_bytes(envelope.to_bytes()))) == count
        fitting = count
    else:
        pytest.fail("a batch of 9 full needs reports cannot fit one frame")
    assert fitting >= 2
    with pytest.raises(TooLargeError):
        sign(Envelope(412, 1, Kind.BATCH, make_batch_body([BatchEntry(Kind.NEEDS, full)] * (fitting + 1))), KEY)


# ---------------------------------------------------------------- one frame


@pytest.mark.parametrize("max_len", [MAX_ENVELOPE_LEN, MAX_PKI_ENVELOPE_LEN])
def test_needs_with_the_longest_note_still_fits_one_frame(max_len):
    for note in ("x" * bodies.MAX_NOTE_BYTES, "가" * (bodies.MAX_NOTE_BYTES // 3)):
        envelope = build_envelope(
            Kind.NEEDS, {**NEEDS_EXAMPLE, "note": note}, origin=412, seq=1_000_000, key=KEY,
            age_s=1_000_000, max_len=max_len,
        )
        assert len(envelope.to_bytes()) <= max_len
        assert decode_body(Kind.NEEDS, envelope.body, 412)["note"] == note


@PROPERTY
@given(
    st.one_of(
        st.tuples(st.just(Kind.NEEDS), needs_bodies),
        st.tuples(st.just(Kind.ALERT), alert_bodies),
        st.tuples(st.just(Kind.BROADCAST), broadcast_bodies),
        st.tuples(st.just(Kind.STATUS), status_bodies),
        st.tuples(st.just(Kind.DELIVERED), id_pairs.map(lambda p: {"ids": [f"{o}:{s}" for o, s in p]})),
    ),
    origins,
    u32,
    u32,
    st.sampled_from([MAX_ENVELOPE_LEN, MAX_PKI_ENVELOPE_LEN]),
)
def test_every_envelope_fits_one_frame_or_is_refused(kind_body, origin, seq, age, max_len):
    kind, body = kind_body
    try:
        envelope = build_envelope(kind, body, origin=origin, seq=seq, key=KEY, age_s=age, max_len=max_len)
    except TooLargeError:
        return
    raw = envelope.to_bytes()
    assert len(raw) <= max_len
    assert Envelope.from_bytes(raw) == envelope


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (Kind.DELIVERED, {"ids": [f"{o}:{o * 1_000_003 % 4_000_000_000}" for o in range(1, 80)]}),
        (Kind.BROADCAST, {"text": "x" * 140, "camps": list(range(100_000, 100_030))}),
    ],
    ids=["delivered-many-origins", "broadcast-many-camps"],
)
def test_oversize_body_is_too_large_at_encode_time(kind, body):
    with pytest.raises(TooLargeError, match="one-frame limit"):
        build_envelope(kind, body, origin=412, seq=1, key=KEY)
