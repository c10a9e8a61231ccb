"""`meshd airtime` and `meshd sim` as a user runs them."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from meshd.cli import airtime as airtime_cli
from meshd.errors import MeshdError
from meshd.radio.airtime import PRESETS, frame_len, time_on_air_s

BIN = Path(sys.executable).parent


def _run_airtime(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="meshd")
    airtime_cli.register(parser.add_subparsers())
    args = parser.parse_args(["airtime", *argv])
    result: int = args.func(args)
    return result


def test_airtime_table_for_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_airtime(["--bytes", "150", "--preset", "long_fast"]) == 0
    out = capsys.readouterr().out
    assert "frame 174 B" in out
    rows = [line for line in out.splitlines() if re.match(r"^[* ] [A-Z_]+ ", line)]
    assert len(rows) == len(PRESETS)
    marked = [row for row in rows if row.startswith("*")]
    assert len(marked) == 1
    assert "LONG_FAST" in marked[0]
    expected_ms = time_on_air_s(frame_len(150), PRESETS["LONG_FAST"]) * 1000
    assert marked[0].split()[-1] == f"{expected_ms:.1f}"


def test_airtime_refuses_what_does_not_fit() -> None:
    with pytest.raises(MeshdError, match="at most 231 bytes"):
        _run_airtime(["--bytes", "232"])
    with pytest.raises(MeshdError, match="at most 219 bytes"):
        _run_airtime(["--bytes", "220", "--pki"])


async def _read_until(stream: asyncio.StreamReader, marker: str, lines: list[str]) -> None:
    while True:
        raw = await asyncio.wait_for(stream.readline(), timeout=30)
        if not raw:
            raise AssertionError("meshd sim exited early:\n" + "".join(lines))
        lines.append(raw.decode())
        if marker in lines[-1]:
            return


async def test_meshd_sim_serves_radios_until_interrupted(tmp_path: Path) -> None:
    pty_dir = tmp_path / "ptys"
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "meshd"), "sim", "--camps", "2", "--seed", "3", "--speedup", "20", "--pty-dir", str(pty_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        await _read_until(proc.stdout, "ready", lines)
        radios = [line for line in lines if re.match(r"^![0-9a-f]{8} ", line)]
        assert len(radios) == 5  # relay + 2 camps x (hub + handset)
        hub = next(line for line in radios if "c1-hub" in line)
        port = int(re.search(r"127\.0\.0\.1:(\d+)", hub).group(1))  # type: ignore[union-attr]
        link = pty_dir / "c1-hub"
        assert str(link) in hub
        assert link.is_symlink()
        assert os.readlink(link).startswith("/dev/pts/")
        cli = await asyncio.create_subprocess_exec(
            str(BIN / "meshtastic"), "--host", f"127.0.0.1:{port}", "--info",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(cli.communicate(), timeout=60)
        assert cli.returncode == 0, out.decode()
        assert "Camp 1 hub" in out.decode()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, "".join(lines) + rest.decode()
    assert "transmissions=" in rest.decode()
    assert not link.exists()  # endpoints are cleaned up


async def test_meshd_sim_bad_option_is_a_one_line_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "meshd"), "sim", "--topology", "/nonexistent.toml",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 1
    assert b"cannot read topology" in err
    assert b"Traceback" not in err
