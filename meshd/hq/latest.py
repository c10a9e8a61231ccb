"""`meshd hq latest`: the latest needs of every camp, worst first, for the person on duty at HQ.

Order: highest sector severity first; among equal severity, the older report first (a severe camp
not heard from for a day needs a call more than one that reported ten minutes ago); then verified before
unverified before unknown origin; then camp id. Pure: records in, lines out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from meshd.hq.records import SEVERITY_SECTORS, ReportRecord
from meshd.wire.registry import Registry

_PROVENANCE_RANK = {"verified": 0, "unverified": 1, "unknown_origin": 2}
_SECTOR_LETTERS = {
    "water": "W",
    "food": "F",
    "shelter": "S",
    "clothing": "C",
    "health": "M",
    "sanitation": "H",
    "protection": "X",
}


@dataclass(frozen=True, slots=True)
class CampLine:
    camp: int | None
    name: str
    worst: int  # highest sector severity 0-5, -1 when the report gave none
    sectors: str  # e.g. "W4 F3 S2 C3 M4 H3 X2" (shorthand letters of the field card)
    individuals: int | None
    age_s: int  # now - estimated observation time
    provenance: str
    report_id: str

    @property
    def age_text(self) -> str:
        return format_age(self.age_s)


def format_age(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 90 * 60:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def sector_summary(body: dict[str, object]) -> str:
    severity = body.get("severity")
    if not isinstance(severity, dict):
        return "-"
    return " ".join(f"{_SECTOR_LETTERS[s]}{severity[s]}" for s in SEVERITY_SECTORS if s in severity) or "-"


def worst_first(
    latest: list[ReportRecord], registry: Registry | None = None, now: dt.datetime | None = None
) -> list[CampLine]:
    now = now or dt.datetime.now(dt.UTC)
    lines = []
    for record in latest:
        if record.kind != "needs":
            continue
        population = record.body.get("population")
        individuals = population.get("individuals") if isinstance(population, dict) else None
        name = ""
        if registry is not None and record.camp in registry.camps:
            name = registry.camps[record.camp].name
        lines.append(
            CampLine(
                camp=record.camp,
                name=name,
                worst=record.max_severity,
                sectors=sector_summary(record.body),
                individuals=individuals if isinstance(individuals, int) else None,
                age_s=max(int((now - record.observed_est).total_seconds()), 0),
                provenance=record.provenance,
                report_id=record.id,
            )
        )
    lines.sort(key=lambda c: (-c.worst, -c.age_s, _PROVENANCE_RANK.get(c.provenance, 9), c.camp or 0))
    return lines


HEADERS = ("camp", "name", "worst", "sectors", "people", "age", "provenance", "report")


def line_cells(line: CampLine) -> tuple[str, ...]:
    return (
        str(line.camp if line.camp is not None else "?"),
        line.name or "-",
        str(line.worst) if line.worst >= 0 else "-",
        line.sectors,
        str(line.individuals) if line.individuals is not None else "-",
        line.age_text,
        line.provenance,
        line.report_id,
    )


def render_plain(lines: list[CampLine]) -> str:
    """A fixed-width table for terminals without colour, logs and scripts."""
    rows = [HEADERS, *(line_cells(line) for line in lines)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    text = "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)
    return text + "\n"
