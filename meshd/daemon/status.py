"""Health of a running hub: one JSON document per connection on a local status socket, for `meshd status`.

Socket: an AF_UNIX stream socket next to the store, named after it (`/var/lib/meshd/meshd.db` ->
`/var/lib/meshd/meshd.sock`). It is derived from the config, so `meshd status -c FILE` finds the daemon
that uses the same store, several hubs on one machine (the demo, tests) never collide, and under the
shipped unit (DynamicUser=, StateDirectory=meshd) it lives in a directory only the service user and
root can enter: `sudo meshd status`. The server never reads from a client: it writes the document and
closes, so a client can neither change nor slow down the hub.

Last errors: a logging handler keeps the newest warnings and errors (repeats of the same message are
folded into one entry with a count) and the server saves them to the store at most every 30 s, so
`meshd status` shows why a hub restarted, even while it is down. Log lines never contain secrets or
sealed content (nothing logs them), and each entry is cut to one short line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from meshd import __version__
from meshd.aio import close_server
from meshd.config import HubConfig
from meshd.errors import MeshdError
from meshd.relay.priority import Prio
from meshd.store.health import ErrorRow, boot_id, load_errors, save_errors

if TYPE_CHECKING:
    from meshd.daemon.hub import Hub

log = logging.getLogger(__name__)

ERRORS_KEPT = 20  # entries in memory; `meshd status` shows the newest few
ERRORS_SHOWN = 10  # entries in the status document
MESSAGE_MAX = 240  # characters of one log message kept
PERSIST_EVERY_S = 30.0  # at most one store write per this many seconds for the error log (SD-card wear)
SERVE_TIMEOUT_S = 5.0  # a client that does not read its document within this is dropped
SUN_PATH_MAX = 107  # bytes of an AF_UNIX path (108 with the terminating NUL)
# Queue names in the document and metric labels, highest priority first: alert, sealed, ..., unknown_origin.
QUEUE_NAMES = {int(prio): prio.name.lower() for prio in sorted(Prio, reverse=True)}


class StatusSocketError(MeshdError):
    """Another meshd already serves status for this store: two daemons must not share one store."""


def status_socket_path(config: HubConfig) -> Path:
    """Where the daemon serves its status: next to the store, named after it."""
    store = config.hub.store
    path = store.with_suffix(".sock")
    return path if path != store else store.with_name(store.name + ".status.sock")


# --------------------------------------------------------------------------------------------- last errors


@dataclasses.dataclass(slots=True)
class ErrorEntry:
    key: str
    boot: str
    mono: float
    level: str
    logger: str
    message: str
    template: str  # the unformatted message: repeats of one kind of event are folded together
    repeats: int = 1
    this_run: bool = True

    def row(self) -> ErrorRow:
        return ErrorRow(self.key, self.boot, self.mono, self.level, self.logger, self.message, self.repeats)

    def to_json(self, *, boot: str, mono_now: float) -> dict[str, Any]:
        age = self.row().age_s(boot=boot, mono_now=mono_now)
        return {
            "level": self.level,
            "logger": self.logger,
            "message": self.message,
            "repeats": self.repeats,
            "age_s": None if age is None else int(age),
            "this_run": self.this_run,
        }


def one_line(record: logging.LogRecord) -> str:
    """The record's message (and exception, without traceback) as one printable line of bounded length."""
    try:
        text = record.getMessage()
    except (TypeError, ValueError):  # a bad format string must not take the handler down
        text = str(record.msg)
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        text = f"{text} ({type(exc).__name__}: {exc})"
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."


class LastErrors(logging.Handler):
    """Keeps the newest WARNING-or-worse log records in memory; thread-safe (the store thread logs too)."""

    def __init__(self, capacity: int = ERRORS_KEPT, *, boot: str | None = None) -> None:
        super().__init__(logging.WARNING)
        self.boot = boot_id() if boot is None else boot
        self.counts: collections.Counter[str] = collections.Counter()  # records seen since start, by level
        self._entries: collections.deque[ErrorEntry] = collections.deque(maxlen=capacity)
        self._dirty: dict[str, ErrorEntry] = {}
        self._guard = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._installed_on: logging.Logger | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = one_line(record)
        template = str(record.msg)
        now = time.monotonic()
        with self._guard:
            self.counts[record.levelname] += 1
            entry = next(
                (
                    e
                    for e in self._entries
                    if e.this_run and e.logger == record.name and e.template == template and e.level == record.levelname
                ),
                None,
            )
            if entry is not None:
                self._entries.remove(entry)
                entry.repeats += 1
                entry.mono = now
                entry.message = message
            else:
                key = uuid.uuid4().hex[:16]
                entry = ErrorEntry(key, self.boot, now, record.levelname, record.name, message, template)
            self._entries.append(entry)
            self._dirty[entry.key] = entry
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def record(self, level: int, logger: str, message: str) -> None:
        """Add an entry without logging it (e.g. why the hub stopped, already printed elsewhere)."""
        self.handle(logging.LogRecord(logger, level, __file__, 0, message, None, None))

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called after each new entry, from whatever thread logged it."""
        with self._guard:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        with self._guard:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def restore(self, rows: list[ErrorRow]) -> None:
        """Put entries saved by earlier runs (newest first) behind the ones of this run."""
        with self._guard:
            have = {e.key for e in self._entries}
            older = [
                ErrorEntry(r.key, r.boot, r.mono, r.level, r.logger, r.message, "", r.repeats, this_run=False)
                for r in reversed(rows)
                if r.key not in have
            ]
            room = (self._entries.maxlen or len(older)) - len(self._entries)
            current = list(self._entries)
            self._entries.clear()
            self._entries.extend(older[max(len(older) - room, 0) :] + current)

    def take_dirty(self) -> list[ErrorRow]:
        """Entries added or updated since the last call (to persist)."""
        with self._guard:
            rows = [e.row() for e in self._dirty.values()]
            self._dirty.clear()
        return rows

    def newest(self, limit: int = ERRORS_SHOWN) -> list[ErrorEntry]:
        with self._guard:
            entries = list(self._entries)
        return [dataclasses.replace(e) for e in reversed(entries[-limit:])] if limit else []

    def snapshot(self, limit: int = ERRORS_SHOWN) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [e.to_json(boot=self.boot, mono_now=now) for e in self.newest(limit)]

    def install(self, logger: logging.Logger | None = None) -> Self:
        """Attach to `logger` (default: the root logger, so every module's warnings are kept)."""
        self.uninstall()
        self._installed_on = logger if logger is not None else logging.getLogger()
        self._installed_on.addHandler(self)
        return self

    def uninstall(self) -> None:
        if self._installed_on is not None:
            self._installed_on.removeHandler(self)
            self._installed_on = None


def install_last_errors(capacity: int = ERRORS_KEPT, logger: logging.Logger | None = None) -> LastErrors:
    """A `LastErrors` handler attached to `logger` (default: root); `uninstall()` removes it."""
    return LastErrors(capacity).install(logger)


# --------------------------------------------------------------------------------------------- the document


async def collect_status(hub: Hub, errors: LastErrors | None = None) -> dict[str, Any]:
    """Everything `meshd status --json` prints; keys are part of the documented CLI output."""
    relay = hub.relay
    store = hub.store
    now = time.monotonic()
    node = relay.radio.my_node if relay is not None else None
    doc: dict[str, Any] = {
        "version": __version__,
        "camp": hub.config.hub.camp_id,
        "name": hub.config.hub.name,
        "pid": os.getpid(),
        "uptime_s": int(now - hub.state.started_mono),
        "ready": hub.state.ready,
        "radio": {
            "state": relay.radio.state.value if relay is not None else "starting",
            "node": f"!{node:08x}" if node is not None else None,
            "device": hub.config.radio.device,
        },
        "uplink": _uplink_status(hub, now),
        "queue": dict.fromkeys(QUEUE_NAMES.values(), 0),
        "queue_total": 0,
        "oldest_age_s": None,
        "airtime": {
            "used_s": round(relay.budget.used(hub.clock.now()), 1) if relay is not None else 0.0,
            "budget_s": round(relay.budget.budget_s_per_hour, 1) if relay is not None else 0.0,
            "window_s": 3600,
        },
        "reports_today": 0,
        "counters": {"store": {}, "relay": {}, "uplink": {}, "radio": {}, "field": {}},
        "errors": errors.snapshot() if errors is not None else [],
        "store": {"path": str(hub.config.hub.store), "ok": store is not None, "error": None},
    }
    if relay is not None:
        doc["counters"]["relay"] = dict(sorted(relay.counters.items()))
        metrics = getattr(relay.radio, "metrics", None)  # RadioLink has LinkMetrics; fakes and the simulator may not
        if dataclasses.is_dataclass(metrics) and not isinstance(metrics, type):
            doc["counters"]["radio"] = dataclasses.asdict(metrics)
    desk_counters = getattr(getattr(hub, "field_desk", None), "counters", None)
    if isinstance(desk_counters, collections.Counter):
        doc["counters"]["field"] = dict(sorted(desk_counters.items()))
    uplink_counters = getattr(hub.uplink, "counters", None)
    if isinstance(uplink_counters, collections.Counter):
        doc["counters"]["uplink"] = dict(sorted(uplink_counters.items()))
    rejected = getattr(hub.uplink, "rejected_broadcasts", None)
    if isinstance(rejected, collections.Counter):
        doc["counters"]["uplink_rejected"] = dict(sorted(rejected.items()))
    if store is not None:
        try:
            depth = await store.queue_depth()
            doc["oldest_age_s"] = await store.oldest_age()
            doc["reports_today"] = await store.reports_today()
            doc["counters"]["store"] = dict(sorted((await store.counters()).items()))
        except MeshdError as exc:
            doc["store"].update(ok=False, error=str(exc))
        else:
            for priority, n_items in depth.items():
                name = QUEUE_NAMES.get(priority, str(priority))
                doc["queue"][name] = doc["queue"].get(name, 0) + n_items
            doc["queue_total"] = sum(depth.values())
    return doc


def _uplink_status(hub: Hub, now: float) -> dict[str, Any]:
    uplink = hub.uplink
    if uplink is None:
        return {"state": "starting" if hub.config.uplink.url else "none", "last_success_age_s": None}
    last = getattr(uplink, "last_success_monotonic", None)
    return {
        "state": "up" if uplink.connected else "down",
        "last_success_age_s": int(now - last) if isinstance(last, float | int) else None,
    }


# --------------------------------------------------------------------------------------------- the server


class StatusServer:
    """Serves `collect_status(hub)` on the status socket and keeps the error log; `async with` it."""

    def __init__(
        self,
        hub: Hub,
        *,
        path: Path | None = None,
        errors: LastErrors | None = None,
        persist_every_s: float = PERSIST_EVERY_S,
    ) -> None:
        self.hub = hub
        self.path = path if path is not None else status_socket_path(hub.config)
        self.errors = errors if errors is not None else LastErrors()
        self._own_handler = errors is None
        self.persist_every_s = persist_every_s
        self.serving = False
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._persist_task: asyncio.Task[None] | None = None
        self._errors_changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        if self._own_handler:
            self.errors.install()
        try:
            await self._restore_errors()
            self.errors.add_listener(self._on_error)
            self._persist_task = asyncio.create_task(self._persist_loop(), name="meshd-status-errors")
            await self._start_server()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            self.errors.record(logging.CRITICAL, "meshd", f"hub stopped: {describe_failure(exc)}")
        await self._shutdown()

    # -- socket

    async def _start_server(self) -> None:
        if len(os.fsencode(self.path)) > SUN_PATH_MAX:
            log.warning("status socket path %s is too long for AF_UNIX; `meshd status` will read the store", self.path)
            return
        await self._clear_stale_socket()
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        except OSError as exc:
            log.error("cannot serve status on %s: %s; `meshd status` will read the store", self.path, exc)  # noqa: TRY400
            return
        self._inode = self.path.stat().st_ino
        self.serving = True
        log.info("status socket: %s", self.path)

    async def _clear_stale_socket(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise StatusSocketError(f"{self.path} exists and is not a socket; move it away so meshd can use that name")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            async with asyncio.timeout(2.0):
                await asyncio.get_running_loop().sock_connect(probe, str(self.path))
        except (ConnectionRefusedError, FileNotFoundError, TimeoutError):
            # Left behind by a daemon that crashed or lost power: nobody listens any more.
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        finally:
            probe.close()
        raise StatusSocketError(
            f"another meshd is running with the store {self.hub.config.hub.store} (it answers on {self.path}); "
            "stop it first (systemctl stop meshd)"
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        del reader  # the protocol is one document per connection; nothing is read from clients
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            async with asyncio.timeout(SERVE_TIMEOUT_S):
                doc = await collect_status(self.hub, self.errors)
                writer.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            log.debug("status client went away: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    # -- error log persistence

    def _on_error(self) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed: nothing left to persist into
            loop.call_soon_threadsafe(self._errors_changed.set)

    async def _restore_errors(self) -> None:
        store = self.hub.store
        if store is None:
            return
        try:
            self.errors.restore(await load_errors(store.db))
        except MeshdError as exc:
            log.debug("cannot load the saved error log: %s", exc)

    async def _persist_loop(self) -> None:
        while True:
            await self._errors_changed.wait()
            self._errors_changed.clear()
            await self._persist()
            await asyncio.sleep(self.persist_every_s)  # debounce: a flood of warnings costs one write per period

    async def _persist(self) -> None:
        store = self.hub.store
        rows = self.errors.take_dirty()
        if store is None or not rows:
            return
        try:
            await save_errors(store.db, rows)
        except MeshdError as exc:
            log.debug("cannot save the error log: %s", exc)  # not a warning: that would feed this loop

    async def _shutdown(self) -> None:
        self.errors.remove_listener(self._on_error)
        if self._server is not None:
            await close_server(self._server, self._connections)
            self._server = None
            self.serving = False
            with contextlib.suppress(OSError):
                if self._inode is not None and self.path.stat().st_ino == self._inode:
                    self.path.unlink()
        if self._persist_task is not None:
            self._persist_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._persist_task
            self._persist_task = None
        await self._persist()
        if self._own_handler:
            self.errors.uninstall()


def describe_failure(exc: BaseException) -> str:
    """One line naming the leaf exceptions of a (possibly grouped) failure."""
    if isinstance(exc, BaseExceptionGroup):
        parts = [describe_failure(e) for e in exc.exceptions[:3]]
        more = f" (+{len(exc.exceptions) - 3} more)" if len(exc.exceptions) > 3 else ""
        return "; ".join(parts) + more
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
