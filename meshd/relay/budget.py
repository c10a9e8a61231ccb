"""Airtime budget: how much this hub may transmit per hour, like the firmware's duty-cycle accounting.

Sixty one-minute buckets hold the airtime this hub spent; the sum over the last hour must stay under the
budget. A share of the budget is reserved for alerts, so routine needs reports can never starve a cholera
alert. Computed from our own time-on-air estimate before sending, so the radio never has to refuse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BUCKET_S = 60.0
BUCKETS = 60
HOUR_S = BUCKET_S * BUCKETS


@dataclass
class AirtimeBudget:
    budget_s_per_hour: float
    alert_reserve_fraction: float = 0.2
    _buckets: dict[int, float] = field(default_factory=dict)

    @classmethod
    def from_duty_cycle(cls, duty_cycle_pct: float, alert_reserve_pct: float = 20.0) -> AirtimeBudget:
        return cls(HOUR_S * duty_cycle_pct / 100.0, alert_reserve_pct / 100.0)

    def _prune(self, now: float) -> None:
        current = math.floor(now / BUCKET_S)
        for index in [i for i in self._buckets if i <= current - BUCKETS]:
            del self._buckets[index]

    def used(self, now: float) -> float:
        """Airtime spent in the last hour (the current bucket plus the 59 before it)."""
        self._prune(now)
        return sum(self._buckets.values())

    def limit(self, *, alert: bool) -> float:
        return self.budget_s_per_hour if alert else self.budget_s_per_hour * (1.0 - self.alert_reserve_fraction)

    def can_send(self, airtime_s: float, now: float, *, alert: bool = False) -> bool:
        return self.used(now) + airtime_s <= self.limit(alert=alert)

    def charge(self, airtime_s: float, now: float) -> None:
        index = math.floor(now / BUCKET_S)
        self._buckets[index] = self._buckets.get(index, 0.0) + airtime_s

    def wait_s(self, airtime_s: float, now: float, *, alert: bool = False) -> float:
        """Seconds until `airtime_s` fits (0 if it fits now; inf if it never can)."""
        limit = self.limit(alert=alert)
        if airtime_s > limit:
            return math.inf
        self._prune(now)
        used = sum(self._buckets.values())
        if used + airtime_s <= limit:
            return 0.0
        for index in sorted(self._buckets):
            used -= self._buckets[index]
            if used + airtime_s <= limit:
                return max((index + BUCKETS) * BUCKET_S - now, 0.0) + 0.001
        return 0.0  # pragma: no cover - unreachable: an empty window always fits
