"""`meshd sim`: run a simulated Meshtastic network until interrupted.

Every virtual radio serves the stream API on a pty and on a TCP port of 127.0.0.1, so `meshd run`, the
`meshtastic` CLI (`meshtastic --host 127.0.0.1:PORT --info`, `meshtastic --port PTY --info`) or any
other client can connect to it as to a real radio.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from typing import Any

from meshd.aio import wait_event
from meshd.errors import ConfigError
from meshd.radio.airtime import PRESETS
from meshd.radio.sim.network import SimNetwork
from meshd.radio.sim.topology import Topology, bundled_topology_path, generate_topology, load_topology


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sim",
        help="run a simulated LoRa mesh of virtual Meshtastic radios (pty + TCP)",
        description=(
            "Run virtual Meshtastic radios joined by a simulated LoRa channel until Ctrl-C. Each radio "
            "speaks the stream API on a pseudo-terminal and on a TCP port of 127.0.0.1."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--topology", metavar="FILE", help="topology file (.toml or .geojson); default: six camps")
    source.add_argument("--camps", type=int, metavar="N", help="generate N camps around a hill relay instead")
    parser.add_argument("--preset", choices=sorted(PRESETS), type=str.upper, help="modem preset (default LONG_FAST)")
    parser.add_argument("--region", type=str.upper, help="LoRa region code, e.g. KR, EU_868, US (default KR)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: same seed, same scenario (default 1)")
    parser.add_argument(
        "--speedup", type=float, default=1.0,
        help="simulated time runs this many times faster than real time (default 1: real time)",
    )  # fmt: skip
    parser.add_argument(
        "--base-port", type=int, default=0,
        help="TCP port of the first radio, the next ones follow; 0 = any free ports (default)",
    )  # fmt: skip
    parser.add_argument("--no-pty", action="store_true", help="serve TCP only")
    parser.add_argument("--pty-dir", metavar="DIR", help="where to put the stable pty symlinks (default: a temp dir)")
    parser.add_argument(
        "--stats-every", type=float, default=0.0, metavar="S",
        help="print channel statistics every S real seconds (default: only at exit)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def _topology(args: argparse.Namespace) -> Topology:
    if args.camps is not None:
        return generate_topology(args.camps, seed=args.seed)
    return load_topology(args.topology or bundled_topology_path("six_camps"))


def run(args: argparse.Namespace) -> int:
    if not args.speedup > 0 or math.isnan(args.speedup):
        raise ConfigError("--speedup must be a positive number")
    if not 0 <= args.base_port <= 65535:
        raise ConfigError("--base-port must be 0..65535")
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    network = SimNetwork(
        _topology(args),
        preset=args.preset,
        region=args.region,
        seed=args.seed,
        speedup=args.speedup,
        base_port=args.base_port,
        pty=not args.no_pty,
        pty_dir=args.pty_dir,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with network:
            topo = network.topology
            print(
                f"meshd sim: {len(network.radios)} radios, topology {topo.name}, region {network.region}, "
                f"preset {network.preset}, seed {network.seed}, speedup {args.speedup:g}"
            )
            for line in network.describe():
                print(line)
            print("ready; Ctrl-C to stop", flush=True)
            await _wait(stop, network, args.stats_every)
            print(_stats_line(network), flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def _wait(stop: asyncio.Event, network: SimNetwork, every: float) -> None:
    if every <= 0:
        await stop.wait()
        return
    while not stop.is_set():
        try:
            await wait_event(stop, every)
        except TimeoutError:
            print(_stats_line(network), flush=True)


def _stats_line(network: SimNetwork) -> str:
    s = network.stats
    return (
        f"sim t={network.clock.now:.1f}s transmissions={s.transmissions} airtime={s.airtime_s:.1f}s "
        f"receptions={s.receptions} collisions={s.collisions} losses={s.losses} "
        f"half_duplex={s.half_duplex_losses}"
    )


if __name__ == "__main__":  # pragma: no cover - `meshd sim` is the entry point
    top = argparse.ArgumentParser(prog="meshd")
    register(top.add_subparsers())
    parsed = top.parse_args(["sim", *sys.argv[1:]])
    sys.exit(parsed.func(parsed))
