"""Check `meshtastic --configure` YAML files before they reach a radio.

The stock CLI (meshtastic 2.7) maps a configure file onto the `LocalConfig` / `LocalModuleConfig`
protobufs but silently skips keys it does not know: a typo such as `hopLimt: 3` leaves the radio on
its old setting and nobody notices until the mesh misbehaves in the field. This module reproduces
the CLI's key mapping (`camel_to_snake` on every key, then a protobuf field lookup) and its value
conversion (`base64:` / `0x` prefixes, `true`/`yes` strings, enum names, bit-flag lists), then lets
`google.protobuf.json_format.ParseDict` judge each value against the field type, so that every
mistake becomes a one-line problem instead of a silent no-op.

Pure functions, no I/O except `load_configure_yaml`. PyYAML is only a test extra, so it is imported
lazily there.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import Message
from meshtastic.protobuf import config_pb2, localonly_pb2

from meshd.errors import ConfigError

# Top-level keys that meshtastic 2.7's `_profile_from_yaml` reads; anything else is ignored by it.
TOP_LEVEL_KEYS: frozenset[str] = frozenset(
    {
        "owner",
        "owner_short",
        "ownerShort",
        "channel_url",
        "channelUrl",
        "canned_messages",
        "ringtone",
        "location",
        "config",
        "module_config",
    }
)

# Firmware string limits (nanopb max_size in the protobufs' .options files, which counts the NUL):
# AdminMessage.set_canned_message_module_messages max_size:201, set_ringtone_message max_size:231,
# User.long_name max_size:40, User.short_name max_size:5. They are bytes, not characters: one Hangul
# syllable is 3 bytes of UTF-8, so the CLI's own `len(text) > 200` check lets too-long Korean lists
# through and the firmware then rejects the whole admin message.
CANNED_MESSAGES_MAX_BYTES = 200
RINGTONE_MAX_BYTES = 230
LONG_NAME_MAX_BYTES = 39
SHORT_NAME_MAX_BYTES = 4

# uint32 fields that the CLI also accepts as a comma-separated list of flag names (its BITFIELD_ENUMS).
_BITFIELD_ENUMS: dict[str, EnumDescriptor] = {
    "network.enabled_protocols": config_pb2.Config.NetworkConfig.ProtocolFlags.DESCRIPTOR,
    "position.position_flags": config_pb2.Config.PositionConfig.PositionFlags.DESCRIPTOR,
}

_ROOTS: dict[str, type[Message]] = {
    "config": localonly_pb2.LocalConfig,
    "module_config": localonly_pb2.LocalModuleConfig,
}


class _BadValueError(ValueError):
    """A value the CLI would reject, crash on, or store as something else than meant."""


def load_configure_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a configure file the way the stock CLI does (UTF-8, `yaml.safe_load`, a mapping at the top)."""
    try:
        import yaml  # noqa: PLC0415 - PyYAML is a test extra, not a runtime dependency of the daemon
    except ImportError as exc:
        raise ConfigError(
            f"{path}: reading meshtastic configure YAML needs PyYAML (pip install pyyaml, or meshd[test])"
        ) from exc
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top, got {type(data).__name__}")
    return data


def validate_configure_yaml(data: Mapping[str, Any], *, allow_deprecated: bool = False) -> list[str]:
    """Return every problem the stock CLI would hide or choke on; an empty list means the file is sound.

    Deprecated protobuf fields are reported unless `allow_deprecated` (files exported from older
    radios contain them); current firmware ignores most of them, so a hand-written file should not.
    """
    if not isinstance(data, Mapping):
        return [f"top level: expected a mapping, got {type(data).__name__}"]
    problems: list[str] = []
    for key, value in data.items():
        if not isinstance(key, str) or key not in TOP_LEVEL_KEYS:
            problems.append(
                f"{key!r}: unknown top-level key (meshtastic --configure ignores it)"
                f"{_suggest(str(key), TOP_LEVEL_KEYS)}"
            )
        elif key in _ROOTS:
            problems.extend(_check_sections(key, value, _ROOTS[key], allow_deprecated=allow_deprecated))
        elif key == "location":
            problems.extend(_check_location(value))
        elif key == "canned_messages":
            problems.extend(_check_canned_messages(value))
        elif key == "ringtone":
            problems.extend(_check_text(key, value, RINGTONE_MAX_BYTES))
        elif key == "owner":
            problems.extend(_check_text(key, value, LONG_NAME_MAX_BYTES))
        elif key in ("owner_short", "ownerShort"):
            problems.extend(_check_text(key, value, SHORT_NAME_MAX_BYTES))
        elif not isinstance(value, str) or not value.startswith("https://"):
            problems.append(f"{key}: expected a channel URL (https://meshtastic.org/e/#...)")
    return problems


def canned_message_list(text: str) -> list[str]:
    """Split a canned-message string the way the firmware does (on `|`)."""
    return text.split("|")


def _check_canned_messages(value: object) -> list[str]:
    if not isinstance(value, str):
        return [f"canned_messages: expected one |-separated string, got {type(value).__name__}"]
    text = value.strip()  # the CLI strips before sending
    problems = _check_text("canned_messages", text, CANNED_MESSAGES_MAX_BYTES)
    if not text:
        return problems
    for index, message in enumerate(canned_message_list(text)):
        if not message.strip():
            problems.append(f"canned_messages: message {index + 1} is empty (doubled or trailing '|')")
    return problems


def _check_text(key: str, value: object, max_bytes: int) -> list[str]:
    if not isinstance(value, str):
        return [f"{key}: expected a string, got {type(value).__name__}"]
    text = value.strip()
    if not text:
        return [f"{key}: empty (the CLI refuses empty names and skips empty texts)"]
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        return [f"{key}: {size} bytes of UTF-8, the firmware takes at most {max_bytes} (Hangul is 3 bytes each)"]
    return []


def _check_location(value: object) -> list[str]:
    if not isinstance(value, Mapping):
        return ["location: expected a mapping with lat, lon and optionally alt"]
    problems: list[str] = []
    limits = {"lat": 90.0, "lon": 180.0, "alt": math.inf}
    for key, number in value.items():
        if key not in limits:
            problems.append(f"location.{key}: unknown key (expected lat, lon, alt)")
        elif isinstance(number, bool) or not isinstance(number, int | float):
            problems.append(f"location.{key}: expected a number, got {number!r}")
        elif not -limits[key] <= number <= limits[key]:
            problems.append(f"location.{key}: {number} is out of range")
    return problems


def _check_sections(top: str, sections: object, root: type[Message], *, allow_deprecated: bool) -> list[str]:
    if not isinstance(sections, Mapping):
        return [f"{top}: expected a mapping of sections, got {type(sections).__name__}"]
    problems: list[str] = []
    # The C (upb) and Python descriptor classes share one interface; the stubs type them apart.
    root_descriptor = cast(Descriptor, root.DESCRIPTOR)
    for key, body in sections.items():
        path = f"{top}.{key}"
        field = _field_for_key(root_descriptor, key)
        if field is None or field.message_type is None:
            # The CLI crashes on an unknown section (HasField raises) and loops over a scalar one.
            sections_names = [f.name for f in root_descriptor.fields if f.message_type is not None]
            problems.append(f"{path}: no such section in {root_descriptor.name}{_suggest(str(key), sections_names)}")
        elif not isinstance(body, Mapping):
            problems.append(f"{path}: expected a mapping of settings, got {type(body).__name__}")
        else:
            problems.extend(
                _check_fields(path, field.message_type, body, root, (field.name,), allow_deprecated=allow_deprecated)
            )
    return problems


def _check_fields(
    path: str,
    descriptor: Descriptor,
    body: Mapping[Any, Any],
    root: type[Message],
    proto_path: tuple[str, ...],
    *,
    allow_deprecated: bool,
) -> list[str]:
    problems: list[str] = []
    for key, value in body.items():
        where = f"{path}.{key}"
        field = _field_for_key(descriptor, key)
        if field is None:
            problems.append(_unknown_field(where, descriptor, str(key)))
            continue
        if field.GetOptions().deprecated and not allow_deprecated:
            problems.append(f"{where}: deprecated in the protobufs; current firmware ignores or moved it")
            continue
        if field.message_type is not None:
            if isinstance(value, Mapping):
                problems.extend(
                    _check_fields(
                        where,
                        field.message_type,
                        value,
                        root,
                        (*proto_path, field.name),
                        allow_deprecated=allow_deprecated,
                    )
                )
            else:
                problems.append(f"{where}: expected a mapping of settings, got {value!r}")
            continue
        problem = _check_value(where, field, value, root, (*proto_path, field.name))
        if problem:
            problems.append(problem)
    return problems


def _check_value(
    where: str, field: FieldDescriptor, value: object, root: type[Message], proto_path: tuple[str, ...]
) -> str | None:
    if value is None:
        return f"{where}: empty value"
    if isinstance(value, Mapping):
        return f"{where}: expected a value, got a mapping"
    if isinstance(value, list):
        if not field.is_repeated:
            return f"{where}: expected one value, got a list"
        items: list[object] = value
    else:
        items = [value]  # the CLI appends a single value to a repeated field
    try:
        converted = [_cli_value(field, item, ".".join(proto_path[-2:])) for item in items]
    except _BadValueError as exc:
        return f"{where}: {exc}"
    # Build {"lora": {"hop_limit": 3}} and let protobuf's own JSON mapping judge type, range and enum name.
    leaf: object = converted if field.is_repeated else converted[0]
    tree: dict[str, Any] = {proto_path[-1]: leaf}
    for name in reversed(proto_path[:-1]):
        tree = {name: tree}
    try:
        ParseDict(tree, root())
    except ParseError as exc:
        return f"{where}: invalid value {value!r}: {exc}"
    return None


def _cli_value(field: FieldDescriptor, raw: object, bitfield_key: str) -> object:
    """Convert one YAML value as meshtastic's setPref would, into what ParseDict accepts for the field."""
    value = _from_str(raw) if isinstance(raw, str) else raw
    bitfield = _BITFIELD_ENUMS.get(bitfield_key)
    if bitfield is not None and isinstance(value, str):
        flags = 0
        for name in (part.strip() for part in value.split(",")):
            flag = bitfield.values_by_name.get(name)
            if name and flag is None:
                raise _BadValueError(f"unknown flag {name!r}; choices: {', '.join(sorted(bitfield.values_by_name))}")
            flags |= flag.number if flag is not None else 0
        value = flags
    if field.enum_type is not None:
        return _enum_value(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        if not isinstance(value, bytes):
            raise _BadValueError("bytes need a 'base64:' or '0x' prefix (key material: base64:...)")
        return base64.b64encode(value).decode("ascii")
    if field.type == FieldDescriptor.TYPE_STRING and not isinstance(value, str):
        if isinstance(value, bytes):
            raise _BadValueError(f"expected text, got bytes from {raw!r}")
        return str(value)  # setPref retries a failed assignment with str(value)
    if isinstance(value, bytes):
        raise _BadValueError(f"expected a number or boolean, got bytes from {raw!r}")
    return value


def _enum_value(enum: EnumDescriptor, value: object) -> object:
    choices = ", ".join(sorted(enum.values_by_name))
    if isinstance(value, str):
        if value not in enum.values_by_name:
            raise _BadValueError(f"{value!r} is not a {enum.name} value{_suggest(value, enum.values_by_name)}")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # Proto3 enums are open, so ParseDict would accept any number; the firmware would not.
        if value not in enum.values_by_number:
            raise _BadValueError(f"{value} is not a {enum.name} number; choices: {choices}")
        return value
    raise _BadValueError(f"{value!r} is not a {enum.name} value; choices: {choices}")


def _from_str(text: str) -> object:
    """meshtastic.util.fromStr, copied rather than imported: that module pulls in serial, requests, threads."""
    if not text:
        return b""
    if text.startswith("0x"):
        try:
            return bytes.fromhex(text[2:].zfill(2))
        except ValueError as exc:
            raise _BadValueError(f"{text!r} is not valid hex after '0x'") from exc
    if text.startswith("base64:"):
        try:
            return base64.b64decode(text[7:], validate=True)
        except binascii.Error as exc:
            raise _BadValueError(f"{text[:16]}... is not valid base64 after 'base64:'") from exc
    if text.lower() in {"t", "true", "yes"}:
        return True
    if text.lower() in {"f", "false", "no"}:
        return False
    for number_type in (int, float):
        try:
            return number_type(text)
        except ValueError:
            pass
    return text


def _field_for_key(descriptor: Descriptor, key: object) -> FieldDescriptor | None:
    """Find the field the CLI would set for this key (its camel_to_snake, then an exact name lookup)."""
    if not isinstance(key, str):
        return None
    snake = "".join("_" + ch.lower() if ch.isupper() else ch for ch in key).lstrip("_")
    return descriptor.fields_by_name.get(snake)


def _unknown_field(where: str, descriptor: Descriptor, key: str) -> str:
    by_json = {field.json_name: field.name for field in descriptor.fields}
    if key in by_json:
        # e.g. use12hClock: valid protobuf JSON, but the CLI turns it into use12h_clock and drops it.
        return f"{where}: meshtastic --configure cannot map this camelCase name; write {by_json[key]!r}"
    names = [field.name for field in descriptor.fields] + list(by_json)
    return f"{where}: no such setting in {descriptor.full_name}{_suggest(key, names)}"


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
