"""One exception hierarchy for everything meshd raises on purpose.

Callers catch `MeshdError` at the edges (CLI, daemon loops) and turn it into a one-line message or a
counter; anything else escaping is a bug.
"""

from __future__ import annotations


class MeshdError(Exception):
    """Root of every error meshd raises deliberately."""


class ConfigError(MeshdError):
    """A configuration file is missing, unreadable, or has a wrong key or value."""


class KeyFileError(MeshdError):
    """A key file is missing, malformed, has unsafe permissions, or would be overwritten."""


class WireError(MeshdError):
    """Bytes or values that cannot be turned into a valid meshd message."""


class DecodeError(WireError):
    """Bytes that are not a well-formed meshd envelope or body."""


class EncodeError(WireError):
    """Values that cannot be encoded (out of range, or the result would not fit one radio frame)."""


class TooLargeError(EncodeError):
    """The encoded envelope would exceed the one-frame payload limit."""


class SignatureError(WireError):
    """The signature does not verify against the key of the claimed origin."""


class UnknownOriginError(WireError):
    """The origin camp is not in the registry, so its signature cannot be checked."""


class ReplayError(WireError):
    """The (origin, seq) was seen before or is older than the replay window."""


class SealError(WireError):
    """A sealed body cannot be opened (wrong key, tampered ciphertext, or malformed box)."""


class RegistryError(MeshdError):
    """The camp registry is malformed or its HQ signature does not verify."""


class ShorthandError(WireError):
    """A field team's text message could not be parsed; the message says what and shows the expected form."""

    def __init__(self, message: str, *, language: str = "en") -> None:
        super().__init__(message)
        self.language = language


class RadioError(MeshdError):
    """The radio link failed: device gone, protocol violation, or the radio refused a packet."""


class FrameError(RadioError):
    """A stream-API frame that cannot be decoded."""


class RadioRefusedError(RadioError):
    """The radio answered a packet with a non-zero QueueStatus result: it was not queued for the air."""

    def __init__(self, message: str, *, packet_id: int, reason: str) -> None:
        super().__init__(message)
        self.packet_id = packet_id
        self.reason = reason  # e.g. DUTY_CYCLE_LIMIT, TX_DISABLED, PKI_FAILED, ERRNO_UNKNOWN


class StoreError(MeshdError):
    """The store cannot be opened, is corrupt, or a write failed."""


class UplinkError(MeshdError):
    """The MQTT uplink failed or rejected a message."""
