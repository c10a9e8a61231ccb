"""A report that failed to get across several times waits out a long backoff (up to `retry_max_s`); when a
handover to a neighbour works again, such reports are tried again soon instead. Two real hubs (SQLite
stores, relays) on the in-memory mesh; the link from 101 to 102 is dead for a while, then heals."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from meshd.clock import Clock
from meshd.keys import generate
from meshd.relay import relay as relay_module
from meshd.relay.relay import originate_report
from meshd.store.hub import HubStore
from meshd.wire.envelope import Kind
from meshd.wire.registry import Registry
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import FAST_TIMING, FakeUplink, make_hub, provision, running
from tests.test_relay_line import needs, wait_for

SPEEDUP = 50.0


async def _delay_after_heal(tmp_path: Path) -> tuple[float, float]:
    """Scenario seconds from the link healing to the stuck report reaching the uplink, and the round trip
    to 102 that 101 measured meanwhile."""
    p = provision(tmp_path, [101, 102])
    mesh = FakeMesh(seed=5)
    mesh.link(101, 102)
    clock = Clock(speedup=SPEEDUP)
    # Delivered notices rarely: a notice that beat the healed report's custody notice would settle that report
    # without a handover, and only a handover brings others out of their backoff
    timing = dataclasses.replace(FAST_TIMING, notice_interval_s=3600.0)
    origin_hub, uplink_hub = (make_hub(p, c, mesh.radio(c), clock, timing, duty_cycle_pct=100.0) for c in (101, 102))
    received: Counter[str] = Counter()
    uplink = FakeUplink(uplink_hub, received)
    uplink_hub.uplink = uplink
    async with running([origin_hub, uplink_hub]):
        origin = origin_hub.relay
        store = origin_hub.store
        assert origin is not None
        assert store is not None
        task = asyncio.create_task(uplink.run())
        try:
            await wait_for(lambda: origin.routes.next_hop(clock.now()) is not None, limit_s=20)
            mesh.loss[(101, 102)] = 1.0  # 101's frames stop reaching 102 (102's beacons still arrive)
            stuck = await origin.originate(Kind.ALERT, {"type": "fire", "urgency": "immediate"})

            async def backed_off() -> bool:
                entry = await store.get(stuck.origin, stuck.seq)
                return entry is not None and entry.attempts >= 4

            await wait_for(backed_off, limit_s=30)
            mesh.loss[(101, 102)] = 0.0
            healed = clock.now()
            await origin.originate(Kind.ALERT, {"type": "flood", "urgency": "immediate"})  # its handover works
            await wait_for(lambda: stuck.id in received, limit_s=600 / SPEEDUP + 10)
            delay = clock.now() - healed

            async def stuck_handed_over() -> bool:  # 101 has had 102's custody notice for it
                entry = await store.get(stuck.origin, stuck.seq)
                return entry is None or entry.handed_to != 0

            await wait_for(stuck_handed_over, limit_s=10)
            return delay, origin._srtt.get(102, 0.0)
        finally:
            task.cancel()


async def test_a_working_handover_brings_reports_out_of_a_long_backoff(tmp_path: Path) -> None:
    # a fourth failed send backs off 15 s * 2**3 = 120 s (FAST_TIMING); expedited, it goes within 4 * 15 s
    delay, srtt = await _delay_after_heal(tmp_path)
    assert delay < 80
    # Karn: the stuck report's handover (after retransmissions) is not a round-trip sample; timing it from
    # its first send (minutes ago) would stretch every later retry to this neighbour
    assert srtt < 5.0


async def test_without_expediting_the_report_waits_out_its_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "EXPEDITE_AFTER_ATTEMPTS", 10**6)
    delay, _srtt = await _delay_after_heal(tmp_path)
    assert delay >= 80


async def test_store_expedites_only_long_backoffs(tmp_path: Path) -> None:
    now = [1000.0]
    async with HubStore(tmp_path / "s.db", clock=lambda: now[0]) as store:
        hq = generate(tmp_path / "hq")
        keys = generate(tmp_path / "k", 7)
        registry = Registry(hq.sign_public, hq.seal_public)
        envs = [
            await originate_report(store, keys, registry=registry, camp_id=7, kind=Kind.NEEDS, body=needs(i))
            for i in range(3)
        ]
        keys_ = [(e.origin, e.seq) for e in envs]
        await store.mark_attempt(keys_[:1], lambda attempts: 1000.0)  # 1 attempt, long wait: not backed off
        for _ in range(3):
            await store.mark_attempt(keys_[1:], lambda attempts: 1000.0)  # 3 attempts, long wait
        await store.defer(keys_[2], 30.0)  # 3 attempts, due soon anyway
        assert await store.expedite(attempts=3, longer_than_s=60.0, limit=4) == 1
        now[0] += 61.0
        due = {(e.origin, e.seq) for e in await store.due()}
        assert due == {keys_[1], keys_[2]}
        # at most `limit` at a time
        for _ in range(3):
            await store.mark_attempt(keys_, lambda attempts: 1000.0)
        assert await store.expedite(attempts=3, longer_than_s=60.0, limit=2) == 2
        assert await store.expedite(attempts=3, longer_than_s=60.0, limit=2) == 1
