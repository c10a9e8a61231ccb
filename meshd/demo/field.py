"""Scripted field teams: the real `meshtastic` library on virtual handset radios, as a phone app would be.

The library is threaded and blocking; each team's calls run in a worker thread, so the demo's event loop
(hubs, simulator, HQ) keeps running. Listeners are strong references: pypubsub only keeps weak ones.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from meshd.aio import wait_event

RECEIPT = re.compile(r"(?:received|접수) #(\d+:\d+)")

# (handset, message): English and Korean, both vocabularies, one protection report, one mistake.
SCRIPT: tuple[tuple[str, str], ...] = (
    ("c1-hs1", "N W4 F3 S2 C3 M4 H3 P12500 K14"),
    ("c2-hs1", "필요 물4 식량3 천막2 인원8300 아이6"),
    ("c3-hs1", "A CHOLERA 3"),
    ("c4-hs1", "N W3 F2 P5400"),
    ("c5-hs1", "필요 량식4 위생실3 인원2900"),
    ("c6-hs1", "경보 화재"),
    ("c1-hs1", "A CHILD near north gate"),
    ("c2-hs1", "P! woman in tent row B threatened by guard at night, needs female officer"),
    ("c3-hs1", "필요 물5 의료4 설사23 사망1"),
    ("c4-hs1", "N W9 F3"),  # deliberately wrong: severity 9 gets an error reply
    ("c5-hs1", "A COLD 40"),
    ("c6-hs1", "N W2 F4 M5 H4 P4100 K3"),
    ("c1-hs1", "경보 콜레라 2"),
    ("c4-hs1", "N W4 F3"),  # the corrected report
    ("c2-hs1", "A DIST rice at school 14:00"),
    ("c3-hs1", "N S4 C5 P7100"),
)


@dataclass
class Reply:
    at: float
    text: str


@dataclass
class FieldTeam:
    handset: str
    port: int
    hub_node: int
    iface: Any = None
    replies: list[Reply] = field(default_factory=list)
    sent: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self) -> None:
        from meshtastic.tcp_interface import TCPInterface  # noqa: PLC0415 - only the demo needs the library
        from pubsub import pub  # noqa: PLC0415

        self.iface = TCPInterface("127.0.0.1", portNumber=self.port, timeout=30)
        pub.subscribe(self.on_text, "meshtastic.receive.text")

    def on_text(self, packet: dict[str, Any], interface: Any) -> None:
        if interface is self.iface and packet.get("from") == self.hub_node:
            with self._lock:
                self.replies.append(Reply(time.monotonic(), str(packet.get("decoded", {}).get("text", ""))))

    def send(self, text: str) -> None:
        from meshtastic.protobuf import portnums_pb2  # noqa: PLC0415

        # Firmware >= 2.5 encrypts a DM with PKI when it knows the hub's key, as every handset here does.
        self.iface.sendData(
            text.encode("utf-8"),
            destinationId=self.hub_node,
            portNum=portnums_pb2.PortNum.TEXT_MESSAGE_APP,
            wantAck=True,
            pkiEncrypted=True,
        )
        with self._lock:
            self.sent.append((time.monotonic(), text))

    def receipts(self) -> dict[str, float]:
        """Report id -> when the hub confirmed it was stored."""
        with self._lock:
            out: dict[str, float] = {}
            for reply in self.replies:
                match = RECEIPT.search(reply.text)
                if match:
                    out.setdefault(match.group(1), reply.at)
            return out

    def error_replies(self) -> list[str]:
        with self._lock:
            return [r.text for r in self.replies if "?" in r.text and not RECEIPT.search(r.text)]

    def close(self) -> None:
        from pubsub import pub  # noqa: PLC0415

        pub.unsubscribe(self.on_text, "meshtastic.receive.text")
        if self.iface is not None:
            self.iface.close()


async def run_script(teams: dict[str, FieldTeam], window_s: float, stop: asyncio.Event) -> int:
    """Send the script spread over `window_s` real seconds; returns how many messages went out."""
    gap = max(window_s / len(SCRIPT), 2.5)  # the firmware accepts one text per 2 s from a client
    sent = 0
    for handset, text in SCRIPT:
        if stop.is_set():
            break
        team = teams.get(handset)
        if team is None:
            continue
        await asyncio.to_thread(team.send, text)
        sent += 1
        await wait_event(stop, gap)
    return sent
