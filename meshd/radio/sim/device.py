"""What a virtual radio tells its host about itself: the config handshake and admin answers.

The handshake follows the firmware's `PhoneAPI` order: my_info, deviceuiConfig, own node_info, metadata,
8 channels, config sections, module config sections, other nodes' node_info, config_complete_id.
Nonce 69420 (the library's `noNodes=True`) skips the other nodes; 69421 sends only node infos (no
my_info), as some clients use for a two-stage handshake.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from meshtastic.protobuf import admin_pb2, channel_pb2, config_pb2, localonly_pb2, mesh_pb2

from meshd.radio.sim.topology import NodeSpec

FIRMWARE_VERSION = "2.7.11.sim"  # real firmware reports MAJOR.MINOR.PATCH.<git hash>
DEVICE_STATE_VERSION = 24
MIN_APP_VERSION = 30200
PIO_ENV = "native-sim"
NONCE_ONLY_CONFIG = 69420
NONCE_ONLY_NODES = 69421
MAX_CHANNELS = 8
DEFAULT_PSK = b"\x01"  # the well-known default key ("AQ=="); the simulator does not encrypt channel traffic

Role = config_pb2.Config.DeviceConfig.Role
Region = config_pb2.Config.LoRaConfig.RegionCode
Preset = config_pb2.Config.LoRaConfig.ModemPreset

CONFIG_SECTIONS = ("device", "position", "power", "network", "display", "lora", "bluetooth", "security")
MODULE_SECTIONS = (
    "mqtt", "serial", "external_notification", "store_forward", "range_test", "telemetry", "canned_message",
    "audio", "remote_hardware", "neighbor_info", "ambient_lighting", "detection_sensor", "paxcounter",
)  # fmt: skip
_CONFIG_TYPE_SECTION = {
    admin_pb2.AdminMessage.ConfigType.DEVICE_CONFIG: "device",
    admin_pb2.AdminMessage.ConfigType.POSITION_CONFIG: "position",
    admin_pb2.AdminMessage.ConfigType.POWER_CONFIG: "power",
    admin_pb2.AdminMessage.ConfigType.NETWORK_CONFIG: "network",
    admin_pb2.AdminMessage.ConfigType.DISPLAY_CONFIG: "display",
    admin_pb2.AdminMessage.ConfigType.LORA_CONFIG: "lora",
    admin_pb2.AdminMessage.ConfigType.BLUETOOTH_CONFIG: "bluetooth",
    admin_pb2.AdminMessage.ConfigType.SECURITY_CONFIG: "security",
}


def x25519_public(private_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(slots=True)
class DeviceState:
    """Identity and settings of one virtual radio, as the firmware keeps them in flash."""

    spec: NodeSpec
    private_key: bytes
    public_key: bytes
    config: localonly_pb2.LocalConfig
    module_config: localonly_pb2.LocalModuleConfig
    channels: list[channel_pb2.Channel]
    reboot_count: int = 0

    @property
    def num(self) -> int:
        return self.spec.num

    def user(self) -> mesh_pb2.User:
        return user_of(self.spec, self.public_key)

    def device_id(self) -> bytes:
        return hashlib.sha256(f"meshd-sim-device:{self.spec.num}".encode()).digest()[:16]


def make_device_state(
    spec: NodeSpec,
    *,
    private_key: bytes,
    region: str,
    preset: str,
    hop_limit: int,
    channel_name: str,
    psk: bytes = DEFAULT_PSK,
) -> DeviceState:
    public_key = x25519_public(private_key)
    cfg = localonly_pb2.LocalConfig()
    cfg.device.role = Role.Value(spec.role)
    cfg.device.serial_enabled = True
    cfg.device.rebroadcast_mode = config_pb2.Config.DeviceConfig.RebroadcastMode.ALL
    cfg.device.node_info_broadcast_secs = 10800
    cfg.position.position_broadcast_secs = 900
    cfg.position.fixed_position = spec.has_position
    cfg.power.wait_bluetooth_secs = 60
    cfg.network.wifi_enabled = False
    cfg.display.screen_on_secs = 600
    cfg.lora.use_preset = True
    cfg.lora.modem_preset = Preset.Value(preset)
    cfg.lora.region = Region.Value(region)
    cfg.lora.hop_limit = hop_limit
    cfg.lora.tx_enabled = True
    cfg.lora.tx_power = round(spec.tx_power_dbm)
    cfg.lora.sx126x_rx_boosted_gain = True
    cfg.bluetooth.enabled = False
    cfg.security.public_key = public_key
    cfg.security.private_key = private_key
    cfg.security.serial_enabled = True
    cfg.version = DEVICE_STATE_VERSION
    modules = localonly_pb2.LocalModuleConfig()
    for name in MODULE_SECTIONS:
        getattr(modules, name).SetInParent()
    modules.version = DEVICE_STATE_VERSION
    channels = []
    for index in range(MAX_CHANNELS):
        ch = channel_pb2.Channel(index=index)
        if index == 0:
            ch.role = channel_pb2.Channel.Role.PRIMARY
            ch.settings.name = channel_name
            ch.settings.psk = psk
        else:
            ch.role = channel_pb2.Channel.Role.DISABLED
        channels.append(ch)
    return DeviceState(spec, private_key, public_key, cfg, modules, channels)


def user_of(spec: NodeSpec, public_key: bytes) -> mesh_pb2.User:
    return mesh_pb2.User(
        id=spec.node_id,
        long_name=spec.long_name,
        short_name=spec.short_name,
        hw_model=mesh_pb2.HardwareModel.PORTDUINO,
        role=Role.Value(spec.role),
        public_key=public_key,
    )


def node_info_of(spec: NodeSpec, public_key: bytes) -> mesh_pb2.NodeInfo:
    info = mesh_pb2.NodeInfo(num=spec.num, user=user_of(spec, public_key))
    if spec.lat is not None and spec.lon is not None:
        info.position.latitude_i = round(spec.lat * 1e7)
        info.position.longitude_i = round(spec.lon * 1e7)
        info.position.altitude = round(spec.alt_m)
    return info


def metadata_of(state: DeviceState) -> mesh_pb2.DeviceMetadata:
    return mesh_pb2.DeviceMetadata(
        firmware_version=FIRMWARE_VERSION,
        device_state_version=DEVICE_STATE_VERSION,
        canShutdown=True,
        hasWifi=False,
        hasBluetooth=False,
        hasEthernet=False,
        role=state.config.device.role,
        position_flags=state.config.position.position_flags,
        hw_model=mesh_pb2.HardwareModel.PORTDUINO,
        hasPKC=True,
    )


def handshake_messages(
    state: DeviceState, nonce: int, others: Iterable[tuple[NodeSpec, bytes]]
) -> list[mesh_pb2.FromRadio]:
    """Everything the firmware sends in answer to `want_config_id = nonce`, in order."""
    others = list(others)
    out: list[mesh_pb2.FromRadio] = []
    my_info = mesh_pb2.MyNodeInfo(
        my_node_num=state.num,
        reboot_count=state.reboot_count,
        min_app_version=MIN_APP_VERSION,
        device_id=state.device_id(),
        pio_env=PIO_ENV,
        firmware_edition=mesh_pb2.FirmwareEdition.VANILLA,
        nodedb_count=1 + len(others),
    )
    own = mesh_pb2.FromRadio(node_info=node_info_of(state.spec, state.public_key))
    if nonce == NONCE_ONLY_NODES:
        # The firmware jumps straight to the node database: no my_info, no config.
        out.append(own)
        out.extend(mesh_pb2.FromRadio(node_info=node_info_of(spec, key)) for spec, key in others)
        out.append(mesh_pb2.FromRadio(config_complete_id=nonce))
        return out
    out.append(mesh_pb2.FromRadio(my_info=my_info))
    ui = mesh_pb2.FromRadio()
    ui.deviceuiConfig.SetInParent()
    out.append(ui)
    out.append(own)
    out.append(mesh_pb2.FromRadio(metadata=metadata_of(state)))
    out.extend(mesh_pb2.FromRadio(channel=ch) for ch in state.channels)
    for name in CONFIG_SECTIONS:
        fr = mesh_pb2.FromRadio()
        getattr(fr.config, name).CopyFrom(getattr(state.config, name))
        out.append(fr)
    session = mesh_pb2.FromRadio()
    session.config.sessionkey.SetInParent()
    out.append(session)
    for name in MODULE_SECTIONS:
        fr = mesh_pb2.FromRadio()
        getattr(fr.moduleConfig, name).CopyFrom(getattr(state.module_config, name))
        out.append(fr)
    if nonce != NONCE_ONLY_CONFIG:
        out.extend(mesh_pb2.FromRadio(node_info=node_info_of(spec, key)) for spec, key in others)
    out.append(mesh_pb2.FromRadio(config_complete_id=nonce))
    return out


@dataclass(frozen=True, slots=True)
class AdminOutcome:
    response: admin_pb2.AdminMessage | None = None
    reboot_after_s: float | None = None
    handled: bool = True


def handle_admin(state: DeviceState, request: admin_pb2.AdminMessage, session_passkey: bytes) -> AdminOutcome:
    """Answer the admin requests a client sends to its local node (read-only ones, owner and reboot)."""
    which = request.WhichOneof("payload_variant")
    response = admin_pb2.AdminMessage()
    if which == "get_device_metadata_request":
        response.get_device_metadata_response.CopyFrom(metadata_of(state))
    elif which == "get_owner_request":
        response.get_owner_response.CopyFrom(state.user())
    elif which == "get_config_request":
        config_type = request.get_config_request
        if config_type == admin_pb2.AdminMessage.ConfigType.SESSIONKEY_CONFIG:
            response.get_config_response.sessionkey.SetInParent()
        elif config_type in _CONFIG_TYPE_SECTION:
            section = _CONFIG_TYPE_SECTION[config_type]
            getattr(response.get_config_response, section).CopyFrom(getattr(state.config, section))
        else:
            return AdminOutcome(handled=False)
    elif which == "get_module_config_request":
        index = request.get_module_config_request
        if index >= len(MODULE_SECTIONS):
            return AdminOutcome(handled=False)
        section = MODULE_SECTIONS[index]
        getattr(response.get_module_config_response, section).CopyFrom(getattr(state.module_config, section))
    elif which == "get_channel_request":
        index = request.get_channel_request - 1  # the request carries index + 1
        if not 0 <= index < len(state.channels):
            return AdminOutcome(handled=False)
        response.get_channel_response.CopyFrom(state.channels[index])
    elif which == "get_canned_message_module_messages_request":
        response.get_canned_message_module_messages_response = ""
    elif which == "get_ringtone_request":
        response.get_ringtone_response = ""
    elif which == "set_owner":
        # Names only: the node number and keys of a virtual radio come from the topology.
        owner = request.set_owner
        spec = state.spec
        state.spec = replace(
            spec, long_name=owner.long_name or spec.long_name, short_name=(owner.short_name or spec.short_name)[:4]
        )
        return AdminOutcome()
    elif which in {"begin_edit_settings", "commit_edit_settings", "set_time_only"}:
        return AdminOutcome()
    elif which == "reboot_seconds":
        return AdminOutcome(reboot_after_s=float(max(request.reboot_seconds, 0)))
    else:
        return AdminOutcome(handled=False)
    response.session_passkey = session_passkey
    return AdminOutcome(response=response)
