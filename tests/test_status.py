"""`meshd status`, the status socket, the error log and the Prometheus endpoint, against real hubs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import socket
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from meshd.cli.main import main
from meshd.cli.status import describe, human_age, query
from meshd.clock import Clock
from meshd.config import HubConfig, MetricsSection
from meshd.daemon.hub import Hub
from meshd.daemon.metrics import MetricsServer
from meshd.daemon.status import (
    LastErrors,
    StatusServer,
    StatusSocketError,
    collect_status,
    install_last_errors,
    one_line,
    status_socket_path,
)
from meshd.store.health import boot_id, read_offline
from meshd.store.hub import HubStore
from meshd.wire.envelope import Kind
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import FakeUplink, Provisioned, make_hub, provision, running

NEEDS: dict[str, object] = {"population": {"individuals": 1200}, "severity": {"water": 4}}
ALERT: dict[str, object] = {
    "type": "fire",
    "urgency": "immediate",
    "severity": "severe",
    "certainty": "observed",
    "count": 1,
}


class TimedUplink(FakeUplink):
    """FakeUplink with the bridge's `last_success_monotonic` and counters."""

    def __init__(self, hub: Hub, received: Counter[str]) -> None:
        super().__init__(hub, received)
        self.last_success_monotonic: float | None = None
        self.counters: Counter[str] = Counter()


def write_config(p: Provisioned, camp: int, path: Path) -> Path:
    cfg = p.config(camp)
    path.write_text(
        f'[hub]\ncamp_id = {camp}\nkeys = "{cfg.hub.keys}"\nregistry = "{cfg.hub.registry}"\n'
        f'store = "{cfg.hub.store}"\n[radio]\ndevice = "{cfg.radio.device}"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer on some machines.
    path = tmp_path_factory.mktemp("st")
    if len(str(path)) > 80:
        pytest.skip(f"temporary directory too long for AF_UNIX sockets: {path}")
    return path


async def _queue_at_102(p: Provisioned, mesh: FakeMesh, clock: Clock) -> tuple[Hub, Hub, TimedUplink]:
    mesh.link(101, 102)
    uplink_hub = make_hub(p, 101, mesh.radio(101), clock)
    hub = make_hub(p, 102, mesh.radio(102), clock)
    uplink = TimedUplink(uplink_hub, Counter())
    uplink.connected = False  # satellite down: reports wait at 102 (no route)
    uplink_hub.uplink = uplink
    return uplink_hub, hub, uplink


async def test_status_document_over_the_socket(short_tmp: Path) -> None:
    p = provision(short_tmp, [101, 102])
    mesh = FakeMesh()
    clock = Clock(speedup=20)
    uplink_hub, hub, _uplink = await _queue_at_102(p, mesh, clock)
    async with running([uplink_hub, hub]):
        assert hub.relay is not None
        for _ in range(3):
            await hub.relay.originate(Kind.NEEDS, NEEDS)
        await hub.relay.originate(Kind.ALERT, ALERT)
        async with StatusServer(hub) as server:
            assert server.serving
            assert server.path == short_tmp / "camp102.sock" == status_socket_path(hub.config)
            logging.getLogger("meshd.relay").warning("radio send failed: %s", "queue full\nREADY=1")
            logging.getLogger("meshd.relay").warning("radio send failed: %s", "again")
            logging.getLogger("meshd.relay").info("not an error")
            doc = await asyncio.to_thread(query, server.path)
            uplink_doc = await collect_status(uplink_hub)
    assert doc["version"]
    assert doc["camp"] == 102
    assert doc["ready"] is True
    assert doc["radio"] == {"state": "ready", "node": "!00000066", "device": "tcp://127.0.0.1:1"}
    assert doc["uplink"] == {"state": "none", "last_success_age_s": None}
    assert uplink_doc["uplink"] == {"state": "down", "last_success_age_s": None}
    assert doc["queue"]["needs"] == 3
    assert doc["queue"]["alert"] == 1
    assert doc["queue_total"] == 4
    assert list(doc["queue"])[:2] == ["alert", "sealed"]  # highest priority first
    assert doc["oldest_age_s"] is not None
    assert doc["oldest_age_s"] >= 0
    assert doc["airtime"]["budget_s"] == 360.0  # 10 % of an hour by default
    assert doc["counters"]["store"]["originated"] == 4
    assert doc["counters"]["relay"]["originated"] == 4
    # repeats of one kind of warning fold into one entry, on one line; INFO is not kept
    [entry] = doc["errors"]
    assert (entry["level"], entry["logger"], entry["repeats"]) == ("WARNING", "meshd.relay", 2)
    assert entry["message"] == "radio send failed: again"
    assert entry["this_run"] is True
    assert 0 <= entry["age_s"] < 5
    text = "\n".join(describe(doc))
    assert "Radio:    ready (!00000066)" in text
    assert "Uplink:   none configured" in text
    assert "Queue:    1 alert, 3 needs; oldest waiting" in text
    assert re.search(r"Airtime:  \d+ s of 360 s this hour", text)
    assert "WARNING meshd.relay: radio send failed: again (x2)" in text
    assert not server.path.exists()  # removed on the way out


async def test_cli_status_running_then_stopped(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = provision(short_tmp, [101, 102])
    mesh = FakeMesh()
    clock = Clock(speedup=20)
    uplink_hub, hub, _uplink = await _queue_at_102(p, mesh, clock)
    config = write_config(p, 102, short_tmp / "meshd.toml")
    async with running([uplink_hub, hub]):
        assert hub.relay is not None
        await hub.relay.originate(Kind.NEEDS, NEEDS)
        await hub.relay.originate(Kind.NEEDS, NEEDS)
        async with StatusServer(hub):
            logging.getLogger("meshd.uplink").error("uplink: cannot connect to %s", "mqtt://hq:1883")
            code = await asyncio.to_thread(main, ["status", "-c", str(config)])
            out = capsys.readouterr().out
            assert code == 0, out
            assert "Queue:    2 needs" in out
            assert "Radio:    ready (!00000066)" in out
            code = await asyncio.to_thread(main, ["status", "-c", str(config), "--json"])
            assert code == 0
            assert '"running": true' in capsys.readouterr().out
    # The daemon is gone: say so, exit 3, and show what the store knows, including the saved error.
    code = await asyncio.to_thread(main, ["status", "-c", str(config)])
    out = capsys.readouterr().out
    assert code == 3
    assert out.startswith(f"meshd is not running (no status socket at {short_tmp / 'camp102.sock'}).")
    assert "Queue:    2 needs; oldest waiting at least" in out
    assert "2 signed here" in out
    assert "ago: ERROR meshd.uplink: uplink: cannot connect to mqtt://hq:1883" in out
    code = await asyncio.to_thread(main, ["status", "-c", str(config), "--json"])
    assert code == 3
    assert '"running": false' in capsys.readouterr().out


async def test_cli_status_without_any_store(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = provision(short_tmp, [102])
    config = write_config(p, 102, short_tmp / "meshd.toml")
    assert main(["status", "-c", str(config)]) == 3
    out = capsys.readouterr().out
    assert "meshd is not running" in out
    assert "has never run" in out


async def test_stale_socket_is_replaced_and_a_live_one_refuses_a_second_daemon(short_tmp: Path) -> None:
    p = provision(short_tmp, [102])
    mesh = FakeMesh()
    hub = make_hub(p, 102, mesh.radio(102), Clock(speedup=20))
    path = status_socket_path(hub.config)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # what a power cut leaves behind: the file, nobody listening
    async with running([hub]):
        async with StatusServer(hub) as first:
            assert first.serving
            with pytest.raises(StatusSocketError, match="another meshd is running"):
                async with StatusServer(hub):
                    pass
            assert path.exists()  # the refused second server did not remove the first one's socket
            assert (await asyncio.to_thread(query, path))["camp"] == 102


async def test_a_failure_that_stops_the_hub_is_kept_for_the_next_status(short_tmp: Path) -> None:
    p = provision(short_tmp, [102])
    mesh = FakeMesh()
    hub = make_hub(p, 102, mesh.radio(102), Clock(speedup=20))
    async with running([hub]):
        with pytest.raises(ExceptionGroup):
            async with StatusServer(hub):
                raise ExceptionGroup("relay", [RuntimeError("radio thread wedged")])
    offline = read_offline(hub.config.hub.store)
    [entry] = offline.errors
    assert entry.level == "CRITICAL"
    assert entry.message == "hub stopped: RuntimeError: radio thread wedged"
    assert entry.boot == boot_id()
    # the next run shows it, marked as coming from an earlier run
    again = make_hub(p, 102, FakeMesh().radio(102), Clock(speedup=20))
    async with running([again]), StatusServer(again) as server:
        doc = await collect_status(again, server.errors)
    assert [(e["message"], e["this_run"]) for e in doc["errors"]] == [
        ("hub stopped: RuntimeError: radio thread wedged", False)
    ]


async def test_error_log_writes_are_debounced(short_tmp: Path) -> None:
    p = provision(short_tmp, [102])
    hub = make_hub(p, 102, FakeMesh().radio(102), Clock(speedup=20))
    async with running([hub]):
        assert hub.store is not None
        async with StatusServer(hub, persist_every_s=3600):
            commits = hub.store.db.commits
            for i in range(200):
                logging.getLogger(f"meshd.test{i % 4}").warning("flood %d", i)
            await asyncio.sleep(0.2)
            # the first warning is saved at once, the other 199 wait for the period (or shutdown)
            assert hub.store.db.commits - commits <= 2
    errors = read_offline(hub.config.hub.store).errors
    assert sorted((e.logger, e.repeats) for e in errors) == [(f"meshd.test{i}", 50) for i in range(4)]


def test_last_errors_handler_folds_repeats_and_keeps_one_short_line() -> None:
    logger = logging.getLogger("meshd.test.lasterrors")
    logger.propagate = False
    handler = install_last_errors(capacity=3, logger=logger)
    try:
        logger.warning("a %s", "x\ny" * 200)
        try:
            raise ValueError("bad\nframe")
        except ValueError:
            logger.exception("decode failed")
        for i in range(5):
            logger.warning("other %d", i)
        logger.error("third")
        logger.critical("fourth")
    finally:
        handler.uninstall()
        logger.propagate = True
    logger.warning("not seen: uninstalled")
    entries = handler.newest()
    assert [(e.level, e.message, e.repeats) for e in entries] == [
        ("CRITICAL", "fourth", 1),
        ("ERROR", "third", 1),
        ("WARNING", "other 4", 5),
    ]
    assert handler.counts == Counter({"WARNING": 6, "ERROR": 2, "CRITICAL": 1})
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "a %s", ("x\ny" * 200,), None)
    line = one_line(record)
    assert "\n" not in line
    assert len(line) == 240
    assert line.endswith("...")
    try:
        raise ValueError("bad\nframe")
    except ValueError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "decode failed", None, (ValueError, exc, None))
    assert one_line(record) == "decode failed (ValueError: bad frame)"


def test_restored_entries_go_behind_this_runs() -> None:
    handler = LastErrors(capacity=3, boot="b1")
    handler.record(logging.WARNING, "meshd", "now")
    older = LastErrors(capacity=10, boot="b0")
    for i in range(4):
        older.record(logging.ERROR, "meshd", f"old {i}")
    handler.restore(list(reversed(older.take_dirty())))  # as loaded: newest first
    assert [(e.message, e.this_run) for e in handler.newest()] == [
        ("now", True),
        ("old 3", False),
        ("old 2", False),
    ]
    # an entry from another boot has no age (monotonic clocks restart at boot)
    [doc] = [e for e in handler.snapshot() if not e["this_run"]][:1]
    assert doc["age_s"] is None


def test_human_age() -> None:
    assert [human_age(s) for s in (0, 59, 61, 3599, 3600, 7300, 36000 + 120, 200000, 172800)] == [
        "0 s",
        "59 s",
        "1 min",
        "59 min",
        "1 h",
        "2 h 1 min",
        "10 h",
        "2 d 7 h",
        "2 d",
    ]


# ------------------------------------------------------------------------------------------ metrics


async def _get(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return status, headers, body


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_endpoint(short_tmp: Path) -> None:
    p = provision(short_tmp, [101, 102])
    mesh = FakeMesh()
    clock = Clock(speedup=20)
    uplink_hub, hub, _uplink = await _queue_at_102(p, mesh, clock)
    hub.config = dataclasses.replace(hub.config, metrics=MetricsSection(enabled=True, host="127.0.0.1", port=0))
    async with running([uplink_hub, hub]):
        assert hub.relay is not None
        for _ in range(2):
            await hub.relay.originate(Kind.NEEDS, NEEDS)
        hub.relay.counters["rejected_bad_signature"] += 3
        errors = LastErrors()
        errors.record(logging.ERROR, "meshd", "x")
        async with MetricsServer(hub, errors=errors) as metrics:
            assert metrics.port
            status, headers, body = await _get(metrics.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            not_found = await _get(metrics.port, b"GET / HTTP/1.1\r\n\r\n")
            wrong_method = await _get(metrics.port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert metrics._server is None
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Type"].startswith("text/plain")
    assert int(headers["Content-Length"]) == len(body)
    samples = _samples(body.decode())
    assert samples[("meshd_queue_depth", (("priority", "needs"),))] == 2
    assert samples[("meshd_queue_depth", (("priority", "alert"),))] == 0
    assert samples[("meshd_radio_up", ())] == 1
    assert samples[("meshd_radio_link_state", (("meshd_radio_link_state", "ready"),))] == 1
    assert samples[("meshd_radio_link_state", (("meshd_radio_link_state", "backoff"),))] == 0
    assert samples[("meshd_uplink_up", ())] == 0
    assert samples[("meshd_airtime_budget_seconds", ())] == 360
    assert samples[("meshd_reports_originated_total", ())] == 2
    assert samples[("meshd_reports_delivered_total", ())] == 0
    assert samples[("meshd_envelopes_rejected_total", (("reason", "bad_signature"),))] == 3
    assert samples[("meshd_envelopes_rejected_total", (("reason", "replay"),))] == 0
    assert samples[("meshd_reconnects_total", (("link", "radio"),))] == 0
    assert samples[("meshd_log_messages_total", (("level", "error"),))] == 1
    assert samples[("meshd_hub_info", (("camp", "102"), ("node", "!00000066"), ("version", "0.1.0")))] == 1
    assert not_found[0] == "HTTP/1.1 404 Not Found"
    assert wrong_method[0] == "HTTP/1.1 405 Method Not Allowed"
    assert not any(name.startswith("meshd_") for name in REGISTRY._names_to_collectors)  # private registry


async def test_metrics_are_off_by_default_and_a_busy_port_does_not_stop_the_hub(short_tmp: Path) -> None:
    p = provision(short_tmp, [102])
    hub = make_hub(p, 102, FakeMesh().radio(102), Clock(speedup=20))
    assert hub.config.metrics == MetricsSection(enabled=False, host="127.0.0.1", port=9464)
    async with MetricsServer(hub) as metrics:
        assert metrics.port is None
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        hub.config = dataclasses.replace(hub.config, metrics=MetricsSection(enabled=True, port=port))
        async with MetricsServer(hub) as metrics:
            assert metrics.port is None
    finally:
        busy.close()


def _files(directory: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in directory.iterdir() if ".db" in f.name}


def _copy_store_files(source: Path, name: str, target: Path) -> Path:
    target.mkdir()
    for f in source.iterdir():
        if f.name.startswith(name):
            (target / f.name).write_bytes(f.read_bytes())
    return target


async def test_store_fallback_reads_without_creating_or_changing_files(short_tmp: Path) -> None:
    p = provision(short_tmp, [102])
    config: HubConfig = p.config(102)
    async with HubStore(config.hub.store) as store:
        await store.bump("originated", 7)
        # a power cut now leaves the last commits in the -wal file: copy the files as they are on disk
        crashed = _copy_store_files(short_tmp, "camp102.db", short_tmp / "crashed")
    assert sorted(_files(crashed)) == ["camp102.db", "camp102.db-shm", "camp102.db-wal"]
    for directory in (short_tmp, crashed):  # cleanly stopped (no -wal), and crashed
        before = _files(directory)
        offline = read_offline(directory / "camp102.db")
        assert offline.counters == {"originated": 7}
        after = _files(directory)
        assert sorted(after) == sorted(before)  # nothing created (a root-owned -shm would lock the daemon out)
        # the data files are untouched (the -shm is scratch memory for readers)
        assert {k: v for k, v in after.items() if not k.endswith("-shm")} == {
            k: v for k, v in before.items() if not k.endswith("-shm")
        }
