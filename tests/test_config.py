"""Config: strict TOML -> frozen dataclasses; the shipped example is valid."""

from __future__ import annotations

import contextlib
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.config import HubConfig, load_hub_config, parse_config, validate_hub
from meshd.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "docs" / "meshd.example.toml"


def test_example_config_is_valid_and_documented():
    config = load_hub_config(EXAMPLE)
    assert config.hub.camp_id == 412
    assert config.radio.portnum == 256
    text = EXAMPLE.read_text()
    for section in ("hub", "radio", "relay", "uplink", "field", "metrics"):
        assert f"[{section}]" in text


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[hub]\ncamp_idd = 1\n", "unknown key hub.camp_idd"),
        ("[radio]\nportnum = 'x'\n", "radio.portnum must be an integer"),
        ("[radio]\nportnum = true\n", "radio.portnum must be an integer"),
        ("[relay]\nduty_cycle_pct = 'ten'\n", "relay.duty_cycle_pct must be a number"),
        ("[metrics]\nenabled = 1\n", "metrics.enabled must be true or false"),
        ("[hubx]\n", "unknown key hubx"),
        ("hub = 3\n", "hub must be a table"),
        ("x =\n", "not valid TOML"),
    ],
)
def test_errors_name_the_key_and_the_file(toml, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(HubConfig, toml, "camp.toml")
    assert "camp.toml" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[hub]\ncamp_id = 0\n", "hub.camp_id must be set"),
        ("[hub]\ncamp_id = 1\n[radio]\nportnum = 1\n", "radio.portnum must be a private port"),
        ("[hub]\ncamp_id = 1\n[radio]\npreset = 'FAST'\n", "radio.preset must be one of"),
        ("[hub]\ncamp_id = 1\n[uplink]\nurl = 'http://x'\n", "uplink.url must start with"),
        ("[hub]\ncamp_id = 1\n[timing]\nbeacon_interval_max_s = 600.0\n", "beacon_interval_max_s must be at least"),
    ],
)
def test_cross_key_checks(toml, message):
    with pytest.raises(ConfigError, match=message):
        validate_hub(parse_config(HubConfig, toml, "c.toml"), "c.toml")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_hub_config(tmp_path / "nope.toml")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "가나다=[]\"'", max_size=200))
def test_random_text_raises_only_config_errors(text):
    with contextlib.suppress(ConfigError):
        parse_config(HubConfig, text, "fuzz.toml")


@pytest.mark.parametrize(
    ("region", "preset", "warns"),
    [
        ("KR", "LONG_FAST", False),
        ("KR", "LONG_SLOW", True),
        ("KR", "LONG_MODERATE", True),
        ("EU_868", "LONG_SLOW", False),
    ],
)
def test_korean_lbt_warning_for_presets_over_four_seconds(region, preset, warns):
    from meshd.daemon.hub import lbt_warning

    config = parse_config(HubConfig, f"[hub]\ncamp_id = 1\n[radio]\nregion = '{region}'\npreset = '{preset}'\n")
    message = lbt_warning(config)
    assert (message is not None) == warns
    if warns:
        assert message is not None
        assert "4 s" in message
