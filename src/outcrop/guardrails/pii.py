"""Personal data and secrets in text: find them, with checksums where the format has one.

Each entity is a pattern plus a validator, so a 16-digit order number that fails
the Luhn check is not a payment card and an IBAN must pass ISO 7064 mod 97. The
patterns have no nested quantifiers, so a huge input costs linear time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ENTITIES", "PiiMatch", "find_pii", "mask_pii"]


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn(digits)


def _iban(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _phone(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 9 <= len(digits) <= 15


def _ssn(text: str) -> bool:
    area, group, serial = text.split("-")
    return (
        area not in ("000", "666")
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
    )


def _always(_: str) -> bool:
    return True


@dataclass(frozen=True)
class _Entity:
    label: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool]
    description: str


ENTITIES: dict[str, _Entity] = {
    e.label: e
    for e in [
        _Entity(
            "email",
            re.compile(
                r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}\b"
            ),
            _always,
            "e-mail address",
        ),
        _Entity(
            "card",
            re.compile(r"\b\d(?:[ -]?\d){12,18}\b"),
            _card,
            "payment card number (Luhn-checked)",
        ),
        _Entity(
            "iban",
            re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
            _iban,
            "IBAN (mod-97 checked)",
        ),
        _Entity(
            "us_ssn",
            re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
            _ssn,
            "US social security number",
        ),
        _Entity(
            "uk_nino",
            re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),
            _always,
            "UK national insurance number",
        ),
        _Entity(
            "phone",
            re.compile(
                # international (+44 20 7946 0958), US ((415) 555-2671, 415-555-2671),
                # national with a trunk 0 (020 7946 0958)
                r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}\b"
                r"|(?<!\w)\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b"
                r"|\b\d{3}[.-]\d{3}[.-]\d{4}\b"
                r"|\b0\d{2,4} \d{3,4} \d{3,4}\b"
            ),
            _phone,
            "telephone number",
        ),
        _Entity(
            "ip",
            re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b"),
            _ip,
            "IP address",
        ),
        _Entity(
            "secret",
            re.compile(
                r"\b(?:sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
                r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|oc-[A-Za-z0-9_-]{30,}"
                r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
            ),
            _always,
            "API key, token or other secret",
        ),
    ]
}

# Entities checked first win overlapping spans (a card number is not also a phone number).
_ORDER = ["secret", "email", "iban", "card", "us_ssn", "uk_nino", "ip", "phone"]


@dataclass(frozen=True)
class PiiMatch:
    entity: str
    start: int
    end: int
    text: str


def find_pii(text: str, entities: list[str] | None = None) -> list[PiiMatch]:
    """Every entity found, in text order, without overlaps."""
    wanted = [e for e in _ORDER if entities is None or e in entities]
    taken: list[tuple[int, int]] = []
    found: list[PiiMatch] = []
    for name in wanted:
        entity = ENTITIES[name]
        for m in entity.pattern.finditer(text):
            start, end = m.span()
            if any(start < e and s < end for s, e in taken):
                continue
            if entity.valid(m.group()):
                taken.append((start, end))
                found.append(PiiMatch(name, start, end, m.group()))
    return sorted(found, key=lambda m: m.start)


def mask_pii(text: str, matches: list[PiiMatch]) -> str:
    """The text with each match replaced by its label, e.g. ``[EMAIL]``."""
    out: list[str] = []
    last = 0
    for m in matches:
        out.append(text[last : m.start])
        out.append(f"[{m.entity.upper()}]")
        last = m.end
    out.append(text[last:])
    return "".join(out)
