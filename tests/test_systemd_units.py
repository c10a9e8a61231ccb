"""systemd units and the udev rule in systemd/: systemd's own checker, required directives, and rule matching."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNITS = ("meshd.service", "meshd-hq.service")
RULES = SYSTEMD_DIR / "99-meshtastic.rules"


# --- systemd-analyze ------------------------------------------------------------------------------


def _find_or_install_systemd_analyze() -> str | None:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    # The Makefile's system-deps target installs it; repeat that here for a bare `pytest` run as root.
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "systemd"], env=env, check=False, capture_output=True, timeout=600
        )
    return shutil.which("systemd-analyze")


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    tool = _find_or_install_systemd_analyze()
    if tool is None:
        pytest.skip("systemd-analyze is missing and could not be installed (apt-get install systemd failed)")
    return tool


@pytest.fixture
def unit_copies(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointed at an existing binary: verify checks that it is executable."""
    copies = []
    for name in UNITS:
        text = (SYSTEMD_DIR / name).read_text(encoding="utf-8")
        assert "ExecStart=/usr/local/bin/meshd " in text
        copy = tmp_path / name
        copy.write_text(text.replace("ExecStart=/usr/local/bin/meshd ", "ExecStart=/bin/true "), encoding="utf-8")
        copies.append(copy)
    return copies


def _verify(tool: str, units: list[Path]) -> tuple[int, list[str]]:
    result = subprocess.run(
        [tool, "verify", *map(str, units)], capture_output=True, text=True, timeout=120, check=False
    )
    # verify exits 0 on unknown keys and bad values and only prints them; any line naming our units
    # is a finding. Lines about other units installed on the machine are not ours to judge.
    names = [u.name for u in units]
    findings = [line for line in (result.stdout + result.stderr).splitlines() if any(n in line for n in names)]
    return result.returncode, findings


def test_systemd_analyze_verify_accepts_the_units(systemd_analyze: str, unit_copies: list[Path]) -> None:
    returncode, findings = _verify(systemd_analyze, unit_copies)
    assert returncode == 0
    assert findings == []


def test_systemd_analyze_verify_would_catch_a_typo(systemd_analyze: str, unit_copies: list[Path]) -> None:
    # Guards the test above: prove that verify's findings on our files do reach us.
    unit = unit_copies[0]
    unit.write_text(unit.read_text(encoding="utf-8").replace("ProtectSystem=", "ProtectSystm="), encoding="utf-8")
    _, findings = _verify(systemd_analyze, [unit])
    assert any("ProtectSystm" in line for line in findings)


@pytest.mark.parametrize(("name", "limit"), [("meshd.service", 2.5), ("meshd-hq.service", 2.0)])
def test_security_exposure_is_low(systemd_analyze: str, unit_copies: list[Path], name: str, limit: float) -> None:
    unit = next(u for u in unit_copies if u.name == name)
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze has no offline security scoring: {result.stderr.strip()[:200]}")
    assert float(match.group(1)) <= limit, result.stdout


# --- directives --------------------------------------------------------------------------------


def _parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd allows repeated keys, which configparser does not)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


COMMON_SERVICE = {
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "30",
    "Restart": "always",
    "RestartSec": "5",
    "DynamicUser": "yes",
    "ConfigurationDirectory": "meshd",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "DevicePolicy": "closed",
}


@pytest.mark.parametrize(
    ("name", "specific"),
    [
        (
            "meshd.service",
            {
                "ExecStart": "/usr/local/bin/meshd run -c /etc/meshd/meshd.toml",
                "StateDirectory": "meshd",
                "SupplementaryGroups": "dialout",
            },
        ),
        (
            "meshd-hq.service",
            {"ExecStart": "/usr/local/bin/meshd hq run -c /etc/meshd/hq.toml", "StateDirectory": "meshd-hq"},
        ),
    ],
)
def test_required_directives(name: str, specific: dict[str, str]) -> None:
    unit = _parse_unit(SYSTEMD_DIR / name)
    service = unit["Service"]
    for key, value in {**COMMON_SERVICE, **specific}.items():
        assert service.get(key, [])[-1:] == [value], f"{name}: {key}"
    assert "@system-service" in service["SystemCallFilter"]
    assert "PYTHONUNBUFFERED=1" in " ".join(service["Environment"]).split()
    # Restart=always alone would still give up after 5 starts in 10 s; 0 disables the start limit.
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_hub_unit_can_reach_the_radio() -> None:
    service = _parse_unit(SYSTEMD_DIR / "meshd.service")["Service"]
    assert {"char-ttyACM rw", "char-ttyUSB rw"} <= set(service["DeviceAllow"])
    # Either would hide or unmap the tty: PrivateDevices removes /dev/tty*, PrivateUsers unmaps dialout.
    assert service.get("PrivateDevices", ["no"])[-1] == "no"
    assert service.get("PrivateUsers", ["no"])[-1] == "no"


def test_hq_unit_has_no_devices() -> None:
    service = _parse_unit(SYSTEMD_DIR / "meshd-hq.service")["Service"]
    assert service["PrivateDevices"] == ["yes"]
    assert "DeviceAllow" not in service


MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("MDWE did not take effect")
    except OSError:
        pass
    import asyncio, os, sqlite3, ssl
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    import aiomqtt, lxml.etree, meshtastic.protobuf.mesh_pb2, prometheus_client, psycopg, serial_asyncio_fast
    from meshd.daemon.sdnotify import SdNotifier
    key = Ed25519PrivateKey.generate()
    key.public_key().verify(key.sign(b"report"), b"report")
    X25519PrivateKey.generate().exchange(X25519PrivateKey.generate().public_key())
    ChaCha20Poly1305(os.urandom(32)).encrypt(os.urandom(12), b"sealed", None)
    lxml.etree.fromstring(b"<alert/>")
    sqlite3.connect(":memory:").execute("create table t(x)")
    ssl.create_default_context()
    asyncio.run(asyncio.sleep(0))
    SdNotifier.from_env({}).ready()
    """
)


def test_python_and_dependencies_run_under_memory_deny_write_execute() -> None:
    # MemoryDenyWriteExecute=yes refuses W+X mappings; Linux >= 6.3 offers the same rule per process
    # (PR_SET_MDWE), so the daemon's imports and crypto can be exercised under it without systemd.
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stderr[-2000:]


# --- udev rule -----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^}]+)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*"(?P<value>[^"]*)"\s*(?:,|$)'
)
_MATCH_KEYS = {"ACTION", "KERNEL", "SUBSYSTEM", "DRIVER", "ATTR", "ATTRS", "KERNELS", "SUBSYSTEMS", "DRIVERS", "ENV"}
_MATCH_KEYS |= {"TAG", "TAGS", "TEST", "PROGRAM", "RESULT", "DEVPATH", "NAME", "SYMLINK", "CONST", "SYSCTL"}
_ASSIGN_KEYS = {"NAME", "SYMLINK", "OWNER", "GROUP", "MODE", "ENV", "TAG", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS"}
_ASSIGN_KEYS |= {"ATTR", "SYSCTL", "SECLABEL"}


@dataclass(frozen=True)
class Token:
    key: str
    attr: str | None
    op: str
    value: str


def _parse_rules(text: str) -> list[list[Token]]:
    rules = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens, pos = [], 0
        while pos < len(line):
            match = _TOKEN.match(line, pos)
            assert match, f"line {number}: cannot parse at {line[pos:]!r}"
            tokens.append(Token(match["key"], match["attr"], match["op"], match["value"]))
            pos = match.end()
        for token in tokens:
            known = _MATCH_KEYS if token.op in ("==", "!=") else _ASSIGN_KEYS
            assert token.key in known, f"line {number}: {token.key} cannot be used with {token.op}"
        rules.append(tokens)
    return rules


@dataclass
class Device:
    subsystem: str
    attrs: dict[str, str]
    action: str = "add"
    symlinks: set[str] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)
    mode: str | None = None
    group: str | None = None


def _matches(token: Token, device: Device) -> bool:
    if token.key == "ACTION":
        actual: str | None = device.action
    elif token.key in ("SUBSYSTEM", "SUBSYSTEMS"):
        actual = device.subsystem if token.key == "SUBSYSTEM" else "usb"
    elif token.key == "ATTRS":
        actual = device.attrs.get(token.attr or "")
    else:
        raise AssertionError(f"the test's rule engine does not model {token.key}")
    hit = actual is not None and any(fnmatch.fnmatchcase(actual, alt) for alt in token.value.split("|"))
    return hit if token.op == "==" else not hit


def _apply(rules: list[list[Token]], device: Device) -> Device:
    skip_to: str | None = None
    for tokens in rules:
        if skip_to is not None:
            if tokens[0].key == "LABEL" and tokens[0].value == skip_to:
                skip_to = None
            continue
        if not all(_matches(t, device) for t in tokens if t.op in ("==", "!=")):
            continue
        for token in (t for t in tokens if t.op not in ("==", "!=")):
            if token.key == "GOTO":
                skip_to = token.value
            elif token.key == "SYMLINK":
                device.symlinks.add(token.value)
            elif token.key == "ENV":
                device.env[token.attr or ""] = token.value
            elif token.key == "MODE":
                device.mode = token.value
            elif token.key == "GROUP":
                device.group = token.value
    return device


def _tty(vendor: str, product: str, action: str = "add") -> Device:
    return Device("tty", {"idVendor": vendor, "idProduct": product}, action=action)


def test_udev_rule_parses_and_gotos_have_labels() -> None:
    rules = _parse_rules(RULES.read_text(encoding="utf-8"))
    labels = {t.value for r in rules for t in r if t.key == "LABEL"}
    gotos = {t.value for r in rules for t in r if t.key == "GOTO"}
    assert gotos <= labels
    assert sum(1 for r in rules for t in r if t.key == "SYMLINK") >= 7


@pytest.mark.parametrize(
    ("vendor", "product"),
    [
        ("303a", "1001"),  # ESP32-S3 USB-Serial/JTAG
        ("303a", "4001"),  # another Espressif native-USB product id
        ("1a86", "7523"),  # CH340
        ("1a86", "55d4"),  # CH9102
        ("10c4", "ea60"),  # CP210x
        ("239a", "8029"),  # RAK4631 / T-Echo (Adafruit nRF52 VID)
        ("2886", "0059"),  # Seeed nRF52840
        ("2e8a", "000a"),  # RP2040
    ],
)
def test_meshtastic_radios_get_the_stable_name(vendor: str, product: str) -> None:
    device = _apply(_parse_rules(RULES.read_text(encoding="utf-8")), _tty(vendor, product))
    assert device.symlinks == {"meshtastic"}
    assert (device.mode, device.group) == ("0660", "dialout")
    assert device.env.get("ID_MM_DEVICE_IGNORE") == "1"  # ModemManager must not probe the radio


@pytest.mark.parametrize(
    "device",
    [
        _tty("0403", "6001"),  # FTDI: not a Meshtastic board bridge
        _tty("1a86", "5523"),  # CH341 in parallel/I2C mode
        _tty("10c4", "ea70"),  # CP2105 dual UART
        Device("usb", {"idVendor": "239a", "idProduct": "8029"}),  # the USB device itself, not its tty
        _tty("303a", "1001", action="remove"),
    ],
    ids=["ftdi", "ch341-parallel", "cp2105", "usb-not-tty", "remove"],
)
def test_other_devices_are_left_alone(device: Device) -> None:
    applied = _apply(_parse_rules(RULES.read_text(encoding="utf-8")), device)
    assert applied.symlinks == set()
    assert applied.mode is None


def test_udevadm_verify_if_available(tmp_path: Path) -> None:
    udevadm = shutil.which("udevadm") or next(
        (p for p in ("/usr/bin/udevadm", "/sbin/udevadm", "/bin/udevadm") if Path(p).exists()), None
    )
    if udevadm is None:
        pytest.skip("udevadm is not installed; the rule is checked by the parser tests above")
    probe = subprocess.run([udevadm, "verify", "--help"], capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        pytest.skip("this udevadm has no 'verify' command (systemd < 254); parser tests cover the rule")
    copy = tmp_path / RULES.name
    shutil.copy(RULES, copy)
    result = subprocess.run([udevadm, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
