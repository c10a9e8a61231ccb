"""Footprint of one hub on a Raspberry Pi-like budget: memory, idle CPU, SD-card writes, start time.

    python bench/footprint.py [--quick] [--backlog N] [--dir DIR]

The hub runs in a child process: the real `Hub` (store, relay, status socket) with its radio replaced by
an in-memory FakeRadio (tests/support/fakemesh.py), since no hardware is attached here and a virtual
radio's own process would not count anyway. The child imports what `meshd run` imports with a serial
radio and an MQTT uplink configured (meshd.radio.link, meshd.uplink.bridge), so its memory is that of the
real daemon. The hub tells us READY=1 over a real NOTIFY_SOCKET, as under systemd, once it serves its
status socket.

Measured from /proc/PID of the child (all its threads):
  start_to_ready   process start -> READY=1 (imports, store open + integrity check + migration, keys)
  rss              VmRSS after settling, and after a `meshd status` query
  cpu idle         (utime + stime) over the idle window, % of one core
  disk idle        write_bytes (bytes the process caused to be written to storage; the file system's
                   own journal is not included) over the idle window, per hour; the full run covers two
                   of the relay's 5-minute maintenance cycles (expiry, pruning, the "alive" mark)
  disk per 1000    write_bytes for 1000 reports relayed from another hub over the radio (verify, dedup,
                   store, custody notice), and for 1000 field reports originated here, each including a
                   WAL checkpoint of what they wrote
Then the same hub is started on a store holding a backlog of N undelivered reports (default 100,000).
Targets (issue 7): RSS <= 64 MB, idle CPU <= 2 % of a core, idle writes <= 1 MB/h.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HUB_CAMP, NEIGHBOUR_CAMP = 1, 2
HUB_NODE, NEIGHBOUR_NODE = 0x1000, 0x2000
CLK_TCK = os.sysconf("SC_CLK_TCK")
NEEDS: dict[str, object] = {"population": {"individuals": 1200, "households": 300}, "severity": {"water": 4, "food": 3}}


# ------------------------------------------------------------------------------------------ /proc readers


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def written(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


# ------------------------------------------------------------------------------------------ the child


async def child(directory: Path) -> None:
    # Loaded by `meshd run` with a serial or TCP radio and with an uplink configured: count their memory.
    importlib.import_module("meshd.radio.link")
    importlib.import_module("meshd.uplink.bridge")
    from meshd.config import HubConfig, HubSection, RadioSection
    from meshd.daemon.hub import Hub
    from meshd.keys import load as load_keys
    from meshd.radio.api import ReceivedPacket
    from meshd.wire import codec
    from meshd.wire.envelope import Envelope, Kind, sign
    from tests.support.fakemesh import FakeMesh

    config = HubConfig(
        hub=HubSection(
            camp_id=HUB_CAMP,
            keys=directory / f"keys{HUB_CAMP}",
            registry=directory / "registry.json",
            store=directory / "hub.db",
        ),
        radio=RadioSection(device="tcp://127.0.0.1:1"),
    )
    mesh = FakeMesh()
    radio = mesh.radio(HUB_NODE)  # no links: what the hub sends goes nowhere
    started = asyncio.Event()
    hub = Hub(config, radio=radio, on_ready=lambda _hub: started.set())
    neighbour = load_keys(directory / f"keys{NEIGHBOUR_CAMP}")
    body = codec.encode_body(Kind.NEEDS, NEEDS, NEIGHBOUR_CAMP)
    next_seq = [1]

    async def relay_in(n: int) -> None:
        assert hub.relay is not None
        before = hub.relay.counters["accepted"]
        for _ in range(n):
            env = sign(Envelope(NEIGHBOUR_CAMP, next_seq[0], Kind.NEEDS, body), neighbour.sign)
            next_seq[0] += 1
            radio.deliver(ReceivedPacket(NEIGHBOUR_NODE, HUB_NODE, next_seq[0], 256, env.to_bytes()))
        while hub.relay.counters["accepted"] < before + n:  # noqa: ASYNC110 - a counter of the relay
            await asyncio.sleep(0.05)

    async def originate(n: int) -> None:
        assert hub.relay is not None
        relay = hub.relay
        await asyncio.gather(*(relay.originate(Kind.NEEDS, NEEDS, inbound=(0xA1B2C3D4, "en", True)) for _ in range(n)))

    async def checkpoint() -> None:
        assert hub.store is not None
        await asyncio.sleep(3.0)  # let custody notices and batching settle
        await hub.store.db.read(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    run = asyncio.create_task(hub.run())  # sends READY=1 itself (meshd.daemon.sdnotify), as under systemd
    await started.wait()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:  # the hub serves its status socket itself (Hub.run), before READY
        while line := (await reader.readline()).decode().split():
            command, n = line[0], int(line[1]) if len(line) > 1 else 0
            if command == "relay":
                await relay_in(n)
                await checkpoint()
            elif command == "originate":
                await originate(n)
                await checkpoint()
            print("ok", flush=True)
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


# ------------------------------------------------------------------------------------------ the parent


class HubProcess:
    """A child process running the hub, and the measurements taken on it."""

    def __init__(self, directory: Path, tag: str) -> None:
        self.directory = directory
        self.notify = directory / f"notify-{tag}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.notify))
        self.log = (directory / f"child-{tag}.log").open("w")
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify), "PYTHONPATH": str(ROOT)}
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            text=True,
            cwd=ROOT,
        )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 300.0) -> float:
        self.sock.settimeout(timeout)
        while True:
            message = self.sock.recv(4096)
            if b"READY=1" in message.split(b"\n"):
                return time.monotonic() - self.t0

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"child answered {answer!r} to {text!r}; see {self.log.name}")

    def window(self, seconds: float) -> dict[str, float]:
        """CPU % and bytes written over `seconds` of doing nothing."""
        cpu0, disk0, t0 = cpu_s(self.pid), written(self.pid), time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        return {
            "cpu_pct": 100.0 * (cpu_s(self.pid) - cpu0) / elapsed,
            "disk_mb_per_h": (written(self.pid) - disk0) / 1e6 * 3600.0 / elapsed,
            "seconds": elapsed,
        }

    def disk_for(self, text: str) -> float:
        before = written(self.pid)
        self.command(text)
        return (written(self.pid) - before) / 1e6

    def status(self) -> None:
        from meshd.cli.status import query

        doc = query(self.directory / "hub.sock")
        assert doc["radio"]["state"] == "ready", doc

    def stop(self) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        if code != 0:
            raise RuntimeError(f"child exited with {code}; see {self.log.name}")
        self.sock.close()
        self.log.close()
        return time.monotonic() - t0


def provision(directory: Path) -> None:
    from tests.support.hubs import provision as make

    p = make(directory, [HUB_CAMP, NEIGHBOUR_CAMP])
    assert p.registry_path == directory / "registry.json"


async def fill_backlog(directory: Path, n: int) -> float:
    """n undelivered field reports from this hub, signed one per envelope, as the store of a hub whose uplink
    has been down for weeks would hold them."""
    from meshd.keys import load as load_keys
    from meshd.store.hub import HubStore
    from meshd.wire import codec
    from meshd.wire.envelope import Envelope, Kind, sign

    keys = load_keys(directory / f"keys{HUB_CAMP}")
    body = codec.encode_body(Kind.NEEDS, NEEDS, HUB_CAMP)
    t0 = time.monotonic()
    async with HubStore(directory / "hub.db") as store:

        async def one() -> None:
            def build(seq: int) -> Envelope:
                return sign(Envelope(HUB_CAMP, seq, Kind.NEEDS, body), keys.sign)

            await store.originate(HUB_CAMP, build, priority=20)

        for start in range(0, n, 1000):
            await asyncio.gather(*(one() for _ in range(min(1000, n - start))))
    return time.monotonic() - t0


def run(args: argparse.Namespace) -> int:
    quick = args.quick or args.smoke
    backlog = args.backlog if args.backlog is not None else (500 if args.smoke else 10_000 if quick else 100_000)
    settle_s, cpu_window_s = (0.5, 2.0) if args.smoke else (3.0, 20.0) if quick else (10.0, 60.0)
    disk_window_s = 2.0 if args.smoke else 20.0 if quick else 610.0
    base = Path(tempfile.mkdtemp(prefix="meshd-footprint-", dir=args.dir))
    rows: list[tuple[str, str, str]] = []
    result: dict[str, float] = {}
    try:
        fresh = base / "fresh"
        fresh.mkdir()
        provision(fresh)
        print(f"idle hub on an empty store ({'quick' if quick else 'full'} run, {disk_window_s:.0f} s idle window)")
        hub = HubProcess(fresh, "fresh")
        result["start_to_ready_s"] = hub.wait_ready()
        time.sleep(settle_s)
        result["rss_idle_mb"], _ = rss_mb(hub.pid)
        idle = hub.window(disk_window_s)
        # CPU over the first minute separately (the definition), in the full run
        result["cpu_idle_pct"] = idle["cpu_pct"] if quick else hub.window(cpu_window_s)["cpu_pct"]
        result["disk_idle_mb_per_h"] = idle["disk_mb_per_h"]
        relayed = hub.disk_for("relay 1000")
        originated = hub.disk_for("originate 1000")
        result["disk_per_1000_reports_mb"] = max(relayed, originated)
        hub.status()
        rss_after, hwm = rss_mb(hub.pid)
        stop_s = hub.stop()
        rows += [
            ("start to READY (empty store)", f"{result['start_to_ready_s']:.2f} s", ""),
            ("RSS idle", f"{result['rss_idle_mb']:.1f} MB", "<= 64 MB"),
            ("RSS after 2000 reports + status query", f"{rss_after:.1f} MB (peak {hwm:.1f})", "<= 64 MB"),
            (f"CPU idle ({'20' if quick else '60'} s)", f"{result['cpu_idle_pct']:.2f} % of a core", "<= 2 %"),
            *(
                []
                if quick
                else [(f"CPU idle ({idle['seconds']:.0f} s)", f"{idle['cpu_pct']:.2f} % of a core", "<= 2 %")]
            ),
            (
                f"disk idle ({idle['seconds']:.0f} s window)",
                f"{result['disk_idle_mb_per_h']:.3f} MB/h",
                "<= 1 MB/h" + (" (quick: misses the 5-min maintenance)" if quick else ""),
            ),
            ("disk per 1000 relayed reports", f"{relayed:.2f} MB", ""),
            ("disk per 1000 field reports", f"{originated:.2f} MB", ""),
            ("SIGTERM to exit", f"{stop_s:.2f} s", ""),
        ]

        loaded = base / "backlog"
        loaded.mkdir()
        for item in fresh.iterdir():
            if item.name.startswith("keys") or item.name == "registry.json":
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, loaded / item.name)
        print(f"filling a backlog of {backlog:,} reports ...")
        fill_s = asyncio.run(fill_backlog(loaded, backlog))
        db_mb = (loaded / "hub.db").stat().st_size / 1e6
        print(f"idle hub on a store with {backlog:,} undelivered reports ({db_mb:.0f} MB)")
        hub = HubProcess(loaded, "backlog")
        ready_backlog = hub.wait_ready()
        time.sleep(settle_s)
        hub.status()  # queue depth over the whole backlog
        result["rss_backlog_mb"], hwm_backlog = rss_mb(hub.pid)
        busy = hub.window(cpu_window_s)
        hub.stop()
        rows += [
            (f"backlog fill ({backlog:,} signed reports)", f"{fill_s:.1f} s, store {db_mb:.1f} MB", ""),
            ("start to READY (backlog)", f"{ready_backlog:.2f} s", ""),
            (
                "RSS with backlog, after status",
                f"{result['rss_backlog_mb']:.1f} MB (peak {hwm_backlog:.1f})",
                "<= 64 MB",
            ),
            (f"CPU idle with backlog ({busy['seconds']:.0f} s)", f"{busy['cpu_pct']:.2f} % of a core", "<= 2 %"),
            (f"disk idle with backlog ({busy['seconds']:.0f} s)", f"{busy['disk_mb_per_h']:.3f} MB/h", ""),
        ]
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'measure':<{width}}  {'value':<28} target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<28} {target}")
    print(
        f"RESULT rss_idle_mb={result['rss_idle_mb']:.1f} rss_backlog_mb={result['rss_backlog_mb']:.1f} "
        f"cpu_idle_pct={result['cpu_idle_pct']:.2f} disk_idle_mb_per_h={result['disk_idle_mb_per_h']:.3f} "
        f"disk_per_1000_reports_mb={result['disk_per_1000_reports_mb']:.2f} "
        f"start_to_ready_s={result['start_to_ready_s']:.2f}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows and a 10,000-report backlog (~1 min)")
    parser.add_argument("--smoke", action="store_true", help="seconds-long windows: only checks the bench still runs")
    parser.add_argument("--backlog", type=int, default=None, help="reports in the backlog store (default 100,000)")
    parser.add_argument("--dir", default="/var/tmp", help="where the stores go: a disk, not tmpfs (default /var/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the stores and child logs")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(child(args.child))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
