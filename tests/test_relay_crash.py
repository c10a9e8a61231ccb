"""kill -9 of a middle hub (a real `meshd run` subprocess on a simulated radio), 10 times, mid-flow:
nothing acknowledged is lost and no sequence number is reused after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import signal
import sys
from collections import Counter
from pathlib import Path

from meshd.clock import Clock
from meshd.config import HubConfig
from meshd.daemon.hub import Hub
from meshd.radio.sim import SimNetwork, line_topology
from meshd.wire.envelope import Kind
from tests.support.hubs import FakeUplink, provision, running
from tests.test_relay_line import needs, wait_for

SPEEDUP = 20.0
TIMING = {
    "speedup": SPEEDUP,
    "custody_ack_delay_s": 1.0,
    "custody_timeout_s": 15.0,
    "beacon_interval_s": 300.0,
    "beacon_min_gap_s": 5.0,
    "notice_interval_s": 20.0,
    "batch_wait_s": 2.0,
}


def hub_toml(config: HubConfig, port: int) -> str:
    timing = "\n".join(f"{k} = {float(v)}" for k, v in TIMING.items())
    return f"""
[hub]
camp_id = {config.hub.camp_id}
keys = "{config.hub.keys}"
registry = "{config.hub.registry}"
store = "{config.hub.store}"

[radio]
device = "tcp://127.0.0.1:{port}"

[relay]
duty_cycle_pct = 100.0

[timing]
{timing}
"""


async def start_hub_process(config_path: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshd.cli.main", "run", "-c", str(config_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"),
    )  # fmt: skip


async def meshd_send(config_path: Path, body: str) -> str | None:
    """`meshd send` against the middle hub's store; returns the id it acknowledged, or None."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshd.cli.main", "send", "needs", "--json", "-", "-c", str(config_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate(body.encode())
    if proc.returncode != 0:
        return None
    line = out.decode().strip()
    assert line.startswith("queued #"), (line, err)
    return line.split("#")[1].split()[0]


async def test_kill_9_middle_hub_ten_times_loses_nothing_acknowledged(tmp_path):
    p = provision(tmp_path, [1, 2, 3])
    rng = random.Random(11)
    received: Counter[str] = Counter()
    async with SimNetwork(line_topology(3, name="crash"), speedup=SPEEDUP, seed=5, pty=False) as net:
        ports = [r.tcp_port for r in net.radios]
        clock = Clock(SPEEDUP)

        def config_for(camp: int) -> HubConfig:
            base = p.config(camp, duty_cycle_pct=100.0)
            timing = dataclasses.replace(base.timing, **TIMING)
            radio = dataclasses.replace(base.radio, device=f"tcp://127.0.0.1:{ports[camp - 1]}")
            return dataclasses.replace(base, radio=radio, timing=timing)

        middle = tmp_path / "middle.toml"
        assert ports[1] is not None
        middle.write_text(hub_toml(p.config(2), ports[1]))
        log = tmp_path / "middle.log"
        a = Hub(config_for(1), clock=clock)
        c = Hub(config_for(3), clock=clock)
        uplink = FakeUplink(c, received)
        c.uplink = uplink
        acknowledged: list[str] = []
        proc = await start_hub_process(middle, log)
        async with running([a, c]):
            up = asyncio.create_task(uplink.run())
            try:
                for round_ in range(10):
                    for i in range(5):
                        env = await a.relay.originate(Kind.NEEDS, needs(round_ * 10 + i))  # type: ignore[union-attr]
                        acknowledged.append(env.id)
                    sent = await meshd_send(middle, f'{{"severity": {{"water": {round_ % 6}}}}}')
                    if sent is not None:
                        acknowledged.append(sent)
                    await asyncio.sleep(rng.uniform(0.3, 1.5))
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                    # the middle hub is down: its store still takes reports through `meshd send`
                    sent = await meshd_send(middle, '{"severity": {"food": 2}}')
                    if sent is not None:
                        acknowledged.append(sent)
                    proc = await start_hub_process(middle, log)
                await wait_for(lambda: set(acknowledged) <= set(received), limit_s=120)
            finally:
                up.cancel()
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10)
    assert len(acknowledged) == len(set(acknowledged)), "a sequence number was reused"
    middle_ids = [i for i in acknowledged if i.startswith("2:")]
    assert len(middle_ids) == 20
    assert all(received[i] == 1 for i in acknowledged), "each acknowledged report reaches the uplink exactly once"
    assert proc.returncode in {0, -signal.SIGTERM}, log.read_text()[-2000:]
