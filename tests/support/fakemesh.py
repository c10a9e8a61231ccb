"""An in-memory radio network for relay unit tests: per-link loss, tiny delays, no airtime.

The simulator (meshd.radio.sim) is the real path; this fake keeps the relay's logic tests fast and exact.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from meshd.radio.api import BROADCAST, LinkState, LinkStateChanged, Priority, RadioEvent, ReceivedPacket


class FakeMesh:
    def __init__(self, seed: int = 1, delay_s: float = 0.001, clock: object = None) -> None:
        self.clock = clock
        self.radios: dict[int, FakeRadio] = {}
        self.loss: dict[tuple[int, int], float] = {}
        self.rng = random.Random(seed)
        self.delay_s = delay_s
        self.on_air: list[tuple[int, int, bytes]] = []
        self.on_air_at: list[float] = []  # scenario time of each frame (when a clock is given)
        self.sent_by: Counter[int] = Counter()

    def radio(self, node: int) -> FakeRadio:
        radio = FakeRadio(self, node)
        self.radios[node] = radio
        return radio

    def link(self, a: int, b: int, loss: float = 0.0) -> None:
        self.loss[(a, b)] = loss
        self.loss[(b, a)] = loss

    def transmit(self, sender: int, to: int, payload: bytes, portnum: int, hop_limit: int) -> int:
        """Put a frame on the air; returns its packet id, which every receiver sees (as on a real mesh)."""
        packet_id = self.rng.getrandbits(32) or 1
        self.on_air.append((sender, to, payload))
        now = getattr(self.clock, "now", None)
        self.on_air_at.append(now() if callable(now) else 0.0)
        self.sent_by[sender] += 1
        for (a, b), loss in self.loss.items():
            if a != sender:
                continue
            if to not in (BROADCAST, b):
                continue
            target = self.radios.get(b)
            if target is None or not target.up or self.rng.random() < loss:
                continue
            packet = ReceivedPacket(
                from_node=sender,
                to_node=to,
                packet_id=packet_id,
                portnum=portnum,
                payload=payload,
                hop_start=hop_limit,
                hop_limit=hop_limit,
            )
            asyncio.get_running_loop().call_later(self.delay_s, target.deliver, packet)
        return packet_id


class FakeRadio:
    def __init__(self, mesh: FakeMesh, node: int) -> None:
        self.mesh = mesh
        self.node = node
        self.up = True
        self.events: asyncio.Queue[RadioEvent] = asyncio.Queue()
        self.events.put_nowait(LinkStateChanged(LinkState.READY))
        self.sent: list[tuple[int, bytes, Priority]] = []
        self.sent_ids: list[int] = []  # the packet id of each frame in `sent`

    @property
    def state(self) -> LinkState:
        return LinkState.READY if self.up else LinkState.DISCONNECTED

    @property
    def my_node(self) -> int | None:
        return self.node

    def deliver(self, packet: ReceivedPacket) -> None:
        if self.up:
            self.events.put_nowait(packet)

    async def send(
        self,
        payload: bytes,
        *,
        to: int = BROADCAST,
        portnum: int = 256,
        hop_limit: int | None = None,
        want_ack: bool = False,
        priority: Priority = Priority.DEFAULT,
        pki: bool = False,
        channel: int = 0,
    ) -> int:
        del want_ack, pki, channel
        self.sent.append((to, payload, priority))
        self.sent_ids.append(self.mesh.transmit(self.node, to, payload, portnum, hop_limit or 0))
        return self.sent_ids[-1]

    async def send_text(self, text: str, *, to: int, want_ack: bool = True, channel: int = 0) -> int:
        return await self.send(text.encode(), to=to, portnum=1)

    async def next_event(self) -> RadioEvent:
        return await self.events.get()
