"""Backlog flush through the uplink bridge vs a bare aiomqtt publish loop, against the local Mosquitto.

    python bench/uplink_flush.py [N=100000] [--batch 1] [--inflight 20] [--port 1883] [--rounds 3]

Three phases, each in its own process so one phase's memory never counts for another:

  gen     fill a real SQLite HubStore with N signed needs reports (envelopes of --batch reports) and write
          the exact MQTT payloads (topic TAB json) to a file;
  bare    aiomqtt, MQTT 5, QoS 1, at most --inflight publishes awaiting PUBACK: publish every line of that
          file (streamed) -- the ceiling for this broker, client library and machine;
  uplink  UplinkBridge on the same store, from start until every report is marked delivered (outbox
          empty): unbatch, JSON, publish, PUBACK, mark_delivered with group commit. Peak RSS is VmHWM of
          this process.

`gen` runs once; then `bare` and `uplink` (on a fresh copy of the generated store) run --rounds times,
alternating which goes first. This machine is shared: a neighbour's load moves single runs by 20 % and
more, so each round's ratio compares two runs a few seconds apart and the result is the median round.

A persistent-session subscriber (offline, so it costs no CPU) is registered first: without any matching
subscription Mosquitto answers MQTT 5 publishes with "no matching subscribers", which the bridge rightly
does not take as custody. It is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def phase_gen(args: argparse.Namespace) -> dict[str, float]:
    from meshd.store.hub import HubStore
    from meshd.wire.codec import Provenance, report_json, unbatch
    from meshd.wire.envelope import Envelope
    from tests.uplink_support import fill_store, make_world

    world = make_world()
    t0 = time.perf_counter()
    async with HubStore(args.dir / "hub.db") as store:
        envelopes = await fill_store(store, world.camp_keys[7], args.n, batch=args.batch)
        rows = await store.db.read(lambda c: c.execute("SELECT envelope FROM outbox ORDER BY seq").fetchall())
    with (args.dir / "payloads.txt").open("w", encoding="utf-8") as out:
        for (raw,) in rows:
            for report in unbatch(Envelope.from_bytes(raw)):
                doc = report_json(report, provenance=Provenance.VERIFIED)
                doc["gateway"] = 7  # as the bridge adds it
                payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
                out.write(f"{args.prefix}/v1/camp/{report.origin}/{report.kind.value}\t{payload}\n")
    (args.dir / "registry.json").write_bytes(world.registry.to_json_bytes())
    return {"envelopes": envelopes, "gen_s": time.perf_counter() - t0}


async def phase_bare(args: argparse.Namespace) -> dict[str, float]:
    import aiomqtt

    window = asyncio.Semaphore(args.inflight)
    count = 0

    async with aiomqtt.Client(
        "127.0.0.1", args.port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=args.inflight
    ) as client:
        client.pending_calls_threshold = args.inflight + 1  # aiomqtt warns above 10 pending publishes

        async def one(topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1)
            finally:
                window.release()

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            with (args.dir / "payloads.txt").open("rb") as lines:
                for line in lines:
                    topic, _, payload = line.rstrip(b"\n").partition(b"\t")
                    await window.acquire()
                    tg.create_task(one(topic.decode(), payload))
                    count += 1
        elapsed = time.perf_counter() - t0
    return {"messages": count, "seconds": elapsed, "msgs_per_s": count / elapsed, "peak_rss_mb": vm_hwm_mb()}


async def phase_uplink(args: argparse.Namespace) -> dict[str, float]:
    from meshd.config import UplinkSection
    from meshd.store.hub import HubStore
    from meshd.uplink import UplinkBridge
    from meshd.wire.envelope import Envelope
    from meshd.wire.registry import Registry

    registry = Registry.from_json_bytes((args.dir / "registry.json").read_bytes())

    async def on_broadcast(env: Envelope) -> None:
        return None

    # A unique client id: a second client with the same id (another hub test on this broker) would take over
    # the session, and the broker would drop this one.
    config = UplinkSection(
        url=f"mqtt://127.0.0.1:{args.port}",
        prefix=args.prefix,
        inflight=args.inflight,
        client_id=f"uplink-{args.prefix}",
    )
    async with HubStore(args.dir / "hub.db") as store:
        rss_before = vm_hwm_mb()
        flushed = asyncio.Event()

        def on_custody() -> None:
            if bridge.counters["delivered"] >= args.n:
                flushed.set()

        bridge = UplinkBridge(
            config,
            camp_id=7,
            store=store,
            registry=registry,
            pinned_hq_key=None,
            on_broadcast=on_broadcast,
            status=dict,
            on_custody=on_custody,
        )
        t0 = time.perf_counter()
        async with bridge:
            await flushed.wait()
            elapsed = time.perf_counter() - t0
            counters = dict(bridge.counters)
        left = await store.db.read(lambda c: c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    return {
        "messages": counters["puback"],
        "seconds": elapsed,
        "msgs_per_s": counters["delivered"] / elapsed,
        "peak_rss_mb": vm_hwm_mb(),
        "rss_before_flush_mb": rss_before,
        "outbox_left": left,
        "connects": counters.get("connects", 0),
    }


def run_phase(name: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, str(args.n), "--phase", name, "--dir", str(args.dir), "--prefix", args.prefix]
    cmd += ["--batch", str(args.batch), "--inflight", str(args.inflight), "--port", str(args.port)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


async def subscriber_session(args: argparse.Namespace, *, create: bool) -> None:
    import aiomqtt

    client_id = f"bench-{args.prefix}"
    async with aiomqtt.Client("127.0.0.1", args.port, identifier=client_id, clean_session=not create) as client:
        if create:
            await client.subscribe(f"{args.prefix}/v1/camp/+/needs", qos=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=100_000, help="reports in the backlog")
    parser.add_argument("--batch", type=int, default=1, help="reports per envelope (1 = worst case for the store)")
    parser.add_argument("--inflight", type=int, default=20, help="QoS 1 window, same for both loops")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--phase", choices=["gen", "bare", "uplink"])
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--rounds", type=int, default=3, help="bare/uplink pairs; the median ratio is reported")
    args = parser.parse_args()
    if args.phase:
        fn = {"gen": phase_gen, "bare": phase_bare, "uplink": phase_uplink}[args.phase]
        print(json.dumps(asyncio.run(fn(args))))
        return

    args.prefix = f"bench-{uuid.uuid4().hex[:8]}"
    rounds: list[tuple[dict[str, float], dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="meshd-bench-uplink-") as tmp:
        args.dir = Path(tmp)
        asyncio.run(subscriber_session(args, create=True))
        try:
            gen = run_phase("gen", args)
            pristine = args.dir / "generated"
            pristine.mkdir()
            for part in args.dir.glob("hub.db*"):  # the database and any WAL it left
                shutil.copyfile(part, pristine / part.name)
            for index in range(args.rounds):
                result: dict[str, dict[str, float]] = {}
                for phase in ("bare", "uplink") if index % 2 == 0 else ("uplink", "bare"):
                    if phase == "uplink":
                        for leftover in args.dir.glob("hub.db*"):
                            leftover.unlink()
                        for part in pristine.iterdir():
                            shutil.copyfile(part, args.dir / part.name)
                    result[phase] = run_phase(phase, args)
                rounds.append((result["bare"], result["uplink"]))
        finally:
            asyncio.run(subscriber_session(args, create=False))
    print(
        f"uplink flush: {args.n} reports in {gen['envelopes']:.0f} envelopes (batch {args.batch}), "
        f"QoS 1, window {args.inflight}, local Mosquitto :{args.port}, {args.rounds} rounds"
    )
    print(f"{'round':<7}{'loop':<8}{'messages':>10}{'seconds':>10}{'msgs/s':>10}{'peak RSS MB':>13}{'ratio':>8}")
    for index, (bare, uplink) in enumerate(rounds, 1):
        for name, row in (("bare", bare), ("uplink", uplink)):
            ratio = f"{uplink['msgs_per_s'] / bare['msgs_per_s']:.2f}" if name == "uplink" else ""
            print(
                f"{index:<7}{name:<8}{row['messages']:>10.0f}{row['seconds']:>10.2f}{row['msgs_per_s']:>10.0f}"
                f"{row['peak_rss_mb']:>13.1f}{ratio:>8}"
            )
    ratios = [uplink["msgs_per_s"] / bare["msgs_per_s"] for bare, uplink in rounds]
    median_round = rounds[sorted(range(len(rounds)), key=ratios.__getitem__)[len(rounds) // 2]]
    bare, uplink = median_round
    peak = max(u["peak_rss_mb"] for _, u in rounds)
    left = max(u["outbox_left"] for _, u in rounds)
    print(
        f"uplink RSS before the flush: {uplink['rss_before_flush_mb']:.1f} MB; outbox left: {left:.0f}; "
        f"ratios {', '.join(f'{r:.2f}' for r in ratios)}; target ratio >= 0.8, RSS <= 64 MB"
    )
    print(
        f"RESULT uplink_msgs_per_s={uplink['msgs_per_s']:.0f} bare_msgs_per_s={bare['msgs_per_s']:.0f} "
        f"ratio={statistics.median(ratios):.2f} peak_rss_mb={peak:.1f}"
    )


if __name__ == "__main__":
    main()
