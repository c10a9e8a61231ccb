"""What HQ stores: one row per report (message id) and one per HQ broadcast. Plain values, no I/O."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]
UTC = dt.UTC

# Reports HQ stores; Delivered notices and broadcasts never arrive on camp topics.
STORED_KINDS = ("needs", "alert", "sealed", "status")
SEVERITY_SECTORS = ("water", "food", "shelter", "clothing", "health", "sanitation", "protection")


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """One verified (or flagged) report as HQ keeps it. `id` is "origin:seq", the dedup key."""

    id: str
    origin: int
    seq: int
    kind: str
    camp: int | None  # the camp the report is about (body "camp", default the origin)
    provenance: str  # meshd.wire.codec.Provenance value
    age_s: int  # observation age accumulated hop by hop (monotonic clocks, not wall clocks)
    time_quality: str
    received_at: dt.datetime  # HQ wall clock when this copy arrived (HQ has NTP; hubs may not)
    observed_est: dt.datetime  # received_at - age_s: HQ's estimate of when it was observed
    observed_at: dt.datetime | None  # hub's own timestamp, only when it had GPS/NTP time
    body: JsonDict
    envelope: bytes  # the signed envelope, so anyone can re-verify later
    batch_index: int | None = None
    gateway: int | None = None  # hub that uplinked the first stored copy, when the payload says (unauthenticated)

    @property
    def max_severity(self) -> int:
        severity = self.body.get("severity")
        if not isinstance(severity, dict):
            return -1
        values = [v for v in severity.values() if isinstance(v, int)]
        return max(values, default=-1)


@dataclass(frozen=True, slots=True)
class BroadcastRecord:
    """An HQ-signed broadcast seen on the downlink topic (archived by the worker)."""

    id: str
    seq: int
    received_at: dt.datetime
    body: JsonDict
    envelope: bytes


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    inserted: int
    duplicates: int


def utc_from_unix(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


def iso_utc(moment: dt.datetime) -> str:
    """`2026-11-26T05:00:00+00:00`: seconds precision, numeric offset."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()
