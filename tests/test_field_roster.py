"""The handset roster, `meshd roster add|list|remove` and `meshd parse`, run as an operator runs them."""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from meshd.cli.main import main
from meshd.field.roster import Handset, Roster, RosterError, parse_node, parse_public_key

KEY_A = base64.b64encode(bytes(range(1, 33))).decode()
KEY_B = base64.b64encode(bytes(range(40, 72))).decode()


def meshd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "meshd.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def run_main(*args: str) -> tuple[int, str, str]:
    """The same `main()` in-process, for tables of cases (an escaping exception would be a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------ the Roster class


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("!a1b2c3d4", 0xA1B2C3D4),
        ("!A1B2C3D4", 0xA1B2C3D4),
        ("!1", 1),
        ("2712847316", 0xA1B2C3D4),
        (" !0000abcd ", 0xABCD),
    ],
)
def test_node_forms(text: str, node: int) -> None:
    assert parse_node(text) == node


@pytest.mark.parametrize("text", ["a1b2c3d4", "!", "!xyz", "!123456789", "0", "4294967295", "!ffffffff", "-3", ""])
def test_bad_nodes(text: str) -> None:
    with pytest.raises(RosterError):
        parse_node(text)


def test_key_forms() -> None:
    assert parse_public_key(KEY_A) == bytes(range(1, 33))
    assert parse_public_key("base64:" + KEY_A) == bytes(range(1, 33))
    for bad in ("not base64!", base64.b64encode(b"short").decode(), base64.b64encode(bytes(32)).decode()):
        with pytest.raises(RosterError):
            parse_public_key(bad)


def test_save_load_verify(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "roster.json"
    roster = Roster(path=path)
    assert roster.add(Handset(0xA1B2C3D4, "Water team 2", parse_public_key(KEY_A))) is None
    roster.add(Handset(7, "의료팀", parse_public_key(KEY_B)))
    roster.save()
    assert [p.name for p in path.parent.iterdir()] == ["roster.json"]  # no temporary file left behind
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 1
    assert data["handsets"][1] == {"node": "!a1b2c3d4", "team": "Water team 2", "public_key": KEY_A}
    again = Roster.load(path)
    assert [h.node for h in again] == [7, 0xA1B2C3D4]
    assert again.verify(0xA1B2C3D4, parse_public_key(KEY_A))
    assert not again.verify(0xA1B2C3D4, parse_public_key(KEY_B))
    assert not again.verify(0xA1B2C3D4, b"")
    assert not again.verify(8, parse_public_key(KEY_A))


def test_one_key_cannot_belong_to_two_nodes() -> None:
    roster = Roster([Handset(1, "a", parse_public_key(KEY_A))])
    with pytest.raises(RosterError, match="already registered for !00000001"):
        roster.add(Handset(2, "b", parse_public_key(KEY_A)))
    replaced = roster.add(Handset(1, "a renamed", parse_public_key(KEY_A)))  # same node: a replacement
    assert replaced is not None
    assert roster.get(1) == Handset(1, "a renamed", parse_public_key(KEY_A))


def test_refresh_reloads_a_changed_file_and_keeps_the_old_roster_on_a_broken_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "roster.json"
    Roster([Handset(1, "a", parse_public_key(KEY_A))], path=path).save()
    live = Roster.load(path)
    assert not live.refresh()
    Roster([Handset(1, "a", parse_public_key(KEY_A)), Handset(2, "b", parse_public_key(KEY_B))], path=path).save()
    assert live.refresh()
    assert 2 in live
    path.write_text('{"handsets": [{"node": "!zz"}]}', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert not live.refresh()
    assert "keeping the roster in memory" in caplog.text
    assert len(live) == 2
    path.unlink()
    assert live.refresh()
    assert len(live) == 0


def handsets(*items: dict[str, object]) -> str:
    return json.dumps({"handsets": list(items)})


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("not json", "not valid JSON"),
        ("[]", '"handsets" list'),
        ('{"version": 2, "handsets": []}', "version 2"),
        (handsets({"node": "!01", "team": "a", "public_key": KEY_A, "x": 1}), "unknown key 'x'"),
        (handsets({"node": "!01", "team": "", "public_key": KEY_A}), "team name is empty"),
        (handsets({"node": "!01", "team": "a", "public_key": 5}), "needs string fields"),
        (
            handsets({"node": "!01", "team": "a", "public_key": KEY_A}, {"node": 1, "team": "b", "public_key": KEY_B}),
            "listed twice",
        ),
    ],
)
def test_malformed_files_are_named_errors(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "roster.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RosterError, match=error):
        Roster.load(path)


# ------------------------------------------------------------------ meshd roster


def test_roster_cli_add_list_remove(tmp_path: Path) -> None:
    path = tmp_path / "roster.json"
    added = meshd("roster", "add", "--node", "!a1b2c3d4", "--team", "Water team 2", "--key", KEY_A, "--file", str(path))
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"added !a1b2c3d4 (Water team 2) in {path}"
    assert Roster.load(path).verify(0xA1B2C3D4, parse_public_key(KEY_A))

    listed = meshd("roster", "list", "--file", str(path))
    assert listed.returncode == 0
    assert listed.stdout.split() == ["!a1b2c3d4", "2712847316", "Water", "team", "2", KEY_A]

    removed = meshd("roster", "remove", "--node", "2712847316", "--file", str(path))
    assert removed.returncode == 0
    assert removed.stdout.strip() == f"removed !a1b2c3d4 (Water team 2) from {path}"
    assert len(Roster.load(path)) == 0


def test_roster_cli_finds_the_file_through_the_hub_config(tmp_path: Path) -> None:
    config = tmp_path / "meshd.toml"
    config.write_text(f'[hub]\ncamp_id = 412\n[field]\nroster = "{tmp_path / "r.json"}"\n', encoding="utf-8")
    code, _, _ = run_main("roster", "add", "--node", "!00000001", "--team", "물 팀", "--key", KEY_B, "-c", str(config))
    assert code == 0
    code, out, _ = run_main("roster", "list", "--json", "-c", str(config))
    assert code == 0
    assert json.loads(out) == [{"node": "!00000001", "team": "물 팀", "public_key": KEY_B}]
    config.write_text("[hub]\ncamp_id = 412\n", encoding="utf-8")
    code, _, err = run_main("roster", "list", "-c", str(config))
    assert code == 1
    assert "sets no field.roster" in err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["add", "--node", "a1b2c3d4", "--team", "t", "--key", KEY_A], "must be a node id like !a1b2c3d4"),
        (["add", "--node", "!ffffffff", "--team", "t", "--key", KEY_A], "not a handset node number"),
        (["add", "--node", "!01", "--team", "t", "--key", "abc$"], "not valid base64"),
        (["add", "--node", "!01", "--team", "t", "--key", base64.b64encode(b"x" * 16).decode()], "must be 32 bytes"),
        (["add", "--node", "!01", "--team", "  ", "--key", KEY_A], "team name is empty"),
        (["add", "--node", "!02", "--team", "t", "--key", KEY_B], "already registered for !00000005"),
        (["remove", "--node", "!09"], "!00000009 is not in the roster"),
    ],
)
def test_roster_cli_errors_are_one_line(tmp_path: Path, args: list[str], error: str) -> None:
    path = tmp_path / "roster.json"
    Roster([Handset(5, "five", parse_public_key(KEY_B))], path=path).save()
    before = path.read_bytes()
    code, out, err = run_main("roster", *args, "--file", str(path))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("meshd roster: error: ")
    assert error in err
    assert path.read_bytes() == before


def test_roster_cli_remove_from_missing_file(tmp_path: Path) -> None:
    code, _, err = run_main("roster", "remove", "--node", "!01", "--file", str(tmp_path / "none.json"))
    assert code == 1
    assert "does not exist" in err


# ------------------------------------------------------------------ meshd parse


def test_parse_cli_prints_the_body_or_the_reply() -> None:
    ok = meshd("parse", "필요 물4 식량3 인원12500 아이14")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "population": {"individuals": 12500},
        "severity": {"water": 4, "food": 3},
        "unaccompanied_children": 14,
    }
    bad = meshd("parse", "N", "W9")  # words are joined
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr == "meshd parse: error: W9? severity is 0–5. Example: N W4 F3\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["A CHOLERA 3"], {"type": "disease_outbreak", "urgency": "immediate", "severity": "severe",
                           "certainty": "likely", "count": 3, "text": "cholera"}),
        (["--full", "P! gate 2 at night"], {"kind": "sealed", "language": "en",
                                            "body": {"kind": "protection", "text": "gate 2 at night"}}),
        (["--full", "상태"], {"kind": "status", "language": "ko", "body": {"request": "status"}}),
    ],
)  # fmt: skip
def test_parse_cli_kinds(args: list[str], expected: dict[str, object]) -> None:
    code, out, err = run_main("parse", *args)
    assert (code, err) == (0, "")
    assert json.loads(out) == expected


def test_parse_cli_reads_stdin_and_reports_korean_errors_in_korean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("필요 뭐4\n"))
    code, out, err = run_main("parse", "-")
    assert code == 1
    assert out == ""
    assert err.startswith("meshd parse: error: 뭐? 모르는 항목.")
