"""meshd.uplink layer (see DESIGN.md section 3): the hub's MQTT bridge to HQ.

`UplinkBridge` flushes the outbox to `{prefix}/v1/camp/{origin}/{needs|alert|sealed|status}` with QoS 1
(a custody PUBACK marks ids delivered) and gates HQ broadcasts from `{prefix}/v1/hq/broadcast`.
"""

from meshd.uplink.bridge import UplinkBridge
from meshd.uplink.downlink import Rejected
from meshd.uplink.target import BrokerTarget, Topics, broker_target, build_tls_context

__all__ = ["BrokerTarget", "Rejected", "Topics", "UplinkBridge", "broker_target", "build_tls_context"]
