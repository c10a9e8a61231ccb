"""Airtime budget: how much this hub may transmit per hour, like the firmware's duty-cycle accounting.

Every frame's time on air is kept with the moment it was charged; the airtime charged in any sliding hour
must stay under the budget. (A window of one-minute buckets, like the firmware's own counter, lets a burst
at the end of one bucket and a burst an hour later overlap by up to a minute: over a budget for any
real hour. The firmware counts over at most the last sixty whole buckets, which is always inside some
sliding hour, so staying under the budget here keeps the radio under it too.) A share of the budget is
reserved for alerts, so routine needs reports can never starve a cholera alert. Computed from our own
time-on-air estimate before sending, so the radio never has to refuse.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

HOUR_S = 3600.0
# `wait_s` answers a moment just after the oldest frame leaves the window, so the caller's next check passes.
_AFTER_S = 0.001


@dataclass
class AirtimeBudget:
    budget_s_per_hour: float
    alert_reserve_fraction: float = 0.2
    _charged: deque[tuple[float, float]] = field(default_factory=deque)  # (when, airtime), oldest first

    @classmethod
    def from_duty_cycle(cls, duty_cycle_pct: float, alert_reserve_pct: float = 20.0) -> AirtimeBudget:
        return cls(HOUR_S * duty_cycle_pct / 100.0, alert_reserve_pct / 100.0)

    def _prune(self, now: float) -> None:
        while self._charged and self._charged[0][0] <= now - HOUR_S:
            self._charged.popleft()

    def used(self, now: float) -> float:
        """Airtime charged in the hour up to `now`."""
        self._prune(now)
        return sum(cost for _, cost in self._charged)

    def limit(self, *, alert: bool) -> float:
        return self.budget_s_per_hour if alert else self.budget_s_per_hour * (1.0 - self.alert_reserve_fraction)

    def can_send(self, airtime_s: float, now: float, *, alert: bool = False) -> bool:
        return self.used(now) + airtime_s <= self.limit(alert=alert)

    def charge(self, airtime_s: float, now: float) -> None:
        if self._charged and now < self._charged[-1][0]:
            now = self._charged[-1][0]  # a monotonic clock never goes back; keep the queue in order regardless
        self._charged.append((now, airtime_s))

    def refund(self, airtime_s: float, charged_at: float) -> None:
        """Give back a charge for a frame that was not sent after all (the radio refused it)."""
        for index in range(len(self._charged) - 1, -1, -1):
            when, cost = self._charged[index]
            if cost == airtime_s and when >= charged_at:
                del self._charged[index]
                return

    def wait_s(self, airtime_s: float, now: float, *, alert: bool = False) -> float:
        """Seconds until `airtime_s` fits (0 if it fits now; inf if it never can)."""
        limit = self.limit(alert=alert)
        if airtime_s > limit:
            return math.inf
        used = self.used(now)
        if used + airtime_s <= limit:
            return 0.0
        for when, cost in self._charged:
            used -= cost
            if used + airtime_s <= limit:
                return max(when + HOUR_S - now, 0.0) + _AFTER_S
        return 0.0  # pragma: no cover - unreachable: an empty window always fits
