"""`meshd demo`, shortened: the whole system end to end (simulator, hubs, Mosquitto, HQ, field teams)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from meshd.cli.demo import exit_status
from meshd.demo.scenario import DemoResult


@pytest.mark.flaky(reruns=1)  # real-time, six hubs on two cores: see note
@pytest.mark.slow
def test_short_demo_delivers_everything_exactly_once(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "meshd.cli.main", "demo", "--minutes", "1.5", "--no-live", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout
    result = re.search(r"^RESULT (.*)$", out, re.MULTILINE)
    assert result is not None, out + proc.stderr[-3000:]
    fields = dict(item.split("=") for item in result.group(1).split())
    sent, delivered, lost = int(fields["sent"]), int(fields["delivered"]), int(fields["lost"])
    assert sent >= 8  # field teams' reports the hubs stored
    assert delivered + lost == sent
    assert fields["duplicate_rows"] == "0"
    assert lost == 0, out
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert int(fields["error_replies"]) >= 1  # the deliberately malformed message got its error reply
    exports = next(tmp_path.glob("*/exports"))
    assert (exports / "needs.hxl.csv").read_text().splitlines()[1].startswith("#")
    assert '"FeatureCollection"' in (exports / "camps.geojson").read_text()
    assert list(exports.glob("*.xml")), "CAP alerts were exported"


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (DemoResult(sent=15, delivered=15), 0),
        (DemoResult(sent=15, delivered=14, lost=1), 1),
        (DemoResult(sent=15, delivered=15, duplicate_rows=1), 1),
        (DemoResult(sent=0), 1),  # nothing sent proves nothing
    ],
)
def test_demo_fails_on_anything_lost_or_duplicated(result: DemoResult, status: int) -> None:
    assert exit_status(result) == status
