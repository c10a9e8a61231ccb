"""`meshd status [-c meshd.toml] [--json]`: is the hub healthy? Written for the camp technician.

Asks the running daemon over its status socket (see meshd.daemon.status). When nothing answers it says
so plainly, reads the store read-only instead (queue, counters, the errors saved before it stopped) and
exits with 3, like `systemctl status` for a stopped service, so scripts can tell "not running" apart.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path
from typing import Any

from meshd.cli.run import DEFAULT_CONFIG
from meshd.config import load_hub_config
from meshd.errors import MeshdError

EXIT_NOT_RUNNING = 3
ERRORS_PRINTED = 5

# How a technician reads a queue name (see meshd.relay.priority).
QUEUE_WORDS = {
    "alert": ("alert", "alerts"),
    "sealed": ("protection report", "protection reports"),
    "health": ("health report", "health reports"),
    "needs": ("need", "needs"),
    "status": ("status", "status"),
    "unknown_origin": ("from unknown camps", "from unknown camps"),
}
RADIO_WORDS = {
    "ready": "ready",
    "starting": "starting",
    "connecting": "connecting",
    "configuring": "connected, loading the radio's settings",
    "backoff": "not connected, retrying",
    "disconnected": "not connected",
    "closed": "closed",
}


class NotRunning(Exception):
    """No daemon answers on the status socket (a state of the hub, not an error of this command)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show whether the hub is healthy: radio, uplink, queue, airtime, errors",
        description="Show the hub's health. Exit status 0 when the daemon answered, 3 when it is not running.",
    )
    parser.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--json", action="store_true", help="print the JSON document (for scripts)")
    parser.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from meshd.daemon.status import status_socket_path  # noqa: PLC0415 - keeps `meshd --help` fast

    config = load_hub_config(args.config)
    path = status_socket_path(config)
    try:
        doc = query(path, timeout=args.timeout)
    except NotRunning as stopped:
        return _offline(config.hub.store, stopped.why, as_json=args.json)
    if args.json:
        print(json.dumps({"running": True, **doc}, ensure_ascii=False, indent=2))
    else:
        print("\n".join(describe(doc)))
    return 0


def query(path: Path, *, timeout: float = 10.0) -> dict[str, Any]:
    """The daemon's status document; NotRunning when no daemon answers at `path`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise NotRunning(f"no status socket at {path}") from None
        except ConnectionRefusedError:
            raise NotRunning(f"nothing answers on the status socket {path}") from None
        except PermissionError:
            raise MeshdError(f"no permission to open {path}: run `sudo meshd status`") from None
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        raise MeshdError(f"the daemon did not answer on {path} within {timeout:g} s: it may be hung") from None
    except OSError as exc:
        raise MeshdError(f"cannot read the status socket {path}: {exc}") from None
    finally:
        sock.close()
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError:
        raise MeshdError(f"the daemon sent an unreadable answer on {path}") from None
    if not isinstance(doc, dict):
        raise MeshdError(f"the daemon sent an unreadable answer on {path}")
    return doc


def _offline(store: Path, why: str, *, as_json: bool) -> int:
    from meshd.daemon.status import QUEUE_NAMES  # noqa: PLC0415 - keeps `meshd --help` fast
    from meshd.store.health import boot_id, read_offline  # noqa: PLC0415

    lines = [f"meshd is not running ({why})."]
    try:
        offline = read_offline(store)
    except MeshdError as exc:
        if as_json:
            print(json.dumps({"running": False, "reason": why, "store": None, "store_error": str(exc)}, indent=2))
        else:
            print("\n".join([*lines, f"Store:    {exc}"]))
        return EXIT_NOT_RUNNING
    stored = offline.to_json(boot=boot_id(), mono_now=time.monotonic())
    if as_json:
        print(json.dumps({"running": False, "reason": why, "store": stored}, ensure_ascii=False, indent=2))
        return EXIT_NOT_RUNNING
    queue = {QUEUE_NAMES.get(p, str(p)): n for p, n in offline.queue_depth.items()}
    lines.append(f"From the store {store} (as it was when the hub stopped):")
    lines.append(_line("Queue", _queue_words(queue, stored["oldest_age_s"], at_least=True)))
    lines.append(_line("Reports", f"{offline.reports_today} from field teams today"))
    lines.append(_line("Totals", _totals(offline.counters)))
    lines.extend(_errors(stored["errors"]))
    lines.append("Start it with: sudo systemctl start meshd    Why it stopped: journalctl -u meshd -n 50")
    print("\n".join(lines))
    return EXIT_NOT_RUNNING


# ------------------------------------------------------------------------------------------ human text


def describe(doc: dict[str, Any]) -> list[str]:
    """A few aligned lines in plain words."""
    name = f' "{doc["name"]}"' if doc.get("name") else ""
    lines = [f"meshd {doc['version']}, camp {doc['camp']}{name}, running for {human_age(doc['uptime_s'])}"]
    radio = doc["radio"]
    words = RADIO_WORDS.get(radio["state"], radio["state"])
    where = f" ({radio['node']})" if radio["state"] == "ready" and radio["node"] else f" ({radio['device']})"
    lines.append(_line("Radio", words + where))
    lines.append(_line("Uplink", _uplink_words(doc["uplink"])))
    lines.append(_line("Queue", _queue_words(doc["queue"], doc["oldest_age_s"])))
    air = doc["airtime"]
    lines.append(_line("Airtime", f"{air['used_s']:.0f} s of {air['budget_s']:.0f} s this hour"))
    lines.append(_line("Reports", f"{doc['reports_today']} from field teams today"))
    lines.append(_line("Totals", _totals(doc["counters"]["store"])))
    rejected = {
        k.removeprefix("rejected_"): v for k, v in doc["counters"]["relay"].items() if k.startswith("rejected_")
    }
    if sum(rejected.values()):
        detail = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(rejected.items()) if n)
        lines.append(_line("Rejected", f"{sum(rejected.values())} since start ({detail})"))
    if not doc["store"]["ok"]:
        lines.append(_line("Store", f"ERROR {doc['store']['error']}"))
    lines.extend(_errors(doc["errors"]))
    return lines


def _line(label: str, text: str) -> str:
    return f"{label + ':':<9} {text}"


def _uplink_words(uplink: dict[str, Any]) -> str:
    state = uplink["state"]
    if state == "none":
        return "none configured (this hub relays by radio only)"
    if state == "starting":
        return "starting"
    last = uplink["last_success_age_s"]
    since = f"last success {human_age(last)} ago" if last is not None else "no success since the hub started"
    return f"{state}, {since}"


def _queue_words(queue: dict[str, int], oldest_age_s: int | None, *, at_least: bool = False) -> str:
    parts = []
    for name, n_items in sorted(
        queue.items(), key=lambda kv: list(QUEUE_WORDS).index(kv[0]) if kv[0] in QUEUE_WORDS else 99
    ):
        if n_items:
            singular, plural = QUEUE_WORDS.get(name, (name, name))
            parts.append(f"{n_items} {singular if n_items == 1 else plural}")
    if not parts:
        return "empty, nothing waiting"
    text = ", ".join(parts)
    if oldest_age_s is not None:
        text += f"; oldest waiting {'at least ' if at_least else ''}{human_age(oldest_age_s)}"
    return text


def _totals(store_counters: dict[str, int]) -> str:
    def n(key: str) -> int:
        return int(store_counters.get(key, 0))

    return (
        f"{n('originated')} signed here, {n('accepted')} relayed for other camps, "
        f"{n('published')} sent to HQ, {n('expired')} expired undelivered"
    )


def _errors(errors: list[dict[str, Any]]) -> list[str]:
    if not errors:
        return [_line("Errors", "none recently")]
    lines = [_line("Errors", f"{len(errors)} recent, newest first:")]
    for entry in errors[:ERRORS_PRINTED]:
        when = f"{human_age(entry['age_s'])} ago" if entry["age_s"] is not None else "before a reboot"
        times = f" (x{entry['repeats']})" if entry["repeats"] > 1 else ""
        lines.append(f"{'':<10}{when}: {entry['level']} {entry['logger']}: {entry['message']}{times}")
    return lines


def human_age(seconds: float) -> str:
    """90 -> '1 min', 7300 -> '2 h 1 min', 200000 -> '2 d 7 h'."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 48 * 3600:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours} h {minutes} min" if minutes and hours < 10 else f"{hours} h"
    days, hours = divmod(s // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
