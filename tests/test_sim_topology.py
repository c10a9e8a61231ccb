"""Topology files, the generator, the shipped six-camp network and the path-loss model."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from meshd.errors import ConfigError
from meshd.radio.airtime import preset
from meshd.radio.sim import (
    LinkModel,
    SimNetwork,
    bundled_topology_path,
    generate_topology,
    load_topology,
    node_num_for,
)
from meshd.radio.sim.propagation import distance_m

TOML = """
[network]
name = "valley"
region = "EU_868"
hop_limit = 2

[[nodes]]
id = "north"
name = "North hub"
short = "NH"
num = "!0000abcd"
lat = 38.0
lon = 127.0

[[nodes]]
id = "hill"
role = "ROUTER"
lat = 38.05
lon = 127.0
antenna_gain_db = 10

[[links]]
a = "north"
b = "hill"
loss = 0.25
snr_db = 4.5
"""


def test_toml_topology(tmp_path: Path) -> None:
    path = tmp_path / "valley.toml"
    path.write_text(TOML)
    topo = load_topology(path)
    assert topo.name == "valley"
    assert topo.region == "EU_868"
    assert topo.hop_limit == 2
    north, hill = topo.nodes
    assert north.num == 0xABCD
    assert north.node_id == "!0000abcd"
    assert north.short_name == "NH"
    assert hill.num == node_num_for("hill")
    assert hill.role == "ROUTER"
    assert hill.long_name == "hill"
    assert topo.node("!0000abcd") is north
    assert topo.node("hill") is hill
    assert topo.node(str(hill.num)) is hill
    model = LinkModel(topo, preset("LONG_FAST"), "EU_868", seed=1)
    link = model.quality(north.num, hill.num)
    assert link is not None
    assert link.explicit
    assert link.p_receive == pytest.approx(0.75)
    assert link.snr_db == 4.5


def test_geojson_topology(tmp_path: Path) -> None:
    doc = {
        "type": "FeatureCollection",
        "properties": {"name": "gj", "preset": "MEDIUM_FAST"},
        "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [127.0, 38.0, 120]},
             "properties": {"id": "a", "role": "CLIENT_MUTE"}},
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [127.01, 38.0]},
             "properties": {"id": "b"}},
            {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[127.0, 38.0], [127.01, 38.0]]},
             "properties": {"a": "a", "b": "b", "loss": 0.5}},
        ],
    }  # fmt: skip
    path = tmp_path / "net.geojson"
    path.write_text(json.dumps(doc))
    topo = load_topology(path)
    assert [n.id for n in topo.nodes] == ["a", "b"]
    assert topo.nodes[0].alt_m == 120
    assert topo.nodes[0].role == "CLIENT_MUTE"
    assert topo.preset == "MEDIUM_FAST"
    assert topo.links[0].loss == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[nodes]]\nid = "a"\nlat = 1\nlon = 2\ncolour = "red"\n', "unknown key"),
        ('[[nodes]]\nid = "a"\n', "no lat/lon"),
        ('[[nodes]]\nid = "a"\nrole = "KING"\nlat = 1\nlon = 2\n', "role"),
        ('[[nodes]]\nid = "a"\nlat = "north"\nlon = 2\n', "lat must be"),
        ('[[nodes]]\nid = "a"\nlat = 1\nlon = 2\n[[nodes]]\nid = "a"\nlat = 1\nlon = 2\n', "duplicate"),
        ('[network]\nlinks_only = true\n[[nodes]]\nid = "a"\n[[links]]\na = "a"\nb = "zz"\n', "unknown node"),
        (
            '[network]\nlinks_only = true\n[[nodes]]\nid = "a"\n[[nodes]]\nid = "b"\n[[links]]\na = "a"\nb = "b"\n'
            "loss = 2\n",
            "probability",
        ),
        ("[[nodes]\n", "Expected"),
        ('[[nodes]]\nid = "a"\nnum = "!zz"\nlat = 1\nlon = 2\n', "not hex"),
    ],
)
def test_bad_topologies_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_topology(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_topology(tmp_path / "nope.toml")


def test_six_camps_layout() -> None:
    topo = load_topology(bundled_topology_path("six_camps"))
    hubs = [n for n in topo.nodes if n.kind == "hub"]
    relay = topo.node("relay")
    assert len(hubs) == 6
    assert relay.role == "ROUTER"
    assert relay.alt_m > 500
    assert len([n for n in topo.nodes if n.kind == "handset"]) == 6
    spacing = [distance_m(a, b) / 1000 for a, b in itertools.combinations(hubs, 2)]
    assert min(spacing) >= 3.0
    assert max(spacing) <= 12.0
    model = LinkModel(topo, preset("LONG_FAST"), "KR", seed=1)
    for hub in hubs:
        up, down = model.quality(hub.num, relay.num), model.quality(relay.num, hub.num)
        assert up is not None
        assert down is not None
        assert min(up.p_receive, down.p_receive) > 0.99
    # Far-apart camps cannot hear each other directly: the relay matters.
    far = [(a, b) for a, b in itertools.combinations(hubs, 2) if distance_m(a, b) > 8000]
    assert far
    assert all((q := model.quality(a.num, b.num)) is None or q.p_receive < 0.05 for a, b in far)


def test_path_loss_model_numbers() -> None:
    topo = load_topology(bundled_topology_path())
    model = LinkModel(topo, preset("LONG_FAST"), "KR", seed=1)
    assert model.noise_dbm == pytest.approx(-174 + 10 * math.log10(250_000) + 6)
    assert model.floor_db == -17.5
    # Free-space loss at 1 m and 921.9 MHz is about 31.7 dB; exponent 3.3 adds 33 dB per decade.
    assert model.path_loss_db(1.0) == pytest.approx(31.7, abs=0.1)
    assert model.path_loss_db(1000.0) - model.path_loss_db(100.0) == pytest.approx(33.0)


def test_generated_topology_is_connected_and_seeded() -> None:
    topo = generate_topology(8, seed=4)
    assert generate_topology(8, seed=4) == topo
    assert generate_topology(8, seed=5) != topo
    hubs = [n for n in topo.nodes if n.kind == "hub"]
    assert len(hubs) == 8
    assert len(topo.nodes) == 1 + 8 * 2
    model = LinkModel(topo, preset("LONG_FAST"), "KR", seed=4)
    relay = topo.node("relay")
    for hub in hubs:
        quality = model.quality(hub.num, relay.num)
        assert quality is not None
        assert quality.p_receive > 0.95
    with pytest.raises(ConfigError):
        generate_topology(0)


async def test_network_rejects_bad_region_and_preset() -> None:
    topo = generate_topology(2, seed=1)
    with pytest.raises(ConfigError, match="region"):
        SimNetwork(topo, region="MARS")
    with pytest.raises(ConfigError, match="preset"):
        SimNetwork(topo, preset="VERY_FAST")
    with pytest.raises(ConfigError, match="not allowed"):
        SimNetwork(topo, region="EU_868", preset="SHORT_TURBO")
