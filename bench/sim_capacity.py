"""How many virtual radios, and how many packets per second, the simulator sustains in real time.

Radios are placed on a jittered square grid so each hears about 8 others (log-distance model). Traffic
is injected through the Python API (as if each radio's host sent `ToRadio.packet`), as Poisson arrivals.
"Sustained" means the discrete-event scheduler keeps up with the wall clock: the 99th percentile of
event lateness stays under `--max-lag-ms` (default 100 ms) at speedup 1 (real time).

1. Radios: N radios, each with its pty and TCP endpoint open, LongFast, managed flooding (hop limit 3),
   each radio originating one broadcast per minute (a busy emergency network). N grows until lateness
   exceeds the bound.
2. Packets per second: 1000 radios (no endpoints), ShortTurbo, hop limit 0 (one transmission per
   packet), offered load doubling until lateness exceeds the bound; reports transmissions/s achieved on
   the simulated air and rx/s, the frames arriving at receivers (about 8 per transmission). Many radios
   spread out, so that the simulated channel (airtime, carrier sense) is not what limits the rate.

    .venv/bin/python bench/sim_capacity.py [--seconds 6] [--max-lag-ms 100]

Ends with `RESULT sim_max_radios=N sim_packets_per_s=P`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshd.radio.airtime import preset
from meshd.radio.sim import NodeSpec, SimNetwork, Topology, node_num_for
from meshd.radio.sim.propagation import demod_floor_db, noise_floor_dbm, region_frequency_mhz
from meshd.radio.sim.topology import destination_point

EXPONENT = 3.0
TX_DBM, GAIN_DB = 20.0, 2.0


def grid_topology(count: int, preset_name: str, seed: int) -> Topology:
    """`count` radios on a jittered grid, spacing chosen so each hears about 8 neighbours."""
    modem = preset(preset_name)
    budget = TX_DBM + 2 * GAIN_DB - (noise_floor_dbm(modem) + demod_floor_db(modem) + 3.0)
    ref = 20 * math.log10(4 * math.pi * region_frequency_mhz("KR") * 1e6 / 299_792_458.0)
    reach_m = 10 ** ((budget - ref) / (10 * EXPONENT))
    spacing = reach_m / 1.6
    side = math.ceil(math.sqrt(count))
    rng = random.Random(seed)
    nodes = []
    for i in range(count):
        x, y = (i % side) * spacing, (i // side) * spacing
        x += rng.uniform(-0.2, 0.2) * spacing
        y += rng.uniform(-0.2, 0.2) * spacing
        lat, lon = destination_point(38.0, 127.5, 90.0, x)
        lat, lon = destination_point(lat, lon, 0.0, y)
        nodes.append(
            NodeSpec(f"r{i}", node_num_for(f"bench-{i}"), f"Radio {i}", f"R{i}"[:4], lat=lat, lon=lon,
                     tx_power_dbm=TX_DBM, antenna_gain_db=GAIN_DB)
        )  # fmt: skip
    return Topology(nodes=tuple(nodes), name=f"grid-{count}", path_loss_exponent=EXPONENT)


@dataclass
class Run:
    radios: int
    offered_per_s: float
    tx_per_s: float
    rx_per_s: float
    events_per_s: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    cpu_percent: float
    setup_s: float

    def ok(self, max_lag_ms: float) -> bool:
        return self.lag_p99_ms <= max_lag_ms


async def measure(
    count: int, *, preset_name: str, per_radio_rate: float, hop_limit: int, endpoints: bool, seconds: float, seed: int
) -> Run:
    started = time.perf_counter()
    net = SimNetwork(
        grid_topology(count, preset_name, seed),
        preset=preset_name,
        region="KR",
        seed=seed,
        speedup=1.0,
        base_port=0 if endpoints else None,
        pty=endpoints,
    )
    async with net:
        setup = time.perf_counter() - started
        rng = random.Random(f"bench-traffic:{seed}")
        horizon = seconds + 1.0
        for radio in net.radios:
            t = rng.expovariate(per_radio_rate)
            while t < horizon:
                payload = rng.randbytes(rng.randint(20, 120))
                net.clock.call_at(net.clock.now + t, lambda r=radio, p=payload: r.send(p, hop_limit=hop_limit))
                t += rng.expovariate(per_radio_rate)
        net.clock.lag.keep_samples = True
        base_tx, base_rx = net.stats.transmissions, outcomes(net)
        events0 = net.clock.lag.events
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        lag = net.clock.lag
        rx = outcomes(net) - base_rx
        return Run(
            radios=count,
            offered_per_s=count * per_radio_rate,
            tx_per_s=(net.stats.transmissions - base_tx) / wall,
            rx_per_s=rx / wall,
            events_per_s=(lag.events - events0) / wall,
            lag_p50_ms=lag.percentile(50) * 1000,
            lag_p99_ms=lag.percentile(99) * 1000,
            lag_max_ms=lag.max_s * 1000,
            cpu_percent=100.0 * cpu / wall,
            setup_s=setup,
        )


def outcomes(net: SimNetwork) -> int:
    """Frames that arrived at some receiver, whatever became of them (the simulator's unit of work)."""
    s = net.stats
    return s.receptions + s.collisions + s.losses + s.too_weak + s.half_duplex_losses


def row(run: Run, max_lag_ms: float) -> str:
    return (
        f"{run.radios:>6} {run.offered_per_s:>9.1f} {run.tx_per_s:>8.1f} {run.rx_per_s:>9.1f} {run.events_per_s:>9.0f} "
        f"{run.lag_p50_ms:>8.2f} {run.lag_p99_ms:>8.2f} {run.lag_max_ms:>8.1f} {run.cpu_percent:>5.0f}% "
        f"{run.setup_s:>6.1f}s  {'ok' if run.ok(max_lag_ms) else 'LATE'}"
    )


HEADER = (
    f"{'radios':>6} {'offered/s':>9} {'tx/s':>8} {'rx/s':>9} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'max ms':>8} {'cpu':>6} {'setup':>7}  lag"
)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="real seconds measured per step")
    parser.add_argument("--max-lag-ms", type=float, default=100.0)
    parser.add_argument("--max-radios", type=int, default=800)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    print("1) radios with pty + TCP endpoints, LongFast, flooding (hop limit 3), 1 packet/radio/minute")
    print(HEADER)
    max_radios = 0
    count = 50
    while count <= args.max_radios:
        run = await measure(count, preset_name="LONG_FAST", per_radio_rate=1 / 60, hop_limit=3, endpoints=True,
                            seconds=args.seconds, seed=args.seed)  # fmt: skip
        print(row(run, args.max_lag_ms), flush=True)
        if not run.ok(args.max_lag_ms):
            break
        max_radios = count
        count *= 2

    print()
    print("2) packets per second: 1000 radios, ShortTurbo, hop limit 0 (one transmission per packet)")
    print(HEADER)
    best_tx = 0.0
    rate = 0.125  # per radio per second
    while rate <= 16:
        run = await measure(1000, preset_name="SHORT_TURBO", per_radio_rate=rate, hop_limit=0, endpoints=False,
                            seconds=args.seconds / 2, seed=args.seed)  # fmt: skip
        print(row(run, args.max_lag_ms), flush=True)
        if not run.ok(args.max_lag_ms):
            break
        best_tx = max(best_tx, run.tx_per_s)
        rate *= 2
    print()
    if max_radios == args.max_radios:
        print(f"(radios: every step up to the --max-radios cap of {args.max_radios} kept up)")
    print(f"RESULT sim_max_radios={max_radios} sim_packets_per_s={best_tx:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
