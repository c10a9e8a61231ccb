"""The downlink gate: only HQ-signed, fresh broadcasts get from MQTT into the mesh.

Anyone who can publish on the broker (a leaked camp password, a misconfigured ACL) could otherwise alert
every camp. Each message on `{prefix}/v1/hq/broadcast` must be a meshd envelope of kind BROADCAST from
origin 0, signed by the HQ key pinned on this hub, with a seq above every HQ seq this hub has seen
(the store's `seen` table, so the floor survives restarts and includes broadcasts heard over the mesh).
Everything else is rejected with one log line and a counter by reason.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
from collections import Counter

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshd.errors import DecodeError, SignatureError
from meshd.store.hub import HubStore
from meshd.wire import codec
from meshd.wire.envelope import HQ_ORIGIN, Envelope, Kind, verify

log = logging.getLogger(__name__)


class Rejected(enum.StrEnum):
    BAD_JSON = "bad_json"  # neither {"envelope": "<base64>"} nor bare base64 text
    BAD_ENVELOPE = "bad_envelope"  # base64 fine, but not a meshd envelope (or unsigned)
    WRONG_KIND = "wrong_kind"  # a valid envelope, but not a broadcast
    WRONG_ORIGIN = "wrong_origin"  # a broadcast that does not claim to come from HQ (origin 0)
    BAD_SIGNATURE = "bad_signature"  # not signed by the pinned HQ key
    BAD_BODY = "bad_body"  # signed by HQ, but the body does not decode (an HQ bug; keep it off the air)
    REPLAY = "replay"  # seq not above the highest HQ seq seen


class BroadcastRejected(Exception):  # a verdict on one message, not a failure of meshd
    def __init__(self, reason: Rejected, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


def envelope_bytes(payload: bytes) -> bytes:
    """The envelope carried by a downlink payload: `{"envelope": "<base64>"}` or the base64 text alone."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BroadcastRejected(Rejected.BAD_JSON, "payload is not UTF-8") from None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BroadcastRejected(Rejected.BAD_JSON, f"not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("envelope"), str):
            raise BroadcastRejected(Rejected.BAD_JSON, 'JSON has no "envelope" string')
        text = obj["envelope"]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BroadcastRejected(Rejected.BAD_JSON, "envelope is not valid base64") from None


class BroadcastGate:
    """Checks downlink payloads; `floor` is the highest HQ seq accepted by this gate or seen by the store."""

    def __init__(self, store: HubStore, hq_key: bytes) -> None:
        self.store = store
        try:
            self.hq_key = Ed25519PublicKey.from_public_bytes(hq_key)
        except ValueError:
            raise SignatureError("the pinned HQ key is not a 32-byte Ed25519 public key") from None
        self.floor = 0
        self.rejected: Counter[str] = Counter()

    async def check(self, payload: bytes) -> Envelope:
        """The verified broadcast, or `BroadcastRejected`. Raises the floor: a second copy is a replay."""
        env = self._verify(payload)
        # Read the store every time: the relay may have heard newer HQ broadcasts over the mesh.
        seen = (await self.store.highest_seen()).get(HQ_ORIGIN, 0)
        self.floor = max(self.floor, seen)
        if env.seq <= self.floor:
            raise BroadcastRejected(Rejected.REPLAY, f"seq {env.seq} is not above {self.floor}")
        self.floor = env.seq
        return env

    def _verify(self, payload: bytes) -> Envelope:
        raw = envelope_bytes(payload)
        try:
            env = Envelope.from_bytes(raw)
        except DecodeError as exc:
            raise BroadcastRejected(Rejected.BAD_ENVELOPE, str(exc)) from None
        if env.kind is not Kind.BROADCAST:
            raise BroadcastRejected(Rejected.WRONG_KIND, f"{env.id} is a {env.kind.value}, not a broadcast")
        if env.origin != HQ_ORIGIN:
            raise BroadcastRejected(Rejected.WRONG_ORIGIN, f"{env.id} claims origin {env.origin}, HQ is 0")
        try:
            verify(env, self.hq_key)
        except SignatureError as exc:
            raise BroadcastRejected(Rejected.BAD_SIGNATURE, str(exc)) from None
        try:
            codec.decode_body(Kind.BROADCAST, env.body, env.origin)
        except DecodeError as exc:
            raise BroadcastRejected(Rejected.BAD_BODY, str(exc)) from None
        return env

    def forget(self, seq: int) -> None:
        """A broadcast accepted here never reached the mesh: let a redelivery of it through again."""
        if self.floor == seq:
            self.floor = seq - 1

    def count(self, verdict: BroadcastRejected, topic: str) -> None:
        self.rejected[verdict.reason.value] += 1
        log.warning("uplink: rejected a message on %s: %s", topic, verdict)
