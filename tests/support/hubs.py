"""Build a network of real hubs (real keys, registry, SQLite stores, relays) for tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.config import HubConfig, HubSection, RadioSection, RelaySection
from meshd.daemon.hub import Hub
from meshd.radio.api import Radio
from meshd.relay.relay import RelayTiming
from meshd.wire import codec
from meshd.wire.envelope import Envelope
from meshd.wire.registry import Camp, Registry

FAST_TIMING = RelayTiming(
    custody_ack_delay_s=1.0,
    custody_timeout_s=15.0,
    beacon_interval_s=600.0,
    beacon_min_gap_s=5.0,
    notice_interval_s=20.0,
    batch_wait_s=2.0,
    maintenance_s=120.0,
)


@dataclass
class Provisioned:
    root: Path
    hq: keyfiles.KeyPairs
    registry: Registry
    registry_path: Path
    camps: dict[int, Path] = field(default_factory=dict)

    def config(self, camp: int, **relay: float) -> HubConfig:
        return HubConfig(
            hub=HubSection(
                camp_id=camp,
                keys=self.camps[camp],
                registry=self.registry_path,
                store=self.root / f"camp{camp}.db",
            ),
            radio=RadioSection(device="tcp://127.0.0.1:1", preset="LONG_FAST"),
            relay=replace(RelaySection(), **relay),  # type: ignore[arg-type]
        )


def provision(root: Path, camps: list[int]) -> Provisioned:
    hq = keyfiles.generate(root / "hq")
    registry = Registry(hq.sign_public, hq.seal_public)
    dirs = {}
    for camp in camps:
        pair = keyfiles.generate(root / f"keys{camp}", camp)
        registry = registry.with_camp(Camp(camp, f"Camp {camp}", pair.sign_public))
        dirs[camp] = root / f"keys{camp}"
    registry = registry.signed(hq.sign)
    path = root / "registry.json"
    path.write_bytes(registry.to_json_bytes())
    return Provisioned(root, hq, registry, path, dirs)


class FakeUplink:
    """Stands in for the MQTT bridge: 'publishes' outbox entries and records what HQ got."""

    def __init__(self, hub: Hub, received: Counter[str]) -> None:
        self.hub = hub
        self.received = received
        self.connected = True
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            store = self.hub.store
            if self.connected and store is not None:
                for entry in await store.pending(unpublished_only=True, limit=100):
                    reports = codec.unbatch(Envelope.from_bytes(entry.envelope))
                    for report in reports:
                        self.received[report.id] += 1
                    await store.mark_delivered([(r.origin, r.seq) for r in reports], published=True)
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(hubs: list[Hub]):
    tasks = [asyncio.create_task(h.run()) for h in hubs]
    try:
        while not all(h.relay is not None for h in hubs):
            for t in tasks:
                if t.done():
                    t.result()
            await asyncio.sleep(0.005)
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def make_hub(
    p: Provisioned, camp: int, radio: Radio, clock: Clock, timing: RelayTiming = FAST_TIMING, **relay: float
) -> Hub:
    # the status socket is exercised by tests/test_status.py, which runs its own StatusServer
    return Hub(p.config(camp, **relay), clock=clock, radio=radio, timing=timing, serve_status=False)
