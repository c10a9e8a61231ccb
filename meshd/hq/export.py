"""Exports HQ analysts already use: HXL-tagged CSV, GeoJSON of camps, CAP 1.2 alerts. Pure: records in, text out.

- HXL CSV: one row per needs report; a header row, then the HXL hashtag row directly under it.
- GeoJSON (RFC 7946): a FeatureCollection with one Feature per camp and its latest needs report; Point
  coordinates are [lon, lat] (the report's location, else the registry's); a camp with no known location
  gets `"geometry": null`, which RFC 7946 allows, so no camp silently disappears from the export.
- CAP 1.2: one `<alert>` document per alert report (the OASIS schema validates one alert per document).
  Sealed reports (protection incidents, child tracing) are never exported in any format.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any, cast

from lxml import etree

from meshd.errors import MeshdError
from meshd.hq.records import SEVERITY_SECTORS, ReportRecord, iso_utc
from meshd.wire.registry import Registry
from meshd.wire.text import ALERT_KINDS

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
# CAP 1.2 section 3.3.2: no "Z"; UTC written as a numeric offset. The spec text asks for "-00:00"; the XSD
# accepts either sign. We write "-00:00" as the standard says.
CAP_UTC_OFFSET = "-00:00"
CAP_CIRCLE_RADIUS_KM = 1.0


class ExportError(MeshdError):
    """An export cannot be produced as asked (bad --since, several CAP alerts to one file, ...)."""


# ---------------------------------------------------------------- --since

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`24h`, `7d`, `1d12h`, `90m`, `2w` (ago), or an ISO 8601 time (naive = UTC)."""
    now = now or dt.datetime.now(dt.UTC)
    text = text.strip()
    match = _DURATION.match(text.lower())
    if text and match and any(match.groups()):
        weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        return now - dt.timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ExportError(f"--since {text!r}: give a duration like 24h, 7d, 90m or an ISO time") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


# ---------------------------------------------------------------- helpers


def _camp_name(registry: Registry | None, camp: int | None) -> str:
    if registry is None or camp is None or camp not in registry.camps:
        return ""
    return registry.camps[camp].name


def location_of(record: ReportRecord, registry: Registry | None) -> tuple[float, float] | None:
    """(lat, lon) from the report itself, else the registry's location for the camp."""
    loc = record.body.get("location")
    if isinstance(loc, dict) and isinstance(loc.get("lat"), int | float) and isinstance(loc.get("lon"), int | float):
        return float(loc["lat"]), float(loc["lon"])
    if registry is not None and record.camp is not None:
        camp = registry.camps.get(record.camp)
        if camp is not None and camp.lat is not None and camp.lon is not None:
            return camp.lat, camp.lon
    return None


def _get(body: dict[str, Any], *path: str) -> Any:
    value: Any = body
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def exportable(records: Iterable[ReportRecord]) -> list[ReportRecord]:
    """Never export sealed (protection) reports, whatever was asked."""
    return [r for r in records if r.kind != "sealed"]


# ---------------------------------------------------------------- HXL CSV

# (header, HXL hashtag, path into the needs body, or a special column name)
HXL_COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Camp code", "#loc+code", ("=camp",)),
    ("Camp name", "#loc+name", ("=name",)),
    ("Date reported (est.)", "#date+reported", ("=observed",)),
    ("Date received at HQ", "#date+received", ("=received",)),
    ("Individuals", "#affected+ind", ("population", "individuals")),
    ("Households", "#affected+hh", ("population", "households")),
    ("Female", "#affected+f", ("population", "female")),
    ("Children", "#affected+children", ("population", "children")),
    ("New arrivals 24h", "#affected+idps+arrivals", ("population", "arrivals_24h")),
    ("Unaccompanied children", "#affected+children+unaccompanied", ("unaccompanied_children",)),
    *((f"Severity {s} (0-5)", f"#severity+{s}", ("severity", s)) for s in SEVERITY_SECTORS),
    ("Water l/person/day", "#indicator+num+water_lpd", ("indicators", "water_lpd")),
    ("People per latrine", "#indicator+num+people_per_latrine", ("indicators", "people_per_latrine")),
    ("Shelter m2/person", "#indicator+num+shelter_m2_pp", ("indicators", "shelter_m2_pp")),
    ("Days of food stock", "#indicator+num+food_days", ("indicators", "food_days")),
    ("Acute watery diarrhoea 7d", "#affected+infected+awd", ("disease", "awd_7d")),
    ("Deaths 24h", "#affected+killed", ("disease", "deaths_24h")),
    ("Latitude", "#geo+lat", ("=lat",)),
    ("Longitude", "#geo+lon", ("=lon",)),
    ("Note", "#description+note", ("note",)),
    ("Provenance", "#meta+provenance", ("=provenance",)),
    ("Time quality", "#meta+time_quality", ("=time_quality",)),
    ("Report id", "#meta+id", ("=id",)),
)


def hxl_rows(records: Iterable[ReportRecord], registry: Registry | None = None) -> list[list[str]]:
    """Header row, hashtag row, then one row per needs report."""
    rows = [[c[0] for c in HXL_COLUMNS], [c[1] for c in HXL_COLUMNS]]
    for record in exportable(records):
        if record.kind != "needs":
            continue
        loc = location_of(record, registry)
        special = {
            "=camp": record.camp,
            "=name": _camp_name(registry, record.camp),
            "=observed": iso_utc(record.observed_est),
            "=received": iso_utc(record.received_at),
            "=lat": f"{loc[0]:.5f}" if loc else None,
            "=lon": f"{loc[1]:.5f}" if loc else None,
            "=provenance": record.provenance,
            "=time_quality": record.time_quality,
            "=id": record.id,
        }
        row = []
        for _, _, path in HXL_COLUMNS:
            value = special[path[0]] if path[0].startswith("=") else _get(record.body, *path)
            row.append("" if value is None else str(value))
        rows.append(row)
    return rows


def hxl_csv(records: Iterable[ReportRecord], registry: Registry | None = None) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(hxl_rows(records, registry))
    return buffer.getvalue()


# ---------------------------------------------------------------- GeoJSON


def _flat_properties(record: ReportRecord, registry: Registry | None, now: dt.datetime) -> dict[str, Any]:
    body = record.body
    props: dict[str, Any] = {
        "camp": record.camp,
        "name": _camp_name(registry, record.camp),
        "report_id": record.id,
        "reported": iso_utc(record.observed_est),
        "received": iso_utc(record.received_at),
        "age_s": max(int((now - record.observed_est).total_seconds()), 0),
        "provenance": record.provenance,
        "time_quality": record.time_quality,
        "max_severity": record.max_severity if record.max_severity >= 0 else None,
    }
    for group in ("population", "severity", "indicators", "disease"):
        values = body.get(group)
        if isinstance(values, dict):
            props.update({f"{group}_{k}": v for k, v in sorted(values.items())})
    for key in ("unaccompanied_children", "note"):
        if key in body:
            props[key] = body[key]
    return props


def geojson(
    latest: Iterable[ReportRecord], registry: Registry | None = None, now: dt.datetime | None = None
) -> dict[str, Any]:
    """FeatureCollection of camps, each with its latest needs report as flat properties."""
    now = now or dt.datetime.now(dt.UTC)
    features = []
    for record in sorted(exportable(latest), key=lambda r: (r.camp or 0, r.id)):
        if record.kind != "needs":
            continue
        loc = location_of(record, registry)
        geometry = {"type": "Point", "coordinates": [round(loc[1], 6), round(loc[0], 6)]} if loc else None
        features.append(
            {
                "type": "Feature",
                "id": record.camp,
                "geometry": geometry,
                "properties": _flat_properties(record, registry, now),
            }
        )
    return {"type": "FeatureCollection", "features": features}


# ---------------------------------------------------------------- CAP 1.2

_TITLES = {
    "disease_outbreak": "Disease outbreak",
    "missing_child": "Missing child",
    "fire": "Fire",
    "security_incident": "Security incident",
    "flood": "Flood",
    "cold_wave": "Cold wave",
    "distribution": "Aid distribution",
    "other": "Alert",
}


def cap_time(moment: dt.datetime) -> str:
    """`2026-11-26T05:00:00-00:00`: the CAP dateTime form (no fractions, no "Z")."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + CAP_UTC_OFFSET


def cap_identifier(record: ReportRecord) -> str:
    return f"meshd-{record.origin}-{record.seq}"


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _pair(parent: etree._Element, tag: str, name: str, value: str) -> None:
    element = _sub(parent, tag)
    _sub(element, "valueName", name)
    _sub(element, "value", value)


def cap_alert(record: ReportRecord, registry: Registry | None = None, *, sender: str) -> bytes:
    """One CAP 1.2 `<alert>` for an alert report. Refuses sealed reports."""
    if record.kind != "alert":
        raise ExportError(f"{record.id} is a {record.kind} report, not an alert; only alerts become CAP")
    body = record.body
    alert_type = str(body.get("type", "other"))
    kind = ALERT_KINDS.get(alert_type, ALERT_KINDS["other"])
    name = _camp_name(registry, record.camp) or f"camp {record.camp}"
    restricted = alert_type == "missing_child"

    def level(field: str, default: str) -> str:
        value = str(body.get(field, "unknown"))
        return (default if value == "unknown" else value).capitalize()

    root = etree.Element(f"{{{CAP_NS}}}alert", nsmap=cast(Any, {None: CAP_NS}))  # default namespace
    _sub(root, "identifier", cap_identifier(record))
    _sub(root, "sender", sender)
    _sub(root, "sent", cap_time(record.observed_est))
    _sub(root, "status", "Actual")
    _sub(root, "msgType", "Alert")
    _sub(root, "source", f"meshd camp {record.origin} ({record.provenance})")
    _sub(root, "scope", "Restricted" if restricted else "Public")
    if restricted:
        _sub(root, "restriction", "Child protection and family tracing staff only")
    _sub(
        root,
        "note",
        f"meshd report {record.id}; provenance {record.provenance}; observation time estimated at HQ as "
        f"receive time minus an age of {record.age_s} s (origin clock quality: {record.time_quality})",
    )
    info = _sub(root, "info")
    _sub(info, "category", kind.cap_category)
    title = _TITLES.get(alert_type, "Alert")
    _sub(info, "event", title)
    if alert_type == "distribution":
        _sub(info, "responseType", "Prepare")
    _sub(info, "urgency", level("urgency", kind.urgency))
    _sub(info, "severity", level("severity", kind.severity))
    _sub(info, "certainty", level("certainty", kind.certainty))
    _pair(info, "eventCode", "meshd:event", kind.cap_event)
    count = body.get("count")
    headline = f"{title} at {name}" + (f" ({count})" if isinstance(count, int) else "")
    _sub(info, "headline", headline[:160])
    text = body.get("text")
    description = [f"{title} reported from {name} (camp {record.camp})."]
    if isinstance(text, str) and text:
        description.append(f"Field report: {text}")
    if isinstance(count, int):
        description.append(f"Count: {count}.")
    _sub(info, "description", " ".join(description))
    _pair(info, "parameter", "meshd:id", record.id)
    _pair(info, "parameter", "meshd:provenance", record.provenance)
    if isinstance(count, int):
        _pair(info, "parameter", "meshd:count", str(count))
    area = _sub(info, "area")
    _sub(area, "areaDesc", name)
    loc = location_of(record, registry)
    if loc is not None:
        _sub(area, "circle", f"{loc[0]:.5f},{loc[1]:.5f} {CAP_CIRCLE_RADIUS_KM}")
    if record.camp is not None:
        _pair(area, "geocode", "meshd:camp", str(record.camp))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def cap_alerts(
    records: Sequence[ReportRecord], registry: Registry | None = None, *, sender: str
) -> list[tuple[str, bytes]]:
    """(file name, CAP XML) for every alert report; sealed and other kinds are skipped."""
    return [
        (f"{cap_identifier(r)}.xml", cap_alert(r, registry, sender=sender))
        for r in exportable(records)
        if r.kind == "alert"
    ]
