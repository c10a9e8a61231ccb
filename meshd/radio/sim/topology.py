"""Who is in the simulated network, where, and (optionally) which links exist.

A topology comes from a TOML file, a GeoJSON file, a helper (`line_topology`) or `generate_topology`.
Nodes are keyed by a short string `id` (used in link tables and on the command line); each gets a
Meshtastic node number (`num`), given or derived deterministically from the id.

TOML layout (see `topologies/six_camps.toml`)::

    [network]                 # all optional
    name = "six-camps"
    region = "KR"             # default region / preset; CLI and SimNetwork arguments override
    preset = "LONG_FAST"
    hop_limit = 3
    channel = "meshd"
    path_loss_exponent = 3.3  # log-distance model; 2.7-3 open terrain, 3.3-3.8 hills and forest
    shadowing_db = 0.0        # per-link log-normal shadowing (seeded); 0 = none
    links_only = false        # true: only the [[links]] exist, positions are ignored

    [[nodes]]
    id = "c1-hub"             # required, unique
    name = "Camp 1 hub"       # long name (default: id)
    short = "C1H"             # short name, at most 4 characters (default: from id)
    num = "!1a2b3c4d"         # optional node number (int or !hex)
    role = "CLIENT"           # CLIENT | CLIENT_MUTE | ROUTER
    kind = "hub"              # free text: hub | handset | relay | node
    camp = 1                  # optional camp id
    lat = 38.2
    lon = 127.9
    alt = 250                 # metres, informational
    tx_power_dbm = 20
    antenna_gain_db = 2       # include height gain for a relay on a hill

    [[links]]                 # explicit links: override the path-loss model for this pair
    a = "c1-hub"
    b = "relay"
    loss = 0.05               # loss probability per frame, 0..1 (1 = dead link)
    snr_db = 6.0              # optional; reported rx_snr
    rssi_dbm = -105           # optional; reported rx_rssi, used for capture
    directed = false          # true: a -> b only
"""

from __future__ import annotations

import json
import math
import random
import tomllib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshd.errors import ConfigError

ROLES = ("CLIENT", "CLIENT_MUTE", "ROUTER")
_RESERVED_NUMS = frozenset({0, 1, 2, 3, 0xFFFFFFFF})


def node_num_for(node_id: str) -> int:
    """A stable Meshtastic node number for a topology id (what a MAC address gives a real radio)."""
    num = zlib.crc32(f"meshd-sim:{node_id}".encode())
    if num in _RESERVED_NUMS:
        num ^= 0x5A5A5A5A
    return num


def format_node_id(num: int) -> str:
    return f"!{num:08x}"


def parse_node_num(value: object, *, where: str) -> int:
    """Accept 305419896, "0x12345678" or "!12345678"."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: node number must be an integer or '!hex', not {value!r}")
    if isinstance(value, int):
        num = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("!").removeprefix("0x")
        try:
            num = int(text, 16)
        except ValueError:
            raise ConfigError(f"{where}: node number {value!r} is not hex") from None
    else:
        raise ConfigError(f"{where}: node number must be an integer or '!hex', not {value!r}")
    if not 0 <= num <= 0xFFFFFFFF or num in _RESERVED_NUMS:
        raise ConfigError(f"{where}: node number {value!r} is reserved or out of range")
    return num


@dataclass(frozen=True, slots=True)
class NodeSpec:
    id: str
    num: int
    long_name: str
    short_name: str
    role: str = "CLIENT"
    kind: str = "node"
    camp: int | None = None
    lat: float | None = None
    lon: float | None = None
    alt_m: float = 0.0
    tx_power_dbm: float = 20.0
    antenna_gain_db: float = 2.0

    @property
    def node_id(self) -> str:
        return format_node_id(self.num)

    @property
    def has_position(self) -> bool:
        return self.lat is not None and self.lon is not None


@dataclass(frozen=True, slots=True)
class LinkSpec:
    a: str
    b: str
    loss: float = 0.0
    snr_db: float | None = None
    rssi_dbm: float | None = None
    directed: bool = False


@dataclass(frozen=True, slots=True)
class Topology:
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...] = ()
    name: str = "sim"
    region: str | None = None
    preset: str | None = None
    hop_limit: int = 3
    channel_name: str = "meshd"
    path_loss_exponent: float = 2.9
    shadowing_db: float = 0.0
    links_only: bool = False
    _index: dict[str, NodeSpec] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)
        index = self._index
        for node in self.nodes:
            index[node.id] = node
            index[node.node_id] = node
            index[str(node.num)] = node

    def node(self, key: str | int) -> NodeSpec:
        """Look a node up by topology id, `!hex` node id or node number."""
        found = self._index.get(str(key))
        if found is None:
            raise ConfigError(f"topology {self.name!r} has no node {key!r}")
        return found


def _validate(topo: Topology) -> None:
    if not topo.nodes:
        raise ConfigError(f"topology {topo.name!r} has no nodes")
    ids: set[str] = set()
    nums: set[int] = set()
    for node in topo.nodes:
        if node.id in ids:
            raise ConfigError(f"topology {topo.name!r}: duplicate node id {node.id!r}")
        if node.num in nums:
            raise ConfigError(f"topology {topo.name!r}: duplicate node number {node.node_id}")
        if node.role not in ROLES:
            raise ConfigError(f"node {node.id!r}: role {node.role!r} is not one of {', '.join(ROLES)}")
        if len(node.short_name.encode()) > 4:
            raise ConfigError(f"node {node.id!r}: short name {node.short_name!r} is longer than 4 bytes")
        if not topo.links_only and not node.has_position:
            raise ConfigError(f"node {node.id!r} has no lat/lon; give positions or set links_only = true")
        ids.add(node.id)
        nums.add(node.num)
    if not 0 <= topo.hop_limit <= 7:
        raise ConfigError(f"topology {topo.name!r}: hop_limit {topo.hop_limit} is not in 0..7")
    for link in topo.links:
        for end in (link.a, link.b):
            if end not in ids:
                raise ConfigError(f"link {link.a!r}-{link.b!r}: unknown node {end!r}")
        if link.a == link.b:
            raise ConfigError(f"link {link.a!r}-{link.b!r} joins a node to itself")
        if not 0.0 <= link.loss <= 1.0:
            raise ConfigError(f"link {link.a!r}-{link.b!r}: loss {link.loss} is not a probability")


# ---------------------------------------------------------------- parsing


_NODE_KEYS = {
    "id", "name", "short", "num", "role", "kind", "camp", "lat", "lon", "alt",
    "tx_power_dbm", "antenna_gain_db",
}  # fmt: skip
_LINK_KEYS = {"a", "b", "loss", "snr_db", "rssi_dbm", "directed"}
_NETWORK_KEYS = {
    "name", "region", "preset", "hop_limit", "channel", "path_loss_exponent", "shadowing_db", "links_only",
}  # fmt: skip


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _typed(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}: {key} must be {_kind_name(kind)}, not {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {_kind_name(kind)}, not {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _default_short(node_id: str) -> str:
    letters = [c for c in node_id.upper() if c.isalnum()]
    return "".join(letters[:4]) or "NODE"


def _node_from_table(table: Mapping[str, Any], where: str) -> NodeSpec:
    _check_keys(table, _NODE_KEYS, where)
    node_id = _typed(table, "id", (str, int), where)
    if node_id is None or str(node_id) == "":
        raise ConfigError(f"{where}: every node needs an id")
    node_id = str(node_id)
    where = f"{where} ({node_id})"
    num_value = table.get("num")
    num = parse_node_num(num_value, where=where) if num_value is not None else node_num_for(node_id)
    number = (int, float)
    lat = _typed(table, "lat", number, where)
    lon = _typed(table, "lon", number, where)
    if lat is not None and not -90 <= lat <= 90:
        raise ConfigError(f"{where}: lat {lat} out of range")
    if lon is not None and not -180 <= lon <= 180:
        raise ConfigError(f"{where}: lon {lon} out of range")
    role = str(_typed(table, "role", str, where) or "CLIENT").upper()
    return NodeSpec(
        id=node_id,
        num=num,
        long_name=str(_typed(table, "name", str, where) or node_id),
        short_name=str(_typed(table, "short", str, where) or _default_short(node_id)),
        role=role,
        kind=str(_typed(table, "kind", str, where) or "node"),
        camp=_typed(table, "camp", int, where),
        lat=None if lat is None else float(lat),
        lon=None if lon is None else float(lon),
        alt_m=float(_typed(table, "alt", number, where) or 0.0),
        tx_power_dbm=float(_typed(table, "tx_power_dbm", number, where) or 20.0),
        antenna_gain_db=float(_num_or(table, "antenna_gain_db", 2.0, where)),
    )


def _num_or(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = _typed(table, key, (int, float), where)
    return default if value is None else float(value)


def _link_from_table(table: Mapping[str, Any], where: str) -> LinkSpec:
    _check_keys(table, _LINK_KEYS, where)
    a = _typed(table, "a", (str, int), where)
    b = _typed(table, "b", (str, int), where)
    if a is None or b is None:
        raise ConfigError(f"{where}: a link needs both ends a and b")
    snr = _typed(table, "snr_db", (int, float), where)
    rssi = _typed(table, "rssi_dbm", (int, float), where)
    return LinkSpec(
        a=str(a),
        b=str(b),
        loss=_num_or(table, "loss", 0.0, where),
        snr_db=None if snr is None else float(snr),
        rssi_dbm=None if rssi is None else float(rssi),
        directed=bool(_typed(table, "directed", bool, where) or False),
    )


def _network_kwargs(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    _check_keys(table, _NETWORK_KEYS, where)
    out: dict[str, Any] = {}
    if (name := _typed(table, "name", str, where)) is not None:
        out["name"] = name
    if (region := _typed(table, "region", str, where)) is not None:
        out["region"] = region.upper()
    if (preset := _typed(table, "preset", str, where)) is not None:
        out["preset"] = preset.upper()
    if (hop_limit := _typed(table, "hop_limit", int, where)) is not None:
        out["hop_limit"] = hop_limit
    if (channel := _typed(table, "channel", str, where)) is not None:
        out["channel_name"] = channel
    if (exponent := _typed(table, "path_loss_exponent", (int, float), where)) is not None:
        out["path_loss_exponent"] = float(exponent)
    if (shadowing := _typed(table, "shadowing_db", (int, float), where)) is not None:
        out["shadowing_db"] = float(shadowing)
    if (links_only := _typed(table, "links_only", bool, where)) is not None:
        out["links_only"] = links_only
    return out


def topology_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Topology:
    """Build a topology from the TOML structure described in the module docstring."""
    _check_keys(data, {"network", "nodes", "links"}, source)
    network = data.get("network", {})
    if not isinstance(network, Mapping):
        raise ConfigError(f"{source}: [network] must be a table")
    nodes_raw = data.get("nodes", [])
    links_raw = data.get("links", [])
    if not isinstance(nodes_raw, Sequence) or not all(isinstance(n, Mapping) for n in nodes_raw):
        raise ConfigError(f"{source}: nodes must be an array of tables ([[nodes]])")
    if not isinstance(links_raw, Sequence) or not all(isinstance(n, Mapping) for n in links_raw):
        raise ConfigError(f"{source}: links must be an array of tables ([[links]])")
    kwargs = _network_kwargs(network, f"{source} [network]")
    kwargs.setdefault("name", Path(source).stem if source != "<dict>" else "sim")
    nodes = tuple(_node_from_table(n, f"{source} nodes[{i}]") for i, n in enumerate(nodes_raw))
    links = tuple(_link_from_table(lk, f"{source} links[{i}]") for i, lk in enumerate(links_raw))
    return Topology(nodes=nodes, links=links, **kwargs)


def topology_from_geojson(data: Mapping[str, Any], *, source: str = "<geojson>") -> Topology:
    """A GeoJSON FeatureCollection: Point features are nodes (properties as in TOML, coordinates
    [lon, lat, alt?]); LineString features with properties `a`/`b` are links. Network settings go in
    the collection's top-level `properties` (a foreign member)."""
    if data.get("type") != "FeatureCollection":
        raise ConfigError(f"{source}: expected a GeoJSON FeatureCollection")
    nodes: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for i, feature in enumerate(data.get("features", [])):
        geometry = feature.get("geometry") or {}
        props = dict(feature.get("properties") or {})
        where = f"{source} features[{i}]"
        if geometry.get("type") == "Point":
            coords = geometry.get("coordinates") or []
            if len(coords) < 2:
                raise ConfigError(f"{where}: Point needs [lon, lat]")
            props["lon"], props["lat"] = coords[0], coords[1]
            if len(coords) > 2:
                props["alt"] = coords[2]
            nodes.append(props)
        elif geometry.get("type") == "LineString" or {"a", "b"} <= set(props):
            links.append({k: v for k, v in props.items() if k in _LINK_KEYS})
        else:
            raise ConfigError(f"{where}: unsupported geometry {geometry.get('type')!r}")
    network = data.get("properties") or {}
    return topology_from_dict({"network": network, "nodes": nodes, "links": links}, source=source)


def load_topology(path: str | Path) -> Topology:
    """Read a topology from a `.toml` or `.geojson`/`.json` file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read topology {path}: {exc.strerror or exc}") from None
    source = str(path)
    try:
        if path.suffix.lower() in {".geojson", ".json"}:
            return topology_from_geojson(json.loads(raw), source=source)
        return topology_from_dict(tomllib.loads(raw.decode()), source=source)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def bundled_topology_path(name: str = "six_camps") -> Path:
    """Path of a topology shipped with the package (`meshd/radio/sim/topologies/NAME.toml`)."""
    path = Path(__file__).with_name("topologies") / f"{name}.toml"
    if not path.exists():
        raise ConfigError(f"no bundled topology {name!r}")
    return path


# ---------------------------------------------------------------- helpers and generator


def line_topology(count: int, *, loss: float = 0.0, roles: Sequence[str] | None = None, name: str = "line") -> Topology:
    """`count` nodes n0 - n1 - ... in a chain where each node hears only its neighbours (link table)."""
    if count < 2:
        raise ConfigError("a line needs at least 2 nodes")
    nodes = tuple(
        NodeSpec(id=f"n{i}", num=node_num_for(f"{name}-n{i}"), long_name=f"Node {i}", short_name=f"N{i}",
                 role=(roles[i] if roles else "CLIENT"))
        for i in range(count)
    )  # fmt: skip
    links = tuple(LinkSpec(a=f"n{i}", b=f"n{i + 1}", loss=loss) for i in range(count - 1))
    return Topology(nodes=nodes, links=links, name=name, links_only=True)


def destination_point(lat: float, lon: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """The point `distance_m` from (lat, lon) along `bearing_deg` on a spherical Earth."""
    radius = 6_371_000.0
    phi1, lam1, theta = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    delta = distance_m / radius
    phi2 = math.asin(math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta))
    lam2 = lam1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1), math.cos(delta) - math.sin(phi1) * math.sin(phi2)
    )
    return math.degrees(phi2), (math.degrees(lam2) + 540.0) % 360.0 - 180.0


def generate_topology(
    camps: int,
    seed: int = 0,
    *,
    handsets_per_camp: int = 1,
    center: tuple[float, float] = (38.20, 128.00),
    min_km: float = 4.0,
    max_km: float = 9.0,
    relay: bool = True,
) -> Topology:
    """`camps` camp hubs on a ring 4-9 km around a ROUTER relay on a hill, each with handsets nearby.

    Terrain is hilly (path-loss exponent 3.3): neighbouring camps a few km apart may hear each other,
    distant ones reach each other only through the relay, as in the shipped six-camp topology.
    """
    if not 1 <= camps <= 200:
        raise ConfigError("camps must be between 1 and 200")
    rng = random.Random(f"topology:{seed}")
    nodes: list[NodeSpec] = []
    if relay:
        nodes.append(
            NodeSpec(id="relay", num=node_num_for(f"gen{seed}-relay"), long_name="Hill relay", short_name="RLY",
                     role="ROUTER", kind="relay", lat=center[0], lon=center[1], alt_m=900.0,
                     tx_power_dbm=20.0, antenna_gain_db=12.0)
        )  # fmt: skip
    spacing = 360.0 / camps
    for camp in range(1, camps + 1):
        bearing = (camp - 1) * spacing + rng.uniform(-spacing / 4, spacing / 4)
        lat, lon = destination_point(*center, bearing, rng.uniform(min_km, max_km) * 1000.0)
        hub_id = f"c{camp}-hub"
        nodes.append(
            NodeSpec(id=hub_id, num=node_num_for(f"gen{seed}-{hub_id}"), long_name=f"Camp {camp} hub",
                     short_name=f"C{camp}H"[:4], role="CLIENT", kind="hub", camp=camp, lat=lat, lon=lon,
                     alt_m=300.0, tx_power_dbm=20.0, antenna_gain_db=3.0)
        )  # fmt: skip
        for h in range(1, handsets_per_camp + 1):
            hlat, hlon = destination_point(lat, lon, rng.uniform(0, 360), rng.uniform(80, 400))
            hid = f"c{camp}-hs{h}"
            nodes.append(
                NodeSpec(id=hid, num=node_num_for(f"gen{seed}-{hid}"), long_name=f"Camp {camp} team {h}",
                         short_name=f"{camp}T{h}"[:4], role="CLIENT", kind="handset", camp=camp, lat=hlat,
                         lon=hlon, alt_m=300.0, tx_power_dbm=17.0, antenna_gain_db=0.0)
            )  # fmt: skip
    return Topology(nodes=tuple(nodes), name=f"generated-{camps}-camps-seed{seed}", path_loss_exponent=3.3)
