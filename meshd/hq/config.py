"""`hq.toml`: the configuration of `meshd hq`, parsed strictly like the hub's `meshd.toml`.

Same rules as `meshd.config`: unknown keys and wrong types are errors naming the key and the file.
A commented example is in `docs/hq.example.toml`.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from meshd.config import load_config, parse_config
from meshd.errors import ConfigError

DEFAULT_PREFIX = "meshd"
_TOPIC_WORD = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_GROUP = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class MqttSection:
    url: str = "mqtt://127.0.0.1:1883"  # mqtt://host:port or mqtts://host:port
    client_id: str = ""  # fixed id for the persistent session; empty = "meshd-hq-<hostname>"
    prefix: str = DEFAULT_PREFIX
    username: str = ""
    password: str = ""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    shared_group: str = ""  # non-empty: subscribe as $share/<group>/... so several workers split the feed
    keepalive_s: int = 60


@dataclass(frozen=True, slots=True)
class HQSection:
    registry: Path = Path("/etc/meshd/registry.json")  # HQ-signed camp registry
    database: str = "sqlite:////var/lib/meshd/hq.db"  # or postgresql://user@host/db
    protection_key: Path | None = None  # key directory whose seal.key opens sealed reports (protection desk only)
    hq_keys: Path | None = None  # HQ key directory (sign.key signs broadcasts; sign.pub pins the registry)
    cap_sender: str = "meshd-hq@meshd.invalid"  # CAP <sender> of exported alerts


@dataclass(frozen=True, slots=True)
class HQConfig:
    mqtt: MqttSection = dataclasses.field(default_factory=MqttSection)
    hq: HQSection = dataclasses.field(default_factory=HQSection)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_broker_url(url: str, *, username: str = "", password: str = "") -> BrokerAddress:
    """`mqtt://[user[:pass]@]host[:port]` or `mqtts://...`; explicit username/password win over the URL's."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r} has no host")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"broker URL {url!r} has an invalid port") from None
    user = username or (unquote(parts.username) if parts.username else "")
    secret = password or (unquote(parts.password) if parts.password else "")
    return BrokerAddress(parts.hostname, port, tls, user or None, secret or None)


def check_prefix(prefix: str) -> str:
    if not _TOPIC_WORD.match(prefix):
        raise ConfigError(f"topic prefix {prefix!r} must be plain topic levels (no wildcards, no leading '/' or '$')")
    return prefix


def default_client_id() -> str:
    return f"meshd-hq-{socket.gethostname()}"[:64]


def validate_hq(config: HQConfig, source: str = "<config>") -> HQConfig:
    """Checks across keys that types alone cannot express."""
    problems = []
    try:
        parse_broker_url(config.mqtt.url)
    except ConfigError as exc:
        problems.append(f"mqtt.url: {exc}")
    if not _TOPIC_WORD.match(config.mqtt.prefix):
        problems.append("mqtt.prefix must be plain topic levels (letters, digits, _ . -), no wildcards")
    if config.mqtt.shared_group and not _GROUP.match(config.mqtt.shared_group):
        problems.append("mqtt.shared_group must be one topic level (letters, digits, _ . -)")
    if (config.mqtt.cert_file is None) != (config.mqtt.key_file is None):
        problems.append("mqtt.cert_file and mqtt.key_file go together")
    if not 5 <= config.mqtt.keepalive_s <= 3600:
        problems.append("mqtt.keepalive_s must be 5..3600")
    if not config.hq.database.startswith(("sqlite:///", "postgresql://", "postgres://")):
        problems.append("hq.database must be sqlite:///PATH or postgresql://...")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return config


def parse_hq_config(text: str, source: str = "<config>") -> HQConfig:
    return validate_hq(parse_config(HQConfig, text, source), source)


def load_hq_config(path: Path) -> HQConfig:
    return validate_hq(load_config(HQConfig, path), str(path))
