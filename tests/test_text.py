"""Field shorthand: a table of English and Korean inputs, the docs' examples, and property tests."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.errors import MeshdError, ShorthandError
from meshd.wire.text import (
    ALERT_KINDS,
    ALERT_TEXT_MAX_BYTES,
    ALERT_VOCABULARY,
    KEYWORD_VOCABULARY,
    MAX_REPLY_BYTES,
    NEEDS_FIELDS,
    NOTE_MAX_BYTES,
    SEALED_TEXT_MAX_BYTES,
    SEALED_VOCABULARY,
    AlertEntry,
    HelpRequest,
    NeedsEntry,
    Parsed,
    SealedEntry,
    StatusRequest,
    delivered_reply,
    help_text,
    parse_shorthand,
    received_reply,
    status_reply,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"


@dataclass(frozen=True)
class Err:
    """An expected ShorthandError: a substring of the reply and the reply's language."""

    contains: str
    language: str = "en"


def needs(language: str = "en", **sections: object) -> NeedsEntry:
    return NeedsEntry(dict(sections), language)


def sev(**values: int) -> dict[str, int]:
    return values


# Written out here rather than read from the module, so the table also pins the documented CAP choices.
CAP = {
    "disease_outbreak": ("immediate", "severe", "likely"),
    "missing_child": ("immediate", "severe", "observed"),
    "fire": ("immediate", "extreme", "observed"),
    "security_incident": ("immediate", "severe", "observed"),
    "flood": ("immediate", "severe", "observed"),
    "cold_wave": ("expected", "moderate", "likely"),
    "distribution": ("future", "minor", "likely"),
    "other": ("unknown", "unknown", "unknown"),
}


def alert(alert_type: str, count: int | None = None, text: str | None = None, language: str = "en") -> AlertEntry:
    urgency, severity, certainty = CAP[alert_type]
    body: dict[str, object] = {"type": alert_type, "urgency": urgency, "severity": severity, "certainty": certainty}
    if count is not None:
        body["count"] = count
    if text is not None:
        body["text"] = text
    return AlertEntry(body, language)


FULL_EN = needs(
    population={"individuals": 12500},
    severity=sev(water=4, food=3, shelter=2, clothing=3, health=4, sanitation=3),
    unaccompanied_children=14,
)

CASES: list[tuple[str, Parsed | Err]] = [
    # --- needs, English ---
    ("N W4 F3 S2 C3 M4 H3 P12500 K14", FULL_EN),
    ("N W4 F3", needs(severity=sev(water=4, food=3))),
    ("NEED W=4 F=3", needs(severity=sev(water=4, food=3))),
    ("needs w: 4 f : 3", needs(severity=sev(water=4, food=3))),
    ("n water 4 food 3 shelter 2", needs(severity=sev(water=4, food=3, shelter=2))),
    ("N CLOTHING 1 clothes", Err("clothes? needs a number 0–5")),
    ("N CLOTHING 1 clothes 2", Err("clothes twice")),
    ("N MED5 SAN0", needs(severity=sev(health=5, sanitation=0))),
    ("N HEALTH 2 HYGIENE 3 PROT 1", needs(severity=sev(health=2, sanitation=3, protection=1))),
    (
        "N X2 P12500 HH2900 K14 AWD23 D1",
        needs(
            population={"individuals": 12500, "households": 2900},
            severity=sev(protection=2),
            unaccompanied_children=14,
            disease={"awd_7d": 23, "deaths_24h": 1},
        ),
    ),
    ("N P12,500", needs(population={"individuals": 12500})),
    ("N W4,F3", needs(severity=sev(water=4, food=3))),
    ("N W4; F3 / S2", needs(severity=sev(water=4, food=3, shelter=2))),
    ("N W4F3S2", needs(severity=sev(water=4, food=3, shelter=2))),
    ("N POP 300 KIDS 2 DEATHS 0", needs(population={"individuals": 300}, unaccompanied_children=2,
                                        disease={"deaths_24h": 0})),
    ("N UASC 5", needs(unaccompanied_children=5)),
    ("N DIARRHOEA 12", needs(disease={"awd_7d": 12})),
    ("N W4 # pump broken", needs(severity=sev(water=4), note="pump broken")),
    ('N W4 "pump broken" F3', needs(severity=sev(water=4, food=3), note="pump broken")),
    (
        "N W4 # pump broken at gate two and no fuel for the generator",
        needs(severity=sev(water=4), note="pump broken at gate two and no fuel for"),
    ),
    ("N: W4", needs(severity=sev(water=4))),
    ("Ｎ Ｗ４ Ｆ：３", needs(severity=sev(water=4, food=3))),
    ("N W4 F3.", needs(severity=sev(water=4, food=3))),
    ("N W 0", needs(severity=sev(water=0))),
    ("N LATRINE 4", needs(severity=sev(sanitation=4))),
    ("N P 10,000,000", needs(population={"individuals": 10_000_000})),
    ("N W4\nF3", needs(severity=sev(water=4, food=3))),
    # --- needs, Korean (ROK and DPRK spellings, spaces, =, :) ---
    ("필요 물4 식량3 천막2 옷3 의료4 위생3 인원12500 아이14", NeedsEntry(FULL_EN.body, "ko")),
    ("요청 먹는물 4 량식 3", needs("ko", severity=sev(water=4, food=3))),
    ("필요 식수=4 양식:3", needs("ko", severity=sev(water=4, food=3))),
    ("필요 물 = 4 식량 : 3", needs("ko", severity=sev(water=4, food=3))),
    ("필요 먹는 물 4 먹을 것 2", needs("ko", severity=sev(water=4, food=2))),
    ("필요 위생실3", needs("ko", severity=sev(sanitation=3))),
    ("필요 화장실 3", needs("ko", severity=sev(sanitation=3))),
    ("필요 변소2", needs("ko", severity=sev(sanitation=2))),
    ("필요 쉼터 2 겨울옷 4", needs("ko", severity=sev(shelter=2, clothing=4))),
    ("필요 약5 보호2", needs("ko", severity=sev(health=5, protection=2))),
    ("필요 의사 4 안전 3", needs("ko", severity=sev(health=4, protection=3))),
    ("필요 병원3", needs("ko", severity=sev(health=3))),
    ("필요 보호자 없는 아이 7", needs("ko", unaccompanied_children=7)),
    ("필요 어린이 7명", needs("ko", unaccompanied_children=7)),
    ("필요 인원 12,500명 가구 2900", needs("ko", population={"individuals": 12500, "households": 2900})),
    ("필요 사람 300 설사 23 사망 1", needs("ko", population={"individuals": 300},
                                           disease={"awd_7d": 23, "deaths_24h": 1})),
    ("필요 세대 120 사망자 2", needs("ko", population={"households": 120}, disease={"deaths_24h": 2})),
    ("필요 물4 # 펌프 고장", needs("ko", severity=sev(water=4), note="펌프 고장")),
    ("필요 물4, 식량3", needs("ko", severity=sev(water=4, food=3))),
    ("N 물4 식량3", needs("en", severity=sev(water=4, food=3))),
    ("필요 W4 F3", needs("ko", severity=sev(water=4, food=3))),
    ("필요 음식 2 옷 1", needs("ko", severity=sev(food=2, clothing=1))),
    (
        "필요 물4 # 우물 두 곳 모두 오염되어 먹을 수 없음",
        needs("ko", severity=sev(water=4), note="우물 두 곳 모두 오염되어"),
    ),
    # --- needs, wrong ---
    ("N W9", Err("W9? severity is 0–5. Example: N W4 F3")),
    ("N W=9", Err("W=9? severity is 0–5")),
    ("N W", Err("W? needs a number 0–5")),
    ("N W F3", Err("W? needs a number")),
    ("N Q4", Err("Q? unknown item. Items: W F S C M H X P HH K AWD D")),
    ("N W4 F3 Z", Err("Z? unknown item")),
    ("N", Err("Needs report is empty")),
    ("N # just a note", Err("Needs report is empty")),
    ("N W4 W3", Err("W twice")),
    ("N WATER4 W3", Err("W twice")),
    ("N 4", Err("4? put an item before each number")),
    ("N W4.5", Err("W4.5? whole numbers only")),
    ("N P-5", Err("P-5? count is 0–10,000,000. Example: N P12500 K14")),
    ("N P10000001", Err("count is 0–10,000,000")),
    ("N K 2000000", Err("count is 0–1,000,000")),
    ("N W4 & F3", Err("&? unexpected")),
    ("N W-1", Err("W-1? severity is 0–5")),
    ("N P99999999999999999999999999999", Err("count is 0–10,000,000")),
    ("N P" + "9" * 5000, Err("count is 0–10,000,000")),  # past int()'s 4300-digit limit: no ValueError
    ("필요 물9", Err("물9? 심각도는 0–5. 예: 필요 물4 식량3", "ko")),
    ("필요 물", Err("물? 숫자 0–5 필요", "ko")),
    ("필요 뭐4", Err("뭐? 모르는 항목", "ko")),
    ("필요", Err("내용이 없음", "ko")),
    ("필요 물4 식수3", Err("식수 두 번", "ko")),
    ("필요 인원 -3", Err("수는 0–10,000,000", "ko")),
    ("필요 물 식량3", Err("물? 숫자 0–5 필요", "ko")),
    ("필요 4", Err("4? 숫자 앞에 항목", "ko")),
    # --- first word wrong ---
    ("hello", Err("hello? Start with N (needs), A (alert), P! (protection) or ? (help)")),
    ("W4 F3", Err("Start with N")),
    ("물4 식량3", Err("필요, 경보, 보호! 또는 도움", "ko")),
    ("", Err("Empty message")),
    ("  \n ", Err("Empty message")),
    ("NW4", Err("NW? Start with")),
    ("!!!", Err("!? Start with")),
    ("PROTECTION: details", Err("PROTECTION? Start with")),
    # --- alerts, English ---
    ("A CHOLERA 3", alert("disease_outbreak", 3, "cholera")),
    ("A CHOLERA 3 block C", alert("disease_outbreak", 3, "cholera block C")),
    ("alert awd 5 cases", alert("disease_outbreak", 5, "awd")),
    ("A MEASLES", alert("disease_outbreak", None, "measles")),
    ("A DISEASE 2", alert("disease_outbreak", 2)),
    ("A CHILD", alert("missing_child")),
    ("A MISSING 2", alert("missing_child", 2)),
    ("A FIRE", alert("fire")),
    ("a fire 3 tents row 5", alert("fire", 3, "tents row 5")),
    ("A SECURITY", alert("security_incident")),
    ("A VIOLENCE gate 2", alert("security_incident", None, "gate 2")),
    ("A FLOOD", alert("flood")),
    ("A COLD", alert("cold_wave")),
    ("A DIST rice gate 2 14:00", alert("distribution", None, "rice gate 2 14:00")),
    ("A DIST 500 blankets at school", alert("distribution", None, "500 blankets at school")),
    ("A OTHER road blocked", alert("other", None, "road blocked")),
    ("A CHOLERA3", alert("disease_outbreak", 3, "cholera")),
    ("A FIRE: 2", alert("fire", 2)),
    ("A FIRE 2nd row", alert("fire", None, "2nd row")),
    (
        "A FLOOD water rising in block D, 30 tents flooded, people moving to school",
        alert("flood", None, "water rising in block D, 30 tents flooded, people moving to"),
    ),
    ("A", Err("Which alert? Use FIRE CHOLERA CHILD SECURITY FLOOD COLD DIST OTHER")),
    ("A FOO", Err("FOO? unknown alert.")),
    ("A CHOLERA 0", Err("count is a whole number 1–1,000,000")),
    ("A CHOLERA 2.5", Err("count is a whole number")),
    ("A CHOLERA " + "9" * 5000, Err("count is a whole number")),
    ("A DIST", Err("DIST: what and where? Example: A DIST")),
    ("A OTHER", Err("OTHER: what and where? Example: A OTHER")),
    # --- alerts, Korean ---
    ("경보 콜레라 3", alert("disease_outbreak", 3, "cholera", "ko")),
    ("경보 아이", alert("missing_child", language="ko")),
    ("경보 미아 1명", alert("missing_child", 1, language="ko")),
    ("경보 화재", alert("fire", language="ko")),
    ("긴급 불 2", alert("fire", 2, language="ko")),
    ("경보 위험", alert("security_incident", language="ko")),
    ("경보 폭력 2번문", alert("security_incident", None, "2번문", "ko")),
    ("경보 홍수", alert("flood", language="ko")),
    ("경보 한파", alert("cold_wave", language="ko")),
    ("경보 추위", alert("cold_wave", language="ko")),
    ("경보 배급 쌀 2번문 14:00", alert("distribution", None, "쌀 2번문 14:00", "ko")),
    ("경보 기타 도로 막힘", alert("other", None, "도로 막힘", "ko")),
    ("경보 감염병 2명", alert("disease_outbreak", 2, language="ko")),
    ("경보 전염병 4", alert("disease_outbreak", 4, language="ko")),
    ("경보 설사 5건", alert("disease_outbreak", 5, "awd", "ko")),
    ("경보 홍역", alert("disease_outbreak", None, "measles", "ko")),
    ("경보: 화재", alert("fire", language="ko")),
    ("경보", Err("어떤 경보? 종류: 화재 콜레라 아이 위험 홍수 추위 배급 기타", "ko")),
    ("경보 뭐", Err("뭐? 모르는 경보.", "ko")),
    ("경보 배급", Err("배급: 무엇을 어디서? 예: 경보 배급", "ko")),
    # --- sealed ---
    ("P! girl hurt near latrine block C", SealedEntry("protection", "girl hurt near latrine block C", "en")),
    ("p ! soldiers at gate at night", SealedEntry("protection", "soldiers at gate at night", "en")),
    ("보호! 밤에 2번문", SealedEntry("protection", "밤에 2번문", "ko")),
    ("C! boy found at gate 3", SealedEntry("child_tracing", "boy found at gate 3", "en")),
    ("K! boy found at gate 3", SealedEntry("child_tracing", "boy found at gate 3", "en")),
    ("아이! 남자 8살 2번문", SealedEntry("child_tracing", "남자 8살 2번문", "ko")),
    ("추적! 어머니 찾음", SealedEntry("child_tracing", "어머니 찾음", "ko")),
    ("P！ full-width bang", SealedEntry("protection", "full-width bang", "en")),
    ("P!", Err("P! then the details")),
    ("보호!", Err("보호! 다음에 내용", "ko")),
    ("P! " + "x" * 91, Err("Too long to seal: 91 bytes, max 82")),
    ("보호! " + "가" * 31, Err("너무 김: 93바이트", "ko")),
    # --- help and status ---
    ("?", HelpRequest("en")),
    ("？", HelpRequest("en")),
    ("HELP", HelpRequest("en")),
    ("help me", HelpRequest("en")),
    ("도움", HelpRequest("ko")),
    ("도움말", HelpRequest("ko")),
    ("STATUS", StatusRequest("en")),
    ("status", StatusRequest("en")),
    ("상태", StatusRequest("ko")),
]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert sum(1 for text, _ in CASES if re.search("[가-힣]", text)) >= 30


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:40] or "<empty>" for c in CASES])
def test_table(text: str, expected: Parsed | Err) -> None:
    if isinstance(expected, Err):
        with pytest.raises(ShorthandError) as caught:
            parse_shorthand(text)
        assert expected.contains in str(caught.value)
        assert caught.value.language == expected.language
        assert len(str(caught.value).encode()) <= MAX_REPLY_BYTES
    else:
        assert parse_shorthand(text) == expected


def test_sealed_errors_never_repeat_the_text() -> None:
    secret = "명수 13살 3번 천막"  # the kind of detail that must not go back on the air
    with pytest.raises(ShorthandError) as caught:
        parse_shorthand("보호! " + secret * 4)
    assert "명수" not in str(caught.value)


def test_long_input_is_refused_quickly() -> None:
    started = time.monotonic()
    for text in ("N " + "a " * 20_000, "N " + "W4 " * 20_000, "A FIRE " + "x " * 50_000, "P! " + "가" * 50_000):
        _check_outcome(text)
    assert time.monotonic() - started < 5  # linear work; a quadratic scan would take minutes


# --- vocabulary tables -----------------------------------------------------------------------------------


def test_no_word_means_two_things() -> None:
    for table in (
        [w for f in NEEDS_FIELDS for w in f.words.split()],
        [w for _, _, words in ALERT_VOCABULARY for w in words.split()],
        [w for _, words in KEYWORD_VOCABULARY for w in words.split()],
        [w for _, words in SEALED_VOCABULARY for w in words.split()],
    ):
        assert len(table) == len(set(table)), sorted(w for w in table if table.count(w) > 1)


def test_vocabulary_is_written_as_the_parser_compares_it() -> None:
    every = [w for f in NEEDS_FIELDS for w in f.words.split()]
    every += [w for _, _, words in ALERT_VOCABULARY for w in words.split()]
    every += [w for _, words in KEYWORD_VOCABULARY + SEALED_VOCABULARY for w in words.split()]
    for word in every:
        assert word == unicodedata.normalize("NFKC", word).upper(), word


@pytest.mark.parametrize("field", NEEDS_FIELDS, ids=lambda f: "/".join(p for p in f.path if p))
def test_every_needs_spelling_parses(field) -> None:
    for word in field.words.split():
        for keyword in ("N", "필요"):
            body = parse_shorthand(f"{keyword} {word.lower()} {field.high}").body  # type: ignore[union-attr]
            section, name = field.path
            assert (body[section] if name is None else body[section][name]) == field.high  # type: ignore[index]


def test_every_alert_word_parses() -> None:
    assert {t for t, _, _ in ALERT_VOCABULARY} == set(ALERT_KINDS) == set(CAP)
    for alert_type, _, words in ALERT_VOCABULARY:
        for word in words.split():
            parsed = parse_shorthand(f"A {word} something")
            assert isinstance(parsed, AlertEntry)
            assert parsed.body["type"] == alert_type


# --- docs say what the parser does ---------------------------------------------------------------------


def _doc_rows(section: str) -> list[tuple[str, str]]:
    text = (DOCS / "shorthand.md").read_text(encoding="utf-8")
    part = text.split(f"### {section}", 1)[1].split("\n###", 1)[0]
    return re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$", part, flags=re.MULTILINE)


def test_documented_examples_are_exact() -> None:
    rows = _doc_rows("Examples")
    assert len(rows) >= 20
    for text, body in rows:
        parsed = parse_shorthand(text)
        assert isinstance(parsed, NeedsEntry | AlertEntry)
        assert json.dumps(parsed.body, ensure_ascii=False) == body, text


def test_documented_errors_are_exact() -> None:
    rows = _doc_rows("Mistakes")
    assert len(rows) >= 10
    for text, reply in rows:
        with pytest.raises(ShorthandError) as caught:
            parse_shorthand(text)
        assert str(caught.value) == reply


def test_field_card_examples_parse() -> None:
    card = (DOCS / "field-card.md").read_text(encoding="utf-8")
    starts = ("N ", "A ", "필요 ", "경보 ", "P! ", "C! ", "보호! ", "아이! ")
    examples = [s for s in re.findall(r"`([^`]+)`", card) if s.startswith(starts)]
    assert len(examples) >= 15
    for example in examples:
        parse_shorthand(example)


# --- replies -------------------------------------------------------------------------------------------


def test_replies() -> None:
    assert received_reply("412:57", "en") == "received #412:57"
    assert received_reply("412:57", "ko") == "접수 #412:57"
    assert delivered_reply("412:57", "en") == "delivered #412:57"
    assert delivered_reply("412:57", "ko") == "전달 #412:57"
    assert status_reply("en", 3, 300, 12) == "status: queue 3, last uplink 5m ago, reports today 12"
    assert status_reply("ko", 3, 300, 12) == "상태: 대기 3, 본부 전송 5분 전, 오늘 보고 12"
    assert "never" in status_reply("en", 0, None, 0)
    assert "없음" in status_reply("ko", 0, None, 0)
    assert "3d ago" in status_reply("en", 0, 3 * 86_400, 0)
    assert "N W4" in help_text("en")
    assert "필요 물4" in help_text("ko")


def test_help_examples_parse() -> None:
    korean = "필요 물4 식량3 천막2 옷3 의료4 위생3 인원12500 아이14"
    for example in ("N W4 F3 S2 C3 M4 H3 P12500 K14", "A CHOLERA 3", korean):
        assert example in help_text("en") + help_text("ko")
        parse_shorthand(example)


# --- properties ----------------------------------------------------------------------------------------

HANGUL = st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3)
FRAGMENTS = st.sampled_from(
    [w for f in NEEDS_FIELDS for w in f.words.split()]
    + [w for _, _, words in ALERT_VOCABULARY for w in words.split()]
    + [w for _, words in KEYWORD_VOCABULARY + SEALED_VOCABULARY for w in words.split()]
    + ["!", "=", ":", ",", "#", '"', "명", "-", ".", "12,500", "99999999999", "0", "5", "6", " ", "\n", "！"]
)
MIXED_TEXT = st.lists(
    st.one_of(FRAGMENTS, st.integers(-10, 10**12).map(str), st.text(HANGUL, max_size=4), st.text(max_size=4)),
    max_size=14,
).flatmap(lambda parts: st.sampled_from([" ".join(parts), "".join(parts)]))


def _parse_or_error(text: str) -> Parsed | ShorthandError:
    """Anything other than a parse or a ShorthandError escapes and fails the test."""
    try:
        return parse_shorthand(text)
    except ShorthandError as error:
        return error


def _check_outcome(text: str) -> None:
    parsed = _parse_or_error(text)
    if isinstance(parsed, ShorthandError):
        assert isinstance(parsed, MeshdError)
        assert parsed.language in ("en", "ko")
        assert 0 < len(str(parsed).encode()) <= MAX_REPLY_BYTES
        return
    assert parsed.language in ("en", "ko")
    if isinstance(parsed, NeedsEntry):
        assert set(parsed.body) <= {"population", "severity", "unaccompanied_children", "disease", "note"}
        assert len(str(parsed.body.get("note", "")).encode()) <= NOTE_MAX_BYTES
        for name, value in parsed.body.get("severity", {}).items():  # type: ignore[attr-defined]
            assert 0 <= value <= 5, name
    elif isinstance(parsed, AlertEntry):
        assert parsed.body["type"] in ALERT_KINDS
        assert len(str(parsed.body.get("text", "")).encode()) <= ALERT_TEXT_MAX_BYTES
    elif isinstance(parsed, SealedEntry):
        assert 0 < len(parsed.text.encode()) <= SEALED_TEXT_MAX_BYTES


@settings(max_examples=400)
@given(st.text())
def test_any_text_gives_a_result_or_a_short_reply(text: str) -> None:
    _check_outcome(text)


@settings(max_examples=400)
@given(MIXED_TEXT)
def test_mixed_hangul_ascii_and_vocabulary(text: str) -> None:
    _check_outcome(text)


@given(st.text(), st.sampled_from(["en", "ko", "fr", ""]), st.integers(-(10**30), 10**30))
def test_every_reply_fits_one_message(msg_id: str, language: str, number: int) -> None:
    for reply in (
        received_reply(msg_id, language),
        delivered_reply(msg_id, language),
        help_text(language),
        status_reply(language, number, number, number),
        status_reply(language, number, None, number),
    ):
        assert len(reply.encode()) <= MAX_REPLY_BYTES
        reply.encode().decode()  # whole characters only


SEPARATORS = ["", " ", "=", ":", " = ", ": "]


@st.composite
def needs_reports(draw: st.DrawFn) -> tuple[str, dict[str, object], str]:
    """A valid needs shorthand built from random values and spellings, and the body it must give."""
    chosen = draw(st.lists(st.sampled_from(NEEDS_FIELDS), min_size=1, max_size=len(NEEDS_FIELDS), unique=True))
    keyword = draw(st.sampled_from(KEYWORD_VOCABULARY[0][1].split()))
    items: list[str] = []
    body: dict[str, object] = {}
    groups: dict[str, dict[str, int]] = {}
    for field in draw(st.permutations(chosen)):
        value = draw(st.integers(0, field.high))
        word = draw(st.sampled_from(field.words.split()))
        word = word.lower() if draw(st.booleans()) else word
        number = f"{value:,}" if draw(st.booleans()) else str(value)
        items.append(f"{word}{draw(st.sampled_from(SEPARATORS))}{number}")
        section, name = field.path
        if name is None:
            body[section] = value
        else:
            groups.setdefault(section, {})[name] = value
            body[section] = groups[section]
    text = keyword + " " + draw(st.sampled_from([" ", ", ", ",", ""])).join(items)
    note = " ".join(draw(st.text(st.one_of(HANGUL, st.sampled_from("abc XYZ 019")), max_size=12)).split())
    if note:
        text += " # " + note
        body["note"] = note
    language = "ko" if re.search("[가-힣]", keyword) else "en"
    return text, body, language


@given(needs_reports())
def test_needs_round_trip(report: tuple[str, dict[str, object], str]) -> None:
    text, body, language = report
    parsed = parse_shorthand(text)
    assert parsed == NeedsEntry(body, language)


@given(needs_reports(), st.integers(6, 10**6))
def test_out_of_range_severity_is_refused_in_the_senders_language(
    report: tuple[str, dict[str, object], str], bad: int
) -> None:
    text, _, language = report
    head, _, note = text.partition(" # ")
    with pytest.raises(ShorthandError) as caught:
        parse_shorthand(f"{head} W{bad}" + (f" # {note}" if note else ""))
    assert caught.value.language == language
    assert len(str(caught.value).encode()) <= MAX_REPLY_BYTES
