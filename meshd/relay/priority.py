"""What goes first when airtime is short (DESIGN.md section 6).

Life-safety alerts, then sealed protection reports, then health (disease alerts, needs with severe health
figures), then other needs, then status; envelopes from camps not in the registry come last.
"""

from __future__ import annotations

import enum
from typing import Any

from meshd.errors import MeshdError
from meshd.wire import codec
from meshd.wire.envelope import Envelope, Kind


class Prio(enum.IntEnum):
    UNKNOWN_ORIGIN = 0
    STATUS = 10
    NEEDS = 20
    HEALTH = 30
    SEALED = 40
    ALERT = 50


LIFE_SAFETY = {"security_incident", "missing_child", "fire", "flood", "cold_wave", "other"}


def priority_of_body(kind: Kind, body: dict[str, Any]) -> Prio:
    if kind is Kind.ALERT:
        alert_type = body.get("type")
        if alert_type in LIFE_SAFETY:
            return Prio.ALERT
        return Prio.HEALTH if alert_type == "disease_outbreak" else Prio.NEEDS
    if kind is Kind.BROADCAST:
        return Prio.ALERT
    if kind is Kind.SEALED:
        return Prio.SEALED
    if kind is Kind.NEEDS:
        severity = body.get("severity", {})
        disease = body.get("disease", {})
        if severity.get("health", 0) >= 4 or disease.get("deaths_24h", 0) > 0:
            return Prio.HEALTH
        return Prio.NEEDS
    return Prio.STATUS


def priority_of(envelope: Envelope) -> Prio:
    """Priority from the envelope's content (highest item of a batch); sealed bodies need no opening."""
    best = Prio.STATUS
    try:
        for report in codec.unbatch(envelope):
            if report.kind is Kind.SEALED:
                prio = Prio.SEALED
            elif report.kind in (Kind.NEEDS, Kind.ALERT, Kind.BROADCAST):
                prio = priority_of_body(report.kind, codec.decode_body(report.kind, report.body, report.origin))
            else:
                prio = Prio.STATUS
            best = max(best, prio)
    except MeshdError:
        return Prio.STATUS
    return best
