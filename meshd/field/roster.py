"""The roster of known field handsets: node number → team name and Meshtastic public key.

A direct message is `verified` when the radio says it was PKI-encrypted and the sender's public key (which
the firmware checked while decrypting) is the one registered here for that node number. Anyone else is
still heard, marked `unverified` (DESIGN.md §5): an emergency report must never be dropped for want of a
roster entry.

The file is JSON, small enough to read and edit by hand, written atomically (temporary file, fsync, rename)
so the daemon never reads half a file while `meshd roster add` runs; the daemon notices a changed file and
reloads it, keeping the previous roster if the new one does not parse::

    {"version": 1, "handsets": [{"node": "!a1b2c3d4", "team": "Water team 2", "public_key": "<base64>"}]}
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshd.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PUBLIC_KEY_LEN = 32  # Meshtastic PKI keys are Curve25519 (X25519) public keys
TEAM_MAX_CHARS = 64
_NODE_HEX_RE = re.compile(r"!?([0-9a-fA-F]{1,8})")
_NODE_MIN, _NODE_MAX = 1, 0xFFFFFFFE  # 0 is unset and 0xFFFFFFFF is broadcast: neither is a handset


class RosterError(ConfigError):
    """The roster file or a roster entry is malformed."""


def parse_node(text: str) -> int:
    """A node as Meshtastic shows it (`!a1b2c3d4`) or as a decimal node number."""
    text = text.strip()
    if text.isdecimal():
        node = int(text)
    else:
        m = _NODE_HEX_RE.fullmatch(text)
        if m is None or not text.startswith("!"):
            raise RosterError(f"node {text!r} must be a node id like !a1b2c3d4 or a node number like 2712847316")
        node = int(m.group(1), 16)
    if not _NODE_MIN <= node <= _NODE_MAX:
        raise RosterError(f"node {text!r} is not a handset node number (1..4294967294)")
    return node


def format_node(node: int) -> str:
    return f"!{node:08x}"


def parse_public_key(text: str) -> bytes:
    """A Meshtastic public key in base64, as the app and `meshtastic --info` show it (`base64:` optional)."""
    text = text.strip()
    text = text.removeprefix("base64:")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RosterError("public key is not valid base64 (copy it from the handset's Security settings)") from None
    if len(raw) != PUBLIC_KEY_LEN:
        raise RosterError(f"public key must be {PUBLIC_KEY_LEN} bytes, got {len(raw)}")
    if raw == bytes(PUBLIC_KEY_LEN):
        raise RosterError("public key is all zeros (the handset has no PKI key yet)")
    return raw


def check_team(team: str) -> str:
    team = " ".join(team.split())
    if not team:
        raise RosterError("team name is empty")
    if len(team) > TEAM_MAX_CHARS:
        raise RosterError(f"team name is longer than {TEAM_MAX_CHARS} characters")
    if any(not ch.isprintable() for ch in team):
        raise RosterError("team name contains control characters")
    return team


@dataclass(frozen=True, slots=True)
class Handset:
    node: int
    team: str
    public_key: bytes

    @property
    def node_id(self) -> str:
        return format_node(self.node)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")

    def to_json(self) -> dict[str, str]:
        return {"node": self.node_id, "team": self.team, "public_key": self.public_key_b64}

    @classmethod
    def from_json(cls, item: object, where: str) -> Handset:
        if not isinstance(item, dict):
            raise RosterError(f"{where} must be an object")
        unknown = sorted(set(item) - {"node", "team", "public_key"})
        if unknown:
            raise RosterError(f"{where}: unknown key {unknown[0]!r}")
        node, team, key = item.get("node"), item.get("team"), item.get("public_key")
        if isinstance(node, int) and not isinstance(node, bool):
            node = str(node)
        if not isinstance(node, str) or not isinstance(team, str) or not isinstance(key, str):
            raise RosterError(f"{where} needs string fields node, team and public_key")
        try:
            return cls(parse_node(node), check_team(team), parse_public_key(key))
        except RosterError as exc:
            raise RosterError(f"{where}: {exc}") from None


class Roster:
    """Known handsets by node number. `path` (if any) is where `save` writes and `refresh` reads."""

    def __init__(self, handsets: Iterable[Handset] = (), *, path: Path | None = None) -> None:
        self.path = path
        self._by_node: dict[int, Handset] = {}
        self._stamp: tuple[int, int, int] | None = None
        for handset in handsets:
            self.add(handset)

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def load(cls, path: Path, *, missing_ok: bool = True) -> Roster:
        """Read a roster file; a missing file is an empty roster unless `missing_ok` is False."""
        roster = cls(path=path)
        try:
            stamp = _stamp(path)
        except FileNotFoundError:
            if missing_ok:
                return roster
            raise RosterError(f"roster {path} does not exist") from None
        except OSError as exc:
            raise RosterError(f"cannot read roster {path}: {exc.strerror}") from None
        roster._by_node = _read(path)
        roster._stamp = stamp
        return roster

    def save(self, path: Path | None = None) -> None:
        """Write atomically: readers see the old file or the new one, never a mix."""
        target = path or self.path
        if target is None:
            raise RosterError("this roster has no file to save to")
        data = {"version": FORMAT_VERSION, "handsets": [h.to_json() for h in self]}
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        try:
            _atomic_write(target, text.encode("utf-8"))
        except OSError as exc:
            raise RosterError(f"cannot write roster {target}: {exc.strerror or exc}") from None
        if target == self.path:
            with contextlib.suppress(OSError):
                self._stamp = _stamp(target)

    def refresh(self) -> bool:
        """Reload the file if it changed since it was read; returns True when the roster changed.

        A file that became unreadable or malformed is reported and the roster in memory is kept: an
        operator's typo must not turn every verified team into an unverified one.
        """
        if self.path is None:
            return False
        try:
            stamp = _stamp(self.path)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            log.warning("roster %s: %s; keeping the roster in memory", self.path, exc.strerror)
            return False
        if stamp == self._stamp:
            return False
        if stamp is None:
            log.warning("roster %s was removed: no handset is verified until it is back", self.path)
            self._by_node, self._stamp = {}, None
            return True
        try:
            handsets = _read(self.path)
        except RosterError as exc:
            log.warning("%s; keeping the roster in memory", exc)
            self._stamp = stamp  # do not re-read (and re-log) the same broken file for every message
            return False
        self._by_node, self._stamp = handsets, stamp
        log.info("roster %s reloaded: %d handsets", self.path, len(handsets))
        return True

    # ------------------------------------------------------------------ contents

    def add(self, handset: Handset) -> Handset | None:
        """Add or replace the entry for `handset.node`; returns the entry it replaced, if any.

        The same key under two node numbers is refused: it would mean a cloned handset or a paste error.
        """
        for other in self._by_node.values():
            if other.node != handset.node and hmac.compare_digest(other.public_key, handset.public_key):
                raise RosterError(f"this public key is already registered for {other.node_id} ({other.team})")
        previous = self._by_node.get(handset.node)
        self._by_node[handset.node] = handset
        return previous

    def remove(self, node: int) -> Handset:
        try:
            return self._by_node.pop(node)
        except KeyError:
            raise RosterError(f"{format_node(node)} is not in the roster") from None

    def get(self, node: int) -> Handset | None:
        return self._by_node.get(node)

    def verify(self, node: int, public_key: bytes) -> bool:
        """True when `public_key` is the key registered for `node` (constant-time comparison)."""
        handset = self._by_node.get(node)
        if handset is None or not public_key:
            return False
        return hmac.compare_digest(handset.public_key, public_key)

    def __iter__(self) -> Iterator[Handset]:
        return iter(sorted(self._by_node.values(), key=lambda h: h.node))

    def __len__(self) -> int:
        return len(self._by_node)

    def __contains__(self, node: object) -> bool:
        return node in self._by_node


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read(path: Path) -> dict[int, Handset]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RosterError(f"cannot read roster {path}: {exc.strerror}") from None
    try:
        data: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RosterError(f"roster {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("handsets"), list):
        raise RosterError(f'roster {path} must be an object with a "handsets" list')
    if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise RosterError(f"roster {path} has version {data.get('version')!r}; this meshd reads {FORMAT_VERSION}")
    roster = Roster()
    for index, item in enumerate(data["handsets"]):
        handset = Handset.from_json(item, f"roster {path}: handsets[{index}]")
        if handset.node in roster:
            raise RosterError(f"roster {path}: {handset.node_id} is listed twice")
        try:
            roster.add(handset)
        except RosterError as exc:
            raise RosterError(f"roster {path}: handsets[{index}]: {exc}") from None
    return dict(roster._by_node)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # the rename itself must survive a power cut too
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
