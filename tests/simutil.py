"""Helpers for the simulator tests: drive the blocking `meshtastic` library from threads."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pubsub import pub


class Collector:
    """A pubsub listener held by a strong reference (pypubsub keeps only weak ones) that keeps the
    packets one interface publishes."""

    def __init__(self, iface: Any, topic: str = "meshtastic.receive") -> None:
        self.iface = iface
        self.topic = topic
        self.packets: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        pub.subscribe(self.on_receive, topic)

    def on_receive(self, packet: dict[str, Any], interface: Any) -> None:
        if interface is self.iface:
            with self._lock:
                self.packets.append(packet)

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self.packets if predicate(p)]

    def close(self) -> None:
        pub.unsubscribe(self.on_receive, self.topic)


async def eventually(predicate: Callable[[], object], within: float = 10.0, poll: float = 0.02) -> bool:
    """Poll `predicate` until it is truthy or `within` real seconds have passed."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


def tcp_interface(port: int | None) -> Any:
    from meshtastic.tcp_interface import TCPInterface

    assert port is not None
    return TCPInterface("127.0.0.1", portNumber=port, timeout=20)


def serial_interface(path: str | None) -> Any:
    from meshtastic.serial_interface import SerialInterface

    assert path is not None
    return SerialInterface(path, timeout=20)


def path_exists(path: str) -> bool:
    return os.path.lexists(path)


def is_link(path: str) -> bool:
    return os.path.islink(path)
