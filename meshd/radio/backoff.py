"""Reconnect policy: capped exponential backoff with full jitter, reset once a connection proved healthy.

Full jitter (a delay drawn uniformly from [0, min(cap, base * 2^attempt)]) keeps a hub from hammering a
device that is rebooting, without synchronising retries. The cap is low on purpose: reconnecting means
opening a local serial port or a LAN socket, which costs nothing, and the requirement is to be READY
within about 3 s of the radio coming back. A connection that stayed up for `healthy_after_s` resets the
sequence, so one bad night does not leave every later outage starting at the cap.

Pure and clock-free: callers pass the monotonic time in, tests pass a seeded `random.Random`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meshd.errors import ConfigError


@dataclass(slots=True)
class Backoff:
    initial_s: float = 0.1
    max_s: float = 2.0
    multiplier: float = 2.0
    healthy_after_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    _up_since: float | None = None

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s and self.multiplier >= 1 and self.healthy_after_s >= 0):
            raise ConfigError("backoff needs 0 < initial_s <= max_s, multiplier >= 1, healthy_after_s >= 0")

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # min() before the power would overflow after ~1000 attempts; cap the exponent instead.
        exp = min(self.attempt, 64)
        return min(self.max_s, self.initial_s * self.multiplier**exp)

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts one failed attempt."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def connected(self, now: float) -> None:
        """A connection came up (session READY) at monotonic time `now`."""
        self._up_since = now

    def disconnected(self, now: float) -> None:
        """The connection went down at `now`; if it had been healthy long enough, start over."""
        if self._up_since is not None and now - self._up_since >= self.healthy_after_s:
            self.reset()
        self._up_since = None

    def reset(self) -> None:
        self.attempt = 0
