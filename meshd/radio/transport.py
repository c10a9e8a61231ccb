"""Where the radio is and how to open a byte stream to it: USB serial or TCP (meshtasticd, WiFi boards).

Accepted device URLs:
  /dev/ttyACM0, /dev/serial/by-id/...   serial (any absolute path, e.g. a udev symlink or a simulator pty)
  serial:///dev/ttyACM0                 the same, spelled as a URL
  tcp://host, tcp://host:4403, tcp://[::1]:4403   the stream API over TCP (default port 4403)

Both give an asyncio (StreamReader, StreamWriter) pair, so the link above never knows which it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import termios
import urllib.parse
from dataclasses import dataclass
from typing import Literal

import serial
import serial_asyncio_fast

from meshd.errors import RadioError

log = logging.getLogger(__name__)

DEFAULT_TCP_PORT = 4403
SERIAL_BAUD = 115200
_READ_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    kind: Literal["serial", "tcp"]
    path: str = ""  # serial device path
    host: str = ""
    port: int = DEFAULT_TCP_PORT

    def __str__(self) -> str:
        if self.kind == "serial":
            return self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_device_url(url: str) -> DeviceAddress:
    """Parse a radio location; a `RadioError` names what is wrong with a bad one."""
    text = url.strip()
    if not text:
        raise RadioError("radio device URL is empty (expected /dev/ttyACM0, serial:///dev/... or tcp://host:4403)")
    if text.startswith("/"):
        return DeviceAddress("serial", path=text)
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise RadioError(f"radio device URL {url!r} must not have a query or fragment")
    if scheme == "serial":
        if parts.netloc or not parts.path.startswith("/"):
            raise RadioError(f"serial radio URL {url!r} needs an absolute path: serial:///dev/ttyACM0")
        return DeviceAddress("serial", path=parts.path)
    if scheme == "tcp":
        try:
            host = parts.hostname
            port = parts.port
        except ValueError as exc:  # a port that is not a number or out of range
            raise RadioError(f"radio device URL {url!r} has a bad port: {exc}") from None
        if not host:
            raise RadioError(f"TCP radio URL {url!r} needs a host: tcp://192.168.1.20:4403")
        if parts.path not in ("", "/") or parts.username or parts.password:
            raise RadioError(f"TCP radio URL {url!r} takes only a host and a port")
        if port == 0:
            raise RadioError(f"TCP radio URL {url!r} has port 0")
        return DeviceAddress("tcp", host=host, port=port or DEFAULT_TCP_PORT)
    raise RadioError(f"radio device {url!r} is neither a device path, serial:///path nor tcp://host[:port]")


async def open_device(
    address: DeviceAddress, *, timeout_s: float = 10.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the byte stream; any failure is a `RadioError` (the link backs off and retries)."""
    try:
        async with asyncio.timeout(timeout_s):
            if address.kind == "tcp":
                return await _open_tcp(address)
            return await _open_serial(address.path)
    except TimeoutError:
        raise RadioError(f"opening {address} timed out after {timeout_s:g} s") from None
    except (OSError, serial.SerialException, ValueError) as exc:  # pyserial: ValueError for odd ports
        raise RadioError(f"cannot open {address}: {exc}") from exc


async def _open_tcp(address: DeviceAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(address.host, address.port, limit=_READ_LIMIT)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # Frames are small and latency matters more than packing; keepalive notices a dead peer
        # even when we are quiet between heartbeats.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return reader, writer


async def _open_serial(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = _open_serial_port(path)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_READ_LIMIT, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await serial_asyncio_fast.connection_for_serial(loop, lambda: protocol, port)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


def _open_serial_port(path: str) -> serial.Serial:
    """Open the port without resetting the board.

    ESP32 boards wire DTR/RTS to EN/IO0 and reset when the lines change; nRF52/ESP32-S3 native USB
    reacts to them too. Like the meshtastic library we leave the lines where the kernel put them on
    open (pyserial re-asserts both, which is no change: no edge), use no hardware flow control, and
    clear HUPCL so that *closing* the port (our reconnects, a daemon restart) does not drop DTR/RTS and
    reboot the radio. The open itself is non-blocking (O_NONBLOCK), so it is done inline, no thread.
    """
    port = serial.Serial()
    port.port = path
    port.baudrate = SERIAL_BAUD
    port.dsrdtr = False
    port.rtscts = False
    port.xonxoff = False
    port.exclusive = True  # a second meshd (or the meshtastic CLI) must not interleave frames with us
    port.open()
    try:
        attrs = termios.tcgetattr(port.fd)
        attrs[2] &= ~termios.HUPCL
        termios.tcsetattr(port.fd, termios.TCSANOW, attrs)
    except termios.error as exc:
        log.debug("could not clear HUPCL on %s: %s", path, exc)
    return port


async def close_stream(writer: asyncio.StreamWriter, *, timeout_s: float = 2.0) -> None:
    """Close without waiting on a device that no longer answers (a serial flush can block forever)."""
    if not writer.transport.is_closing():
        writer.transport.abort()
    with contextlib.suppress(OSError, TimeoutError, serial.SerialException):
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
