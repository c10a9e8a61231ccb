"""A hub whose radio is not CLIENT_MUTE says so in its log once the radio has sent its configuration (the
camp technician applied the handset file, or an old hub file): such a radio repeats every meshd frame.
Real hub, real RadioLink, a virtual radio on the simulator reporting its configured role."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from meshd.clock import Clock
from meshd.daemon.hub import Hub, radio_role_warning
from meshd.radio.sim import SimNetwork, line_topology
from tests.support.hubs import provision, running
from tests.test_relay_line import wait_for


@pytest.mark.parametrize(("role", "warned"), [("CLIENT", True), ("CLIENT_MUTE", False), ("ROUTER", True)])
async def test_hub_warns_about_a_radio_that_repeats_frames(
    tmp_path, caplog: pytest.LogCaptureFixture, role: str, warned: bool
) -> None:
    p = provision(tmp_path, [1])
    async with SimNetwork(
        line_topology(2, roles=[role, "CLIENT"], name="role"), speedup=40.0, seed=1, pty=False
    ) as net:
        base = p.config(1)
        radio = dataclasses.replace(base.radio, device=f"tcp://127.0.0.1:{net.radios[0].tcp_port}")
        hub = Hub(dataclasses.replace(base, radio=radio), clock=Clock(40.0), serve_status=False)
        with caplog.at_level(logging.WARNING, logger="meshd.daemon.hub"):
            async with running([hub]):
                assert hub.relay is not None
                await wait_for(lambda: hub.relay is not None and hub.relay.radio.my_node is not None, limit_s=20)
                await wait_for(lambda: not warned or "repeats every meshd frame" in caplog.text, limit_s=5)
                await asyncio.sleep(0.3)  # a warning for a muted radio would have been logged by now
    assert ("repeats every meshd frame" in caplog.text) is warned
    if warned:
        assert f"role is {role}" in caplog.text


def test_role_warning_text() -> None:
    assert radio_role_warning("CLIENT_MUTE") is None
    warning = radio_role_warning("CLIENT")
    assert warning is not None
    assert "firmware-config/<region>/hub.yaml" in warning


def test_a_role_newer_than_our_protobufs_is_named_not_fatal() -> None:
    from meshd.radio.link import RadioLink

    link = RadioLink("tcp://127.0.0.1:1")
    link.session.config.device.role = 99  # not in the installed meshtastic protobufs
    assert link.device_role == "ROLE_99"
    assert radio_role_warning(link.device_role) is not None
    link.session.config.device.role = 1
    assert link.device_role == "CLIENT_MUTE"
