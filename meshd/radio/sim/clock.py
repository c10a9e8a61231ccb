"""Simulation time: a discrete-event scheduler paced by the asyncio clock.

Every simulated action (a transmission ending, a contention delay expiring, a retransmission timer) is an
event at a simulated time. Events run strictly in simulated-time order and each sees `clock.now` equal to
its own scheduled time, never the (possibly late) moment the event loop got round to it — so a scenario
driven by scheduled events replays identically whatever the machine load.

Pacing: with `speedup=s`, simulated time runs s times faster than the event loop's clock (airtime,
contention windows, retransmission timers and duty-cycle buckets all shrink by s). `speedup=math.inf`
runs as fast as possible (virtual time; I/O still works, in batches between events).
Input from outside (a host writing to a virtual radio) is stamped with the current simulated time after
all overdue events have run (`catch_up`). A coroutine woken by `sleep()` runs before any later event, so
it sees the network exactly at its wake-up time.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_VIRTUAL_BATCH = 500  # events per loop iteration in virtual-time mode, so I/O still gets turns


@dataclass(order=True, slots=True)
class SimTimer:
    time: float
    seq: int
    callback: Callable[..., object] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False, default=())
    cancelled: bool = field(compare=False, default=False)
    wakes_waiter: bool = field(compare=False, default=False)  # a `sleep()` ends here: let it run first

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(slots=True)
class LagStats:
    """How late events ran, in real seconds (real-time mode only)."""

    events: int = 0
    max_s: float = 0.0
    total_s: float = 0.0
    samples: list[float] = field(default_factory=list)
    keep_samples: bool = False

    def record(self, lag: float) -> None:
        self.events += 1
        self.total_s += lag
        self.max_s = max(self.max_s, lag)
        if self.keep_samples and len(self.samples) < 200_000:
            self.samples.append(lag)

    def percentile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


class SimClock:
    def __init__(self, speedup: float = 1.0) -> None:
        if not speedup > 0:
            raise ValueError("speedup must be positive (math.inf for virtual time)")
        self.speedup = speedup
        self.virtual = math.isinf(speedup)
        self.lag = LagStats()
        self._heap: list[SimTimer] = []
        self._seq = 0
        self._now = 0.0
        self._in_event = False
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._handle: asyncio.Handle | None = None
        self._armed_for = math.inf
        self._closed = False

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time() - self._now / (1.0 if self.virtual else self.speedup)
        self._closed = False
        self._arm()

    def close(self) -> None:
        """Stop the clock; anyone still in `sleep()` wakes up (the simulation is over)."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        waiters = [t for t in self._heap if t.wakes_waiter and not t.cancelled]
        self._heap.clear()
        for timer in waiters:
            timer.callback(*timer.args)

    # -------------------------------------------------------------- time

    @property
    def now(self) -> float:
        """Current simulated time in seconds since the clock started."""
        if self._in_event or self.virtual or self._loop is None:
            return self._now
        return max(self._now, self._real_now())

    def to_real(self, sim_seconds: float) -> float:
        """Real seconds that `sim_seconds` of simulated time take (0 in virtual-time mode)."""
        return 0.0 if self.virtual else sim_seconds / self.speedup

    def _real_now(self) -> float:
        if self._loop is None:
            return self._now
        return (self._loop.time() - self._t0) * self.speedup

    # -------------------------------------------------------------- scheduling

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> SimTimer:
        when = max(when, self._now)
        self._seq += 1
        timer = SimTimer(when, self._seq, callback, args)
        heapq.heappush(self._heap, timer)
        if when < self._armed_for and not self._running:
            self._arm()  # (a running batch re-arms when it ends)
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> SimTimer:
        return self.call_at(self.now + max(0.0, delay), callback, *args)

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of simulated time."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        timer = self.call_later(seconds, wake)
        timer.wakes_waiter = True
        try:
            await done
        finally:
            timer.cancel()

    async def run_until(self, when: float) -> None:
        await self.sleep(max(0.0, when - self.now))

    def catch_up(self) -> None:
        """Run every event that is already due, so outside input sees an up-to-date world."""
        # In virtual time nothing is "overdue": time only moves when the scheduler runs the next event.
        if not self.virtual and not self._in_event and self._loop is not None and not self._closed:
            self._run_due(catching_up=True)

    # -------------------------------------------------------------- pacing

    def _arm(self) -> None:
        if self._loop is None or self._closed:
            return
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            self._armed_for = math.inf
            return
        first = self._heap[0].time
        if self._handle is not None:
            if first >= self._armed_for:
                return
            self._handle.cancel()
        self._armed_for = first
        if self.virtual:
            self._handle = self._loop.call_soon(self._run_due)
        else:
            self._handle = self._loop.call_at(self._t0 + first / self.speedup, self._run_due)

    def _run_due(self, *, catching_up: bool = False) -> None:
        if not catching_up:
            self._handle = None
            self._armed_for = math.inf
        if self._closed or self._loop is None:
            return
        limit = math.inf if self.virtual else self._real_now()
        budget = _VIRTUAL_BATCH if self.virtual else -1
        self._running = True
        try:
            while self._heap and budget != 0:
                timer = self._heap[0]
                if timer.time > limit:
                    break
                heapq.heappop(self._heap)
                if timer.cancelled:
                    continue
                budget -= 1
                self._now = timer.time
                if not self.virtual:
                    self.lag.record((limit - timer.time) / self.speedup)
                self._in_event = True
                try:
                    timer.callback(*timer.args)
                finally:
                    self._in_event = False
                if timer.wakes_waiter:
                    # Stop here so the woken coroutine observes the world exactly at its wake-up time
                    # (both in real and in virtual time) before later events run.
                    break
        finally:
            self._running = False
            if not catching_up or self._handle is None or (self._heap and self._heap[0].time < self._armed_for):
                self._arm()
