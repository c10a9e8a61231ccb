"""Logs: one line per event, journald priorities, and never a sealed report's text or a key."""

from __future__ import annotations

import asyncio
import io
import logging
from collections import Counter
from pathlib import Path

import pytest

from meshd.clock import Clock
from meshd.daemon.logs import OneLineFormatter, configure, under_journald
from meshd.daemon.metrics import MetricsServer
from meshd.daemon.status import StatusServer, collect_status
from meshd.radio.api import TEXT_PORT, ReceivedPacket
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import FakeUplink, make_hub, provision, running

SECRET = "Kim Mi-rae age 9 separated at the river crossing"
HANDSET = 0xA1B2C3D4


def _record(msg: str, level: int = logging.WARNING, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("meshd.relay", level, __file__, 1, msg, None, exc_info)


def test_journald_lines_carry_a_priority_and_no_timestamp() -> None:
    journal = OneLineFormatter(journald=True)
    assert journal.format(_record("radio send failed")) == "<4>WARNING meshd.relay: radio send failed"
    assert journal.format(_record("x", logging.ERROR)).startswith("<3>ERROR ")
    assert journal.format(_record("x", logging.CRITICAL)).startswith("<2>CRITICAL ")
    assert journal.format(_record("x", logging.INFO)).startswith("<6>INFO ")
    assert journal.format(_record("x", logging.DEBUG)).startswith("<7>DEBUG ")
    terminal = OneLineFormatter(journald=False).format(_record("radio send failed"))
    assert terminal[:4].isdigit()  # "2026-..." asctime on a terminal
    assert terminal.endswith(" WARNING meshd.relay: radio send failed")
    assert under_journald({"JOURNAL_STREAM": "8:123"})
    assert under_journald({"INVOCATION_ID": "abc"})
    assert not under_journald({})


def test_a_message_never_spans_lines() -> None:
    journal = OneLineFormatter(journald=True)
    forged = journal.format(_record("bad text from !a1b2c3d4: x\n<3>ERROR meshd: forged\r\nmore"))
    assert forged == "<4>WARNING meshd.relay: bad text from !a1b2c3d4: x | <3>ERROR meshd: forged | more"
    try:
        raise ValueError("frame\ncorrupt")
    except ValueError as exc:
        line = journal.format(_record("decode failed", logging.ERROR, exc))
    assert "\n" not in line
    assert line.startswith("<3>ERROR meshd.relay: decode failed | Traceback (most recent call last):")
    assert line.endswith("ValueError: frame | corrupt")


def test_configure_replaces_root_handlers() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        handler = configure(0, journald=True, stream=stream)
        assert root.handlers == [handler]
        logging.getLogger("meshd.test").info("hub %d running", 412)
        logging.getLogger("meshd.test").debug("hidden at -v0")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    assert stream.getvalue() == "<6>INFO meshd.test: hub 412 running\n"


async def test_sealed_text_and_keys_never_reach_logs_status_or_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    p = provision(tmp_path, [101, 102])
    mesh = FakeMesh()
    mesh.link(101, 102)
    clock = Clock(speedup=20)
    uplink_hub = make_hub(p, 101, mesh.radio(101), clock)
    hub = make_hub(p, 102, mesh.radio(102), clock)
    received: Counter[str] = Counter()
    uplink = FakeUplink(uplink_hub, received)
    uplink_hub.uplink = uplink
    async with running([uplink_hub, hub]):
        up = asyncio.create_task(uplink.run())
        try:
            async with StatusServer(hub) as server, MetricsServer(hub, errors=server.errors) as metrics:
                # a protection report typed on a handset (no PKI: the desk warns), and a mistyped one
                for i, text in enumerate((f"P! {SECRET}", f"W9 {SECRET}")):
                    packet = ReceivedPacket(HANDSET, 102, 1000 + i, TEXT_PORT, text.encode(), want_ack=True)
                    mesh.radios[102].deliver(packet)
                deadline = asyncio.get_running_loop().time() + 20
                while len(received) < 1:
                    assert asyncio.get_running_loop().time() < deadline, "the sealed report did not reach HQ"
                    await asyncio.sleep(0.02)
                doc = await collect_status(hub, server.errors)
                scraped = await metrics.scrape()
        finally:
            up.cancel()
    assert any("without PKI" in r.getMessage() for r in caplog.records)  # the logs did see this traffic
    formatter = OneLineFormatter(journald=True)
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    secrets = [SECRET, "Kim Mi-rae"]
    for keydir in (p.camps[101], p.camps[102], p.root / "hq"):
        secrets += [(keydir / name).read_text().strip() for name in ("sign.key", "seal.key")]
    for secret in secrets:
        assert secret not in logged
        assert secret not in str(doc)
        assert secret.encode() not in scraped
