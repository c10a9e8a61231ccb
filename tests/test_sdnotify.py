"""sd_notify over a real AF_UNIX datagram socket, standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.daemon.sdnotify import SdNotifier


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket playing systemd, with NOTIFY_SOCKET pointing at it."""
    path = tmp_path / "notify"
    if len(str(path)) >= 108:  # sun_path limit
        pytest.skip(f"tmp_path too long for an AF_UNIX socket: {path}")
    sock = _receiver(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def test_ready_status_watchdog_stopping_are_exact_datagrams(manager: socket.socket) -> None:
    notifier = SdNotifier.from_env()
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("radio up, 3 queued, uplink down")
    assert notifier.watchdog()
    assert notifier.stopping()
    received = [manager.recv(4096) for _ in range(4)]
    assert received == [b"READY=1", b"STATUS=radio up, 3 queued, uplink down", b"WATCHDOG=1", b"STOPPING=1"]
    notifier.close()


def test_status_cannot_inject_other_assignments(manager: socket.socket) -> None:
    # Status text may include things heard on the mesh; a newline must not become a second assignment.
    SdNotifier.from_env().status("last report: x\nREADY=1\r\nWATCHDOG=trigger")
    assert manager.recv(4096) == b"STATUS=last report: x READY=1 WATCHDOG=trigger"


def test_status_keeps_utf8_text(manager: socket.socket) -> None:
    SdNotifier.from_env().status("접수 12건")
    assert manager.recv(4096) == "STATUS=접수 12건".encode()


def test_several_assignments_share_one_datagram(manager: socket.socket) -> None:
    SdNotifier.from_env().notify("READY=1", "STATUS=up")
    assert manager.recv(4096) == b"READY=1\nSTATUS=up"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"meshd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = _receiver(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = SdNotifier.from_env()
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_no_notify_socket_means_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SdNotifier.from_env()
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()


@pytest.mark.parametrize("value", ["", "relative/path", "@"])
def test_unusable_notify_socket_values_disable_notification(value: str) -> None:
    assert not SdNotifier.from_env({"NOTIFY_SOCKET": value}).enabled


def test_send_failure_never_raises_and_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.DEBUG, logger="meshd.daemon.sdnotify"):
        assert notifier.ready() is False
    assert "READY=1" in caplog.text
    assert "not sent" in caplog.text


def test_full_receive_queue_drops_instead_of_blocking(manager: socket.socket) -> None:
    # Nobody reads: the kernel queue fills (net.unix.max_dgram_qlen) and sends must fail fast, not block.
    notifier = SdNotifier.from_env()
    started = time.monotonic()
    results = [notifier.watchdog() for _ in range(2000)]
    assert time.monotonic() - started < 2.0
    assert results[0] is True
    assert results[-1] is False
    assert manager.recv(4096) == b"WATCHDOG=1"  # what was queued is intact


def test_watchdog_interval_from_watchdog_usec() -> None:
    assert SdNotifier.from_env({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 30.0
    assert SdNotifier.from_env({"WATCHDOG_USEC": "1500"}).watchdog_interval() == 0.0015


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},  # meant for another process
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"},
    ],
)
def test_no_watchdog_interval(env: dict[str, str]) -> None:
    assert SdNotifier.from_env(env).watchdog_interval() is None


def test_watchdog_pid_of_this_process_is_accepted() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert SdNotifier.from_env(env).watchdog_interval() == 30.0


async def test_run_watchdog_pings_at_half_the_interval(manager: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s timeout -> a ping every 0.05 s
    notifier = SdNotifier.from_env()
    manager.setblocking(False)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(notifier.run_watchdog())
    try:
        arrivals = []
        for _ in range(3):
            assert await asyncio.wait_for(loop.sock_recv(manager, 4096), timeout=2.0) == b"WATCHDOG=1"
            arrivals.append(time.monotonic())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Paced by the sleep, not a busy loop: two gaps of ~0.05 s each (half of it kept as slack for a busy CI).
    assert arrivals[2] - arrivals[0] >= 0.05


async def test_run_watchdog_returns_without_a_watchdog(manager: socket.socket) -> None:
    await asyncio.wait_for(SdNotifier.from_env().run_watchdog(), timeout=1.0)
