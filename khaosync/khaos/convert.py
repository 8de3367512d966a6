"""Khaos Control's conventions, converted at the edge.

- Datetimes are Europe/London local time without an offset; we store UTC.
  ``1899-12-31T00:00:00`` (and an empty string) means "no date".
  In the autumn changeover hour (01:00-01:59 happens twice) KC gives no hint which one it
  means: we take the first (BST, ``fold=0``), the earlier instant, and say so in the docs.
  In the spring gap (01:00-01:59 does not exist) we read the time as GMT, i.e. one hour
  later on the wall clock, which is what a clock that did not jump would have meant.
- Booleans are ``-1`` (true) and ``0`` (false).
- Lists are comma-separated strings.
"""

from __future__ import annotations

import re

from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
NO_DATE = "1899-12-31T00:00:00"
KC_FORMAT = "%Y-%m-%dT%H:%M:%S"


_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_INTEGER = re.compile(r"-?[0-9]+")


class ConversionError(ValueError):
    """A value that does not follow the KC convention it should."""


def _dated(value: str | None) -> str | None:
    """The text of a KC date or datetime, or None for "no date" (blank, 1899-12-30/31)."""
    text = (value or "").strip()
    if not text or text.startswith(("1899-12-30", "1899-12-31")):
        return None
    return text


def kc_datetime_to_utc(value: str | None) -> datetime | None:
    """``2026-10-25T01:30:00`` (London) -> aware UTC datetime; "no date" -> None."""
    text = _dated(value)
    if text is None:
        return None
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        raise ConversionError(f"not a KC datetime: {value!r}") from None
    if naive.tzinfo is not None:
        # Some sites append an offset; honour it rather than guess.
        return naive.astimezone(timezone.utc)
    local = naive.replace(tzinfo=LONDON, fold=0)
    utc = local.astimezone(timezone.utc)
    # A wall time in the spring gap does not round-trip; zoneinfo maps it forward already
    # for fold=0 using the pre-transition offset (GMT), which is what we document.
    return utc


def utc_to_kc_datetime(value: datetime) -> str:
    """Aware datetime -> KC local string. Naive input is refused: it has no meaning here."""
    if value.tzinfo is None:
        raise ConversionError("naive datetime: say which zone it is in")
    return value.astimezone(LONDON).strftime(KC_FORMAT)


def kc_date(value: str | None) -> date | None:
    """A KC datetime used as a calendar date (DOB): the local date, no zone shift."""
    text = _dated(value)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).date() if "T" in text else date.fromisoformat(text)
    except ValueError:
        raise ConversionError(f"not a KC date: {value!r}") from None


_UK_DATE = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})(?:[ T]([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?)?")


def kc_uk_date(value: str | None) -> date | None:
    """A date as ExportOrderStatusEx writes it, ``DD/MM/YYYY`` (the vendor's comments); also
    the ISO forms other documents use, so one reader serves both. ``30/12/1899`` and
    ``31/12/1899`` (Delphi's zero date) are "no date"."""
    text = (value or "").strip()
    if not text:
        return None
    match = _UK_DATE.fullmatch(text)
    if match is None:
        return kc_date(text)
    day, month, year = int(match.group(1)), int(match.group(2)), int(match.group(3))
    try:
        parsed = date(year, month, day)
    except ValueError:
        raise ConversionError(f"not a KC date (DD/MM/YYYY): {value!r}") from None
    return None if parsed.year == 1899 else parsed


def kc_uk_date_to_utc(value: str | None) -> datetime | None:
    """A ``DD/MM/YYYY`` (or ISO) date as the aware UTC instant of London midnight that day;
    a full ``YYYY-MM-DDTHH:MM:SS`` London time is kept to the second."""
    text = (value or "").strip()
    if "T" in text and _UK_DATE.fullmatch(text) is None:
        return kc_datetime_to_utc(text)
    day = kc_uk_date(text)
    if day is None:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=LONDON).astimezone(timezone.utc)


def kc_bool(value: str | None) -> bool | None:
    """``-1`` -> True, ``0`` -> False, blank -> None (no decision held)."""
    if value is None:
        return None
    text = value.strip()
    if text == "":
        return None
    if text in ("-1", "1", "true", "True", "TRUE"):
        # KC writes -1; 1 and true appear in hand-made exports.
        return True
    if text in ("0", "false", "False", "FALSE"):
        return False
    raise ConversionError(f"not a KC boolean: {value!r}")


def to_kc_bool(value: bool) -> str:
    return "-1" if value else "0"


def kc_list(value: str | None) -> list[str]:
    """``"A, B,,C"`` -> ``["A", "B", "C"]``."""
    if not value:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def to_kc_list(values: list[str] | tuple[str, ...]) -> str:
    for v in values:
        if "," in v:
            raise ConversionError(f"a KC list item cannot contain a comma: {v!r}")
    return ",".join(values)


def kc_decimal(value: str | None, *, field: str = "value") -> Decimal | None:
    """Money and quantities as exact decimals; blank -> None."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    # Plain text only: Decimal() would also take '1_000', '1e3', 'NaN' and non-ASCII digits.
    if not _DECIMAL.fullmatch(text):
        raise ConversionError(f"{field}: not a decimal: {value!r}")
    return Decimal(text)


def kc_int(value: str | None, *, field: str = "value") -> int | None:
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not _INTEGER.fullmatch(text):  # int() would take '1_000' and non-ASCII digits
        raise ConversionError(f"{field}: not an integer: {value!r}")
    return int(text)


__all__ = [
    "ConversionError", "LONDON", "NO_DATE", "kc_bool", "kc_date", "kc_uk_date", "kc_uk_date_to_utc", "kc_datetime_to_utc", "kc_decimal",
    "kc_int", "kc_list", "to_kc_bool", "to_kc_list", "utc_to_kc_datetime",
]
