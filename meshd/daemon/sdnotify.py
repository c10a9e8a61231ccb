"""A tiny sd_notify(3) client: tell systemd we are ready, alive, what we are doing, and that we stop.

The protocol is one AF_UNIX datagram of newline-separated `KEY=value` lines to the socket named in
`NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Sending never blocks the event loop
(the socket is non-blocking; a full receive queue drops the datagram) and never raises: a service
must not die because systemd was slow to read, or because it runs outside systemd at all, where
every method is a no-op.

Watchdog: with `WatchdogSec=` systemd sets `WATCHDOG_USEC` (and `WATCHDOG_PID`); `watchdog()` must
then be called at least every `watchdog_interval()` seconds, and by the event loop itself, so that a
hung loop stops the pings and systemd restarts the service. `run_watchdog()` does exactly that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SdNotifier:
    """Sends notifications to the service manager; every method returns whether the datagram was sent."""

    def __init__(self, address: str | bytes | None, *, watchdog_usec: int | None = None) -> None:
        # address: a filesystem path (str) or an abstract address starting with NUL (bytes); None = disabled.
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SdNotifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (default: os.environ)."""
        env = os.environ if environ is None else environ
        return cls(_parse_address(env.get("NOTIFY_SOCKET", "")), watchdog_usec=_parse_watchdog(env))

    @property
    def enabled(self) -> bool:
        """True when a notification socket is configured (running under systemd with Type=notify)."""
        return self._address is not None

    def ready(self) -> bool:
        """Startup finished: systemd marks the unit active and starts counting the watchdog."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """One-line summary shown by `systemctl status`."""
        # A newline would start a new assignment: text that comes from the mesh must never be able to
        # smuggle in READY=1, WATCHDOG=trigger or similar.
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        """Still alive: resets the WatchdogSec= timer."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """Shutdown has begun (drain, checkpoint, close may take a while)."""
        return self.notify("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds, or None when systemd expects no pings from this process."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1_000_000

    async def run_watchdog(self) -> None:
        """Ping at half the timeout until cancelled; returns at once when no watchdog is configured."""
        interval = self.watchdog_interval()
        if interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval / 2)

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` assignments in one datagram."""
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            # sendto each time rather than connect once: the socket survives a manager re-exec.
            self._sock.sendto(payload, self._address)
        except OSError as exc:  # BlockingIOError (queue full), ENOENT, ECONNREFUSED, EPERM, ...
            log.debug("sd_notify %r not sent: %s", payload[:40], exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _parse_address(value: str) -> str | bytes | None:
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8")  # Linux abstract namespace
    if value.startswith("/"):
        return value
    if value:
        # sd_notify(3) accepts only absolute paths and @names (newer systemd adds vsock:, unused here).
        log.debug("ignoring unsupported NOTIFY_SOCKET=%r", value)
    return None


def _parse_watchdog(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        # The variables are inherited by children; only the process systemd named should ping.
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec
