"""The simulated LoRa channel: loss, collisions, capture, half-duplex, airtime, duty cycle, replay."""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import pytest

from meshd.radio.airtime import preset
from meshd.radio.api import BROADCAST
from meshd.radio.sim import (
    AirRecord,
    LinkSpec,
    NodeSpec,
    SimClock,
    SimNetwork,
    Topology,
    bundled_topology_path,
    load_topology,
)
from meshd.radio.sim.channel import DutyCycleMeter
from meshd.radio.sim.propagation import reception_probability
from meshd.radio.sim.topology import destination_point, node_num_for

SIGMAS = 4.5


def sim(topology: Topology, **kwargs: object) -> SimNetwork:
    options: dict[str, object] = {"speedup": math.inf, "pty": False, "base_port": None, "seed": 11}
    options.update(kwargs)
    return SimNetwork(topology, **options)  # type: ignore[arg-type]


def nodes(*ids: str) -> tuple[NodeSpec, ...]:
    return tuple(NodeSpec(i, node_num_for("chan-" + i), i, i.upper()) for i in ids)


def within_binomial(successes: int, trials: int, p: float) -> bool:
    sd = math.sqrt(trials * p * (1 - p))
    return abs(successes - trials * p) <= SIGMAS * sd + 1


async def test_loss_probability_matches_the_link_table() -> None:
    topo = Topology(nodes=nodes("a", "b"), links=(LinkSpec("a", "b", loss=0.3),), links_only=True)
    trials = 1500
    async with sim(topo) as net:
        a, b = net.radios
        for _ in range(trials):
            a.send(b"count me", hop_limit=0)
            await net.sleep(3)
        received = len(b.delivered)
    assert within_binomial(received, trials, 0.7), received
    assert net.stats.losses == trials - received


async def test_loss_probability_matches_the_path_loss_model_at_the_edge() -> None:
    # Place b where the model puts the link right at the edge of reception (p about 0.6).
    here = (38.2, 127.8)
    probe = load_topology(bundled_topology_path())  # only for the modelled parameters
    del probe
    distance = 3000.0
    for _ in range(60):
        lat, lon = destination_point(*here, 90.0, distance)
        topo = Topology(
            nodes=(
                NodeSpec("a", node_num_for("edge-a"), "a", "A", lat=here[0], lon=here[1]),
                NodeSpec("b", node_num_for("edge-b"), "b", "B", lat=lat, lon=lon),
            ),
            path_loss_exponent=3.3,
        )
        probe_net = sim(topo)
        quality = probe_net.links.quality(node_num_for("edge-a"), node_num_for("edge-b"))
        if quality is not None and quality.p_receive < 0.6:
            break
        distance += 100.0
    assert quality is not None
    assert 0.2 < quality.p_receive < 0.6
    trials = 1500
    async with sim(topo) as net:
        a, b = net.radios
        for _ in range(trials):
            a.send(b"edge", hop_limit=0)
            await net.sleep(3)
        assert within_binomial(len(b.delivered), trials, quality.p_receive), (len(b.delivered), quality)
        # The reported SNR is the model's.
        assert b.delivered[0].packet.rx_snr == pytest.approx(quality.snr_db, abs=0.25)


def _hidden_pair(rssi_c: float = -100.0) -> Topology:
    return Topology(
        nodes=nodes("a", "b", "c"),
        links=(
            LinkSpec("a", "b", snr_db=5.0, rssi_dbm=-100.0),
            LinkSpec("c", "b", snr_db=5.0, rssi_dbm=rssi_c),
        ),
        links_only=True,
    )


def _expected_overlap(airtime: float, slot: float, spread: float, slots: int = 8) -> float:
    """P(|start_c - start_a| < airtime) with start_a = ja*slot, start_c = u + jc*slot,
    ja, jc uniform on 0..slots-1 (contention window at low utilisation), u uniform on [0, spread)."""
    total = 0.0
    for ja in range(slots):
        for jc in range(slots):
            d = (jc - ja) * slot
            low, high = max(0.0, -airtime - d), min(spread, airtime - d)
            total += max(0.0, high - low) / spread
    return total / slots**2


async def test_hidden_nodes_collide_at_the_expected_rate() -> None:
    trials, spread, period = 400, 1.2, 15.0
    rng = random.Random(5)
    async with sim(_hidden_pair(), record_air=True) as net:
        a, b, c = net.radios
        for i in range(trials):
            start = 1.0 + i * period
            net.clock.call_at(start, lambda: a.send(b"from a", hop_limit=0))
            net.clock.call_at(start + rng.uniform(0, spread), lambda: c.send(b"from c", hop_limit=0))
        await net.sleep(1.0 + trials * period)
        got = [d.packet.decoded.payload for d in b.delivered]
        airtime = net.on_air[0].airtime_s
        slot = a.tx.slot_s
    assert len(net.on_air) == 2 * trials
    assert got.count(b"from a") == got.count(b"from c")  # equal power: both lost or both fine
    collided = trials - got.count(b"from a")
    expected = _expected_overlap(airtime, slot, spread)
    assert 0.3 < expected < 0.9
    assert within_binomial(collided, trials, expected), (collided / trials, expected)
    assert net.stats.collisions == 2 * collided


async def test_capture_effect_keeps_the_stronger_frame() -> None:
    async with sim(_hidden_pair(rssi_c=-110.0), record_air=True) as net:
        a, b, c = net.radios
        for i in range(30):
            net.clock.call_at(1.0 + 20 * i, lambda: a.send(b"strong", hop_limit=0))
            net.clock.call_at(1.0 + 20 * i, lambda: c.send(b"weak", hop_limit=0))
        await net.sleep(700)
        got = [d.packet.decoded.payload for d in b.delivered]
    # Sent together, the frames always overlap (the contention delays differ by at most 7 slots).
    assert got.count(b"strong") == 30  # 10 dB stronger: always captured
    assert got.count(b"weak") == 0
    assert net.stats.collisions == 30


async def test_half_duplex_a_transmitting_radio_hears_nothing() -> None:
    # b -> a does not exist, so a cannot sense b's transmission and talks over it.
    topo = Topology(
        nodes=nodes("a", "b", "c"),
        links=(LinkSpec("a", "b"), LinkSpec("b", "c")),
        links_only=True,
    )
    topo = Topology(
        nodes=topo.nodes,
        links=(LinkSpec("a", "b", directed=True), LinkSpec("b", "c")),
        links_only=True,
    )
    async with sim(topo) as net:
        a, b, c = net.radios
        b.send(b"b" * 200, hop_limit=0)  # about 2 s on the air at LongFast
        net.clock.call_at(0.5, lambda: a.send(b"while b talks", hop_limit=0))
        await net.sleep(10)
        assert [d.packet.decoded.payload for d in b.delivered] == []
        assert net.stats.half_duplex_losses == 1
        assert len(c.delivered) == 1
        a.send(b"after", hop_limit=0)
        await net.sleep(10)
        assert [d.packet.decoded.payload for d in b.delivered] == [b"after"]


async def test_carrier_sense_defers_to_an_audible_transmission() -> None:
    topo = Topology(nodes=nodes("a", "b"), links=(LinkSpec("a", "b"),), links_only=True)
    async with sim(topo, record_air=True) as net:
        a, b = net.radios
        a.send(b"a" * 200, hop_limit=0)
        net.clock.call_at(0.3, lambda: b.send(b"b" * 10, hop_limit=0))
        await net.sleep(10)
        first, second = net.on_air
        assert second.time >= first.time + first.airtime_s
        assert net.stats.collisions == net.stats.half_duplex_losses == 0


def _scripted_traffic(net: SimNetwork, seed: int, duration: float) -> None:
    rng = random.Random(f"traffic:{seed}")
    hubs = [r for r in net.radios if r.spec.kind in {"hub", "handset"}]
    t = 1.0
    while t < duration:
        sender = rng.choice(hubs)
        to = rng.choice([BROADCAST, rng.choice(hubs).num])
        if to == sender.num:
            to = BROADCAST
        payload = rng.randbytes(rng.randint(10, 180))
        net.clock.call_at(t, lambda s=sender, d=to, p=payload: s.send(p, to=d, want_ack=d != BROADCAST))
        t += rng.expovariate(1 / 4.0)


async def _replay(seed: int, speedup: float, duration: float) -> tuple[dict[str, Any], list[AirRecord]]:
    async with sim(load_topology(bundled_topology_path()), seed=seed, speedup=speedup, record_air=True) as net:
        _scripted_traffic(net, seed, duration)
        await net.clock.run_until(duration + 60)
        return net.stats.as_dict(), list(net.on_air)


async def test_seeded_replay_gives_identical_results() -> None:
    first, air1 = await _replay(seed=21, speedup=math.inf, duration=600)
    second, air2 = await _replay(seed=21, speedup=math.inf, duration=600)
    other, _ = await _replay(seed=22, speedup=math.inf, duration=600)
    assert first["transmissions"] > 100
    assert first["collisions"] > 0
    assert first == second
    assert air1 == air2
    assert other != first


async def test_real_time_pacing_replays_like_virtual_time() -> None:
    started = time.monotonic()
    paced, air_paced = await _replay(seed=5, speedup=400, duration=100)
    elapsed = time.monotonic() - started
    virtual, air_virtual = await _replay(seed=5, speedup=math.inf, duration=100)
    assert paced == virtual
    assert air_paced == air_virtual
    assert 160 / 400 <= elapsed < 5  # 160 simulated seconds took about 0.4 s of real time


async def test_airtime_is_accounted_per_node() -> None:
    async with sim(Topology(nodes=nodes("a", "b"), links=(LinkSpec("a", "b"),), links_only=True)) as net:
        a, _b = net.radios
        a.send(b"x" * 100, hop_limit=0)
        await net.sleep(10)
        expected = net.channel.airtime_s(16 + 1 + 2 + 1 + 1 + 100 + 2)
        assert net.stats.node(a.num).tx_airtime_s == pytest.approx(expected)
        assert a.duty_cycle_percent() == pytest.approx(expected / 3600 * 100)


def test_duty_cycle_meter_uses_sixty_one_minute_buckets() -> None:
    meter = DutyCycleMeter()
    meter.log_tx(10.0, 36.0)
    meter.log_tx(70.0, 36.0)
    assert meter.utilization_percent(100.0) == pytest.approx(2.0)
    assert meter.utilization_percent(3600.0 + 30.0) == pytest.approx(1.0)  # minute 0 rolled out
    assert meter.utilization_percent(3600.0 + 90.0) == pytest.approx(0.0)
    meter.log_tx(10_000.0, 72.0)
    assert meter.utilization_percent(20_000.0) == 0.0  # more than an hour later: all cleared


def test_reception_probability_is_a_smooth_edge() -> None:
    floor = -17.5
    assert reception_probability(floor, floor) == pytest.approx(0.5)
    assert reception_probability(floor + 3, floor) > 0.95
    assert reception_probability(floor + 10, floor) > 0.9999
    assert reception_probability(floor - 3, floor) < 0.05


async def test_clock_orders_events_and_paces_real_time() -> None:
    clock = SimClock(speedup=100)
    seen: list[tuple[float, str]] = []
    clock.start()
    clock.call_at(2.0, lambda: seen.append((clock.now, "b")))
    clock.call_at(1.0, lambda: seen.append((clock.now, "a")))
    cancelled = clock.call_at(1.5, lambda: seen.append((clock.now, "never")))
    cancelled.cancel()
    started = time.monotonic()
    await clock.sleep(3.0)
    elapsed = time.monotonic() - started
    clock.close()
    assert seen == [(1.0, "a"), (2.0, "b")]  # each event sees its own scheduled time
    assert 0.025 <= elapsed < 1.0
    assert preset("LONG_FAST").spreading_factor == 11
    await asyncio.sleep(0)


async def test_stopping_the_network_wakes_sleepers() -> None:
    net = sim(Topology(nodes=nodes("a", "b"), links=(LinkSpec("a", "b"),), links_only=True), speedup=1.0)
    await net.start()
    sleeper = asyncio.ensure_future(net.sleep(3600))
    await asyncio.sleep(0.05)
    await net.stop()
    await asyncio.wait_for(sleeper, 1)
