"""Khaos Control's conventions at the edge: every conversion in khaosync.khaos.convert."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from khaosync.khaos.convert import (
    LONDON,
    NO_DATE,
    ConversionError,
    kc_bool,
    kc_date,
    kc_datetime_to_utc,
    kc_decimal,
    kc_int,
    kc_list,
    to_kc_bool,
    to_kc_list,
    utc_to_kc_datetime,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- datetimes: Europe/London local, no offset -> aware UTC ----------------------------


@pytest.mark.parametrize(
    ("kc", "expected"),
    [
        ("2026-01-15T12:00:00", utc(2026, 1, 15, 12, 0)),  # winter: GMT = UTC
        ("2026-07-15T12:00:00", utc(2026, 7, 15, 11, 0)),  # summer: BST = UTC+1
        ("2026-10-01T09:12:00", utc(2026, 10, 1, 8, 12)),  # the contract's order date
        (" 2026-01-15T12:00:00 ", utc(2026, 1, 15, 12, 0)),  # stray whitespace
    ],
)
def test_london_local_to_utc(kc: str, expected: datetime) -> None:
    assert kc_datetime_to_utc(kc) == expected
    assert kc_datetime_to_utc(kc).tzinfo is not None


@pytest.mark.parametrize(
    ("kc", "expected"),
    [
        # Spring forward, 2026-03-29: 01:00 GMT becomes 02:00 BST; 01:00-01:59 never happens.
        ("2026-03-29T00:59:59", utc(2026, 3, 29, 0, 59, 59)),  # last GMT second
        ("2026-03-29T01:00:00", utc(2026, 3, 29, 1, 0)),  # in the gap: read as GMT
        ("2026-03-29T01:30:00", utc(2026, 3, 29, 1, 30)),  # in the gap: read as GMT
        ("2026-03-29T01:59:59", utc(2026, 3, 29, 1, 59, 59)),  # in the gap: read as GMT
        ("2026-03-29T02:00:00", utc(2026, 3, 29, 1, 0)),  # first BST wall time
        ("2026-03-29T03:00:00", utc(2026, 3, 29, 2, 0)),
    ],
)
def test_spring_changeover_gap_reads_as_gmt(kc: str, expected: datetime) -> None:
    assert kc_datetime_to_utc(kc) == expected


@pytest.mark.parametrize(
    ("kc", "expected"),
    [
        # Fall back, 2026-10-25: 02:00 BST becomes 01:00 GMT; 01:00-01:59 happens twice.
        ("2026-10-25T00:59:59", utc(2026, 10, 24, 23, 59, 59)),
        ("2026-10-25T01:00:00", utc(2026, 10, 25, 0, 0)),  # ambiguous: the first (BST)
        ("2026-10-25T01:30:00", utc(2026, 10, 25, 0, 30)),  # ambiguous: the first (BST)
        ("2026-10-25T01:59:59", utc(2026, 10, 25, 0, 59, 59)),  # ambiguous: the first (BST)
        ("2026-10-25T02:00:00", utc(2026, 10, 25, 2, 0)),  # GMT again
    ],
)
def test_autumn_changeover_repeated_hour_takes_the_first(kc: str, expected: datetime) -> None:
    assert kc_datetime_to_utc(kc) == expected


def test_autumn_second_occurrence_cannot_round_trip() -> None:
    # 01:30 GMT (the second 01:30) writes as "01:30" and reads back as the first: KC's
    # format cannot say which; documented, and one hour early is the choice.
    second = utc(2026, 10, 25, 1, 30)
    assert utc_to_kc_datetime(second) == "2026-10-25T01:30:00"
    assert kc_datetime_to_utc("2026-10-25T01:30:00") == second - timedelta(hours=1)


@pytest.mark.parametrize("no_date", [NO_DATE, "1899-12-31T00:00:00", "1899-12-30T00:00:00", "", "   ", None])
def test_no_date(no_date: str | None) -> None:
    assert kc_datetime_to_utc(no_date) is None


def test_an_explicit_offset_is_honoured() -> None:
    assert kc_datetime_to_utc("2026-07-15T12:00:00+02:00") == utc(2026, 7, 15, 10, 0)
    assert kc_datetime_to_utc("2026-07-15T12:00:00Z") == utc(2026, 7, 15, 12, 0)


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00", "2026-02-30T00:00:00", "15/07/2026 12:00"])
def test_bad_datetime_raises(bad: str) -> None:
    with pytest.raises(ConversionError, match="not a KC datetime"):
        kc_datetime_to_utc(bad)


@pytest.mark.parametrize(
    ("instant", "kc"),
    [
        (utc(2026, 1, 15, 12, 0), "2026-01-15T12:00:00"),
        (utc(2026, 7, 15, 11, 0), "2026-07-15T12:00:00"),
        (utc(2026, 3, 29, 1, 0), "2026-03-29T02:00:00"),  # the instant of the jump
        (utc(2026, 10, 25, 0, 30), "2026-10-25T01:30:00"),
        (datetime(2026, 7, 15, 14, 0, tzinfo=timezone(timedelta(hours=2))), "2026-07-15T13:00:00"),
    ],
)
def test_utc_to_kc(instant: datetime, kc: str) -> None:
    assert utc_to_kc_datetime(instant) == kc


def test_utc_to_kc_refuses_naive() -> None:
    with pytest.raises(ConversionError, match="naive"):
        utc_to_kc_datetime(datetime(2026, 1, 1))


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(UTC)))
def test_round_trip_except_the_repeated_autumn_hour(instant: datetime) -> None:
    instant = instant.replace(microsecond=0)
    back = kc_datetime_to_utc(utc_to_kc_datetime(instant))
    local = instant.astimezone(LONDON)
    if local.fold == 1:  # the second (GMT) pass through the repeated hour
        assert back == instant - timedelta(hours=1)
    else:
        assert back == instant


# -- dates (DOB): the local calendar date, no zone shift -------------------------------


@pytest.mark.parametrize(
    ("kc", "expected"),
    [
        ("1990-12-10T00:00:00", date(1990, 12, 10)),
        ("1990-06-10T00:00:00", date(1990, 6, 10)),  # summer midnight is not shifted to the 9th
        ("1990-12-10", date(1990, 12, 10)),
        (NO_DATE, None),
        ("1899-12-30T00:00:00", None),
        ("", None),
        (None, None),
    ],
)
def test_kc_date(kc: str | None, expected: date | None) -> None:
    assert kc_date(kc) == expected


def test_bad_date_raises() -> None:
    with pytest.raises(ConversionError, match="not a KC date"):
        kc_date("10/12/1990")


# -- booleans: -1 / 0 / blank ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kc", "expected"),
    [("-1", True), ("0", False), ("", None), ("  ", None), (None, None), (" -1 ", True),
     ("1", True), ("true", True), ("False", False)],
)
def test_kc_bool(kc: str | None, expected: bool | None) -> None:
    assert kc_bool(kc) is expected


@pytest.mark.parametrize("bad", ["2", "yes", "-2", "Y"])
def test_bad_bool_raises(bad: str) -> None:
    with pytest.raises(ConversionError, match="not a KC boolean"):
        kc_bool(bad)


def test_to_kc_bool() -> None:
    assert (to_kc_bool(True), to_kc_bool(False)) == ("-1", "0")
    assert kc_bool(to_kc_bool(True)) is True and kc_bool(to_kc_bool(False)) is False


# -- lists: comma-separated ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kc", "expected"),
    [("A,B,C", ["A", "B", "C"]), ("A, B,,C ", ["A", "B", "C"]), ("", []), (None, []), ("ONE", ["ONE"]), (",,", [])],
)
def test_kc_list(kc: str | None, expected: list[str]) -> None:
    assert kc_list(kc) == expected


def test_to_kc_list_refuses_a_comma_inside_an_item() -> None:
    assert to_kc_list(["C001", "C002"]) == "C001,C002"
    assert to_kc_list(()) == ""
    with pytest.raises(ConversionError, match="comma"):
        to_kc_list(["A,B"])


_codes = st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=12), max_size=20)


@given(_codes)
def test_list_round_trip(codes: list[str]) -> None:
    assert kc_list(to_kc_list(codes)) == codes


# -- decimals and integers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kc", "expected_text"),
    [("12.50", "12.50"), ("1.10", "1.10"), ("0", "0"), ("-3.99", "-3.99"), (" 7.00 ", "7.00"),
     ("0.1", "0.1"), ("123456789012.3456", "123456789012.3456")],
)
def test_kc_decimal_keeps_the_text(kc: str, expected_text: str) -> None:
    value = kc_decimal(kc)
    assert isinstance(value, Decimal)
    assert str(value) == expected_text


def test_kc_decimal_is_exact() -> None:
    assert kc_decimal("0.1") + kc_decimal("0.2") == Decimal("0.3")
    assert kc_decimal("1.10") == kc_decimal("1.1")  # equal in value, different in text


@pytest.mark.parametrize("blank", ["", "  ", None])
def test_kc_decimal_blank_is_none(blank: str | None) -> None:
    assert kc_decimal(blank) is None


@pytest.mark.parametrize("bad", ["12,50", "£12.50", "abc", "NaN", "Infinity", "-inf", "sNaN", "1.2.3"])
def test_kc_decimal_refuses(bad: str) -> None:
    with pytest.raises(ConversionError, match="SELL_PRICE"):
        kc_decimal(bad, field="SELL_PRICE")


# Decimal() alone would take all of these; the contract's decimals are plain "12.50" text.
@pytest.mark.parametrize("lenient", ["1_000", "\u0661\u0662", "1e3", "1E+3", "0x10", "+5", ".5", "5."])
def test_kc_decimal_refuses_what_only_python_would_read(lenient: str) -> None:
    with pytest.raises(ConversionError, match="not a decimal"):
        kc_decimal(lenient)


@pytest.mark.parametrize(("kc", "expected"), [("42", 42), ("-1", -1), (" 7 ", 7), ("", None), (None, None)])
def test_kc_int(kc: str | None, expected: int | None) -> None:
    assert kc_int(kc) == expected


@pytest.mark.parametrize("bad", ["4.2", "x", "1e3"])
def test_kc_int_refuses(bad: str) -> None:
    with pytest.raises(ConversionError, match="COMPANY_ID: not an integer"):
        kc_int(bad, field="COMPANY_ID")


@pytest.mark.parametrize("lenient", ["1_000", "\u0663", "+5", "0x10"])
def test_kc_int_refuses_what_only_python_would_read(lenient: str) -> None:
    with pytest.raises(ConversionError, match="not an integer"):
        kc_int(lenient)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-10**9, max_value=10**9))
def test_decimal_text_round_trip(value: Decimal) -> None:
    text = f"{value:f}"
    assert kc_decimal(text) == value
    assert str(kc_decimal(text)) == text
