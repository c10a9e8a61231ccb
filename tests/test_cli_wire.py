"""`meshd keygen`, `meshd registry ...`, `meshd encode` / `meshd decode`, run as a user runs them.

Every failure must be a non-zero exit with one line on stderr and never a Python traceback. The main flows
run the real console entry point in a subprocess; the longer tables of cases call the same `main()`
in-process (an exception escaping it is exactly what would print a traceback), which keeps the suite fast.
"""

from __future__ import annotations

import base64
import io
import json
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshd.cli.main import main
from meshd.wire import bodies, linkauth
from meshd.wire.envelope import MAX_ENVELOPE_LEN, Envelope

NEEDS = {
    "camp": 412,
    "population": {"individuals": 12500, "households": 2900, "female": 6600, "children": 5200, "arrivals_24h": 340},
    "severity": {"water": 4, "food": 3, "shelter": 2, "clothing": 3, "health": 4, "sanitation": 3, "protection": 2},
    "indicators": {"water_lpd": 8, "people_per_latrine": 65, "shelter_m2_pp": 2.2, "food_days": 3},
    "unaccompanied_children": 14,
    "disease": {"awd_7d": 23, "deaths_24h": 1},
    "location": {"lat": 39.02, "lon": 125.75},
    "note": "...",
}
SEALED = {"kind": "protection", "text": "woman threatened near well 3 at night, asks escort"}


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[..., Result]


def meshd(*args: str | Path, cwd: Path, stdin: str | None = None) -> Result:
    """The console entry point in a fresh interpreter, exactly as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "meshd.cli.main", *map(str, args)],
        cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Runner:
    """`meshd.cli.main.main(argv)` in-process, in `cwd`, with `stdin`."""

    def call(*args: str | Path, cwd: Path, stdin: str = "") -> Result:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


def ok(result: Result) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: Result) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def decoded(result: Result) -> list[dict[str, object]]:
    return [json.loads(line) for line in ok(result).splitlines()]


@dataclass(frozen=True)
class World:
    root: Path
    hq: Path
    camp: Path
    other_camp: Path
    registry: Path
    needs_json: Path
    sealed_json: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """HQ keys, camp 412 (registered) and camp 500 (not), a signed registry, two JSON bodies."""
    root = tmp_path_factory.mktemp("cli")
    for argv in (
        ["keygen", "--out", f"{root}/hq"],
        ["keygen", "--out", f"{root}/c412", "--camp", "412"],
        ["keygen", "--out", f"{root}/c500", "--camp", "500"],
        ["registry", "add", "--file", f"{root}/reg.json", "--camp", "412", "--name", "Camp Alpha",
         "--key", f"{root}/c412", "--hq", f"{root}/hq", "--lat", "39.02", "--lon", "125.75"],
        ["registry", "sign", "--file", f"{root}/reg.json", "--key", f"{root}/hq"],
    ):
        assert main(argv) == 0, argv
    (root / "needs.json").write_text(json.dumps(NEEDS))
    (root / "sealed.json").write_text(json.dumps(SEALED))
    return World(
        root, root / "hq", root / "c412", root / "c500", root / "reg.json", root / "needs.json", root / "sealed.json"
    )


def _pub(directory: Path, name: str) -> str:
    return (directory / name).read_text().strip()


# ---------------------------------------------------------------- keygen


def test_keygen_writes_private_files_0600_and_prints_public_keys(tmp_path):
    out = ok(meshd("keygen", "--out", "keys", "--camp", "412", cwd=tmp_path))
    keys = tmp_path / "keys"
    for private in ("sign.key", "seal.key"):
        assert stat.S_IMODE((keys / private).stat().st_mode) == 0o600
    for public in ("sign.pub", "seal.pub"):
        assert len(base64.b64decode(_pub(keys, public), validate=True)) == 32
        assert _pub(keys, public) in out
    assert _pub(keys, "sign.key") not in out
    assert _pub(keys, "seal.key") not in out
    assert (keys / "camp.id").read_text().strip() == "412"


def test_keygen_refuses_to_overwrite(tmp_path, run):
    ok(run("keygen", "--out", "keys", cwd=tmp_path))
    before = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    line = one_line_error(meshd("keygen", "--out", "keys", cwd=tmp_path))
    assert line.startswith("meshd keygen: error:")
    assert "refusing to overwrite" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == before


# ---------------------------------------------------------------- registry


def test_registry_add_sign_verify_show(world, tmp_path, run):
    reg = tmp_path / "reg.json"
    ok(run("registry", "add", "--file", reg, "--camp", "412", "--name", "Camp Alpha", "--key", world.camp,
           "--hq", world.hq, "--lat", "39.02", "--lon", "125.75", cwd=tmp_path))
    assert "not signed" in one_line_error(meshd("registry", "verify", "--file", reg, cwd=tmp_path))
    ok(run("registry", "sign", "--file", reg, "--key", world.hq, cwd=tmp_path))
    assert "signature OK" in ok(run("registry", "verify", "--file", reg, cwd=tmp_path))
    ok(run("registry", "verify", "--file", reg, "--hq-pub", world.hq / "sign.pub", cwd=tmp_path))
    assert "pinned" in one_line_error(run("registry", "verify", "--file", reg, "--hq-pub", world.camp, cwd=tmp_path))

    ok(run("registry", "add", "--file", reg, "--camp", "500", "--name", "Camp Bravo", "--key", world.other_camp,
           cwd=tmp_path))
    one_line_error(run("registry", "verify", "--file", reg, cwd=tmp_path))  # changed: must be signed again
    ok(run("registry", "sign", "--file", reg, "--key", world.hq, cwd=tmp_path))
    shown = ok(meshd("registry", "show", "--file", reg, cwd=tmp_path))
    assert "signed, OK" in shown
    assert "Camp Alpha" in shown
    assert "Camp Bravo" in shown
    assert "39.0200,125.7500" in shown
    assert _pub(world.camp, "sign.pub") in shown
    assert _pub(world.other_camp, "sign.pub") in shown


def test_edited_registry_fails_verify_and_show_says_so(world, tmp_path, run):
    reg = tmp_path / "reg.json"
    reg.write_text(world.registry.read_text().replace("Camp Alpha", "Camp Omega"))
    assert "does not verify" in one_line_error(run("registry", "verify", "--file", reg, cwd=tmp_path))
    assert "NOT VALID" in ok(run("registry", "show", "--file", reg, cwd=tmp_path))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sign", "--file", "reg.json", "--key", "c412"], "HQ"),
        (["add", "--file", "new.json", "--camp", "1", "--name", "x", "--key", "c412"], "--hq"),
        (["add", "--file", "reg.json", "--camp", "1", "--name", "x", "--key", "c412", "--lat", "1"], "--lon"),
        (["verify", "--file", "bad.json"], "JSON"),
        (["verify", "--file", "missing.json"], "missing.json"),
        (["show", "--file", "missing.json"], "missing.json"),
    ],
    ids=["sign-with-camp-key", "new-without-hq", "lat-without-lon", "bad-json", "missing", "show-missing"],
)
def test_registry_errors_fail_in_one_line(world, run, tmp_path, args, expected):
    for name in ("hq", "c412"):
        (tmp_path / name).symlink_to(world.root / name)
    (tmp_path / "reg.json").write_bytes(world.registry.read_bytes())
    (tmp_path / "bad.json").write_text("{not json")
    assert expected in one_line_error(run("registry", *args, cwd=tmp_path))
    assert (tmp_path / "reg.json").read_bytes() == world.registry.read_bytes()


# ---------------------------------------------------------------- encode / decode


def test_encode_decode_round_trip_is_verified(world):
    hexed = ok(meshd("encode", "needs", "--json", world.needs_json, "--key", world.camp, "--seq", "1234",
                     cwd=world.root)).strip()
    raw = bytes.fromhex(hexed)
    assert len(raw) <= MAX_ENVELOPE_LEN
    result = meshd("decode", hexed, "--registry", world.registry, cwd=world.root)
    [report] = decoded(result)
    assert report["id"] == "412:1234"
    assert (report["origin"], report["seq"], report["kind"]) == (412, 1234, "needs")
    assert report["provenance"] == "verified"
    assert report["body"] == NEEDS
    assert report["envelope"] == base64.b64encode(raw).decode()
    assert "signature: verified" in result.stderr


def test_base64_and_stdin_round_trip(world, run):
    b64 = ok(run("encode", "needs", "--json", "-", "--key", world.camp, "--seq", "7", "--base64",
                 cwd=world.root, stdin=json.dumps({"severity": {"water": 5}}))).strip()
    Envelope.from_bytes(base64.b64decode(b64, validate=True))
    [report] = decoded(run("decode", "-", "--registry", world.registry, cwd=world.root, stdin=b64 + "\n"))
    assert report["body"] == {"camp": 412, "severity": {"water": 5}}
    assert report["provenance"] == "verified"


def test_decode_without_registry_is_unchecked(world, run):
    hexed = ok(run("encode", "needs", "--json", world.needs_json, "--key", world.camp, cwd=world.root)).strip()
    result = run("decode", hexed, cwd=world.root)
    [report] = decoded(result)
    assert report["provenance"] == "unchecked"
    assert "not checked" in result.stderr


def test_decode_of_an_unregistered_origin_says_so(world, run):
    hexed = ok(run("encode", "needs", "--json", world.needs_json, "--key", world.other_camp, cwd=world.root)).strip()
    [report] = decoded(run("decode", hexed, "--registry", world.registry, cwd=world.root))
    assert report["provenance"] == "unknown_origin"


def test_decode_of_a_compact_custody_notice_says_what_it_answers(world, run):
    frame = linkauth.encode_custody_notice(linkauth.CustodyNotice(412, (0x1234ABCD,), bytes(8), delivered=True))
    result = run("decode", frame.hex(), cwd=world.root)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "frame": "custody notice",
        "from_camp": 412,
        "answers": ["1234abcd"],
        "delivered": True,
    }
    assert "tag: not checked" in result.stderr
    assert "cut short" in one_line_error(run("decode", frame[:6].hex(), cwd=world.root))


def test_decode_of_a_compact_delivered_notice_says_which_reports_hq_has(world, run):
    section = bodies.encode_delivered_ids([(7, 3), (7, 4)])
    notice = linkauth.CustodyNotice(412, (), bytes(8), reports=((7, 3), (7, 4)), section=section)
    result = run("decode", linkauth.encode_custody_notice(notice).hex(), cwd=world.root)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"frame": "delivered notice", "from_camp": 412, "hq_has": ["7:3", "7:4"]}


def test_decode_of_a_tampered_envelope_fails_in_one_line(world, run):
    hexed = ok(run("encode", "needs", "--json", world.needs_json, "--key", world.camp, "--seq", "1234",
                   cwd=world.root)).strip()
    raw = bytearray(bytes.fromhex(hexed))
    body = Envelope.from_bytes(bytes(raw)).body
    raw[raw.index(body) + len(body) // 2] ^= 0x01  # inside the body: the envelope still parses
    line = one_line_error(meshd("decode", raw.hex(), "--registry", world.registry, cwd=world.root))
    assert "signature" in line
    assert "FAILED" in line
    [untouched] = decoded(run("decode", hexed, "--registry", world.registry, cwd=world.root))
    assert untouched["provenance"] == "verified"


def test_decode_of_a_forged_origin_fails_in_one_line(world, run):
    hexed = ok(run("encode", "needs", "--json", world.needs_json, "--key", world.other_camp, "--origin", "412",
                   cwd=world.root)).strip()
    assert "FAILED" in one_line_error(run("decode", hexed, "--registry", world.registry, cwd=world.root))


def test_decode_of_garbage_from_the_console_script_fails_in_one_line(world):
    line = one_line_error(meshd("decode", "deadbeef", "--registry", world.registry, cwd=world.root))
    assert line.startswith("meshd decode: error:")


@pytest.mark.parametrize(
    "text",
    ["", "zz", "00", "deadbeef", "10" * 300, "%%%not base64%%%"],
    ids=["empty", "not-hex", "zero", "garbage", "oversize", "not-base64"],
)
def test_decode_of_bad_input_fails_in_one_line(world, run, text):
    one_line_error(run("decode", "-", "--registry", world.registry, cwd=world.root, stdin=text))


def test_decode_of_truncated_envelope_fails_in_one_line(world, run):
    hexed = ok(run("encode", "needs", "--json", world.needs_json, "--key", world.camp, cwd=world.root)).strip()
    for cut in (2, len(hexed) // 2, len(hexed) - 2):
        one_line_error(run("decode", hexed[:cut], "--registry", world.registry, cwd=world.root))


def test_encode_of_bad_json_from_the_console_script_fails_in_one_line(world):
    line = one_line_error(meshd("encode", "needs", "--json", "-", "--key", world.camp, cwd=world.root,
                                stdin="{not json"))
    assert line.startswith("meshd encode: error:")
    assert "not valid JSON" in line


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "object"),
        ('{"severity": {"water": 9}}', "water"),
        ('{"colour": "red"}', "colour"),
        ('{"note": "' + "x" * 200 + '"}', "note"),
    ],
    ids=["bad-json", "not-object", "out-of-range", "unknown-field", "long-note"],
)
def test_encode_of_bad_json_fails_in_one_line(world, run, stdin, expected):
    assert expected in one_line_error(run("encode", "needs", "--json", "-", "--key", world.camp, cwd=world.root,
                                          stdin=stdin))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["gossip", "--json", "needs.json", "--key", "c412"], "unknown kind"),
        (["batch", "--json", "needs.json", "--key", "c412"], "batch"),
        (["needs", "--json", "missing.json", "--key", "c412"], "missing.json"),
        (["needs", "--json", "needs.json", "--key", "no-such-dir"], "not found"),
        (["needs", "--json", "needs.json", "--key", "hq"], "origin"),
        (["needs", "--json", "needs.json", "--key", "c412", "--seq", "-1"], "seq"),
        (["needs", "--json", "needs.json", "--key", "c412", "--origin", "4294967296"], "origin"),
        (["sealed", "--json", "sealed.json", "--key", "c412"], "--registry"),
        (["sealed", "--json", "sealed.json", "--key", "c412", "--origin", "-1", "--registry", "reg.json"], "origin"),
    ],
    ids=["kind", "batch", "no-file", "no-key", "no-origin", "seq", "origin", "no-seal-key", "sealed-origin"],
)
def test_encode_usage_errors_fail_in_one_line(world, run, args, expected):
    assert expected in one_line_error(run("encode", *args, cwd=world.root))


def test_oversize_body_fails_in_one_line(world, run):
    ids = [f"{o}:{o * 7919}" for o in range(1, 100)]
    line = one_line_error(run("encode", "delivered", "--json", "-", "--key", world.camp, cwd=world.root,
                              stdin=json.dumps({"ids": ids})))
    assert "one-frame limit" in line


def test_sealed_encode_then_decode_with_and_without_the_open_key(world, run):
    hexed = ok(run("encode", "sealed", "--json", world.sealed_json, "--key", world.camp, "--seq", "9",
                   "--registry", world.registry, cwd=world.root)).strip()
    assert b"well 3" not in bytes.fromhex(hexed)

    [relay_view] = decoded(meshd("decode", hexed, "--registry", world.registry, cwd=world.root))
    assert relay_view["kind"] == "sealed"
    assert relay_view["provenance"] == "verified"
    body = relay_view["body"]
    assert isinstance(body, dict)
    assert set(body) == {"sealed", "size"}
    assert body["sealed"] is True
    assert isinstance(body["size"], int)
    assert body["size"] > 48  # ephemeral key + tag + at least one padded block

    [hq_view] = decoded(meshd("decode", hexed, "--registry", world.registry, "--open-key", world.hq,
                              cwd=world.root))
    assert hq_view["body"] == SEALED

    [wrong] = decoded(run("decode", hexed, "--registry", world.registry, "--open-key", world.camp, cwd=world.root))
    wrong_body = wrong["body"]
    assert isinstance(wrong_body, dict)
    assert "open_error" in wrong_body
    assert "text" not in wrong_body


def test_sealed_encode_with_seal_to_opens_at_hq(world, run):
    hexed = ok(run("encode", "sealed", "--json", world.sealed_json, "--key", world.camp,
                   "--seal-to", world.hq / "seal.pub", cwd=world.root)).strip()
    [hq_view] = decoded(run("decode", hexed, "--open-key", world.hq, cwd=world.root))
    assert hq_view["body"] == SEALED


def test_sealed_encode_with_out_of_range_origin_fails_in_one_line(world):
    """BUG: seal's associated data raises OverflowError before sign() range-checks the origin: a traceback."""
    one_line_error(meshd("encode", "sealed", "--json", world.sealed_json, "--key", world.camp,
                         "--origin", "4294967296", "--registry", world.registry, cwd=world.root))
