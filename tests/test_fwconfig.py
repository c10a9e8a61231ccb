"""The radio configs in firmware-config/ and the validator that keeps them honest.

`meshtastic --configure` silently skips keys it does not know, so these tests are the only thing
between a typo and a radio that quietly keeps its old setting in the field.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
from meshtastic.protobuf import config_pb2

from meshd.errors import ConfigError
from meshd.fwconfig import (
    CANNED_MESSAGES_MAX_BYTES,
    canned_message_list,
    load_configure_yaml,
    validate_configure_yaml,
)

FIRMWARE_CONFIG = Path(__file__).resolve().parent.parent / "firmware-config"
ALL_FILES = sorted(FIRMWARE_CONFIG.rglob("*.yaml")) + sorted(FIRMWARE_CONFIG.rglob("*.yml"))
REGIONS = ("kr", "eu_868", "us")
ROLES = ("hub", "handset", "relay")
RegionCode = config_pb2.Config.LoRaConfig.RegionCode


def _rel(path: Path) -> str:
    return str(path.relative_to(FIRMWARE_CONFIG))


def _load(region: str, role: str) -> dict[str, Any]:
    return load_configure_yaml(FIRMWARE_CONFIG / region / f"{role}.yaml")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "radio.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the committed files ---------------------------------------------------------------------


def test_every_region_and_role_has_a_file() -> None:
    expected = {f"{region}/{role}.yaml" for region in REGIONS for role in ROLES}
    assert expected <= {_rel(p) for p in ALL_FILES}


@pytest.mark.parametrize("path", ALL_FILES, ids=_rel)
def test_file_has_no_problems(path: Path) -> None:
    assert validate_configure_yaml(load_configure_yaml(path)) == []


@pytest.mark.parametrize("path", ALL_FILES, ids=_rel)
def test_file_commits_no_secrets(path: Path) -> None:
    data = load_configure_yaml(path)
    # A channel URL carries the channel PSK; key material and passwords belong on the device only.
    assert not {"channel_url", "channelUrl"} & data.keys()
    config = data.get("config", {})
    security = config.get("security", {})
    assert not {"privateKey", "private_key", "publicKey", "public_key", "adminKey", "admin_key"} & security.keys()
    assert not {"wifiPsk", "wifi_psk"} & config.get("network", {}).keys()
    assert not {"password"} & data.get("module_config", {}).get("mqtt", {}).keys()
    assert "base64:" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("role", ROLES)
def test_region_variant_sets_its_region(region: str, role: str) -> None:
    lora_region = _load(region, role)["config"]["lora"]["region"]
    assert lora_region == region.upper()
    assert lora_region in RegionCode.DESCRIPTOR.values_by_name


@pytest.mark.parametrize("region", [r for r in REGIONS if r != "kr"])
@pytest.mark.parametrize("role", ROLES)
def test_region_variants_differ_from_kr_only_in_region(region: str, role: str) -> None:
    # The variants are copies; this keeps a fix made to one region from silently missing the others.
    kr, other = _load("kr", role), _load(region, role)
    kr["config"]["lora"].pop("region")
    other["config"]["lora"].pop("region")
    assert other == kr


@pytest.mark.parametrize("region", REGIONS)
def test_hub_settings(region: str) -> None:
    config = _load(region, "hub")["config"]
    # meshd relays hop by hop itself: a hub radio that also repeated every frame would cost ~40 % more airtime
    assert config["device"]["role"] == "CLIENT_MUTE"
    assert config["security"]["serialEnabled"] is True  # meshd talks to the radio over the serial API
    lora = config["lora"]
    assert (lora["usePreset"], lora["modemPreset"], lora["hopLimit"], lora["txEnabled"]) == (
        True,
        "LONG_FAST",
        3,
        True,
    )


@pytest.mark.parametrize("region", REGIONS)
def test_handset_settings(region: str) -> None:
    config = _load(region, "handset")["config"]
    assert config["device"]["role"] == "CLIENT"
    assert config["lora"]["modemPreset"] == "LONG_FAST"
    assert config["lora"]["hopLimit"] == 3


@pytest.mark.parametrize("region", REGIONS)
def test_relay_is_a_power_saving_router_that_forwards_meshd_packets(region: str) -> None:
    config = _load(region, "relay")["config"]
    assert config["device"]["role"] == "ROUTER"
    # The firmware's ROUTER default, CORE_PORTNUMS_ONLY, drops meshd's private-port packets.
    assert config["device"]["rebroadcastMode"] == "ALL"
    assert config["power"]["isPowerSaving"] is True
    assert config["power"]["onBatteryShutdownAfterSecs"] == 0
    assert config["bluetooth"]["enabled"] is False
    assert config["network"]["wifiEnabled"] is False


@pytest.mark.parametrize("path", ALL_FILES, ids=_rel)
def test_no_radio_filters_meshd_packets(path: Path) -> None:
    mode = load_configure_yaml(path)["config"]["device"].get("rebroadcastMode", "ALL")
    assert mode not in {"CORE_PORTNUMS_ONLY", "NONE", "KNOWN_ONLY"}


def _lora_time_on_air_s(phy_len: int, bw_hz: int, sf: int, cr: int) -> float:
    # Semtech AN1200.13 with Meshtastic's 16-symbol preamble, explicit header, CRC on.
    t_sym = (1 << sf) / bw_hz
    de = 1 if t_sym >= 0.016 else 0
    n_payload = 8 + max(math.ceil((8 * phy_len - 4 * sf + 28 + 16) / (4 * (sf - 2 * de))) * cr, 0)
    return (16 + 4.25) * t_sym + n_payload * t_sym


# BW, SF, coding-rate denominator of the presets the configs may use.
_PRESETS = {"LONG_FAST": (250_000, 11, 5), "MEDIUM_FAST": (250_000, 9, 5), "SHORT_FAST": (250_000, 7, 5)}


def test_airtime_formula_matches_the_reference_value() -> None:
    assert _lora_time_on_air_s(50, *_PRESETS["LONG_FAST"]) == pytest.approx(0.641024, abs=1e-6)


@pytest.mark.parametrize("role", ROLES)
def test_kr_preset_keeps_every_frame_under_the_4_second_lbt_limit(role: str) -> None:
    preset = _load("kr", role)["config"]["lora"]["modemPreset"]
    assert _lora_time_on_air_s(255, *_PRESETS[preset]) < 4.0


# --- canned messages ---------------------------------------------------------------------------


def _handsets() -> list[Path]:
    return [p for p in ALL_FILES if "canned_messages" in load_configure_yaml(p)]


def test_every_handset_has_canned_messages() -> None:
    assert {_rel(p) for p in _handsets()} >= {f"{r}/handset.yaml" for r in REGIONS}


@pytest.mark.parametrize("path", _handsets(), ids=_rel)
def test_canned_messages_fit_the_firmware_limit_in_bytes(path: Path) -> None:
    text = load_configure_yaml(path)["canned_messages"]
    assert len(text.encode("utf-8")) <= CANNED_MESSAGES_MAX_BYTES


@pytest.mark.parametrize("path", _handsets(), ids=_rel)
def test_canned_messages_cover_common_reports_in_both_languages(path: Path) -> None:
    messages = canned_message_list(load_configure_yaml(path)["canned_messages"])
    required = {"N W4 F3", "A CHOLERA 1", "A CHILD", "A FIRE", "?", "경보 콜레라 1", "경보 아이"}
    assert required <= set(messages)
    assert any(m.startswith("필요 물4") for m in messages)


@pytest.mark.parametrize("path", _handsets(), ids=_rel)
def test_every_canned_message_is_valid_meshd_shorthand(path: Path) -> None:
    from meshd.wire.text import parse_shorthand

    for message in canned_message_list(load_configure_yaml(path)["canned_messages"]):
        parse_shorthand(message)  # raises ShorthandError on anything the hub would refuse


def test_canned_limit_counts_bytes_not_characters() -> None:
    # 67 Hangul syllables are only 67 characters (the CLI's own check passes) but 201 bytes.
    assert validate_configure_yaml({"canned_messages": "가" * 66 + "a" * 2}) == []  # 200 bytes
    problems = validate_configure_yaml({"canned_messages": "가" * 67})
    assert len(problems) == 1
    assert "201 bytes" in problems[0]


def test_empty_canned_message_is_reported() -> None:
    assert validate_configure_yaml({"canned_messages": "A FIRE||?"}) == [
        "canned_messages: message 2 is empty (doubled or trailing '|')"
    ]


# --- the stock CLI reads the files exactly as written ------------------------------------------


def _expected_leaves(
    section_root: Any, body: dict[str, Any], descriptor: Any, path: str = ""
) -> list[tuple[str, Any, Any]]:
    leaves = []
    for key, value in body.items():
        name = "".join("_" + c.lower() if c.isupper() else c for c in key).lstrip("_")
        field = descriptor.fields_by_name[name]
        if field.message_type is not None:
            leaves += _expected_leaves(getattr(section_root, name), value, field.message_type, f"{path}{name}.")
            continue
        expected = field.enum_type.values_by_name[value].number if field.enum_type is not None else value
        leaves.append((path + name, getattr(section_root, name), expected))
    return leaves


@pytest.mark.parametrize("path", ALL_FILES, ids=_rel)
def test_stock_cli_maps_every_setting(path: Path) -> None:
    # _profile_from_yaml is what `meshtastic --configure` runs on the file; if a key were dropped the
    # profile would hold the protobuf default instead of the value written in the YAML.
    cli = pytest.importorskip("meshtastic.__main__")
    data = load_configure_yaml(path)
    profile_from_yaml = getattr(cli, "_profile_from_yaml", None)
    assert profile_from_yaml is not None, "the meshtastic CLI changed its configure reader: update this test"
    profile = profile_from_yaml(data)
    for top, root in (("config", profile.config), ("module_config", profile.module_config)):
        for leaf, actual, expected in _expected_leaves(root, data.get(top, {}), root.DESCRIPTOR):
            assert actual == expected, f"{top}.{leaf}"
    assert profile.canned_messages == data.get("canned_messages", "")


# --- the validator catches what the CLI would silently skip -------------------------------------


def test_typo_in_a_setting_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "config:\n  lora:\n    region: KR\n    hopLimt: 3\n")
    problems = validate_configure_yaml(load_configure_yaml(path))
    assert len(problems) == 1
    assert problems[0].startswith("config.lora.hopLimt: no such setting")
    assert "'hopLimit'" in problems[0]  # suggestion


def test_typo_in_a_section_and_a_top_level_key_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "canned_message: A FIRE\nmodule_config:\n  canedMessage:\n    sendBell: false\n")
    problems = validate_configure_yaml(load_configure_yaml(path))
    assert [p.split(":")[0] for p in problems] == ["'canned_message'", "module_config.canedMessage"]
    assert "'canned_messages'" in problems[0]
    assert "'canned_message'" in problems[1]


def test_snake_case_and_camel_case_are_both_accepted() -> None:
    data = {"config": {"lora": {"hop_limit": 3, "hopLimit": 3, "modem_preset": "LONG_FAST"}}}
    assert validate_configure_yaml(data) == []


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ({"lora": {"region": "KOREA"}}, "'KOREA' is not a RegionCode value"),
        ({"lora": {"modemPreset": "LONG_FASTER"}}, "did you mean 'LONG_FAST'"),
        ({"lora": {"modemPreset": 42}}, "42 is not a ModemPreset number"),
        ({"device": {"role": "router"}}, "'router' is not a Role value"),
        ({"lora": {"hopLimit": -1}}, "Value out of range"),
        ({"lora": {"hopLimit": 2.5}}, "Couldn't parse integer"),
        ({"lora": {"txEnabled": "maybe"}}, "invalid value 'maybe'"),
        ({"lora": {"hopLimit": [3, 4]}}, "expected one value, got a list"),
        ({"lora": {"hopLimit": None}}, "empty value"),
        ({"lora": {"hopLimit": {"x": 1}}}, "expected a value, got a mapping"),
        ({"security": {"adminKey": "AAAA"}}, "need a 'base64:' or '0x' prefix"),
        ({"security": {"adminKey": "base64:***"}}, "not valid base64"),
        ({"position": {"positionFlags": "ALTITUDE,SPED"}}, "unknown flag 'SPED'"),
        ({"display": {"use12hClock": True}}, "write 'use_12h_clock'"),
        ({"device": {"serialEnabled": True}}, "deprecated"),
        ({"version": 3}, "no such section in LocalConfig"),
    ],
)
def test_bad_values_are_reported(setting: dict[str, Any], fragment: str) -> None:
    problems = validate_configure_yaml({"config": setting})
    assert len(problems) == 1, problems
    assert fragment in problems[0]


def test_values_the_cli_converts_are_accepted() -> None:
    data = {
        "config": {
            "lora": {"txEnabled": "yes", "hopLimit": "3", "region": 7},  # 7 = KR
            "position": {"positionFlags": "ALTITUDE,SPEED"},
            "security": {"adminKey": ["base64:" + "A" * 44]},
            "device": {"tzdef": 0},  # the CLI retries a string field with str(value)
        }
    }
    assert validate_configure_yaml(data) == []


def test_deprecated_settings_pass_when_allowed() -> None:
    data = {"config": {"device": {"serialEnabled": True}}}
    assert validate_configure_yaml(data, allow_deprecated=True) == []


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"owner_short": "캠프"}, "owner_short: 6 bytes"),
        ({"owner": ""}, "owner: empty"),
        ({"location": {"lat": 91, "lon": 0}}, "location.lat: 91 is out of range"),
        ({"location": {"lat": 37.5, "lng": 127.0}}, "location.lng: unknown key"),
        ({"channel_url": "AQ=="}, "expected a channel URL"),
        ({"config": ["lora"]}, "config: expected a mapping of sections"),
        ({"config": {"lora": "LONG_FAST"}}, "config.lora: expected a mapping of settings"),
        ({"canned_messages": ["A FIRE", "?"]}, "expected one |-separated string"),
    ],
)
def test_bad_top_level_values_are_reported(data: dict[str, Any], fragment: str) -> None:
    problems = validate_configure_yaml(data)
    assert len(problems) == 1, problems
    assert fragment in problems[0]


# --- loading ------------------------------------------------------------------------------------


def test_load_rejects_a_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_configure_yaml(_write(tmp_path, "- lora\n- device\n"))


def test_load_rejects_broken_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_configure_yaml(_write(tmp_path, "config: {lora: [\n"))


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_configure_yaml(tmp_path / "missing.yaml")


def test_load_without_pyyaml_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    with pytest.raises(ConfigError, match="needs PyYAML"):
        load_configure_yaml(_write(tmp_path, "config: {}\n"))
