"""RadioLink over a real pty through pyserial-asyncio-fast, including the device vanishing and returning."""

from __future__ import annotations

import asyncio
import os
import random
import termios
import time
from pathlib import Path

from meshd.radio.api import LinkState
from meshd.radio.backoff import Backoff
from meshd.radio.link import RadioLink
from meshd.radio.transport import _open_serial_port
from tests.radio_fake import MY_NODE, FakePtyDevice, assert_no_tasks_left, packet_frame, until


def test_open_clears_hupcl_so_closing_does_not_reset_the_board() -> None:
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[2] |= termios.HUPCL
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        port = _open_serial_port(os.ttyname(slave))
        try:
            assert not termios.tcgetattr(port.fd)[2] & termios.HUPCL
            assert port.baudrate == 115200
            assert not port.dsrdtr
            assert not port.rtscts
        finally:
            port.close()
    finally:
        os.close(master)
        os.close(slave)


async def test_serial_link_survives_the_device_disappearing(tmp_path: Path) -> None:
    device = FakePtyDevice(tmp_path / "radio")
    device.open()
    try:
        async with RadioLink(device.url, heartbeat_s=5.0, backoff=Backoff(rng=random.Random(2))) as link:
            async with asyncio.timeout(5):
                await link.wait_ready()
            assert link.my_node == MY_NODE
            first = await asyncio.wait_for(link.send(b"before"), 5)

            device.push(packet_frame(b"inbound over serial"))
            async with asyncio.timeout(5):
                while True:
                    event = await link.next_event()
                    if getattr(event, "payload", None) == b"inbound over serial":
                        break

            device.close()  # USB unplugged: the pty and its path are gone
            await until(lambda: link.state is not LinkState.READY)
            pending = asyncio.create_task(link.send(b"while unplugged"))
            await asyncio.sleep(0.8)
            assert not pending.done()

            device.open()  # plugged back in: a new pty behind the same path
            returned = time.monotonic()
            async with asyncio.timeout(3.0):
                await link.wait_ready()
            assert time.monotonic() - returned <= 3.0
            second = await asyncio.wait_for(pending, 3)
            payloads = {p.id: p.decoded.payload for p in device.device.packets}
            assert payloads == {first: b"before", second: b"while unplugged"}
            assert link.metrics.reconnects == 1
    finally:
        device.close()
    await assert_no_tasks_left()
