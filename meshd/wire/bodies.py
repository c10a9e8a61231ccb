"""Body codecs: the JSON mapping HQ integrates against <-> the compact protobuf on the air.

Each `encode_*` validates a JSON-shaped dict (unknown keys, wrong types and out-of-range values are
`EncodeError`s that name the field) and returns the body bytes; each `decode_*` does the reverse and
raises only `DecodeError`. Absent fields stay absent: nothing is zero-filled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from meshd.errors import DecodeError, EncodeError
from meshd.wire.pb import meshd_pb2 as pb

UINT32_MAX = 0xFFFFFFFF
MAX_NOTE_BYTES = 80
SECTORS = ("water", "food", "shelter", "clothing", "health", "sanitation", "protection")
POPULATION_FIELDS = ("individuals", "households", "female", "children", "arrivals_24h")
DISEASE_FIELDS = ("awd_7d", "deaths_24h")

ALERT_TYPES = {
    "other": pb.ALERT_TYPE_OTHER,
    "security_incident": pb.ALERT_TYPE_SECURITY_INCIDENT,
    "disease_outbreak": pb.ALERT_TYPE_DISEASE_OUTBREAK,
    "missing_child": pb.ALERT_TYPE_MISSING_CHILD,
    "fire": pb.ALERT_TYPE_FIRE,
    "flood": pb.ALERT_TYPE_FLOOD,
    "cold_wave": pb.ALERT_TYPE_COLD_WAVE,
    "distribution": pb.ALERT_TYPE_DISTRIBUTION,
}
URGENCIES = {
    "unknown": pb.URGENCY_UNKNOWN,
    "immediate": pb.URGENCY_IMMEDIATE,
    "expected": pb.URGENCY_EXPECTED,
    "future": pb.URGENCY_FUTURE,
    "past": pb.URGENCY_PAST,
}
SEVERITIES = {
    "unknown": pb.SEVERITY_UNKNOWN,
    "extreme": pb.SEVERITY_EXTREME,
    "severe": pb.SEVERITY_SEVERE,
    "moderate": pb.SEVERITY_MODERATE,
    "minor": pb.SEVERITY_MINOR,
}
CERTAINTIES = {
    "unknown": pb.CERTAINTY_UNKNOWN,
    "observed": pb.CERTAINTY_OBSERVED,
    "likely": pb.CERTAINTY_LIKELY,
    "possible": pb.CERTAINTY_POSSIBLE,
    "unlikely": pb.CERTAINTY_UNLIKELY,
}

JsonDict = dict[str, Any]


# ---------------------------------------------------------------- validation helpers


def _reject_unknown(obj: Mapping[str, Any], allowed: tuple[str, ...] | set[str], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise EncodeError(f"unknown field {where}{unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _mapping(obj: object, where: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise EncodeError(f"{where} must be an object, got {type(obj).__name__}")
    return obj


def _uint(value: object, where: str, maximum: int = UINT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EncodeError(f"{where} must be an integer, got {value!r}")
    if not 0 <= value <= maximum:
        raise EncodeError(f"{where} must be 0..{maximum}, got {value}")
    return value


def _text(value: object, where: str, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise EncodeError(f"{where} must be a string, got {type(value).__name__}")
    if len(value.encode("utf-8")) > max_bytes:
        raise EncodeError(f"{where} is {len(value.encode('utf-8'))} bytes, at most {max_bytes} fit")
    return value


def _enum(value: object, table: Mapping[str, int], where: str) -> int:
    if not isinstance(value, str) or value not in table:
        raise EncodeError(f"{where} must be one of {', '.join(table)}, got {value!r}")
    return table[value]


def _coord(value: object, where: str, limit: float) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EncodeError(f"{where} must be a number, got {value!r}")
    if not -limit <= float(value) <= limit:
        raise EncodeError(f"{where} must be within +-{limit}, got {value}")
    return round(float(value) * 1e5)


def _location(body: Mapping[str, Any], where: str) -> tuple[int, int] | None:
    if "location" not in body:
        return None
    loc = _mapping(body["location"], f"{where}location")
    _reject_unknown(loc, ("lat", "lon"), f"{where}location.")
    if "lat" not in loc or "lon" not in loc:
        raise EncodeError(f"{where}location needs both lat and lon")
    return _coord(loc["lat"], f"{where}location.lat", 90.0), _coord(loc["lon"], f"{where}location.lon", 180.0)


def _parse(message: Message, data: bytes, what: str) -> None:
    try:
        message.ParseFromString(data)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"{what} body does not decode: {exc}") from None


def _camp_for_wire(body: Mapping[str, Any], origin: int) -> int | None:
    if "camp" not in body:
        return None
    camp = _uint(body["camp"], "camp")
    return None if camp == origin else camp


# ---------------------------------------------------------------- needs


def pack_severity(severity: Mapping[str, int]) -> int:
    packed = 0
    for index, sector in enumerate(SECTORS):
        if sector in severity:
            packed |= (severity[sector] + 1) << (3 * index)
    return packed


def unpack_severity(packed: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for index, sector in enumerate(SECTORS):
        value = (packed >> (3 * index)) & 0b111
        if value:
            if value > 6:
                raise DecodeError(f"severity for {sector} out of range")
            out[sector] = value - 1
    if packed >> (3 * len(SECTORS)):
        raise DecodeError("severity has bits beyond the known sectors")
    return out


_NEEDS_KEYS = (
    "camp",
    "population",
    "severity",
    "indicators",
    "unaccompanied_children",
    "disease",
    "location",
    "note",
)
_INDICATOR_KEYS = ("water_lpd", "people_per_latrine", "shelter_m2_pp", "food_days")


def encode_needs(body: Mapping[str, Any], origin: int) -> bytes:
    body = _mapping(body, "needs body")
    _reject_unknown(body, _NEEDS_KEYS, "")
    msg = pb.NeedsReport()
    camp = _camp_for_wire(body, origin)
    if camp is not None:
        msg.camp = camp
    if "population" in body:
        pop = _mapping(body["population"], "population")
        _reject_unknown(pop, POPULATION_FIELDS, "population.")
        for name in POPULATION_FIELDS:
            if name in pop:
                setattr(msg, name, _uint(pop[name], f"population.{name}"))
    if "severity" in body:
        sev = _mapping(body["severity"], "severity")
        _reject_unknown(sev, SECTORS, "severity.")
        msg.severity = pack_severity({k: _uint(v, f"severity.{k}", 5) for k, v in sev.items()})
    if "indicators" in body:
        ind = _mapping(body["indicators"], "indicators")
        _reject_unknown(ind, _INDICATOR_KEYS, "indicators.")
        for name in ("water_lpd", "people_per_latrine", "food_days"):
            if name in ind:
                setattr(msg, name, _uint(ind[name], f"indicators.{name}"))
        if "shelter_m2_pp" in ind:
            value = ind["shelter_m2_pp"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1000:
                raise EncodeError(f"indicators.shelter_m2_pp must be a number 0..1000, got {value!r}")
            msg.shelter_m2_pp_x10 = round(float(value) * 10)
    if "unaccompanied_children" in body:
        msg.unaccompanied_children = _uint(body["unaccompanied_children"], "unaccompanied_children")
    if "disease" in body:
        dis = _mapping(body["disease"], "disease")
        _reject_unknown(dis, DISEASE_FIELDS, "disease.")
        for name in DISEASE_FIELDS:
            if name in dis:
                setattr(msg, name, _uint(dis[name], f"disease.{name}"))
    loc = _location(body, "")
    if loc is not None:
        msg.lat_e5, msg.lon_e5 = loc
    if "note" in body:
        msg.note = _text(body["note"], "note", MAX_NOTE_BYTES)
    return msg.SerializeToString(deterministic=True)


def decode_needs(data: bytes, origin: int) -> JsonDict:
    msg = pb.NeedsReport()
    _parse(msg, data, "needs")
    # One ListFields() call instead of a HasField() per field: this runs for every report the uplink
    # publishes, and the backlog flush is bounded by it (bench/uplink_flush.py).
    present = {field.name: value for field, value in msg.ListFields()}
    out: JsonDict = {"camp": present.get("camp", origin)}
    pop = {name: present[name] for name in POPULATION_FIELDS if name in present}
    if pop:
        out["population"] = pop
    if "severity" in present:
        out["severity"] = unpack_severity(present["severity"])
    ind: JsonDict = {name: present[name] for name in ("water_lpd", "people_per_latrine") if name in present}
    if "shelter_m2_pp_x10" in present:
        ind["shelter_m2_pp"] = present["shelter_m2_pp_x10"] / 10
    if "food_days" in present:
        ind["food_days"] = present["food_days"]
    if ind:
        out["indicators"] = ind
    if "unaccompanied_children" in present:
        out["unaccompanied_children"] = present["unaccompanied_children"]
    dis = {name: present[name] for name in DISEASE_FIELDS if name in present}
    if dis:
        out["disease"] = dis
    if "lat_e5" in present and "lon_e5" in present:
        out["location"] = {"lat": present["lat_e5"] / 1e5, "lon": present["lon_e5"] / 1e5}
    if "note" in present:
        out["note"] = present["note"]
    return out


# ---------------------------------------------------------------- alert

_ALERT_KEYS = ("camp", "type", "urgency", "severity", "certainty", "count", "location", "text")
MAX_ALERT_TEXT_BYTES = 80


def encode_alert(body: Mapping[str, Any], origin: int) -> bytes:
    body = _mapping(body, "alert body")
    _reject_unknown(body, _ALERT_KEYS, "")
    if "type" not in body:
        raise EncodeError("alert needs a type (" + ", ".join(ALERT_TYPES) + ")")
    msg = pb.Alert(type=_enum(body["type"], ALERT_TYPES, "type"))  # type: ignore[arg-type]
    camp = _camp_for_wire(body, origin)
    if camp is not None:
        msg.camp = camp
    msg.urgency = _enum(body.get("urgency", "unknown"), URGENCIES, "urgency")  # type: ignore[assignment]
    msg.severity = _enum(body.get("severity", "unknown"), SEVERITIES, "severity")  # type: ignore[assignment]
    msg.certainty = _enum(body.get("certainty", "unknown"), CERTAINTIES, "certainty")  # type: ignore[assignment]
    if "count" in body:
        msg.count = _uint(body["count"], "count")
    loc = _location(body, "")
    if loc is not None:
        msg.lat_e5, msg.lon_e5 = loc
    if "text" in body:
        msg.text = _text(body["text"], "text", MAX_ALERT_TEXT_BYTES)
    return msg.SerializeToString(deterministic=True)


def _name_of(table: Mapping[str, int], value: int, what: str) -> str:
    for name, number in table.items():
        if number == value:
            return name
    raise DecodeError(f"unknown {what} {value}")


def decode_alert(data: bytes, origin: int) -> JsonDict:
    msg = pb.Alert()
    _parse(msg, data, "alert")
    out: JsonDict = {
        "camp": msg.camp if msg.HasField("camp") else origin,
        "type": _name_of(ALERT_TYPES, msg.type, "alert type"),
        "urgency": _name_of(URGENCIES, msg.urgency, "urgency"),
        "severity": _name_of(SEVERITIES, msg.severity, "severity"),
        "certainty": _name_of(CERTAINTIES, msg.certainty, "certainty"),
    }
    if msg.HasField("count"):
        out["count"] = msg.count
    if msg.HasField("lat_e5") and msg.HasField("lon_e5"):
        out["location"] = {"lat": msg.lat_e5 / 1e5, "lon": msg.lon_e5 / 1e5}
    if msg.text:
        out["text"] = msg.text
    return out


# ---------------------------------------------------------------- broadcast

_BROADCAST_KEYS = ("text", "severity", "urgency", "expires_in_s", "camps")
MAX_BROADCAST_TEXT_BYTES = 140


def encode_broadcast(body: Mapping[str, Any], origin: int = 0) -> bytes:
    body = _mapping(body, "broadcast body")
    _reject_unknown(body, _BROADCAST_KEYS, "")
    if "text" not in body:
        raise EncodeError("broadcast needs a text")
    msg = pb.Broadcast(text=_text(body["text"], "text", MAX_BROADCAST_TEXT_BYTES))
    msg.severity = _enum(body.get("severity", "unknown"), SEVERITIES, "severity")  # type: ignore[assignment]
    msg.urgency = _enum(body.get("urgency", "unknown"), URGENCIES, "urgency")  # type: ignore[assignment]
    if "expires_in_s" in body:
        msg.expires_in_s = _uint(body["expires_in_s"], "expires_in_s")
    if "camps" in body:
        camps = body["camps"]
        if not isinstance(camps, list):
            raise EncodeError("camps must be a list of camp ids")
        msg.camps.extend(_uint(c, "camps[]") for c in camps)
    return msg.SerializeToString(deterministic=True)


def decode_broadcast(data: bytes, origin: int = 0) -> JsonDict:
    msg = pb.Broadcast()
    _parse(msg, data, "broadcast")
    out: JsonDict = {
        "text": msg.text,
        "severity": _name_of(SEVERITIES, msg.severity, "severity"),
        "urgency": _name_of(URGENCIES, msg.urgency, "urgency"),
    }
    if msg.HasField("expires_in_s"):
        out["expires_in_s"] = msg.expires_in_s
    if msg.camps:
        out["camps"] = list(msg.camps)
    return out


# ---------------------------------------------------------------- status

_STATUS_INTS = (
    "queue_depth",
    "uptime_s",
    "oldest_undelivered_age_s",
    "airtime_used_ms",
    "reports_today",
    "uplink_hops",
    "via",
)


def encode_status(body: Mapping[str, Any], origin: int = 0) -> bytes:
    body = _mapping(body, "status body")
    _reject_unknown(body, (*_STATUS_INTS, "uplink_up", "battery_pct"), "")
    msg = pb.Status()
    for name in _STATUS_INTS:
        if name in body:
            setattr(msg, name, _uint(body[name], name))
    if "uplink_up" in body:
        if not isinstance(body["uplink_up"], bool):
            raise EncodeError("uplink_up must be true or false")
        msg.uplink_up = body["uplink_up"]
    if "battery_pct" in body:
        msg.battery_pct = _uint(body["battery_pct"], "battery_pct", 100)
    return msg.SerializeToString(deterministic=True)


def decode_status(data: bytes, origin: int = 0) -> JsonDict:
    msg = pb.Status()
    _parse(msg, data, "status")
    out: JsonDict = {name: getattr(msg, name) for name in _STATUS_INTS if msg.HasField(name)}
    if msg.HasField("uplink_up"):
        out["uplink_up"] = msg.uplink_up
    if msg.HasField("battery_pct"):
        out["battery_pct"] = msg.battery_pct
    return out


# ---------------------------------------------------------------- delivered (custody notices)


ANSWER_MASK = 0xFFFF  # a custody notice names the data frames it answers by the low bits of their packet ids


def encode_delivered_ids(ids: list[tuple[int, int]], answers: Iterable[int] = ()) -> bytes:
    """Encode (origin, seq) pairs compactly: per origin, sorted seqs as deltas. `answers` (custody notices
    only): packet ids of the data frames the notice answers, kept to their low 16 bits."""
    by_origin: dict[int, list[int]] = {}
    for origin, seq in ids:
        by_origin.setdefault(_uint(origin, "origin"), []).append(_uint(seq, "seq"))
    msg = pb.Delivered()
    for origin in sorted(by_origin):
        seqs = sorted(set(by_origin[origin]))
        run = msg.runs.add(origin=origin)
        previous = 0
        for seq in seqs:
            run.seq_deltas.append(seq - previous)
            previous = seq
    msg.answers.extend(sorted({packet_id & ANSWER_MASK for packet_id in answers}))
    return msg.SerializeToString(deterministic=True)


def decode_delivered_ids(data: bytes) -> list[tuple[int, int]]:
    msg = pb.Delivered()
    _parse(msg, data, "delivered")
    out: list[tuple[int, int]] = []
    for run in msg.runs:
        seq = 0
        for delta in run.seq_deltas:
            seq += delta
            if seq > UINT32_MAX:
                raise DecodeError("delivered seq overflows")
            out.append((run.origin, seq))
    return out


def decode_custody_answers(data: bytes) -> frozenset[int]:
    """The packet ids (low 16 bits) a custody notice answers; empty from hubs that do not say."""
    msg = pb.Delivered()
    _parse(msg, data, "custody")
    return frozenset(answer & ANSWER_MASK for answer in msg.answers)


def encode_delivered(body: Mapping[str, Any], origin: int = 0) -> bytes:
    body = _mapping(body, "delivered body")
    _reject_unknown(body, ("ids", "answers"), "")
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise EncodeError('delivered needs "ids": a list of "origin:seq" strings')
    pairs: list[tuple[int, int]] = []
    for item in ids:
        origin_text, sep, seq_text = str(item).partition(":")
        if not sep or not origin_text.isdigit() or not seq_text.isdigit():
            raise EncodeError(f"delivered id {item!r} is not ORIGIN:SEQ")
        pairs.append((int(origin_text), int(seq_text)))
    answers = body.get("answers", [])
    if not isinstance(answers, list):
        raise EncodeError('"answers" must be a list of packet ids')
    return encode_delivered_ids(pairs, [_uint(a, "answers[]", ANSWER_MASK) for a in answers])


def decode_delivered(data: bytes, origin: int = 0) -> JsonDict:
    out: JsonDict = {"ids": [f"{o}:{s}" for o, s in decode_delivered_ids(data)]}
    answers = decode_custody_answers(data)
    if answers:
        out["answers"] = sorted(answers)
    return out
