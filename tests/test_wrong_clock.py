"""A hub with a wrong wall clock (no RTC: 1970 after boot, then NTP jumps it forward, or a bad GPS back).

We cannot set the machine's clock in a test, so we show that no decision in meshd depends on it: the wall
clock (`time.time`, `datetime.now`/`today` in every meshd module) is replaced by one that starts in 1970
and jumps by decades while reports cross three real hubs; ages carried in the envelopes must still equal
the monotonic dwell, and HQ's estimate of when a report was observed (receive time minus age, computed
by the real HQ ingest code from the real MQTT JSON) must stay within the hop-dwell error.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
import time
import types
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import meshd.store.hub
from meshd.clock import Clock
from meshd.daemon.hub import Hub
from meshd.daemon.status import collect_status
from meshd.hq.ingest import Ingestor
from meshd.hq.records import ReportRecord, utc_from_unix
from meshd.store.health import read_offline
from meshd.store.hub import HubStore
from meshd.wire import codec
from meshd.wire.codec import Provenance
from meshd.wire.envelope import Envelope, Kind
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import make_hub, provision, running
from tests.test_relay_line import wait_for

DAY = 86400.0
YEAR = 365.25 * DAY
HQ_EPOCH = 1_760_000_000.0  # HQ's (correct, NTP) clock at scenario time 0
NEEDS: dict[str, object] = {"population": {"individuals": 800}, "severity": {"water": 3}}
# meshd modules allowed to read the wall clock, and why: the "reports today" label of `meshd status` and the
# STATUS reply (the hub's date, only a label; HubStore and the read-only status reader).
WALL_CLOCK_READERS_ALLOWED = {"meshd.store.hub", "meshd.store.health"}


class WrongWallClock:
    """Stands in for the system wall clock: advances with the monotonic clock, jumps when told."""

    def __init__(self, start: float) -> None:
        self._offset = start - time.monotonic()
        self.readers: Counter[str] = Counter()  # module name of each caller

    def now(self) -> float:
        return time.monotonic() + self._offset

    def jump(self, seconds: float) -> None:
        self._offset += seconds

    def _note_caller(self, depth: int = 2) -> None:
        self.readers[sys._getframe(depth).f_globals.get("__name__", "?")] += 1

    def time(self) -> float:
        self._note_caller()
        return self.now()

    def time_ns(self) -> int:
        self._note_caller()
        return int(self.now() * 1e9)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Patch time.time everywhere and datetime in every loaded meshd module (freezegun-style)."""
        wall = self

        class FakeDatetime(dt.datetime):
            @classmethod
            def now(cls, tz: dt.tzinfo | None = None) -> FakeDatetime:
                wall._note_caller()
                return cls.fromtimestamp(wall.now(), tz)

            @classmethod
            def utcnow(cls) -> FakeDatetime:
                wall._note_caller()
                return cls.fromtimestamp(wall.now(), dt.UTC).replace(tzinfo=None)

            @classmethod
            def today(cls) -> FakeDatetime:
                wall._note_caller()
                return cls.fromtimestamp(wall.now())

        class FakeDate(dt.date):
            @classmethod
            def today(cls) -> FakeDate:
                wall._note_caller()
                return cls.fromtimestamp(wall.now())

        shim = types.ModuleType("datetime")
        shim.__dict__.update(vars(dt))
        shim.datetime = FakeDatetime  # type: ignore[attr-defined]
        shim.date = FakeDate  # type: ignore[attr-defined]
        replacements = {id(dt): shim, id(dt.datetime): FakeDatetime, id(dt.date): FakeDate}
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch("time.time", self.time))
            stack.enter_context(mock.patch("time.time_ns", self.time_ns))
            for name, module in list(sys.modules.items()):
                if module is None or not (name == "meshd" or name.startswith("meshd.")):
                    continue
                for attr, value in list(vars(module).items()):
                    if id(value) in replacements and not attr.startswith("__"):
                        stack.enter_context(mock.patch.object(module, attr, replacements[id(value)]))
            yield

    def meshd_readers(self) -> set[str]:
        return {name for name in self.readers if name == "meshd" or name.startswith("meshd.")}


@dataclass
class Arrival:
    record: ReportRecord
    read_at: float  # scenario time right after the uplink read the entry (and its age) from the store


class HQOverUplink:
    """The last hub's uplink: publishes outbox entries as the MQTT flusher does (age as of now, the JSON of
    the MQTT contract) straight into the real HQ ingest code, whose clock is right."""

    def __init__(self, hub: Hub, ingestor: Ingestor) -> None:
        self.hub = hub
        self.ingestor = ingestor
        self.connected = False
        self.publishing = False
        self.arrivals: dict[str, Arrival] = {}
        self.documents: list[dict[str, Any]] = []

    async def run(self) -> None:
        while True:
            store = self.hub.store
            if self.connected and self.publishing and store is not None:
                for entry in await store.pending(unpublished_only=True, limit=100):
                    read_at = self.hub.clock.now()
                    stored = Envelope.from_bytes(entry.envelope)
                    env = stored.with_added_age(entry.age_s - stored.age_s)
                    ids = []
                    for report in codec.unbatch(env):
                        doc = codec.report_json(report, provenance=Provenance.VERIFIED)
                        self.documents.append(doc)
                        result = self.ingestor.ingest(
                            f"meshd/v1/camp/{report.origin}/{report.kind.value}",
                            json.dumps(doc).encode(),
                            received_at=utc_from_unix(HQ_EPOCH + read_at),
                        )
                        assert result.accepted, result.detail
                        for record in result.reports:
                            self.arrivals[record.id] = Arrival(record, read_at)
                        ids.append((report.origin, report.seq))
                    await store.mark_delivered(ids, published=True)
            await asyncio.sleep(0.005)


        await asyncio.sleep(0.01)


async def test_ages_and_hq_estimate_survive_a_wrong_and_jumping_wall_clock(tmp_path: Path) -> None:
    camps = [101, 102, 103]
    p = provision(tmp_path, camps)
    mesh = FakeMesh(seed=3)
    mesh.link(101, 102)
    mesh.link(102, 103)
    clock = Clock(speedup=10)  # scenario seconds; ages are in scenario seconds too
    hubs = [make_hub(p, camp, mesh.radio(camp), clock) for camp in camps]
    hq = HQOverUplink(hubs[2], Ingestor(p.registry))
    hubs[2].uplink = hq
    wall = WrongWallClock(start=10 * DAY)  # 1970-01-11: a Pi without RTC or network after boot
    observed: dict[str, float] = {}  # report id -> scenario time just before it was stored
    with wall.installed():
        assert time.time() < 11 * DAY  # the patch reaches meshd
        assert meshd.store.hub._today() == "1970-01-11"
        async with running(hubs):
            uplink_task = asyncio.create_task(hq.run())
            try:
                origin = hubs[0].relay
                assert origin is not None
                # 1. No uplink anywhere: reports wait at camp 101 while NTP-less time jumps 55 years ahead.
                for i in range(4):
                    t_obs = clock.now()
                    inbound = (0xA1B2C3D4, "en", True) if i == 0 else None
                    env = await origin.originate(Kind.NEEDS, NEEDS, inbound=inbound)
                    observed[env.id] = t_obs
                    if i == 1:
                        wall.jump(+55 * YEAR)
                    await clock.sleep(3.0)
                await clock.sleep(8.0)
                # 2. The satellite link at camp 103 comes up, but HQ takes nothing yet: reports move two hops
                #    and wait at 103 while the wall clock jumps 30 years back (a bad GPS fix).
                hq.connected = True
                store103 = hubs[2].store
                assert store103 is not None
                await wait_for(lambda: _count(store103), limit_s=15)
                wall.jump(-30 * YEAR)
                await clock.sleep(10.0)
                for report_id, t_obs in observed.items():
                    origin_camp, seq = (int(x) for x in report_id.split(":"))
                    entry = await _entry_covering(store103, origin_camp, seq)
                    true_age = clock.now() - t_obs
                    assert 0 <= true_age - entry < 3.0, (report_id, entry, true_age)  # 3 stores, < 1 s each
                # `meshd status` at 103 under the same wrong clock. Its oldest age is the oldest envelope's:
                # for a batch that is its youngest report's age (see HubStore.oldest_age).
                status = await collect_status(hubs[2])
                true_ages = [clock.now() - t for t in observed.values()]
                assert status["oldest_age_s"] is not None
                assert min(true_ages) - 3.0 < status["oldest_age_s"] <= max(true_ages)
                assert status["queue_total"] == 4
                # 3. HQ takes custody; the wall clock jumps again (NTP finally syncs).
                wall.jump(+1 * DAY)
                hq.publishing = True
                await wait_for(lambda: len(hq.arrivals) == len(observed), limit_s=15)
            finally:
                uplink_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await uplink_task
    assert set(hq.arrivals) == set(observed)
    # Each hub's store counts dwell in whole seconds (< 1 s lost per hub); radio transit is not counted.
    hops = len(camps)
    for report_id, arrival in hq.arrivals.items():
        dwell = arrival.read_at - observed[report_id]  # true monotonic time since observation
        assert arrival.record.age_s > 20, "the reports did wait: ages are not trivially small"
        assert 0 <= dwell - arrival.record.age_s < hops * 1.0, (report_id, dwell, arrival.record.age_s)
        # HQ's estimate (receive time minus age) against the true observation time on HQ's clock
        true_observed = utc_from_unix(HQ_EPOCH + observed[report_id])
        error_s = (arrival.record.observed_est - true_observed).total_seconds()
        assert 0 <= error_s < hops * 1.0, (report_id, error_s)
        assert arrival.record.time_quality == "none"
        assert arrival.record.observed_at is None
    # nothing on the wire claims a wall-clock time, and nothing in meshd read the wall clock to decide anything
    assert all("observed_at" not in doc and doc["time_quality"] == "none" for doc in hq.documents)
    assert wall.meshd_readers() <= WALL_CLOCK_READERS_ALLOWED, wall.meshd_readers()


async def _count(store: HubStore) -> bool:
    return sum((await store.queue_depth()).values()) == 4


async def _entry_covering(store: HubStore, origin: int, seq: int) -> int:
    """The current age of report (origin, seq) in `store` (it may be inside a batch)."""
    for entry in await store.pending(limit=100):
        if entry.origin == origin and entry.seq <= seq < entry.seq + entry.n_items:
            stored = Envelope.from_bytes(entry.envelope)
            env = stored.with_added_age(entry.age_s - stored.age_s)
            [report] = [r for r in codec.unbatch(env) if r.seq == seq]
            return report.age_s
    raise AssertionError(f"{origin}:{seq} not in the store")


class SteppedClock:
    """A monotonic clock under the test's control (a new boot restarts it near zero)."""

    def __init__(self, now: float) -> None:
        self.t = now

    def __call__(self) -> float:
        return self.t


async def test_ages_settle_across_restarts_and_reboots_whatever_the_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "meshd.db"
    wall = WrongWallClock(start=10 * DAY)
    relayed = Envelope(413, 1, Kind.NEEDS, b"\x08\x01", age_s=500)  # heard from another hub, already 500 s old
    with wall.installed():
        mono = SteppedClock(1000.0)
        async with HubStore(path, clock=mono) as store:
            local = await store.originate(101, lambda seq: Envelope(101, seq, Kind.NEEDS, b"\x08\x02"), priority=20)
            await store.accept(relayed, priority=20)
            mono.t = 1060.0
            await store.mark_alive()
            wall.jump(+55 * YEAR)
            mono.t = 1090.0
            assert (await store.get(101, local.seq)).age_s == 90  # type: ignore[union-attr]
        # clean stop at 1090; powered off for an unknown time; NTP set the clock meanwhile; reboot: monotonic ~0
        offline = read_offline(path)
        assert offline.oldest_age_s == 590  # what `meshd status` shows while the hub is down
        wall.jump(-40 * YEAR)
        mono = SteppedClock(3.0)
        store = await HubStore(path, clock=mono).__aenter__()
        assert (await store.get(101, local.seq)).age_s == 90  # type: ignore[union-attr]
        assert (await store.get(413, 1)).age_s == 590  # type: ignore[union-attr]
        mono.t = 13.0
        assert (await store.get(101, local.seq)).age_s == 100  # type: ignore[union-attr]
        mono.t = 20.0
        await store.mark_alive()
        mono.t = 200.0
        await store.db.close()  # power cut: no final alive mark (the last one was at 20)
        # after the power cut only the dwell up to the last alive mark is counted: ages never run ahead
        mono = SteppedClock(5.0)
        async with HubStore(path, clock=mono) as store:
            assert (await store.get(101, local.seq)).age_s == 107  # type: ignore[union-attr]
            assert (await store.get(413, 1)).age_s == 607  # type: ignore[union-attr]
    assert wall.meshd_readers() <= WALL_CLOCK_READERS_ALLOWED
