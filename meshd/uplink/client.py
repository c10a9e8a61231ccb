"""An aiomqtt client that tells custody from mere acknowledgement.

What a PUBACK means in aiomqtt 2.5 (read from its source with paho-mqtt 2.2 underneath):
`await Client.publish(..., qos=1)` returns when paho calls `on_publish`, which for QoS 1 happens only
when the broker's PUBACK arrives (`_handle_pubackcomp`), never on write. But aiomqtt throws away the
PUBACK's reason code, and that matters:

* MQTT 3.1.1 has no reason codes: Mosquitto answers a publish its ACL denies with an ordinary PUBACK
  and silently drops the message. Taking that as custody would delete reports HQ never got.
* MQTT 5 says so: 0x87 "Not authorized" (and other codes >= 0x80) is a refusal, and 0x10 "No matching
  subscribers" means the broker accepted the message and then had nobody to give it to (HQ's worker is
  down and holds no persistent session), so HQ does not have it either.

So this client speaks MQTT 5 and `publish_qos1` calls back with the PUBACK's reason code. It also
waits on nothing but the PUBACK: link loss is noticed by the message iterator (see bridge), and the
whole client is discarded with its callbacks uncalled, so an unanswered publish is simply not custody.

Two more aiomqtt behaviours are patched here because a satellite link makes them hurt: a socket closed
before the CONNACK fails the attempt at once (aiomqtt waits out its timeout), and `guarded` stops waiting
for a SUBACK/PUBACK when the link is already gone. Broadcasts are acknowledged manually (paho's
`manual_ack`), only once the relay has them.

This reaches into aiomqtt internals (`_client`, `_connected`, `_disconnected`, `_loop` and the
`_on_publish` / `_on_socket_*` callbacks), pinned by `aiomqtt>=2.3,<3`; tests/test_uplink_*.py check
each behaviour against a real Mosquitto, so an aiomqtt upgrade that changes them fails there.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

NO_MATCHING_SUBSCRIBERS = 0x10
T = TypeVar("T")


def is_custody(reason: ReasonCode, *, require_subscriber: bool) -> bool:
    """Whether a PUBACK with this reason hands the report over to HQ's side."""
    if reason.is_failure:
        return False
    return not (require_subscriber and reason.value == NO_MATCHING_SUBSCRIBERS)


class CustodyClient(aiomqtt.Client):
    """`aiomqtt.Client` plus `publish_qos1`, which calls back with the broker's PUBACK reason code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, Callable[[ReasonCode], None]] = {}
        # Broadcasts are acknowledged only after the relay has stored them (see `ack`).
        self._client.manual_ack_set(True)

    def publish_qos1(self, topic: str, payload: bytes, on_ack: Callable[[ReasonCode], None]) -> None:
        """Hand one QoS 1 PUBLISH to paho; `on_ack(reason)` runs when its PUBACK arrives.

        `on_ack` runs inside paho's PUBACK handling, on the event loop: it must not publish. (A callback
        rather than a future: a future per message and its scheduled wake-up cost a tenth of the backlog
        flush.) Raises `aiomqtt.MqttCodeError` at once if paho cannot take it (not connected, queue full).
        """
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        # paho never reuses a mid that is still in flight, so this cannot collide with a live entry.
        self._acks[info.mid] = on_ack

    async def guarded(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` (a subscribe, a status publish) unless the link drops first.

        aiomqtt's own calls wait for their acknowledgement until the client timeout (30 s here) even when
        the socket is already gone; a hub whose link dies right after connecting would sit that out.
        """
        task = asyncio.ensure_future(awaitable)
        watch: set[asyncio.Future[Any]] = {task, self._disconnected}
        await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task
        cause = None if self._disconnected.cancelled() else self._disconnected.exception()
        raise aiomqtt.MqttError("link lost while waiting for the broker") from cause

    @property
    def outstanding(self) -> int:
        return len(self._acks)

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK an incoming message now that it is safely handled (manual ack mode)."""
        self._client.ack(mid, qos)

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT packet, so the broker publishes our will.

        paho sees the shut socket on its next read and tears down as for any lost link (reader removed,
        misc task cancelled, `_on_disconnect`). Safe to call when already disconnected.
        """
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # also ssl.SSLSocket; None once paho closed it
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def close(self, *, graceful: bool, grace_s: float) -> None:
        """End this connection for good: DISCONNECT if `graceful` and the link answers, else `abort`."""
        if graceful and not self._disconnected.done():
            try:
                async with asyncio.timeout(grace_s):
                    await self.__aexit__(None, None, None)
            except (TimeoutError, aiomqtt.MqttError, OSError):
                pass
            else:
                return
        self.abort()
        await asyncio.wait([self._disconnected], timeout=grace_s)
        if self._disconnected.done() and not self._disconnected.cancelled():
            self._disconnected.exception()  # retrieved: the reason was already logged by the caller

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        """As aiomqtt's, but a socket closed before the CONNACK fails the connection attempt at once.

        aiomqtt would wait out its whole timeout (30 s here) for a CONNACK that cannot come, e.g. when a
        broker that requires a client certificate closes the TLS session right after the handshake.
        """
        super()._on_socket_close(client, userdata, sock)

        def fail_connect() -> None:
            if not self._connected.done():
                self._connected.set_exception(aiomqtt.MqttError("connection closed before the broker's CONNACK"))

        # paho may call this from the connect thread; futures are touched on the loop only.
        self._loop.call_soon_threadsafe(fail_connect)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        """As aiomqtt's, but checks the socket is still paho's when the deferred registration runs.

        aiomqtt always defers `add_writer` with `call_soon_threadsafe` (paho may call from the connect
        thread). When the link drops mid-flush, the socket is closed before that runs and asyncio logs an
        ERROR traceback ("Bad file descriptor") for every drop: noise that `meshd status` would show.
        """

        def on_writable() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # noqa: BLE001 - any write failure means the link is gone, as in aiomqtt
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            current = client.socket()
            if current is not None and current is sock:
                self._loop.add_writer(current.fileno(), on_writable)

        self._loop.call_soon_threadsafe(register)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        on_ack = self._acks.pop(mid, None)
        if on_ack is None:
            # One of aiomqtt's own publishes (the retained status): let aiomqtt resolve it.
            super()._on_publish(client, userdata, mid, reason_code, properties)
        else:
            on_ack(reason_code)
