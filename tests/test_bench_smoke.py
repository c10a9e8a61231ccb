"""Every benchmark script still runs and ends with its RESULT line (tiny sizes: this checks the scripts, not
the figures). CI does not run `make bench`; without this, a bench broken by a change in the code it drives
goes unnoticed until someone needs the figures (bench/footprint.py did, once).

Not here: bench/sim_network.py (minutes even with --quick; the relay path it drives is covered by
tests/test_relay_sim.py and the demo) and bench/sim_capacity.py (a fixed ramp of ~20 s; the simulator is
covered by tests/test_sim_*.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE_RUNS = {
    "wire_size.py": [],
    "radio_parser.py": ["--frames", "2000", "--mt-frames", "200", "--runs", "1"],
    "relay_pipeline.py": ["--envelopes", "200", "--repeat", "1"],
    "uplink_flush.py": ["1000", "--rounds", "1"],
    "hq_ingest.py": ["--messages", "200"],
    "footprint.py": ["--smoke"],
}


def test_every_bench_script_is_smoke_tested_or_excused() -> None:
    excused = {"sim_network.py", "sim_capacity.py"}
    assert {p.name for p in (ROOT / "bench").glob("*.py")} == set(SMOKE_RUNS) | excused


@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_bench_runs_and_prints_its_result_line(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *SMOKE_RUNS[script]],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), proc.stdout[-2000:]
    assert all("=" in item for item in last.split()[1:]), last
