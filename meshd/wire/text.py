"""Field shorthand: the few-keypress text a field team sends to its camp hub, and the hub's replies.

Pure: text in, values out; no I/O and no asyncio. `parse_shorthand` turns one Meshtastic text message into
a needs report, an alert, a sealed protection / child-tracing entry, or a help / status request. Every
mistake raises `ShorthandError` whose message is the reply for the sender: in their language, saying what
was wrong and showing the expected form, never longer than one text message (200 bytes of UTF-8).

Vocabulary lives in the tables below (English and Korean, North and South spellings), not in code
branches, so adding a word is a one-line change; docs/shorthand.md is the human-readable version.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final, NoReturn, TypeAlias

from meshd.errors import ShorthandError

EN: Final = "en"
KO: Final = "ko"

MAX_REPLY_BYTES: Final = 200  # one Meshtastic text message, with room to spare under the 233-byte payload
NOTE_MAX_BYTES: Final = 40  # needs `note`: free text travels in clear inside a ≤128-byte signed report
ALERT_TEXT_MAX_BYTES: Final = 60  # alert `text`: short on purpose, so there is no room for names
# Sealed text must fit one frame after sealing (≈130 bytes of envelope + seal overhead in a 219-byte PKI
# direct message); it is refused, never cut, because a protection report must not lose details silently.
SEALED_TEXT_MAX_BYTES: Final = 82  # sealed with reporter and camp, still one 231-byte frame


# --- what the parser returns -----------------------------------------------------------------------


@dataclass(frozen=True)
class NeedsEntry:
    """A needs report; `body` uses the JSON field names of the MQTT contract (the hub adds `camp`)."""

    body: dict[str, object]
    language: str


@dataclass(frozen=True)
class AlertEntry:
    """An alert with its CAP 1.2 urgency/severity/certainty; the hub sends it at alert priority."""

    body: dict[str, object]
    language: str


@dataclass(frozen=True)
class SealedEntry:
    """Protection or child-tracing details: the hub seals `text` to the HQ key before it touches disk."""

    kind: str  # "protection" | "child_tracing"
    text: str
    language: str


@dataclass(frozen=True)
class HelpRequest:
    language: str


@dataclass(frozen=True)
class StatusRequest:
    language: str


Parsed: TypeAlias = NeedsEntry | AlertEntry | SealedEntry | HelpRequest | StatusRequest


# --- vocabulary --------------------------------------------------------------------------------------

# Vocabulary is written as space-separated words, upper-case, Korean multi-word keys without spaces
# ("보호자 없는 아이" is matched as 보호자없는아이). Spellings cover English letters and words, ROK and
# DPRK Korean (the North keeps the initial ㄹ, 량식 for 양식, and says 위생실 for toilet) and words both
# sides understand. tests/test_text.py checks that no word means two things.

# First word of a message → what it is. Matched after NFKC normalisation and upper-casing.
KEYWORD_VOCABULARY: Final = (
    ("needs", "N NEED NEEDS 필요 요청"),
    ("alert", "A ALERT 경보 긴급"),
    ("help", "? HELP 도움 도움말"),
    ("status", "STATUS 상태"),
)
KEYWORDS: Final[dict[str, str]] = {word: kind for kind, words in KEYWORD_VOCABULARY for word in words.split()}

# `P!` / `보호!` … at the very start marks a sealed entry. K! is accepted for symmetry with K (kids).
SEALED_VOCABULARY: Final = (("protection", "P 보호"), ("child_tracing", "C K 아이 추적"))
SEALED_PREFIXES: Final[dict[str, str]] = {
    word: kind for kind, words in SEALED_VOCABULARY for word in words.split()
}


@dataclass(frozen=True)
class NeedsField:
    path: tuple[str, str | None]  # where the value goes in the JSON body: (section, name) or (name, None)
    high: int
    words: str  # space-separated spellings; the first is the short key shown to field teams

    @property
    def is_severity(self) -> bool:
        return self.path[0] == "severity"


_SEVERITY_MAX: Final = 5

# Order here is the order of keys in the JSON body.
NEEDS_FIELDS: Final[tuple[NeedsField, ...]] = (
    NeedsField(("population", "individuals"), 10_000_000, "P POP POPULATION PEOPLE 인원 사람 인구"),
    NeedsField(("population", "households"), 10_000_000, "HH HOUSEHOLDS FAMILIES 가구 세대"),
    NeedsField(("severity", "water"), _SEVERITY_MAX, "W WATER 물 먹는물 식수"),
    NeedsField(("severity", "food"), _SEVERITY_MAX, "F FOOD 식량 먹을것 양식 량식 음식"),
    NeedsField(("severity", "shelter"), _SEVERITY_MAX, "S SHELTER 천막 잠자리 쉼터"),
    NeedsField(("severity", "clothing"), _SEVERITY_MAX, "C CLOTHES CLOTHING 옷 겨울옷 의류"),
    NeedsField(("severity", "health"), _SEVERITY_MAX, "M MED MEDICAL HEALTH 의료 약 의사 병원 보건"),
    NeedsField(
        ("severity", "sanitation"),
        _SEVERITY_MAX,
        "H SAN SANITATION HYGIENE TOILET TOILETS LATRINE 위생 화장실 위생실 변소",
    ),
    NeedsField(("severity", "protection"), _SEVERITY_MAX, "X PROT PROTECTION 보호 안전"),
    NeedsField(("unaccompanied_children", None), 1_000_000, "K KIDS UAC UASC 아이 어린이 보호자없는아이"),
    NeedsField(("disease", "awd_7d"), 1_000_000, "AWD DIARRHOEA DIARRHEA 설사"),
    NeedsField(("disease", "deaths_24h"), 100_000, "D DEATHS DEAD 사망 사망자"),
)

_FIELD_BY_SPELLING: Final[dict[str, NeedsField]] = {w: f for f in NEEDS_FIELDS for w in f.words.split()}


@dataclass(frozen=True)
class AlertKind:
    """CAP 1.2 values for one alert type; `cap_category`/`cap_event` are for the HQ CAP export."""

    type: str
    urgency: str
    severity: str
    certainty: str
    cap_category: str
    cap_event: str

    @property
    def text_only(self) -> bool:
        """Distribution and other alerts carry what/where in text and no count, and need that text."""
        return self.type in ("distribution", "other")


# Why these values: a field team reports what it sees, so most alerts are Observed and Immediate; a disease
# outbreak is Likely until a clinician confirms it; a fire among tents threatens life at once (Extreme);
# a flood reported from a camp is water already rising (Immediate/Observed); a cold wave is a forecast
# or a trend (Expected/Likely); a distribution is announced ahead (Future/Minor/Likely; CAP Observed
# means "has occurred", which a planned distribution has not). Protection incidents are never alerts.
ALERT_KINDS: Final[dict[str, AlertKind]] = {
    k.type: k
    for k in (
        AlertKind("disease_outbreak", "immediate", "severe", "likely", "Health", "health.infectiousDisease"),
        AlertKind(
            "missing_child", "immediate", "severe", "observed", "Rescue",
            "missingPerson.missingVulnerablePerson",
        ),
        AlertKind("fire", "immediate", "extreme", "observed", "Fire", "fire.urbanFire"),
        AlertKind("security_incident", "immediate", "severe", "observed", "Security", "crime"),
        AlertKind("flood", "immediate", "severe", "observed", "Met", "flood"),
        AlertKind("cold_wave", "expected", "moderate", "likely", "Met", "temperature.coldWave"),
        AlertKind("distribution", "future", "minor", "likely", "Other", "distribution"),
        AlertKind("other", "unknown", "unknown", "unknown", "Other", "other"),
    )
}

# Alert word → (type, tag). The tag keeps which disease was named, since the type alone does not; it is
# put at the start of `text` in English so HQ can count it whatever language the team used.
ALERT_VOCABULARY: Final[tuple[tuple[str, str | None, str], ...]] = (
    ("disease_outbreak", "cholera", "CHOLERA 콜레라"),
    ("disease_outbreak", "awd", "AWD DIARRHOEA DIARRHEA 설사"),
    ("disease_outbreak", "measles", "MEASLES 홍역"),
    ("disease_outbreak", None, "DISEASE OUTBREAK 전염병 감염병 질병"),
    ("missing_child", None, "CHILD MISSING KID 아이 어린이 미아 실종"),
    ("fire", None, "FIRE 화재 불"),
    ("security_incident", None, "SECURITY VIOLENCE SEC DANGER 위험 안전 폭력 치안"),
    ("flood", None, "FLOOD 홍수 침수"),
    ("cold_wave", None, "COLD 추위 한파"),
    ("distribution", None, "DIST DISTRIBUTION 배급 분배"),
    ("other", None, "OTHER 기타"),
)
ALERT_WORDS: Final[dict[str, tuple[str, str | None]]] = {
    word: (alert_type, tag) for alert_type, tag, words in ALERT_VOCABULARY for word in words.split()
}

_ALERT_COUNT_MAX: Final = 1_000_000


# --- replies -----------------------------------------------------------------------------------------

_EXAMPLE: Final = {
    "severity": {EN: "Example: N W4 F3", KO: "예: 필요 물4 식량3"},
    "count": {EN: "Example: N P12500 K14", KO: "예: 필요 인원12500 아이14"},
    "alert": {EN: "Example: A CHOLERA 3", KO: "예: 경보 콜레라 3"},
    "distribution": {EN: "Example: A DIST rice gate 2 14:00", KO: "예: 경보 배급 쌀 2번문 14:00"},
    "other": {EN: "Example: A OTHER road blocked", KO: "예: 경보 기타 도로 막힘"},
}
_ALERT_TYPES_LIST: Final = {
    EN: "FIRE CHOLERA CHILD SECURITY FLOOD COLD DIST OTHER",
    KO: "화재 콜레라 아이 위험 홍수 추위 배급 기타",
}
_ITEMS_LIST: Final = {
    EN: "W F S C M H X P HH K AWD D",
    KO: "물 식량 천막 옷 의료 위생 보호 인원 가구 아이 설사 사망",
}

_HELP: Final = {
    EN: "N W4 F3 S2 C3 M4 H3 P12500 K14 = needs 0-5: Water Food Shelter Clothes Medical Hygiene, People, "
    "Kids alone. A FIRE / A CHOLERA 3 / A CHILD = alert, no names. P! text = protection, sealed. STATUS",
    KO: "필요 물4 식량3 천막2 옷3 의료4 위생3 인원12500 아이14 (0-5). "
    "경보 화재 / 경보 콜레라 3 / 경보 아이 (이름 금지). 보호! 내용 = 비밀. 상태",
}


def fit_reply(text: str, limit: int = MAX_REPLY_BYTES) -> str:
    """Cut `text` to at most `limit` bytes of UTF-8 without splitting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def help_text(language: str) -> str:
    return fit_reply(_HELP[_lang(language)])


def received_reply(msg_id: str, language: str) -> str:
    """Sent only after the report is durable in the store."""
    return fit_reply(("접수 #" if _lang(language) == KO else "received #") + msg_id)


def delivered_reply(msg_id: str, language: str) -> str:
    """Sent when HQ has taken custody of the report."""
    return fit_reply(("전달 #" if _lang(language) == KO else "delivered #") + msg_id)


def status_reply(language: str, queue_depth: int, last_uplink_age_s: int | None, reports_today: int) -> str:
    ko = _lang(language) == KO
    if last_uplink_age_s is None:
        age = "없음" if ko else "never"
    elif ko:
        age = _age(last_uplink_age_s, ("초", "분", "시간", "일")) + " 전"
    else:
        age = _age(last_uplink_age_s, ("s", "m", "h", "d")) + " ago"
    if ko:
        return fit_reply(f"상태: 대기 {queue_depth}, 본부 전송 {age}, 오늘 보고 {reports_today}")
    return fit_reply(f"status: queue {queue_depth}, last uplink {age}, reports today {reports_today}")


def _age(seconds: int, units: tuple[str, str, str, str]) -> str:
    seconds = max(seconds, 0)
    for limit, divisor, unit in ((120, 1, units[0]), (7200, 60, units[1]), (172_800, 3600, units[2])):
        if seconds < limit:
            return f"{seconds // divisor}{unit}"
    return f"{seconds // 86_400}{units[3]}"


def _lang(language: str) -> str:
    return KO if language == KO else EN


def _error(language: str, en: str, ko: str) -> ShorthandError:
    return ShorthandError(fit_reply(ko if language == KO else en), language=language)


def _echo(text: str) -> str:
    """What the sender typed, short enough to quote back inside a reply."""
    return fit_reply(text, 24)


# --- parsing -----------------------------------------------------------------------------------------

_HANGUL_RE: Final = re.compile("[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff]")
_FIRST_WORD_RE: Final = re.compile(r"\?+|[^\W\d_]+|\S")
_SEALED_RE: Final = re.compile(r"([^\W\d_]+)\s*!(.*)", re.DOTALL)
_LEADING_SEPARATORS_RE: Final = re.compile(r"^[\s:=,;.]+")
_NOTE_RE: Final = re.compile(r'#(?P<hash>.*)|["“”](?P<quoted>[^"“”]*)["“”]?', re.DOTALL)
# Thousands separators are allowed (12,500); a comma not followed by exactly three digits separates items.
_NUMBER: Final = r"-?[0-9]+(?:,[0-9]{3}(?![0-9]))*(?:\.[0-9]+)?"
_TOKEN_RE: Final = re.compile(
    rf"\s+|(?P<number>{_NUMBER})|(?P<word>[^\W\d_]+)|(?P<sep>[=:])|(?P<comma>[,;./、])|(?P<other>\S)"
)
# A count must stand alone ("3", "3명", "3 cases"), so "A DIST 14:00" or "A FIRE 2nd row" keep their text.
_ALERT_COUNT_RE: Final = re.compile(
    rf"\s*[=:]?\s*(?P<number>{_NUMBER})\s*(?:명|건|CASES?|PEOPLE)?(?=\s|$)", re.IGNORECASE
)
_UNITS: Final = frozenset(("명", "건"))  # Korean counters after a number ("12500명"), ignored
_MAX_KEY_WORDS: Final = 4  # the longest key is three words; the cap keeps a flood of words linear
_MAX_DIGITS: Final = 9  # longer is out of range anyway, and int() refuses over 4300 digits


def parse_shorthand(text: str) -> Parsed:
    """Parse one text message from a field team; raise `ShorthandError` with the reply on any mistake."""
    text = _normalize(text)
    first = _FIRST_WORD_RE.match(text)
    if first is None:
        raise _error(EN, "Empty message. Send ? for help. Example: N W4 F3", "빈 메시지. 예: 필요 물4 식량3")
    word = first.group()
    language = KO if _HANGUL_RE.search(word) else EN
    sealed = _SEALED_RE.fullmatch(text)
    if sealed and sealed.group(1).upper() in SEALED_PREFIXES:
        return _parse_sealed(sealed.group(1), sealed.group(2), language)
    kind = KEYWORDS.get("?" if word.startswith("?") else word.upper())
    rest = _LEADING_SEPARATORS_RE.sub("", text[first.end() :])
    if kind == "needs":
        return NeedsEntry(_parse_needs(rest, language), language)
    if kind == "alert":
        return AlertEntry(_parse_alert(rest, language), language)
    if kind == "help":
        return HelpRequest(language)
    if kind == "status":
        return StatusRequest(language)
    w = _echo(word)
    raise _error(
        language,
        f"{w}? Start with N (needs), A (alert), P! (protection) or ? (help). Example: N W4 F3",
        f"{w}? 필요, 경보, 보호! 또는 도움 으로 시작. 예: 필요 물4 식량3",
    )


def _normalize(text: str) -> str:
    # NFKC folds full-width letters, digits and punctuation from phone keyboards (Ｗ４, ：, ！) to ASCII and
    # composes Hangul typed as separate jamo; control and format characters (newlines, zero-width
    # spaces) become plain spaces so nothing invisible ends up in a report.
    text = unicodedata.normalize("NFKC", text)
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text).strip()


def _shorten(text: str, limit: int) -> str:
    """Free text beyond its byte budget is cut rather than refused (an alert must go out now), at a word
    boundary when one is near so the receiver does not read half a word as something else."""
    cut = fit_reply(text, limit)
    if len(cut) < len(text) and not text[len(cut)].isspace() and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip()


def _clean_free_text(text: str) -> str:
    return " ".join(text.strip().strip("\"“”'").split())


def _parse_sealed(prefix: str, text: str, language: str) -> SealedEntry:
    # Replies here never quote the text: it is exactly what must not be repeated on the air.
    kind = SEALED_PREFIXES[prefix.upper()]
    text = _clean_free_text(text)
    if not text:
        raise _error(
            language,
            f"{prefix}! then the details: {prefix}! what, where, when. Only protection staff can read it.",
            f"{prefix}! 다음에 내용: {prefix}! 무엇, 어디, 언제. 보호 담당자만 읽음.",
        )
    size, limit = len(text.encode("utf-8")), SEALED_TEXT_MAX_BYTES
    if size > limit:
        raise _error(
            language,
            f"Too long to seal: {size} bytes, max {limit}. Send it as two {prefix}! messages.",
            f"너무 김: {size}바이트, 최대 {limit} (한글 약 {limit // 3}자). {prefix}! 두 번에 나눠 보내기.",
        )
    return SealedEntry(kind, text, language)


@dataclass(frozen=True)
class _Token:
    kind: str  # number | word | sep | comma | other
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    return [
        _Token(m.lastgroup, m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text) if m.lastgroup
    ]


def _parse_needs(rest: str, language: str) -> dict[str, object]:
    note = ""
    m = _NOTE_RE.search(rest)
    if m:
        note = _clean_free_text(m.group("hash") or m.group("quoted") or "")
        rest = rest[: m.start()] + " " + rest[m.end() :]
    values = _parse_items(rest, language)
    if not values:
        raise _error(
            language,
            "Needs report is empty. Example: N W4 F3 P12500",
            "내용이 없음. 예: 필요 물4 식량3 인원12500",
        )
    # NEEDS_FIELDS is in body order, so walking it builds population, severity, children, disease in order.
    body: dict[str, object] = {}
    groups: dict[str, dict[str, int]] = {}
    for field in NEEDS_FIELDS:
        if field in values:
            section, name = field.path
            if name is None:
                body[section] = values[field]
            else:
                if section not in groups:
                    groups[section] = {}
                    body[section] = groups[section]
                groups[section][name] = values[field]
    if note:
        body["note"] = _shorten(note, NOTE_MAX_BYTES)
    return body


def _longest_key(tokens: list[_Token], i: int) -> tuple[NeedsField | None, int]:
    """A key may be several words ("보호자 없는 아이", "먹는 물"): the longest run of words that is a key."""
    run = 0
    while run < _MAX_KEY_WORDS and i + run < len(tokens) and tokens[i + run].kind == "word":
        run += 1
    for words in range(run, 0, -1):
        field = _FIELD_BY_SPELLING.get("".join(t.text for t in tokens[i : i + words]).upper())
        if field is not None:
            return field, words
    return None, 0


def _parse_items(text: str, language: str) -> dict[NeedsField, int]:
    tokens = _tokens(text)
    values: dict[NeedsField, int] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.kind == "comma":
            i += 1
            continue
        if tok.kind != "word":
            _raise_stray(tok, language)
        field, words = _longest_key(tokens, i)
        if field is None:
            w = _echo(tok.text)
            raise _error(
                language,
                f"{w}? unknown item. Items: {_ITEMS_LIST[EN]}. {_EXAMPLE['severity'][EN]}",
                f"{w}? 모르는 항목. 항목: {_ITEMS_LIST[KO]}. {_EXAMPLE['severity'][KO]}",
            )
        key_text = text[tok.start : tokens[i + words - 1].end]
        i += words
        if i < len(tokens) and tokens[i].kind == "sep":
            i += 1
        if i >= len(tokens) or tokens[i].kind != "number":
            _raise_range(field, key_text, language, missing=True)
        number = tokens[i]
        i += 1
        if i < len(tokens) and tokens[i].text in _UNITS:
            i += 1
        echo = text[tok.start : number.end]
        value = _to_int(number.text)
        if value is None:
            w = _echo(echo)
            example = _EXAMPLE["severity" if field.is_severity else "count"]
            raise _error(language, f"{w}? whole numbers only. {example[EN]}", f"{w}? 정수만. {example[KO]}")
        if not 0 <= value <= field.high:
            _raise_range(field, echo, language, missing=False)
        if field in values:
            w = _echo(key_text)
            raise _error(
                language,
                f"{w} twice: send each item once. {_EXAMPLE['severity'][EN]}",
                f"{w} 두 번: 항목은 한 번만. {_EXAMPLE['severity'][KO]}",
            )
        values[field] = value
    return values


def _to_int(number: str) -> int | None:
    """None for decimals; numbers too long to be in range become a value that is out of range."""
    if "." in number:
        return None
    digits = number.replace(",", "").lstrip("-")
    sign = -1 if number.startswith("-") else 1
    if len(digits.lstrip("0")) > _MAX_DIGITS:
        return sign * 10**_MAX_DIGITS
    return sign * int(digits)


def _raise_stray(tok: _Token, language: str) -> NoReturn:
    w = _echo(tok.text)
    if tok.kind == "number":
        raise _error(
            language,
            f"{w}? put an item before each number. {_EXAMPLE['severity'][EN]}",
            f"{w}? 숫자 앞에 항목을 쓰기. {_EXAMPLE['severity'][KO]}",
        )
    raise _error(
        language,
        f"{w}? unexpected here. {_EXAMPLE['severity'][EN]}",
        f"{w}? 알 수 없는 기호. {_EXAMPLE['severity'][KO]}",
    )


def _raise_range(field: NeedsField, echo: str, language: str, *, missing: bool) -> NoReturn:
    w = _echo(echo)
    if field.is_severity:
        span = f"0–{field.high}"
        en, ko = f"severity is {span}", f"심각도는 {span}"
        example = _EXAMPLE["severity"]
    else:
        span = f"0–{field.high:,}"
        en, ko = f"count is {span}", f"수는 {span}"
        example = _EXAMPLE["count"]
    if missing:
        en, ko = f"needs a number {span}", f"숫자 {span} 필요"
    raise _error(language, f"{w}? {en}. {example[EN]}", f"{w}? {ko}. {example[KO]}")


def _parse_alert(rest: str, language: str) -> dict[str, object]:
    word_match = _FIRST_WORD_RE.match(rest)
    word = word_match.group() if word_match else ""
    found = ALERT_WORDS.get(word.upper())
    if found is None:
        head = {EN: "Which alert?", KO: "어떤 경보?"}
        if word:
            head = {EN: f"{_echo(word)}? unknown alert.", KO: f"{_echo(word)}? 모르는 경보."}
        raise _error(
            language,
            f"{head[EN]} Use {_ALERT_TYPES_LIST[EN]}. {_EXAMPLE['alert'][EN]}",
            f"{head[KO]} 종류: {_ALERT_TYPES_LIST[KO]}. {_EXAMPLE['alert'][KO]}",
        )
    alert_type, tag = found
    kind = ALERT_KINDS[alert_type]
    rest = rest[len(word) :]
    body: dict[str, object] = {
        "type": kind.type,
        "urgency": kind.urgency,
        "severity": kind.severity,
        "certainty": kind.certainty,
    }
    count = None if kind.text_only else _ALERT_COUNT_RE.match(rest)
    if count:
        value = _to_int(count.group("number"))
        if value is None or not 1 <= value <= _ALERT_COUNT_MAX:
            w = _echo(f"{word} {count.group('number')}")
            span = f"1–{_ALERT_COUNT_MAX:,}"
            raise _error(
                language,
                f"{w}? count is a whole number {span}. {_EXAMPLE['alert'][EN]}",
                f"{w}? 수는 정수 {span}. {_EXAMPLE['alert'][KO]}",
            )
        body["count"] = value
        rest = rest[count.end() :]
    text = " ".join(part for part in (tag, _clean_free_text(rest.lstrip(" :=#"))) if part)
    if kind.text_only and not text:
        raise _error(
            language,
            f"{_echo(word)}: what and where? {_EXAMPLE[kind.type][EN]}",
            f"{_echo(word)}: 무엇을 어디서? {_EXAMPLE[kind.type][KO]}",
        )
    if text:
        body["text"] = _shorten(text, ALERT_TEXT_MAX_BYTES)
    return body
