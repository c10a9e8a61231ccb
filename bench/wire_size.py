"""Wire size: bytes and LongFast time-on-air of meshd envelopes against the same content as JSON and text.

Run: .venv/bin/python bench/wire_size.py

Content is the issue 2 example needs report (every field, age_s=120), an alert, a sealed protection report
with about 60 bytes of plaintext, and a batch of 5 needs reports. Each is shown as the signed meshd envelope
(what goes on the air), as compact JSON and as a plain-text line carrying the same information. The JSON
and text rows are neither signed nor sealed: they are what the content costs with no integrity at all.

Airtime: Semtech AN1200.13 via meshd.radio.airtime (16-symbol preamble, 16-byte Meshtastic header, the
encoded Data message around the payload). meshd envelopes go on private port 256; text lines on
TEXT_MESSAGE_APP (port 1). A payload larger than one frame is counted as several frames.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshd.radio.airtime import frame_len, max_app_payload, payload_airtime_s, preset
from meshd.wire.codec import BatchEntry, build_envelope, encode_body, make_batch_body
from meshd.wire.envelope import MAX_ENVELOPE_LEN, Envelope, Kind, sign
from meshd.wire.seal import encode_sealed_content
from meshd.wire.seal import sealed_size as sealed_size_box

LONG_FAST = preset("LONG_FAST")
PRIVATE_PORT = 256
TEXT_PORT = 1  # TEXT_MESSAGE_APP
ORIGIN = 412
AGE_S = 120

TARGET_OVERHEAD = 76
TARGET_NEEDS = 128
TARGET_BATCH_ITEM = 12
TARGET_SEALED = 190

# Fixed keys: sizes do not depend on the key (Ed25519 signatures are always 64 bytes).
SIGN_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
HQ_SEAL = X25519PrivateKey.from_private_bytes(bytes(range(32, 64))).public_key()

# Issue 2's example, verbatim (its note is literally "...").
NEEDS: dict[str, Any] = {
    "camp": 412,
    "population": {"individuals": 12500, "households": 2900, "female": 6600, "children": 5200, "arrivals_24h": 340},
    "severity": {"water": 4, "food": 3, "shelter": 2, "clothing": 3, "health": 4, "sanitation": 3, "protection": 2},
    "indicators": {"water_lpd": 8, "people_per_latrine": 65, "shelter_m2_pp": 2.2, "food_days": 3},
    "unaccompanied_children": 14,
    "disease": {"awd_7d": 23, "deaths_24h": 1},
    "location": {"lat": 39.02, "lon": 125.75},
    "note": "...",
}
NEEDS_TEXT = (
    "412#1234 age120 N W4 F3 S2 C3 M4 H3 X2 P12500 HH2900 FEM6600 CH5200 NEW340 "
    "WLPD8 PPL65 M2PP2.2 FD3 K14 AWD23 D1 @39.02,125.75 ..."
)
ALERT: dict[str, Any] = {
    "type": "disease_outbreak",
    "urgency": "immediate",
    "severity": "severe",
    "certainty": "likely",
    "count": 3,
    "location": {"lat": 39.02, "lon": 125.75},
    "text": "cholera suspected, block C",
}
ALERT_TEXT = "412#1235 age120 A CHOLERA 3 immediate/severe/likely @39.02,125.75 cholera suspected, block C"
SEALED: dict[str, Any] = {
    "kind": "protection",
    "text": "woman threatened near well 3 at night, asks escort",
    "reporter_node": 0xA1B2C3D4,
    "camp": 412,
}
SEALED_TEXT = "412#1236 age120 P! woman threatened near well 3 at night, asks escort !a1b2c3d4"
# Five small reports as field teams send them (shorthand-sized), queued 0 s to 1 h before the batch left.
BATCH: list[tuple[dict[str, Any], int, str]] = [
    ({"severity": {"water": 4, "food": 3}, "population": {"individuals": 12500}, "unaccompanied_children": 14}, 0,
     "N W4 F3 P12500 K14"),
    ({"severity": {"health": 4, "sanitation": 3}, "disease": {"awd_7d": 23}}, 240, "N M4 H3 AWD23"),
    ({"severity": {"shelter": 2, "clothing": 3}, "population": {"households": 2900}}, 900, "N S2 C3 HH2900"),
    ({"severity": {"water": 5}, "disease": {"deaths_24h": 1}}, 1800, "N W5 D1"),
    ({"severity": {"protection": 2}, "unaccompanied_children": 15, "population": {"arrivals_24h": 340}}, 3600,
     "N X2 K15 NEW340"),
]


@dataclass(frozen=True)
class Row:
    what: str
    form: str
    payloads: tuple[int, ...]  # application payload of each radio frame
    port: int
    note: str = ""

    @classmethod
    def of(cls, what: str, form: str, size: int, port: int, note: str = "") -> Row:
        """One message of `size` bytes, split into as many frames as it needs."""
        per_frame = max_app_payload(port)
        full, rest = divmod(size, per_frame)
        return cls(what, form, (per_frame,) * full + ((rest,) if rest else ()), port, note)

    @property
    def size(self) -> int:
        return sum(self.payloads)

    @property
    def phy_bytes(self) -> int:
        return sum(frame_len(n, self.port) for n in self.payloads)

    @property
    def airtime_ms(self) -> float:
        return 1000 * sum(payload_airtime_s(n, LONG_FAST, self.port) for n in self.payloads)


def varint_len(value: int) -> int:
    return max(1, math.ceil(value.bit_length() / 7))


def compact_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def content_json(envelope: Envelope, body: object) -> bytes:
    """The same information the envelope carries (id, kind, age, body), as compact JSON, unsigned."""
    return compact_json({"id": envelope.id, "kind": envelope.kind.value, "age_s": envelope.age_s, "body": body})


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "FAIL"


def main() -> None:
    rows: list[Row] = []

    needs = build_envelope(Kind.NEEDS, NEEDS, origin=ORIGIN, seq=1234, key=SIGN_KEY, age_s=AGE_S)
    needs_size = len(needs.to_bytes())
    overhead = needs_size - len(needs.body)
    rows += [
        Row.of("needs report (issue 2 example)", "meshd envelope", needs_size, PRIVATE_PORT,
            f"signed; body {len(needs.body)} B"),
        Row.of("", "compact JSON", len(content_json(needs, NEEDS)), PRIVATE_PORT, "unsigned"),
        Row.of("", "text line", len(NEEDS_TEXT.encode()), TEXT_PORT, "unsigned"),
    ]

    alert = build_envelope(Kind.ALERT, ALERT, origin=ORIGIN, seq=1235, key=SIGN_KEY, age_s=AGE_S)
    alert_size = len(alert.to_bytes())
    rows += [
        Row.of("alert (disease outbreak)", "meshd envelope", alert_size, PRIVATE_PORT,
               f"signed; body {len(alert.body)} B"),
        Row.of("", "compact JSON", len(content_json(alert, ALERT)), PRIVATE_PORT, "unsigned"),
        Row.of("", "text line", len(ALERT_TEXT.encode()), TEXT_PORT, "unsigned"),
    ]

    plaintext = len(encode_sealed_content(SEALED))
    sealed = build_envelope(
        Kind.SEALED, SEALED, origin=ORIGIN, seq=1236, key=SIGN_KEY, seal_to=HQ_SEAL, age_s=AGE_S
    )
    sealed_size = len(sealed.to_bytes())
    rows += [
        Row.of("sealed protection report", "meshd envelope", sealed_size, PRIVATE_PORT,
            f"signed+sealed; plaintext {plaintext} B, Sealed body {len(sealed.body)} B"),
        Row.of("", "compact JSON", len(content_json(sealed, SEALED)), PRIVATE_PORT, "unsigned, readable by all"),
        Row.of("", "text line", len(SEALED_TEXT.encode()), TEXT_PORT, "unsigned, readable by all"),
    ]

    entries = [BatchEntry(Kind.NEEDS, encode_body(Kind.NEEDS, body, ORIGIN), age) for body, age, _ in BATCH]
    batch_body = make_batch_body(entries)
    batch = sign(Envelope(ORIGIN, 1240, Kind.BATCH, batch_body, age_s=AGE_S), SIGN_KEY)
    batch_size = len(batch.to_bytes())
    item_overheads = [
        len(make_batch_body([entry])) - len(entry.body) for entry in entries
    ]  # a one-item batch body is exactly that item's field: tag, length, age, body tag and length
    assert sum(item_overheads) + sum(len(e.body) for e in entries) == len(batch_body)
    item_overhead_mean = sum(item_overheads) / len(entries)
    separate = [
        build_envelope(Kind.NEEDS, body, origin=ORIGIN, seq=1240 + i, key=SIGN_KEY, age_s=AGE_S + age)
        for i, (body, age, _) in enumerate(BATCH)
    ]
    separate_size = sum(len(e.to_bytes()) for e in separate)
    batch_json = compact_json(
        [{"id": f"{ORIGIN}:{1240 + i}", "kind": "needs", "age_s": AGE_S + age, "body": {"camp": ORIGIN, **body}}
         for i, (body, age, _) in enumerate(BATCH)]
    )
    batch_text = "\n".join(f"{ORIGIN}#{1240 + i} age{AGE_S + age} {line}" for i, (_, age, line) in enumerate(BATCH))
    rows += [
        Row.of("batch of 5 needs reports", "meshd envelope", batch_size, PRIVATE_PORT,
            f"one signature; items {sum(len(e.body) for e in entries)} B of bodies"),
        Row("", "5 meshd envelopes", tuple(len(e.to_bytes()) for e in separate), PRIVATE_PORT, "five signatures"),
        Row.of("", "compact JSON", len(batch_json), PRIVATE_PORT, "unsigned"),
        Row.of("", "text lines", len(batch_text.encode()), TEXT_PORT, "unsigned"),
    ]

    print("meshd wire size: bytes and LongFast (SF11, 250 kHz, CR 4/5) time on air")
    print()
    header = f"{'content':<32} {'form':<18} {'bytes':>5} {'frames':>6} {'PHY B':>6} {'airtime ms':>10}  notes"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.what:<32} {row.form:<18} {row.size:>5} {len(row.payloads):>6} {row.phy_bytes:>6}"
            f" {row.airtime_ms:>10.1f}  {row.note}"
        )
    print()

    unsigned = len(replace(needs, signature=b"").to_bytes())
    sig_field = needs_size - unsigned
    body_framing = 1 + varint_len(len(needs.body))
    print(f"envelope overhead (needs example, everything but its {len(needs.body)}-byte body): {overhead} bytes =")
    print(f"  signature field {sig_field} (64-byte Ed25519 + tag + length) + body tag/length {body_framing}"
          f" + origin/seq/age_s fields {overhead - sig_field - body_framing}")
    print(f"batch: per-report overhead {item_overheads} bytes (mean {item_overhead_mean:.1f}, "
          f"max {max(item_overheads)}); {batch_size} B in one frame vs {separate_size} B in {len(separate)} frames "
          f"({100 * (1 - batch_size / separate_size):.0f}% fewer bytes)")
    print(f"sealed: {plaintext} bytes of SealedContent plaintext, padded to a multiple of 16, + 32-byte ephemeral"
          f" key + 16-byte tag = {sealed_size_box(sealed.body)}-byte box")
    print(f"every meshd envelope above fits one frame (<= {MAX_ENVELOPE_LEN} bytes): "
          f"{all(n <= MAX_ENVELOPE_LEN for n in (needs_size, alert_size, sealed_size, batch_size))}")
    print()

    targets = [
        ("envelope overhead (64-byte signature)", overhead, TARGET_OVERHEAD),
        ("signed needs report, every field", needs_size, TARGET_NEEDS),
        ("batch per-report overhead (max of 5)", max(item_overheads), TARGET_BATCH_ITEM),
        (f"sealed report ({plaintext} B plaintext)", sealed_size, TARGET_SEALED),
    ]
    print(f"{'target (issue 2)':<40} {'value':>6} {'target':>8}")
    for name, value, target in targets:
        print(f"{name:<40} {value:>6} {'<= ' + str(target):>8}  {verdict(value, target)}")
    print()
    print(
        f"RESULT envelope_overhead={overhead} needs_bytes={needs_size} alert_bytes={alert_size} "
        f"sealed_bytes={sealed_size} batch5_bytes={batch_size} batch_item_overhead={item_overhead_mean:.1f}"
    )


if __name__ == "__main__":
    main()
