"""CSV for finance's spreadsheet: one file per table of ``reconcile --json``, same columns,
same values (money as exact decimal text, blanks for null), UTF-8 with a header row.

Every CSV khaosync writes goes through ``csv_writer``: a cell that a spreadsheet would run as a
formula (it starts with ``= + - @``, a tab or a carriage return, and is not a plain number) is
written with a leading ``'``, so an email like ``=HYPERLINK(...)@evil.example`` stays text.

``reconcile --month 2026-10 --csv DIR`` writes ``2026-10-metrics.csv``, ``2026-10-records.csv``
and ``2026-10-daily.csv``; ``reconcile contacts --csv DIR`` writes ``contacts-records.csv``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Iterable, TextIO

METRIC_COLUMNS = ("name", "currency", "store", "erp", "ledger", "ometria", "difference", "not_yet_due",
                  "unexplained", "status")
RECORD_COLUMNS = ("key", "issue", "severity", "owner", "side", "erp", "ometria", "detail", "currency", "store",
                  "erp_key", "exception_type")
DAILY_COLUMNS = ("date", "currency", "erp", "ledger", "ometria")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def safe_cell(value: Any) -> Any:
    """``value`` as a spreadsheet may open it: a would-be formula becomes text (OWASP's advice)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


class SafeWriter:
    """``csv.writer`` whose every cell passes ``safe_cell``, and a ``Masker`` first if given
    (``--mask-pii``)."""

    def __init__(self, handle: TextIO, masker: Any = None):
        self._writer = csv.writer(handle, lineterminator="\n")
        self._masker = masker

    def writerow(self, row: Iterable[Any]) -> None:
        cells = [self._masker.value(v) for v in row] if self._masker is not None else list(row)
        self._writer.writerow([safe_cell(v) for v in cells])


def csv_writer(handle: TextIO, masker: Any = None) -> SafeWriter:
    return SafeWriter(handle, masker)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def write_table(path: Path, columns: tuple[str, ...], rows: list[dict]) -> Path:
    """Write one table atomically (a half-written file never replaces a good one)."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        writer = csv_writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    os.replace(partial, path)
    return path


def write_reconciliation(result: dict, folder: str | Path) -> list[Path]:
    """The tables of a reconciliation's ``as_dict()`` (orders or contacts) as CSV files in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = result["month"] if result.get("kind") == "orders" else "contacts"
    written = []
    if result.get("kind") == "orders":
        written.append(write_table(folder / f"{prefix}-metrics.csv", METRIC_COLUMNS, result["metrics"]))
    written.append(write_table(folder / f"{prefix}-records.csv", RECORD_COLUMNS, result["records"]))
    if result.get("kind") == "orders":
        written.append(write_table(folder / f"{prefix}-daily.csv", DAILY_COLUMNS, result["daily"]))
    return written
