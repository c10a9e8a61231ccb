from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WireVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WIRE_VERSION_1: _ClassVar[WireVersion]

class TimeQuality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIME_QUALITY_NONE: _ClassVar[TimeQuality]
    TIME_QUALITY_DEVICE: _ClassVar[TimeQuality]
    TIME_QUALITY_GPS: _ClassVar[TimeQuality]
    TIME_QUALITY_NTP: _ClassVar[TimeQuality]

class AlertType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_TYPE_OTHER: _ClassVar[AlertType]
    ALERT_TYPE_SECURITY_INCIDENT: _ClassVar[AlertType]
    ALERT_TYPE_DISEASE_OUTBREAK: _ClassVar[AlertType]
    ALERT_TYPE_MISSING_CHILD: _ClassVar[AlertType]
    ALERT_TYPE_FIRE: _ClassVar[AlertType]
    ALERT_TYPE_FLOOD: _ClassVar[AlertType]
    ALERT_TYPE_COLD_WAVE: _ClassVar[AlertType]
    ALERT_TYPE_DISTRIBUTION: _ClassVar[AlertType]

class Urgency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    URGENCY_UNKNOWN: _ClassVar[Urgency]
    URGENCY_IMMEDIATE: _ClassVar[Urgency]
    URGENCY_EXPECTED: _ClassVar[Urgency]
    URGENCY_FUTURE: _ClassVar[Urgency]
    URGENCY_PAST: _ClassVar[Urgency]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNKNOWN: _ClassVar[Severity]
    SEVERITY_EXTREME: _ClassVar[Severity]
    SEVERITY_SEVERE: _ClassVar[Severity]
    SEVERITY_MODERATE: _ClassVar[Severity]
    SEVERITY_MINOR: _ClassVar[Severity]

class Certainty(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CERTAINTY_UNKNOWN: _ClassVar[Certainty]
    CERTAINTY_OBSERVED: _ClassVar[Certainty]
    CERTAINTY_LIKELY: _ClassVar[Certainty]
    CERTAINTY_POSSIBLE: _ClassVar[Certainty]
    CERTAINTY_UNLIKELY: _ClassVar[Certainty]

class SealedKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEALED_KIND_PROTECTION: _ClassVar[SealedKind]
    SEALED_KIND_CHILD_TRACING: _ClassVar[SealedKind]
WIRE_VERSION_1: WireVersion
TIME_QUALITY_NONE: TimeQuality
TIME_QUALITY_DEVICE: TimeQuality
TIME_QUALITY_GPS: TimeQuality
TIME_QUALITY_NTP: TimeQuality
ALERT_TYPE_OTHER: AlertType
ALERT_TYPE_SECURITY_INCIDENT: AlertType
ALERT_TYPE_DISEASE_OUTBREAK: AlertType
ALERT_TYPE_MISSING_CHILD: AlertType
ALERT_TYPE_FIRE: AlertType
ALERT_TYPE_FLOOD: AlertType
ALERT_TYPE_COLD_WAVE: AlertType
ALERT_TYPE_DISTRIBUTION: AlertType
URGENCY_UNKNOWN: Urgency
URGENCY_IMMEDIATE: Urgency
URGENCY_EXPECTED: Urgency
URGENCY_FUTURE: Urgency
URGENCY_PAST: Urgency
SEVERITY_UNKNOWN: Severity
SEVERITY_EXTREME: Severity
SEVERITY_SEVERE: Severity
SEVERITY_MODERATE: Severity
SEVERITY_MINOR: Severity
CERTAINTY_UNKNOWN: Certainty
CERTAINTY_OBSERVED: Certainty
CERTAINTY_LIKELY: Certainty
CERTAINTY_POSSIBLE: Certainty
CERTAINTY_UNLIKELY: Certainty
SEALED_KIND_PROTECTION: SealedKind
SEALED_KIND_CHILD_TRACING: SealedKind

class Envelope(_message.Message):
    __slots__ = ("version", "origin", "seq", "age_s", "time_quality", "unverified", "observed_at", "needs", "alert", "sealed", "batch", "broadcast", "delivered", "status", "custody", "signature")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    TIME_QUALITY_FIELD_NUMBER: _ClassVar[int]
    UNVERIFIED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CUSTODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    version: WireVersion
    origin: int
    seq: int
    age_s: int
    time_quality: TimeQuality
    unverified: bool
    observed_at: int
    needs: bytes
    alert: bytes
    sealed: bytes
    batch: bytes
    broadcast: bytes
    delivered: bytes
    status: bytes
    custody: bytes
    signature: bytes
    def __init__(self, version: _Optional[_Union[WireVersion, str]] = ..., origin: _Optional[int] = ..., seq: _Optional[int] = ..., age_s: _Optional[int] = ..., time_quality: _Optional[_Union[TimeQuality, str]] = ..., unverified: _Optional[bool] = ..., observed_at: _Optional[int] = ..., needs: _Optional[bytes] = ..., alert: _Optional[bytes] = ..., sealed: _Optional[bytes] = ..., batch: _Optional[bytes] = ..., broadcast: _Optional[bytes] = ..., delivered: _Optional[bytes] = ..., status: _Optional[bytes] = ..., custody: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class NeedsReport(_message.Message):
    __slots__ = ("individuals", "households", "female", "children", "arrivals_24h", "severity", "water_lpd", "people_per_latrine", "shelter_m2_pp_x10", "food_days", "unaccompanied_children", "awd_7d", "deaths_24h", "lat_e5", "lon_e5", "note", "camp")
    INDIVIDUALS_FIELD_NUMBER: _ClassVar[int]
    HOUSEHOLDS_FIELD_NUMBER: _ClassVar[int]
    FEMALE_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    ARRIVALS_24H_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    WATER_LPD_FIELD_NUMBER: _ClassVar[int]
    PEOPLE_PER_LATRINE_FIELD_NUMBER: _ClassVar[int]
    SHELTER_M2_PP_X10_FIELD_NUMBER: _ClassVar[int]
    FOOD_DAYS_FIELD_NUMBER: _ClassVar[int]
    UNACCOMPANIED_CHILDREN_FIELD_NUMBER: _ClassVar[int]
    AWD_7D_FIELD_NUMBER: _ClassVar[int]
    DEATHS_24H_FIELD_NUMBER: _ClassVar[int]
    LAT_E5_FIELD_NUMBER: _ClassVar[int]
    LON_E5_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CAMP_FIELD_NUMBER: _ClassVar[int]
    individuals: int
    households: int
    female: int
    children: int
    arrivals_24h: int
    severity: int
    water_lpd: int
    people_per_latrine: int
    shelter_m2_pp_x10: int
    food_days: int
    unaccompanied_children: int
    awd_7d: int
    deaths_24h: int
    lat_e5: int
    lon_e5: int
    note: str
    camp: int
    def __init__(self, individuals: _Optional[int] = ..., households: _Optional[int] = ..., female: _Optional[int] = ..., children: _Optional[int] = ..., arrivals_24h: _Optional[int] = ..., severity: _Optional[int] = ..., water_lpd: _Optional[int] = ..., people_per_latrine: _Optional[int] = ..., shelter_m2_pp_x10: _Optional[int] = ..., food_days: _Optional[int] = ..., unaccompanied_children: _Optional[int] = ..., awd_7d: _Optional[int] = ..., deaths_24h: _Optional[int] = ..., lat_e5: _Optional[int] = ..., lon_e5: _Optional[int] = ..., note: _Optional[str] = ..., camp: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("type", "urgency", "severity", "certainty", "count", "lat_e5", "lon_e5", "text", "camp")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    URGENCY_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CERTAINTY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAT_E5_FIELD_NUMBER: _ClassVar[int]
    LON_E5_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CAMP_FIELD_NUMBER: _ClassVar[int]
    type: AlertType
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    count: int
    lat_e5: int
    lon_e5: int
    text: str
    camp: int
    def __init__(self, type: _Optional[_Union[AlertType, str]] = ..., urgency: _Optional[_Union[Urgency, str]] = ..., severity: _Optional[_Union[Severity, str]] = ..., certainty: _Optional[_Union[Certainty, str]] = ..., count: _Optional[int] = ..., lat_e5: _Optional[int] = ..., lon_e5: _Optional[int] = ..., text: _Optional[str] = ..., camp: _Optional[int] = ...) -> None: ...

class Sealed(_message.Message):
    __slots__ = ("box",)
    BOX_FIELD_NUMBER: _ClassVar[int]
    box: bytes
    def __init__(self, box: _Optional[bytes] = ...) -> None: ...

class SealedContent(_message.Message):
    __slots__ = ("kind", "text", "reporter_node", "camp")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REPORTER_NODE_FIELD_NUMBER: _ClassVar[int]
    CAMP_FIELD_NUMBER: _ClassVar[int]
    kind: SealedKind
    text: str
    reporter_node: int
    camp: int
    def __init__(self, kind: _Optional[_Union[SealedKind, str]] = ..., text: _Optional[str] = ..., reporter_node: _Optional[int] = ..., camp: _Optional[int] = ...) -> None: ...

class BatchItem(_message.Message):
    __slots__ = ("extra_age_s", "needs", "alert", "sealed", "status")
    EXTRA_AGE_S_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    extra_age_s: int
    needs: bytes
    alert: bytes
    sealed: bytes
    status: bytes
    def __init__(self, extra_age_s: _Optional[int] = ..., needs: _Optional[bytes] = ..., alert: _Optional[bytes] = ..., sealed: _Optional[bytes] = ..., status: _Optional[bytes] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ...) -> None: ...

class Broadcast(_message.Message):
    __slots__ = ("text", "severity", "urgency", "expires_in_s", "camps")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    URGENCY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    CAMPS_FIELD_NUMBER: _ClassVar[int]
    text: str
    severity: Severity
    urgency: Urgency
    expires_in_s: int
    camps: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, text: _Optional[str] = ..., severity: _Optional[_Union[Severity, str]] = ..., urgency: _Optional[_Union[Urgency, str]] = ..., expires_in_s: _Optional[int] = ..., camps: _Optional[_Iterable[int]] = ...) -> None: ...

class DeliveredRun(_message.Message):
    __slots__ = ("origin", "seq_deltas")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SEQ_DELTAS_FIELD_NUMBER: _ClassVar[int]
    origin: int
    seq_deltas: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, origin: _Optional[int] = ..., seq_deltas: _Optional[_Iterable[int]] = ...) -> None: ...

class Delivered(_message.Message):
    __slots__ = ("runs", "answers")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[DeliveredRun]
    answers: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, runs: _Optional[_Iterable[_Union[DeliveredRun, _Mapping]]] = ..., answers: _Optional[_Iterable[int]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("queue_depth", "uplink_up", "battery_pct", "uptime_s", "oldest_undelivered_age_s", "airtime_used_ms", "reports_today", "uplink_hops", "via")
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    UPLINK_UP_FIELD_NUMBER: _ClassVar[int]
    BATTERY_PCT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    OLDEST_UNDELIVERED_AGE_S_FIELD_NUMBER: _ClassVar[int]
    AIRTIME_USED_MS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_TODAY_FIELD_NUMBER: _ClassVar[int]
    UPLINK_HOPS_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    queue_depth: int
    uplink_up: bool
    battery_pct: int
    uptime_s: int
    oldest_undelivered_age_s: int
    airtime_used_ms: int
    reports_today: int
    uplink_hops: int
    via: int
    def __init__(self, queue_depth: _Optional[int] = ..., uplink_up: _Optional[bool] = ..., battery_pct: _Optional[int] = ..., uptime_s: _Optional[int] = ..., oldest_undelivered_age_s: _Optional[int] = ..., airtime_used_ms: _Optional[int] = ..., reports_today: _Optional[int] = ..., uplink_hops: _Optional[int] = ..., via: _Optional[int] = ...) -> None: ...
