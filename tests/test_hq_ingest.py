"""HQ ingest: never trust the JSON, only the signed envelope (no broker, no database)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging

import pytest

from meshd import keys
from meshd.errors import RegistryError
from meshd.hq.ingest import Flag, Ingestor, Reject, load_registry
from meshd.wire.codec import Provenance, report_json, unbatch
from meshd.wire.envelope import Kind
from tests.hq_support import NEEDS, World, batch_envelope, envelope, make_world, needs_payload, payloads, tamper

NOW = dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.UTC)
T = "meshd/v1/camp/{}/{}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


def ingestor(world: World, *, protection: bool = False) -> Ingestor:
    open_key = keys.load_seal_private(world.hq_dir) if protection else None
    return Ingestor(world.registry, open_key=open_key, clock=lambda: NOW)


def test_verified_needs_report_recomputes_everything_from_the_envelope(world: World) -> None:
    env = envelope(world, Kind.NEEDS, NEEDS, origin=101, seq=7, age_s=3600)
    obj = json.loads(payloads(env)[0][1])
    # A hub (or anyone on the broker) lies in every convenience field; only the envelope counts.
    obj.update({"provenance": "verified", "age_s": 1, "origin": 102, "body": {"camp": 102, "note": "lies"}})
    result = ingestor(world).ingest(T.format(101, "needs"), json.dumps(obj).encode())
    assert result.accepted, result.detail
    (rec,) = result.reports
    assert (rec.id, rec.origin, rec.seq, rec.kind, rec.camp) == ("101:7", 101, 7, "needs", 101)
    assert rec.provenance == "verified"
    assert rec.body["note"] == "well 2 dry"
    assert rec.body["severity"]["water"] == 4
    assert rec.age_s == 3600
    assert rec.received_at == NOW
    assert rec.observed_est == NOW - dt.timedelta(hours=1)
    assert rec.time_quality == "none"
    assert rec.envelope == env.to_bytes()
    assert rec.max_severity == 4


def test_unverified_field_handset_is_kept_and_flagged(world: World) -> None:
    env = envelope(world, Kind.NEEDS, NEEDS, origin=101, seq=8, unverified=True)
    result = ingestor(world).ingest(T.format(101, "needs"), payloads(env)[0][1])
    assert result.reports[0].provenance == Provenance.UNVERIFIED.value
    assert Flag.UNVERIFIED in result.flags


def test_unknown_origin_is_kept_but_marked(world: World) -> None:
    env = envelope(world, Kind.NEEDS, NEEDS, origin=999, seq=1, key=world.stranger.sign)
    result = ingestor(world).ingest(T.format(999, "needs"), payloads(env)[0][1])
    assert result.accepted
    assert result.reports[0].provenance == "unknown_origin"
    assert Flag.UNKNOWN_ORIGIN in result.flags


def test_forged_signature_is_rejected(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # Camp 101's id, a stranger's key: forged.
    env = envelope(world, Kind.NEEDS, NEEDS, origin=101, seq=9, key=world.stranger.sign)
    with caplog.at_level(logging.WARNING, logger="meshd.hq.ingest"):
        result = ingestor(world).ingest(T.format(101, "needs"), payloads(env)[0][1])
    assert result.reject is Reject.BAD_SIGNATURE
    assert result.reports == []
    assert len(caplog.records) == 1
    assert "bad_signature" in caplog.records[0].getMessage()


def test_tampered_body_is_rejected(world: World) -> None:
    result = ingestor(world).ingest(T.format(101, "needs"), tamper(needs_payload(world, 101, 10)))
    assert result.reject is Reject.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", Reject.EMPTY),
        (b"\xff\xfe not utf-8", Reject.BAD_JSON),
        (b"{not json", Reject.BAD_JSON),
        (b"[1, 2]", Reject.BAD_JSON),
        (b'{"online": false}', Reject.NO_ENVELOPE),
        (b'{"envelope": "***not base64***"}', Reject.BAD_ENVELOPE),
        (b'{"envelope": "' + base64.b64encode(b"\x00\x01garbage") + b'"}', Reject.BAD_ENVELOPE),
        (b"[" * 100000 + b"]" * 100000, Reject.BAD_JSON),
    ],
)
def test_bad_input_is_counted_never_raised(world: World, payload: bytes, reason: Reject) -> None:
    result = ingestor(world).ingest(T.format(101, "needs"), payload)
    assert result.reject is reason
    assert result.reports == []


def test_bad_topics_are_rejected(world: World) -> None:
    payload = needs_payload(world, 101, 11)
    for topic in ("meshd/v1/camp/x/needs", "meshd/v1/camp/101/bogus", "other/v1/camp/101/needs", "meshd/v2/x"):
        assert ingestor(world).ingest(topic, payload).reject is Reject.BAD_TOPIC


def test_topic_disagreeing_with_envelope_is_flagged_not_trusted(world: World) -> None:
    result = ingestor(world).ingest(T.format(102, "alert"), needs_payload(world, 101, 12))
    assert result.accepted
    assert result.reports[0].origin == 101
    assert result.reports[0].kind == "needs"
    assert Flag.TOPIC_MISMATCH in result.flags


def test_batch_item_is_picked_by_batch_index_and_id(world: World) -> None:
    env = batch_envelope(world, 101, 100, [{"note": "a"}, {"note": "b"}, {"note": "c"}])
    items = payloads(env)
    assert len(items) == 3
    result = ingestor(world).ingest(T.format(101, "needs"), items[1][1])
    assert [r.id for r in result.reports] == ["101:101"]
    assert result.reports[0].body["note"] == "b"
    assert result.reports[0].batch_index == 1


def test_batch_without_selector_stores_every_item(world: World) -> None:
    env = batch_envelope(world, 101, 200, [{"note": "a"}, {"note": "b"}])
    bare = json.dumps({"envelope": base64.b64encode(env.to_bytes()).decode()}).encode()
    result = ingestor(world).ingest(T.format(101, "needs"), bare)
    assert [r.id for r in result.reports] == ["101:200", "101:201"]


def test_claimed_id_not_in_envelope_is_rejected(world: World) -> None:
    obj = json.loads(needs_payload(world, 101, 13))
    obj["id"] = "101:14"
    assert ingestor(world).ingest(T.format(101, "needs"), json.dumps(obj).encode()).reject is Reject.ID_MISMATCH
    env = batch_envelope(world, 101, 300, [{"note": "a"}])
    obj = json.loads(payloads(env)[0][1])
    obj["batch_index"] = 5
    assert ingestor(world).ingest(T.format(101, "needs"), json.dumps(obj).encode()).reject is Reject.ID_MISMATCH


def test_sealed_opens_only_with_the_protection_key(world: World) -> None:
    content = {"kind": "child_tracing", "text": "girl 6 red coat, gate 3"}
    env = envelope(world, Kind.SEALED, content, origin=102, seq=5)
    payload = payloads(env)[0][1]
    assert b"red coat" not in payload
    closed = ingestor(world).ingest(T.format(102, "sealed"), payload)
    assert closed.reports[0].body["sealed"] is True
    assert "text" not in closed.reports[0].body
    assert Flag.SEALED_KEPT_CLOSED in closed.flags
    opened = ingestor(world, protection=True).ingest(T.format(102, "sealed"), payload)
    assert opened.reports[0].body == content
    assert Flag.SEALED_OPENED in opened.flags


def test_sealed_to_another_key_is_stored_closed_and_flagged(world: World) -> None:
    other = Ingestor(world.registry, open_key=world.camps[101].seal, clock=lambda: NOW)
    env = envelope(world, Kind.SEALED, {"kind": "protection", "text": "x"}, origin=102, seq=6)
    result = other.ingest(T.format(102, "sealed"), payloads(env)[0][1])
    assert result.accepted
    assert "open_error" in result.reports[0].body
    assert Flag.SEAL_OPEN_FAILED in result.flags


def test_broadcast_on_camp_topic_is_unexpected(world: World) -> None:
    env = envelope(world, Kind.BROADCAST, {"text": "hi"}, origin=0, seq=1, key=world.hq.sign)
    payload = payloads(env)[0][1]
    assert ingestor(world).ingest(T.format(0, "status"), payload).reject is Reject.UNEXPECTED_KIND


def test_downlink_broadcasts_are_archived_only_when_hq_signed(world: World) -> None:
    good = envelope(world, Kind.BROADCAST, {"text": "water at gate 2"}, origin=0, seq=42, key=world.hq.sign)
    forged = envelope(world, Kind.BROADCAST, {"text": "evacuate"}, origin=0, seq=43, key=world.stranger.sign)
    ing = ingestor(world)
    ok = ing.ingest("meshd/v1/hq/broadcast", payloads(good)[0][1])
    assert ok.accepted
    assert ok.broadcasts[0].body["text"] == "water at gate 2"
    assert ing.ingest("meshd/v1/hq/broadcast", payloads(forged)[0][1]).reject is Reject.BAD_SIGNATURE


def test_report_json_of_status_round_trips(world: World) -> None:
    env = envelope(world, Kind.STATUS, {"queue_depth": 3, "uplink_up": True}, origin=103, seq=2)
    (report,) = unbatch(env)
    payload = json.dumps(report_json(report, provenance=Provenance.VERIFIED)).encode()
    result = ingestor(world).ingest(T.format(103, "status"), payload)
    assert result.reports[0].body["queue_depth"] == 3


def test_registry_is_verified_and_pinned(world: World) -> None:
    assert load_registry(world.registry_path, world.hq_dir).camps.keys() == world.registry.camps.keys()
    with pytest.raises(RegistryError):
        load_registry(world.registry_path, world.root / "camp101")  # a different "HQ" key
    edited = json.loads(world.registry_path.read_bytes())
    edited["camps"][0]["name"] = "Renamed"
    bad = world.root / "edited.json"
    bad.write_text(json.dumps(edited))
    with pytest.raises(RegistryError):
        load_registry(bad)
