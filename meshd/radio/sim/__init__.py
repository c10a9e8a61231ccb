"""LoRa mesh simulator: virtual Meshtastic radios on ptys and TCP ports, joined by a simulated channel.

Public API::

    from meshd.radio.sim import SimNetwork, load_topology, generate_topology, line_topology

    async with SimNetwork(load_topology("six_camps.toml"), preset="LONG_FAST", seed=1, speedup=50) as net:
        hub = net.radio("c1-hub")
        print(hub.node_id, hub.tcp_port, hub.pty_path)
        packet_id = hub.send(b"hello", want_ack=False)      # as if its host sent ToRadio.packet
        await net.sleep(30)                                 # 30 s of simulated time
        print(net.stats.as_dict())
"""

from meshd.radio.sim.channel import AirFrame, AirRecord, NetworkStats, NodeStats
from meshd.radio.sim.clock import SimClock
from meshd.radio.sim.network import SimNetwork
from meshd.radio.sim.node import DeliveredPacket, VirtualRadio
from meshd.radio.sim.propagation import LinkModel, LinkQuality
from meshd.radio.sim.topology import (
    LinkSpec,
    NodeSpec,
    Topology,
    bundled_topology_path,
    generate_topology,
    line_topology,
    load_topology,
    node_num_for,
)

__all__ = [
    "AirFrame",
    "AirRecord",
    "DeliveredPacket",
    "LinkModel",
    "LinkQuality",
    "LinkSpec",
    "NetworkStats",
    "NodeSpec",
    "NodeStats",
    "SimClock",
    "SimNetwork",
    "Topology",
    "VirtualRadio",
    "bundled_topology_path",
    "generate_topology",
    "line_topology",
    "load_topology",
    "node_num_for",
]
