"""A byte budget per hour for metered links (satellite plans are billed by the megabyte).

A sliding window of one-minute bins: what was sent in the last hour never exceeds the budget by more than
one message (the one that crossed it is let through whole rather than never). A token bucket would allow
a burst of a whole hour's budget on top of the steady rate after an idle hour; on a metered link the
operator's number should mean "per any hour". Application bytes (topic + payload) are counted; MQTT, TLS
and TCP/IP overhead are not, so set the budget somewhat below the plan's limit.

The window lives in memory: a restart forgets what was spent in the last hour (a restart is rare, and
being at most one hour's budget over then is better than an SD-card write per message).

Clock-free: callers pass monotonic seconds.
"""

from __future__ import annotations

from collections import deque

BIN_S = 60.0
WINDOW_S = 3600.0


class HourlyByteBudget:
    def __init__(self, bytes_per_hour: int) -> None:
        self.limit = bytes_per_hour  # 0 = unmetered
        self._bins: deque[tuple[float, int]] = deque()  # (bin start, bytes), oldest first
        self._spent = 0

    @property
    def metered(self) -> bool:
        return self.limit > 0

    def _expire(self, now: float) -> None:
        while self._bins and self._bins[0][0] <= now - WINDOW_S:
            self._spent -= self._bins.popleft()[1]

    def spent(self, now: float) -> int:
        self._expire(now)
        return self._spent

    def allows(self, now: float) -> bool:
        """Whether another message may start now (the budget is not yet used up)."""
        return not self.metered or self.spent(now) < self.limit

    def spend(self, nbytes: int, now: float) -> None:
        start = now - now % BIN_S
        if self._bins and self._bins[-1][0] == start:
            self._bins[-1] = (start, self._bins[-1][1] + nbytes)
        else:
            self._bins.append((start, nbytes))
        self._spent += nbytes

    def wait_s(self, now: float) -> float:
        """Seconds until `allows` can become true again (0 if it already is)."""
        self._expire(now)
        if self.allows(now):
            return 0.0
        excess = self._spent - self.limit
        for start, nbytes in self._bins:
            excess -= nbytes
            if excess < 0:
                return max(start + WINDOW_S - now, 0.0)
        return 0.0  # pragma: no cover - the loop always ends once the oldest bins are counted
