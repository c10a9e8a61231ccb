"""An alert goes on the air at once and takes along the needs reports of its hub that wait for their batch just
before it (`batch_wait_s`): one signed batch frame at alert priority instead of the alert now and the needs
in a frame of their own later. A real hub (SQLite store, relay) on the in-memory mesh, the test playing its
uplink neighbour C."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.config import HubConfig
from meshd.daemon.hub import Hub
from meshd.radio.api import BROADCAST, ReceivedPacket
from meshd.radio.sim import SimNetwork, line_topology
from meshd.relay.priority import Prio, priority_of
from meshd.relay.relay import Relay
from meshd.wire import bodies, codec, linkauth
from meshd.wire.envelope import Envelope, Kind, sign
from meshd.wire.text import parse_shorthand
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import FAST_TIMING, FakeUplink, make_hub, provision, running
from tests.test_relay_line import needs, wait_for

B, C = 811, 812
SPEEDUP = 50.0
TIMING = dataclasses.replace(FAST_TIMING, batch_wait_s=600.0)  # needs reports wait long for their batch
ALERT = parse_shorthand("A FIRE").body  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def hub_b(tmp_path, **relay: float) -> AsyncIterator[tuple[Relay, Callable[[], list[Envelope]]]]:
    p = provision(tmp_path, [B, C])
    mesh = FakeMesh(seed=9)
    hub = make_hub(p, B, mesh.radio(B), Clock(speedup=SPEEDUP), TIMING, duty_cycle_pct=100.0, **relay)
    key_c = keyfiles.load(p.camps[C]).sign
    async with running([hub]):
        assert hub.relay is not None
        radio = mesh.radios[B]

        def data_to_c() -> list[Envelope]:
            return [
                Envelope.from_bytes(payload)
                for to, payload, _ in radio.sent
                if to == C and not linkauth.is_link_frame(payload)
            ]

        status = bodies.encode_status({"uplink_hops": 1, "uplink_up": True, "via": 0})
        beacon = sign(Envelope(C, 0, Kind.STATUS, status), key_c).to_bytes()
        radio.deliver(ReceivedPacket(from_node=C, to_node=BROADCAST, packet_id=1, portnum=256, payload=beacon))
        await wait_for(lambda: hub.relay.routes.next_hop(hub.relay.clock.now()) is not None, limit_s=10)
        yield hub.relay, data_to_c


async def test_an_alert_takes_the_waiting_needs_reports_along(tmp_path):
    async with hub_b(tmp_path) as (relay, data_to_c):
        first, second = [await relay.originate(Kind.NEEDS, needs(i)) for i in (1, 2)]
        alert = await relay.originate(Kind.ALERT, ALERT)
        await wait_for(lambda: len(data_to_c()) >= 1, limit_s=5)  # long before batch_wait_s (12 s real)
        [frame] = data_to_c()
        assert (frame.kind, frame.origin, frame.seq) == (Kind.BATCH, B, first.seq)
        reports = codec.unbatch(frame)
        assert [(r.kind, r.seq) for r in reports] == [
            (Kind.NEEDS, first.seq),
            (Kind.NEEDS, second.seq),
            (Kind.ALERT, alert.seq),
        ]
        assert priority_of(frame) == Prio.ALERT  # every hub on the way treats it as an alert
        assert relay.counters["batches_built"] == 1


async def test_needs_after_the_alert_wait_for_their_own_batch_and_batch_max_holds(tmp_path):
    async with hub_b(tmp_path, batch_max=3) as (relay, data_to_c):
        waiting = [await relay.originate(Kind.NEEDS, needs(i)) for i in (1, 2, 3)]
        alert = await relay.originate(Kind.ALERT, ALERT)
        after = await relay.originate(Kind.NEEDS, needs(4))
        await wait_for(lambda: len(data_to_c()) >= 1, limit_s=5)
        [frame] = data_to_c()
        # three reports at most: the two needs just before the alert, and the alert
        assert [r.seq for r in codec.unbatch(frame)] == [waiting[1].seq, waiting[2].seq, alert.seq]
        # the oldest needs report and the one after the alert still wait for their batch
        left = {(e.origin, e.seq) for e in await relay.store.pending()}
        assert {(B, waiting[0].seq), (B, after.seq)} <= left


async def test_an_alert_with_nothing_waiting_goes_alone(tmp_path):
    async with hub_b(tmp_path) as (relay, data_to_c):
        alert = await relay.originate(Kind.ALERT, ALERT)
        await wait_for(lambda: len(data_to_c()) >= 1, limit_s=5)
        [frame] = data_to_c()
        assert (frame.kind, frame.seq) == (Kind.ALERT, alert.seq)
        assert relay.counters["batches_built"] == 0


async def test_an_alert_goes_alone_when_only_the_alert_reserve_is_left(tmp_path):
    """The reserve of the airtime budget is for alerts: needs reports riding on an alert would spend it, and
    the next alert would wait for the hour to come round (seen in CI: three fire alerts queued behind a
    saturated budget, the first took needs along and the third waited)."""
    async with hub_b(tmp_path) as (relay, data_to_c):
        now = relay.clock.now()
        relay.budget.charge(relay.budget.limit(alert=False) - relay.budget.used(now) - 0.5, now)
        assert relay.budget.can_send(0.5, now, alert=True)
        waiting = [await relay.originate(Kind.NEEDS, needs(i)) for i in (1, 2)]
        alert = await relay.originate(Kind.ALERT, ALERT)
        await wait_for(lambda: len(data_to_c()) >= 1, limit_s=5)
        [frame] = data_to_c()
        assert (frame.kind, frame.seq) == (Kind.ALERT, alert.seq)
        assert relay.counters["batches_built"] == 0
        left = {(e.origin, e.seq) for e in await relay.store.pending()}
        assert {(B, w.seq) for w in waiting} <= left


async def _through_the_simulator(tmp_path, *, reserve_only: bool) -> tuple[list[str], list[Envelope]]:
    """The real path: two hubs with real RadioLinks on the LoRa simulator (the Meshtastic stream protocol),
    real SQLite stores; the second hub has the uplink (an in-memory stand-in). Hub 1 sends two needs reports
    and a fire alert (`reserve_only`: with only the alert reserve of its airtime budget left); the ids that
    reached HQ once each, and hub 1's report frames on the air."""
    p = provision(tmp_path, [1, 2])
    received: Counter[str] = Counter()
    async with SimNetwork(
        line_topology(2, name="alert-batch"), speedup=SPEEDUP, seed=3, pty=False, record_air=True
    ) as net:
        clock = Clock(SPEEDUP)

        def config_for(camp: int) -> HubConfig:
            base = p.config(camp, duty_cycle_pct=100.0)
            timing = dataclasses.replace(base.timing, speedup=SPEEDUP, batch_wait_s=600.0, beacon_min_gap_s=5.0)
            radio = dataclasses.replace(base.radio, device=f"tcp://127.0.0.1:{net.radios[camp - 1].tcp_port}")
            return dataclasses.replace(base, radio=radio, timing=timing)

        hubs = [Hub(config_for(c), clock=clock, serve_status=False) for c in (1, 2)]
        uplink = FakeUplink(hubs[1], received)
        hubs[1].uplink = uplink
        async with running(hubs):
            relay = hubs[0].relay
            assert relay is not None
            up = asyncio.create_task(uplink.run())
            try:
                await wait_for(lambda: relay.routes.next_hop(clock.now()) is not None, limit_s=20)
                if reserve_only:
                    now = clock.now()
                    relay.budget.charge(relay.budget.limit(alert=False) - relay.budget.used(now) - 0.5, now)
                ids = [(await relay.originate(Kind.NEEDS, needs(i))).id for i in (1, 2)]
                ids.append((await relay.originate(Kind.ALERT, ALERT)).id)
                arrived = ids[-1:] if reserve_only else ids  # (alone, the needs wait out batch_wait_s)
                await wait_for(lambda: set(arrived) <= set(received), limit_s=8)  # batch_wait_s is 12 s real
            finally:
                up.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await up
        assert all(received[i] == 1 for i in arrived), received
        data = [
            Envelope.from_bytes(r.payload)
            for r in net.on_air
            if r.portnum == 256
            and r.transmitter == r.from_node == relay.radio.my_node
            and linkauth.frame_kind(r.payload) in (Kind.NEEDS, Kind.ALERT, Kind.BATCH)
        ]
    return arrived, data


async def test_through_the_simulator_the_alert_and_the_waiting_needs_reach_hq_in_one_frame(tmp_path):
    ids, data = await _through_the_simulator(tmp_path, reserve_only=False)
    assert len(ids) == 3
    assert {(env.kind, len(codec.unbatch(env))) for env in data} == {(Kind.BATCH, 3)}, data


async def test_through_the_simulator_the_alert_goes_alone_on_the_alert_reserve(tmp_path):
    ids, data = await _through_the_simulator(tmp_path, reserve_only=True)
    assert {(env.kind, len(codec.unbatch(env))) for env in data} == {(Kind.ALERT, 1)}, data
    assert [env.id for env in data] == ids
