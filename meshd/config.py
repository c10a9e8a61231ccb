"""Configuration: one TOML file parsed with `tomllib` into frozen dataclasses.

Unknown keys and wrong types are errors that name the key and the file, so a typo in a camp's config is
caught at start instead of silently falling back to a default. Every field has a sensible default except
the few a hub cannot guess (its camp id and key directory). `docs/meshd.example.toml` documents each key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from meshd.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HubSection:
    camp_id: int = 0  # required: this hub's camp id in the registry
    keys: Path = Path("/var/lib/meshd/keys")  # directory written by `meshd keygen`
    registry: Path = Path("/etc/meshd/registry.json")  # HQ-signed camp registry
    hq_key: str = ""  # pinned HQ signing public key (base64); empty = trust the registry's own
    store: Path = Path("/var/lib/meshd/meshd.db")
    name: str = ""


@dataclass(frozen=True, slots=True)
class RadioSection:
    device: str = "/dev/meshtastic"  # /dev/ttyACM0, serial:///dev/..., tcp://host:4403
    portnum: int = 256  # private port 256..511
    hop_limit: int = 3
    channel: int = 0
    preset: str = "LONG_FAST"
    region: str = "KR"
    heartbeat_s: float = 300.0


@dataclass(frozen=True, slots=True)
class RelaySection:
    duty_cycle_pct: float = 10.0  # operator's airtime budget as % of each hour (the region may cap it lower)
    alert_reserve_pct: float = 20.0  # share of the budget only alerts may use
    batch_max: int = 8  # (a batch of 8 needs reports is ~170 bytes; a longer one is cut to fit one frame)
    retry_initial_s: float = 30.0
    retry_max_s: float = 1800.0
    expiry_h: float = 72.0
    unknown_origin_per_hour: int = 20  # forwarding rate limit for envelopes from camps not in the registry
    neighbour_radio_hops: int = 1  # hubs this many radio hops away (via relay radios) count as neighbours


@dataclass(frozen=True, slots=True)
class TimingSection:
    """Relay timers in scenario seconds. Defaults suit real radios; tests and the demo shorten them."""

    speedup: float = 1.0  # only with the simulator: how much faster than real time the scenario runs
    custody_ack_delay_s: float = 2.0
    custody_timeout_s: float = 20.0
    beacon_interval_s: float = 1800.0
    beacon_interval_max_s: float = 7200.0
    beacon_min_gap_s: float = 20.0
    notice_interval_s: float = 300.0
    batch_wait_s: float = 120.0
    maintenance_s: float = 300.0
    custody_recheck_s: float = 21600.0
    uplink_hold_s: float = 600.0


@dataclass(frozen=True, slots=True)
class UplinkSection:
    url: str = ""  # empty = no uplink; mqtt://host:1883 or mqtts://host:8883
    client_id: str = ""
    prefix: str = "meshd"
    username: str = ""
    password: str = ""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    bytes_per_hour: int = 0  # 0 = unmetered
    inflight: int = 20


@dataclass(frozen=True, slots=True)
class FieldSection:
    roster: Path | None = None
    per_sender_per_hour: int = 30


@dataclass(frozen=True, slots=True)
class MetricsSection:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True, slots=True)
class HubConfig:
    hub: HubSection = dataclasses.field(default_factory=HubSection)
    radio: RadioSection = dataclasses.field(default_factory=RadioSection)
    relay: RelaySection = dataclasses.field(default_factory=RelaySection)
    uplink: UplinkSection = dataclasses.field(default_factory=UplinkSection)
    field: FieldSection = dataclasses.field(default_factory=FieldSection)
    metrics: MetricsSection = dataclasses.field(default_factory=MetricsSection)
    timing: TimingSection = dataclasses.field(default_factory=TimingSection)


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a path string, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported type {_describe(tp)}")  # pragma: no cover - schema bug


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}" if where else name) for name, value in data.items()}
    return cls(**kwargs)


def parse_config(cls: type[T], text: str, source: str = "<config>") -> T:
    """Parse TOML `text` into `cls`; every error names `source` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return _build(cls, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(cls: type[T], path: Path) -> T:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return parse_config(cls, text, str(path))


def validate_hub(config: HubConfig, source: str = "<config>") -> HubConfig:
    """Checks across keys that types alone cannot express."""
    problems = []
    if config.hub.camp_id <= 0:
        problems.append("hub.camp_id must be set to this hub's camp id (a positive integer)")
    if not 256 <= config.radio.portnum <= 511:
        problems.append("radio.portnum must be a private port 256..511")
    if not 0 <= config.radio.hop_limit <= 7:
        problems.append("radio.hop_limit must be 0..7")
    if not 0 < config.relay.duty_cycle_pct <= 100:
        problems.append("relay.duty_cycle_pct must be in (0, 100]")
    if not 0 <= config.relay.alert_reserve_pct < 100:
        problems.append("relay.alert_reserve_pct must be in [0, 100)")
    if config.relay.batch_max < 1:
        problems.append("relay.batch_max must be at least 1")
    if config.timing.speedup <= 0:
        problems.append("timing.speedup must be positive")
    if config.timing.beacon_interval_max_s < config.timing.beacon_interval_s:
        problems.append("timing.beacon_interval_max_s must be at least timing.beacon_interval_s")
    if config.timing.uplink_hold_s < 0:
        problems.append("timing.uplink_hold_s must not be negative")
    if config.uplink.url and not config.uplink.url.startswith(("mqtt://", "mqtts://")):
        problems.append("uplink.url must start with mqtt:// or mqtts://")
    from meshd.radio.airtime import PRESETS  # noqa: PLC0415 - config sits below radio; only a name check

    if config.radio.preset.upper() not in PRESETS:
        problems.append(f"radio.preset must be one of {', '.join(PRESETS)}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return config


def load_hub_config(path: Path) -> HubConfig:
    return validate_hub(load_config(HubConfig, path), str(path))
