"""Monotonic time with an optional speed-up, shared by the relay, the store's ages and the simulator.

The wall clock is never used for decisions (a Pi has no RTC). Tests and the demo run the simulated
network faster than real time; every duration the relay computes (airtime budget hours, retry timers,
ages) is then in *scenario* seconds and sleeps are divided by `speedup`.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    def __init__(self, speedup: float = 1.0) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.speedup = speedup

    def now(self) -> float:
        """Scenario seconds on the system-wide monotonic clock (CLOCK_MONOTONIC), so that `meshd send` in
        another process and the running daemon agree on the ages of what they store."""
        return time.monotonic() * self.speedup

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.speedup)

    def real(self, seconds: float) -> float:
        """Real seconds corresponding to `seconds` of scenario time."""
        return seconds / self.speedup


REAL_TIME = Clock()
