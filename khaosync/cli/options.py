"""Option values every command group parses the same way (dates, years)."""

from __future__ import annotations

from datetime import datetime, timezone

import typer

# Dates an operator can mean: Khaos Control sites hold nothing before 1900, and a year past
# 2999 is a typo (9999-12 would overflow the month arithmetic further down).
FIRST_YEAR = 1900
LAST_YEAR = 2999


def parse_since(text: str) -> datetime:
    """``--since``: a date or ISO datetime, UTC when it names no zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"--since {text!r}: expected YYYY-MM-DD or an ISO datetime") from None
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise typer.BadParameter(f"--since {text!r}: the year must be {FIRST_YEAR} to {LAST_YEAR}")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
