"""The file source: Khaos Control exports in a folder, for what the SOAP API lacks.

Credit notes have no public SOAP method, so they come from a report export (CSV or TSV);
audits work from a client's folder of exports. Records come out as the same ``Parsed``
objects, with the same problems, as from ``khaosync.khaos.parse``.

Column maps
-----------
A site's report rarely uses our column names. A YAML column map says, per entity, which
column of the site's report holds each of our fields. Anything left out keeps its default
(the column names of docs/khaos-soap.md for credit notes, KC's element names for
customers). A field set to ``null`` is one the site's report does not have (only optional
fields may be). Header names match exactly, else ignoring case.

.. code-block:: yaml

    # mappings/columns.yaml: the Acme site's reports
    delimiter: null            # null: .tsv is tab-separated, otherwise the commonest of , TAB ; |
                               # in the header row
    encoding: utf-8            # a leading BOM is ignored; cp1252 for an old Windows report
    datetime_format: "%d/%m/%Y %H:%M"   # strptime format, Europe/London local time;
                                        # null: KC's YYYY-MM-DDTHH:MM:SS
    credit_note:               # one row per credit note line
      credit_id: Credit ID
      credit_code: Credit No
      sorder_id: Order ID
      sorder_code: Order No
      associated_ref: Web Ref
      issued: Date
      currency: Currency
      reason: null             # this report has no reason column
      sorder_item_id: Order Line ID   # empty on a delivery-only refund row
      stock_code: SKU
      qty: Qty
      value: Line Value        # gross refund for the line
      delivery_refund: Delivery
      total: Credit Total
    customer:                  # one row per contact
      company_id: Cust ID
      company_code: URN
      company_name: Customer
      email: Email
      mailing_status: Mailing Status
      email_subscribe: Email Opt In
      additional:              # KC user-defined field -> column
        LOYALTY_TIER: Tier

Required columns (a file without them is a ``DocumentError`` naming every missing one):
credit notes ``credit_id, sorder_id, issued, currency, sorder_item_id, qty, value,
delivery_refund, total``; customers ``company_id, company_code, contact_id, email``. An
optional column that the map names explicitly must exist too (a typo in a map must not
silently empty a field); an optional column left at its default may be absent.

Folder layout (``ExportFolder``; names match ignoring case, read in name order):
``companies*.xml`` and ``customers*.csv|tsv``, ``stock*.xml``, ``sales_orders*.xml`` with
``order_status*.xml`` merged in, ``credit_notes*.csv|tsv``.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import io
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from khaosync.errors import ConfigError, RecordError
from khaosync.khaos import convert
from khaosync.khaos.convert import ConversionError
from khaosync.khaos import attach
from khaosync.khaos.models import Company, CreditNote, OrderStatus, SalesOrder, StockItem
from khaosync.khaos.parse import (
    INVALID,
    DocumentError,
    Parsed,
    build_record,
    company_problems,
    is_currency,
    parse_companies,
    parse_order_statuses,
    parse_sales_orders,
    parse_stock_items,
    parse_stock_statuses,
    problem,
    show,
    validation_reasons,
)

# -- the column map ------------------------------------------------------------------


class _Columns(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def wanted(self) -> dict[str, str]:
        """Our field -> the site's column, for the fields this report has."""
        return {name: column for name, column in self if isinstance(column, str)}

    def explicit(self) -> set[str]:
        """Fields the site's map named itself: their columns must exist."""
        return set(self.model_fields_set)


class CreditNoteColumns(_Columns):
    """Our credit-note fields -> the report's column names (defaults: docs/khaos-soap.md)."""

    credit_id: str = "CREDIT_ID"
    credit_code: str | None = "CREDIT_CODE"
    sorder_id: str = "SORDER_ID"
    sorder_code: str | None = "SORDER_CODE"
    associated_ref: str | None = "ASSOCIATED_REF"
    issued: str = "ISSUED"
    currency: str = "CURRENCY"
    reason: str | None = "REASON"
    sorder_item_id: str = "SORDER_ITEM_ID"
    stock_code: str | None = "STOCK_CODE"
    qty: str = "QTY"
    value: str = "VALUE"
    delivery_refund: str = "DELIVERY_REFUND"
    total: str = "TOTAL"


class CustomerColumns(_Columns):
    """Our customer fields -> the report's column names (defaults: KC's element names)."""

    company_id: str = "COMPANY_ID"
    company_code: str = "COMPANY_CODE"
    company_name: str | None = "COMPANY_NAME"
    company_class: str | None = "COMPANY_CLASS"
    company_status: str | None = "COMPANY_STATUS"
    web_user: str | None = "WEB_USER"
    mailing_status: str | None = "MAILING_STATUS"
    currency: str | None = "CURRENCY_CODE"
    date_created: str | None = "DATE_CREATED"
    last_updated: str | None = "LAST_UPDATED"
    contact_id: str = "CONTACT_ID"
    title: str | None = "TITLE"
    forename: str | None = "FORENAME"
    surname: str | None = "SURNAME"
    email: str = "EMAIL"
    mobile: str | None = "MOBILE"
    dob: str | None = "DOB"
    email_subscribe: str | None = "EMAILSUBSCRIBE"
    mailing_flag: str | None = "MAILING_FLAG"
    contact_inactive: str | None = "INACTIVE"
    additional: dict[str, str] = Field(default_factory=dict)  # KC user field name -> column

    def wanted(self) -> dict[str, str]:
        found = super().wanted()
        found.update({f"additional:{name}": column for name, column in self.additional.items()})
        return found

    def explicit(self) -> set[str]:
        named = super().explicit() - {"additional"}
        return named | {f"additional:{name}" for name in self.additional}


_CREDIT_NOTE_REQUIRED = frozenset(
    {"credit_id", "sorder_id", "issued", "currency", "sorder_item_id", "qty", "value", "delivery_refund", "total"}
)
_CUSTOMER_REQUIRED = frozenset({"company_id", "company_code", "contact_id", "email"})


class ColumnMap(BaseModel):
    """How a site's report exports read: delimiter, encoding, datetime format, columns per entity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delimiter: str | None = None
    encoding: str = "utf-8"
    datetime_format: str | None = None
    credit_note: CreditNoteColumns = Field(default_factory=CreditNoteColumns)
    customer: CustomerColumns = Field(default_factory=CustomerColumns)

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"delimiter must be one character, got {value!r}")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value


def load_column_map(path: Path | None) -> ColumnMap:
    """The site's column map from YAML; ``None`` gives the defaults. Errors are ``ConfigError``."""
    if path is None:
        return ColumnMap()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"column map {path}: cannot read: {exc}") from None
    try:
        return ColumnMap.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"column map {path}: " + "; ".join(validation_reasons(exc))) from None


# -- a delimited file ----------------------------------------------------------------

_Rows = list[tuple[int, list[str]]]  # (line number in the file, cells)

_CHUNK = 1 << 20


@dataclass
class _Table:
    """A delimited file's header, and its rows spooled to a private temporary database.

    A report export can be larger than we want to hold (a year of credit notes), and its
    records' rows need not be next to each other, so rows wait on disk (SQLite's temporary
    file) and are read back by record, not all at once.
    """

    path: Path
    delimiter: str
    header: list[str]
    spool: sqlite3.Connection
    index: dict[str, int]  # our field -> column position, for the columns present
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # rows that are not delimited text: (line, text, why)

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Every data row in file order, a page at a time."""
        after = 0
        while True:
            page = self.spool.execute("SELECT line, cells FROM row WHERE line > ? ORDER BY line LIMIT 1000",
                                      (after,)).fetchall()
            for line, cells in page:
                yield line, json.loads(cells)
            if len(page) < 1000:
                return
            after = page[-1][0]

    def raw(self, rows: Iterable[tuple[int, list[str]]]) -> bytes:
        """The header and these rows, written back in the file's own dialect."""
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self.delimiter, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(cells for _, cells in rows)
        return out.getvalue().encode("utf-8")


def _text_chunks(path: Path, encoding: str) -> Iterator[str]:
    """The file decoded a chunk at a time; invalid bytes are a ``DocumentError`` naming the offset."""
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    decoder = codecs.getincrementaldecoder(codec)()
    offset = 0
    with path.open("rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start] if exc.start < len(exc.object) else 0
                raise DocumentError(f"not valid {encoding}: byte 0x{bad:02x} at offset {offset + exc.start}") from None
            if text:
                yield text
            if not chunk:
                return
            offset += len(chunk)


def _lines(chunks: Iterable[str]) -> Iterator[str]:
    """Whole physical lines (newline kept, as the csv module wants them) from text chunks."""
    rest = ""
    for chunk in chunks:
        parts = (rest + chunk).split("\n")
        rest = parts.pop()
        for part in parts:
            yield part + "\n"
    if rest:
        yield rest


# A quoted field may hold newlines; one whose quote never closes would swallow the rest of the
# file, so a record is given up on (its first line rejected, reading resumes after it) once it
# spans this many lines or characters.
_MAX_RECORD_LINES = 64
_MAX_RECORD_CHARS = csv.field_size_limit()


def _records(lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, str, list[str], str | None]]:
    """(first physical line, text, cells, error) per record: one bad row never costs the others."""
    source = enumerate(lines, 1)
    pushback: list[tuple[int, str]] = []

    def take() -> tuple[int, str] | None:
        return pushback.pop(0) if pushback else next(source, None)

    while (item := take()) is not None:
        start, first = item
        pending = [first]
        text = first
        while text.count('"') % 2 == 1 and len(pending) < _MAX_RECORD_LINES and len(text) < _MAX_RECORD_CHARS:
            more = take()
            if more is None:
                break
            pending.append(more[1])
            text += more[1]
        if text.count('"') % 2 == 1:
            # A quote that never closes: reject the first line only, and read the others again.
            pushback = [(start + i, line) for i, line in enumerate(pending[1:], 1)] + pushback
            yield start, first.rstrip("\r\n"), [], "unbalanced quote: a quoted field never closes"
            continue
        try:
            cells = next(csv.reader([text], delimiter=delimiter, strict=True), [])
        except csv.Error as exc:
            yield start, text.rstrip("\r\n"), [], f"not readable as delimited text: {exc}"
            continue
        yield start, text, cells, None


def _sniff_delimiter(path: Path, first_line: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    counts = {d: first_line.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _match_columns(header: list[str], wanted: dict[str, str]) -> dict[str, int]:
    exact = {name: i for i, name in enumerate(header)}
    folded: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        folded.setdefault(name.casefold(), []).append(i)
    index = {}
    for our_field, column in wanted.items():
        if column in exact:
            index[our_field] = exact[column]
        elif len(folded.get(column.casefold(), [])) == 1:
            index[our_field] = folded[column.casefold()][0]
    return index


def _read_table(path: Path, columns: ColumnMap, entity_columns: _Columns, required: frozenset[str]) -> _Table:
    """Read and check a whole delimited file; every file-level failure is a ``DocumentError``.

    The whole file is read (and checked) before any record is returned, but only the header
    stays in memory: the rows go to the table's spool.
    """
    try:
        first_line = next(_lines(_text_chunks(path, columns.encoding)), "").rstrip("\r\n")
        delimiter = columns.delimiter or _sniff_delimiter(path, first_line)
        spool = sqlite3.connect("", check_same_thread=False)  # "": a private temporary database on disk
        spool.execute("CREATE TABLE row (line INTEGER PRIMARY KEY, cells TEXT NOT NULL, key TEXT)")
        header: list[str] | None = None
        batch: list[tuple[int, str]] = []
        bad: list[tuple[int, str, str]] = []
        for line, text, cells, error in _records(_lines(_text_chunks(path, columns.encoding)), delimiter):
            if error is not None:
                if header is None:
                    raise csv.Error(f"line {line}: {error}")
                bad.append((line, text, error))  # this row alone; the rest of the file is read
                continue
            if not any(cell.strip() for cell in cells):
                continue  # blank lines carry nothing
            if header is None:
                header = [cell.strip() for cell in cells]
                continue
            batch.append((line, json.dumps(cells)))  # the physical line, even after a quoted newline
            if len(batch) >= 1000:
                spool.executemany("INSERT INTO row(line, cells) VALUES (?, ?)", batch)
                batch = []
        spool.executemany("INSERT INTO row(line, cells) VALUES (?, ?)", batch)
    except OSError as exc:
        raise DocumentError(f"cannot read: {exc}", source=str(path)) from None
    except DocumentError as exc:
        raise DocumentError(exc.reason, source=str(path)) from None
    except csv.Error as exc:
        raise DocumentError(f"not readable as delimited text: {exc}", source=str(path)) from None
    if header is None:
        raise DocumentError("empty file: no header row", source=str(path))
    repeated = sorted({name for name in header if header.count(name) > 1 and name})
    if repeated:
        raise DocumentError(f"header repeats column(s) {', '.join(map(repr, repeated))}", source=str(path))
    wanted = entity_columns.wanted()
    index = _match_columns(header, wanted)
    must = (required | entity_columns.explicit()) & wanted.keys()
    missing = sorted(wanted[f] for f in must if f not in index)
    if missing:
        raise DocumentError(
            f"missing column(s) {', '.join(map(repr, missing))} (header: {', '.join(map(repr, header))})",
            source=str(path),
        )
    return _Table(path, delimiter, header, spool, index, bad)


class _Row:
    """One row's cells by our field names, converted with KC's conventions.

    Conversion failures go to ``errors`` as "line N, field (column 'X'): not a ...: value".
    """

    def __init__(self, table: _Table, line: int, cells: list[str], wanted: dict[str, str],
                 datetime_format: str | None, errors: list[str]):
        self.table, self.line, self.cells, self.wanted = table, line, cells, wanted
        self.datetime_format = datetime_format
        self.errors = errors

    def where(self, our_field: str) -> str:
        return f"line {self.line}, {self.name(our_field)}"

    def name(self, our_field: str) -> str:
        return f"{our_field} (column {self.wanted.get(our_field, '?')!r})"

    def text(self, our_field: str) -> str:
        i = self.table.index.get(our_field)
        if i is None or i >= len(self.cells):
            return ""
        return self.cells[i].strip()

    def _convert(self, our_field: str, fn: Callable[[str | None], Any], what: str) -> Any:
        value = self.text(our_field)
        try:
            return fn(value)
        except (ConversionError, ValueError):
            self.errors.append(f"{self.where(our_field)}: not {what}: {show(value)}")
            return INVALID

    def int(self, our_field: str) -> int | None:
        return self._convert(our_field, convert.kc_int, "an integer")

    def decimal(self, our_field: str) -> Decimal | None:
        return self._convert(our_field, convert.kc_decimal, "a decimal")

    def bool(self, our_field: str) -> bool | None:
        return self._convert(our_field, convert.kc_bool, "a KC boolean (-1/0)")

    def _local_iso(self, value: str | None) -> str | None:
        # A site's report format -> KC's own text, so the DST rules stay in convert.py.
        if not value or self.datetime_format is None:
            return value
        return datetime.strptime(value, self.datetime_format).strftime(convert.KC_FORMAT)

    def datetime(self, our_field: str) -> datetime | None:
        what = f"a datetime ({self.datetime_format or 'YYYY-MM-DDTHH:MM:SS'})"
        return self._convert(our_field, lambda v: convert.kc_datetime_to_utc(self._local_iso(v)), what)

    def date(self, our_field: str) -> date | None:
        what = f"a date ({self.datetime_format or 'YYYY-MM-DD'})"
        return self._convert(our_field, lambda v: convert.kc_date(self._local_iso(v)), what)


def _groups(table: _Table, key_field: str, column: str) -> Iterator[tuple[str | None, _Rows, list[str]]]:
    """Rows grouped by the record's numeric key, in order of first appearance.

    A row whose key is blank or not a number is its own group with key ``None`` and an error;
    those come first, in file order. Groups need not be contiguous (reports sort by other
    columns): the keys are written beside the spooled rows and each group read back by key.
    """
    i = table.index[key_field]
    keyed: list[tuple[str, int]] = []
    for line, cells in table.rows():
        value = cells[i].strip() if i < len(cells) else ""
        try:
            number = convert.kc_int(value)
        except ConversionError:
            number = None
        if number is None or number < 0:
            label = f"not a numeric id: {show(value)}" if value else "missing"
            yield None, [(line, cells)], [f"line {line}, {key_field} (column {column!r}): {label}"]
            continue
        keyed.append((str(number), line))
        if len(keyed) >= 1000:
            table.spool.executemany("UPDATE row SET key = ? WHERE line = ?", keyed)
            keyed = []
    table.spool.executemany("UPDATE row SET key = ? WHERE line = ?", keyed)
    table.spool.execute("CREATE INDEX row_key ON row(key, line)")
    firsts = table.spool.execute(
        "SELECT key FROM row WHERE key IS NOT NULL GROUP BY key ORDER BY min(line)").fetchall()
    for (key,) in firsts:
        rows = [(line, json.loads(cells)) for line, cells in table.spool.execute(
            "SELECT line, cells FROM row WHERE key = ? ORDER BY line", (key,))]
        yield key, rows, []


def _shape_errors(table: _Table, rows: _Rows) -> list[str]:
    width = len(table.header)
    return [f"line {line}: {len(cells)} cells, the header has {width}" for line, cells in rows if len(cells) != width]


def _consistency(entity: str, key: str, rows: list[_Row], fields: Iterable[str]) -> list[RecordError]:
    """Header fields repeated on every row of one record must agree; say where they do not."""
    found = []
    for our_field in fields:
        seen: dict[str, list[int]] = {}
        for row in rows:
            seen.setdefault(row.text(our_field), []).append(row.line)
        if len(seen) > 1:
            variants = "; ".join(f"{show(v)} on line(s) {', '.join(map(str, lines))}" for v, lines in seen.items())
            found.append(problem(entity, key, f"{rows[0].name(our_field)} differs between the rows: {variants}"))
    return found


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    # Blank cells fall back to the model's defaults; required ones then fail by name.
    return {k: v for k, v in fields.items() if v is not None}


# -- credit notes --------------------------------------------------------------------

_CREDIT_HEADER_FIELDS = (
    "credit_code", "sorder_id", "sorder_code", "associated_ref", "issued", "currency", "reason",
    "delivery_refund", "total",
)


def credit_note_problems(note: CreditNote) -> list[RecordError]:
    """Business rules on a credit note; the record stays usable."""
    found: list[RecordError] = []
    entity, key = note.ENTITY, note.key
    if note.sorder_id is None:
        found.append(problem(entity, key, "sorder_id: missing: the refund cannot be tied to its sales order"))
    if not note.currency:
        found.append(problem(entity, key, "currency: missing"))
    elif not is_currency(note.currency):
        found.append(problem(entity, key, f"currency: unknown currency {show(note.currency)} (not ISO 4217)"))
    for line in note.lines:
        if line.qty < 0:
            found.append(problem(entity, key, f"lines[sorder_item_id={line.sorder_item_id}].qty: negative: {line.qty}"))
    lines_total = sum((line.value for line in note.lines), Decimal(0))
    expected = lines_total + note.delivery_refund
    if expected != note.total:
        found.append(problem(
            entity, key,
            f"total: {note.total} but lines' values {lines_total} + delivery_refund {note.delivery_refund} "
            f"= {expected} (off by {note.total - expected})",
            kind="total_mismatch",
        ))
    return found


def _credit_note(table: _Table, key: str, rows: _Rows, columns: ColumnMap) -> Parsed:
    entity = CreditNote.ENTITY
    raw = table.raw(rows)
    errors = _shape_errors(table, rows)
    wanted = columns.credit_note.wanted()
    readers = [_Row(table, line, cells, wanted, columns.datetime_format, errors) for line, cells in rows]
    extra = _consistency(entity, key, readers, (f for f in _CREDIT_HEADER_FIELDS if f in table.index))
    first = readers[0]
    lines = []
    for row in readers:
        if row.text("sorder_item_id"):
            lines.append({"sorder_item_id": row.int("sorder_item_id"), "stock_code": row.text("stock_code"),
                          "qty": row.decimal("qty"), "value": row.decimal("value")})
            continue
        # A delivery-only refund row: its money is in DELIVERY_REFUND/TOTAL, not in a line.
        for our_field in ("qty", "value"):
            amount = row.decimal(our_field)
            if amount:
                extra.append(problem(entity, key, f"{row.where(our_field)}: {amount} on a row without "
                                                  f"sorder_item_id (a delivery refund row); ignored"))
    fields = {
        "credit_id": int(key),
        "credit_code": first.text("credit_code"),
        "sorder_id": first.int("sorder_id"),
        "sorder_code": first.text("sorder_code"),
        "associated_ref": first.text("associated_ref"),
        "issued": first.datetime("issued"),
        "currency": first.text("currency"),
        "reason": first.text("reason"),
        "delivery_refund": first.decimal("delivery_refund"),
        "total": first.decimal("total"),
        "lines": [{k: v for k, v in line.items() if v is not None} for line in lines],
    }
    seen_items: set[int] = set()
    for line in lines:
        item = line["sorder_item_id"]
        if isinstance(item, int) and item in seen_items:
            # Two rows for one order line may be a double-counted refund: say so, keep both.
            extra.append(problem(entity, key, f"sorder_item_id {item}: refunded on two rows of one credit note"))
        if isinstance(item, int):
            seen_items.add(item)
    return build_record(CreditNote, key, raw, _without_none(fields), errors, credit_note_problems, extra)


def read_credit_notes(path: Path, columns: ColumnMap | None = None) -> Iterator[Parsed]:
    """A credit-note report (CSV/TSV, one row per line) -> one ``Parsed`` per credit note.

    Rows are grouped by the credit id. A row with an empty order-line id is a delivery-only
    refund row: it makes no ``CreditNoteLine``; its DELIVERY_REFUND/TOTAL are the note's.
    File-level failures (unreadable, invalid UTF-8, missing columns) raise ``DocumentError``
    here, before any record.
    """
    columns = columns or ColumnMap()
    path = Path(path)
    table = _read_table(path, columns, columns.credit_note, _CREDIT_NOTE_REQUIRED)
    return _credit_notes(table, columns)


def _bad_rows(table: _Table, entity: str) -> Iterator[Parsed]:
    """Each row that is not delimited text, kept as the bytes it was (with the header)."""
    header = table.delimiter.join(table.header)
    for line, text, why in table.bad:
        raw = (header + "\n" + text + "\n").encode("utf-8")
        yield Parsed(entity, None, raw, None, [problem(entity, None, f"{table.path.name} line {line}: {why}")])


def _credit_notes(table: _Table, columns: ColumnMap) -> Iterator[Parsed]:
    yield from _bad_rows(table, CreditNote.ENTITY)
    for key, rows, errors in _groups(table, "credit_id", columns.credit_note.credit_id):
        if key is None:
            yield Parsed(CreditNote.ENTITY, None, table.raw(rows), None,
                         [problem(CreditNote.ENTITY, None, e) for e in errors])
            continue
        yield _credit_note(table, key, rows, columns)


# -- customers (a contact report) ----------------------------------------------------

_COMPANY_HEADER_FIELDS = (
    "company_code", "company_name", "company_class", "company_status", "web_user", "mailing_status",
    "currency", "date_created", "last_updated",
)
_CONTACT_FIELDS = (
    "title", "forename", "surname", "email", "mobile", "dob", "email_subscribe", "mailing_flag", "contact_inactive",
)


def _contact(row: _Row) -> dict[str, Any]:
    return {
        "contact_id": row.int("contact_id"), "title": row.text("title"), "forename": row.text("forename"),
        "surname": row.text("surname"), "email": row.text("email"), "mobile": row.text("mobile"),
        "dob": row.date("dob"), "email_subscribe": row.bool("email_subscribe"),
        "mailing_flag": row.bool("mailing_flag"), "inactive": row.bool("contact_inactive"),
    }


def _customer(table: _Table, key: str, rows: _Rows, columns: ColumnMap) -> Parsed:
    entity = Company.ENTITY
    raw = table.raw(rows)
    errors = _shape_errors(table, rows)
    wanted = columns.customer.wanted()
    readers = [_Row(table, line, cells, wanted, columns.datetime_format, errors) for line, cells in rows]
    header_fields = [f for f in _COMPANY_HEADER_FIELDS if f in table.index]
    header_fields += [f for f in table.index if f.startswith("additional:")]
    extra = _consistency(entity, key, readers, header_fields)
    contacts: dict[int, tuple[_Row, dict[str, Any]]] = {}
    for row in readers:
        if not row.text("contact_id"):
            continue  # a customer row with no contact (the report's outer join): no contact to add
        contact = _contact(row)
        contact_id = contact["contact_id"]
        if contact_id is None or contact_id is INVALID:
            continue  # not a number: already in errors
        if contact_id in contacts:
            # The same contact twice (a report joined with addresses repeats it): fine if
            # identical; otherwise we cannot tell which row is right.
            if contacts[contact_id][1] != contact:
                extra.append(problem(entity, key, f"contact_id {contact_id}: on lines {contacts[contact_id][0].line} "
                                                  f"and {row.line} with different values; the first is kept"))
            continue
        contacts[contact_id] = (row, contact)
    first = readers[0]
    fields = {
        "company_id": int(key),
        "company_code": first.text("company_code"),
        "name": first.text("company_name"),
        "company_class": first.text("company_class"),
        "status": first.text("company_status"),
        "web_user": first.text("web_user"),
        "mailing_status": first.int("mailing_status"),
        "currency": first.text("currency"),
        "date_created": first.datetime("date_created"),
        "last_updated": first.datetime("last_updated"),
        "additional": {f.split(":", 1)[1]: first.text(f) for f in table.index if f.startswith("additional:")},
        "contacts": [{k: v for k, v in c.items() if v is not None} for _, c in contacts.values()],
    }
    return build_record(Company, key, raw, _without_none(fields), errors, company_problems, extra)


def read_customers(path: Path, columns: ColumnMap | None = None) -> Iterator[Parsed]:
    """A customer report (CSV/TSV, one row per contact) -> one ``Parsed`` per company.

    Rows are grouped by the company id; company fields must agree across a company's rows.
    The same rules as ExportCompany apply (contacts, email syntax, currency). Addresses are
    not read from reports.
    """
    columns = columns or ColumnMap()
    path = Path(path)
    table = _read_table(path, columns, columns.customer, _CUSTOMER_REQUIRED)
    return _customers(table, columns)


def _customers(table: _Table, columns: ColumnMap) -> Iterator[Parsed]:
    yield from _bad_rows(table, Company.ENTITY)
    for key, rows, errors in _groups(table, "company_id", columns.customer.company_id):
        if key is None:
            problems = [problem(Company.ENTITY, None, e) for e in errors]
            yield Parsed(Company.ENTITY, None, table.raw(rows), None, problems)
            continue
        yield _customer(table, key, rows, columns)


# -- a folder of exports -------------------------------------------------------------


XmlReader = Callable[[str, bytes], Iterable[Parsed]]
"""Reads one XML export: ``(entity, document bytes) -> Parsed records``."""

_STRICT_PARSERS: dict[str, Callable[[bytes], Iterator[Parsed]]] = {
    "company": parse_companies,
    "stock_item": parse_stock_items,
    "sales_order": parse_sales_orders,
    "order_status": parse_order_statuses,
    "stock_status": parse_stock_statuses,
}


def strict_xml(entity: str, document: bytes) -> Iterator[Parsed]:
    """The default ``XmlReader``: the parse module's all-or-nothing parser for the entity."""
    return _STRICT_PARSERS[entity](document)


def _from_file(path: Path, entity: str, read_xml: XmlReader) -> Iterator[Parsed]:
    """Read one XML export, naming the file in any ``DocumentError``."""
    try:
        records = read_xml(entity, path.read_bytes())
    except OSError as exc:
        raise DocumentError(f"cannot read: {exc}", source=str(path)) from None
    except DocumentError as exc:
        raise DocumentError(exc.reason, source=str(path)) from None
    yield from records


class ExportFolder:
    """A folder of Khaos Control exports, read as ``Parsed`` records.

    By default each XML file is checked as a whole before any of its records is yielded (a
    broken file raises ``DocumentError`` naming it). A caller that salvages the good
    records of a broken document (as ``pull`` does for SOAP answers) passes its own
    ``read_xml``, so the audit path and the web-service path treat broken exports alike.
    Duplicate keys are detected within a file, not across files: two exports of the same
    company at different times are both yielded, in file-name order, and ``pull``'s
    content hash tells whether they differ.
    """

    def __init__(self, folder: Path, columns: ColumnMap | None = None, read_xml: XmlReader | None = None,
                 keep_broken_files: bool = False):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ConfigError(f"export folder {self.folder}: not a folder")
        self.columns = columns or ColumnMap()
        self.read_xml = read_xml or strict_xml
        # False: a file that cannot be read raises DocumentError naming it. True (pull): it is
        # yielded as one keyless record holding the file's bytes and the reason, and every
        # other file is still read: one broken export never hides the next.
        self.keep_broken_files = keep_broken_files
        # pull: a file whose bytes it has staged already, unchanged, is not read (or hashed) again.
        self.unchanged: Callable[[Path], bool] | None = None

    def _each(self, entity: str, paths: list[Path], read: Callable[[Path], Iterable[Parsed]], *,
              skippable: bool = False) -> Iterator[Parsed]:
        """Each file's records. ``skippable`` files (read on their own, merged with no other) are
        passed over when ``self.unchanged(path)`` says the caller holds them exactly as they are."""
        for path in paths:
            if skippable and self.unchanged is not None and self.unchanged(path):
                continue
            try:
                yield from read(path)
            except DocumentError as exc:
                if not self.keep_broken_files:
                    raise
                try:
                    raw = path.read_bytes()
                except OSError:
                    raw = str(exc).encode("utf-8")
                yield Parsed(entity, None, raw, None, [problem(entity, None, f"unreadable export file: {exc}")])

    def files(self, *patterns: str) -> list[Path]:
        """Files matching any of the patterns, ignoring case (Windows exports), in name order."""
        found = [
            p for p in self.folder.iterdir()
            if p.is_file() and any(fnmatch.fnmatch(p.name.lower(), pattern) for pattern in patterns)
        ]
        return sorted(found, key=lambda p: (p.name.lower(), p.name))

    def companies(self) -> Iterator[Parsed]:
        """``companies*.xml`` (``<COMPANYS>``), then ``customers*.csv|tsv`` reports, through the column map."""
        yield from self._each("company", self.files("companies*.xml"),
                              lambda path: _from_file(path, "company", self.read_xml), skippable=True)
        yield from self._each("company", self.files("customers*.csv", "customers*.tsv"),
                              lambda path: read_customers(path, self.columns), skippable=True)

    def stock_items(self) -> Iterator[Parsed]:
        """``stock*.xml`` (``<STOCK_ITEMS>``) with ``stock_status*.xml`` (``<STOCK_STATUS>``)
        attached by stock code; a stock status export is never read as stock."""
        statuses: dict[str, Parsed] = {}
        for parsed in self._each("stock_item", self.files("stock_status*.xml"),
                                 lambda path: _from_file(path, "stock_status", self.read_xml)):
            if parsed.record is None or parsed.key is None:
                yield parsed  # its problems say why; there is nothing to attach
            else:
                statuses[parsed.key] = parsed
        stock_files = [p for p in self.files("stock*.xml") if not p.name.lower().startswith("stock_status")]
        for parsed in self._each("stock_item", stock_files, lambda path: _from_file(path, "stock_item", self.read_xml)):
            status = statuses.get(parsed.record.stock_code) if isinstance(parsed.record, StockItem) else None
            if status is None:
                yield parsed
            else:
                yield Parsed(parsed.entity, parsed.key, attach.stock_raw(parsed.raw, status.raw),
                             attach.with_stock_status(parsed.record, status.record),
                             [*parsed.problems, *status.problems])

    def order_statuses(self) -> Iterator[Parsed]:
        """``order_status*.xml`` (``<STATUS_LIST>``), unmerged."""
        yield from self._each("order_status", self.files("order_status*.xml"),
                              lambda path: _from_file(path, "order_status", self.read_xml))

    def sales_orders(self) -> Iterator[Parsed]:
        """``sales_orders*.xml`` with ``order_status*.xml`` attached by ``SORDER_CODE``.

        A merged order gets the status's state, invoices and cancellation, its problems, and a
        raw of the order's element, a marker and the status's element. When several status
        files hold one order, the last file by name wins. Nothing is dropped: a status that
        cannot be merged (unusable, or no usable order in the folder) is yielded after the
        orders as an ``order_status`` record, with kind ``unmatched_order_status`` when its
        order is missing; an order whose status cannot be read is yielded as it is, never
        with an empty state in place of one.
        """
        statuses: dict[str, Parsed] = {}
        for parsed in self.order_statuses():
            if parsed.record is None or parsed.key is None:
                yield parsed  # its problems say why; there is nothing to merge
            elif parsed.duplicate != "identical":  # an identical copy says nothing new
                statuses[parsed.key] = parsed
        for parsed in self._each("sales_order", self.files("sales_orders*.xml"),
                                 lambda path: _from_file(path, "sales_order", self.read_xml)):
            code = parsed.record.sorder_code if isinstance(parsed.record, SalesOrder) else None
            status = statuses.pop(code, None) if code else None
            if status is None:
                yield parsed
            else:
                yield _merge(parsed, status)
        for key, status in statuses.items():
            missing = problem(OrderStatus.ENTITY, key, f"sorder_code {key}: no usable sales order in {self.folder}",
                              kind="unmatched_order_status")
            yield Parsed(status.entity, key, status.raw, status.record, [*status.problems, missing])

    def credit_notes(self) -> Iterator[Parsed]:
        """``credit_notes*.csv|tsv`` reports, through the column map."""
        yield from self._each("credit_note", self.files("credit_notes*.csv", "credit_notes*.tsv"),
                              lambda path: read_credit_notes(path, self.columns), skippable=True)


def _merge(order: Parsed, status: Parsed) -> Parsed:
    assert isinstance(order.record, SalesOrder) and isinstance(status.record, OrderStatus)
    record = attach.with_order_status(order.record, status.record)
    problems = [*order.problems, *(problem(SalesOrder.ENTITY, order.key, f"order status: {e.reason}", e.kind)
                                   for e in status.problems)]
    return Parsed(order.entity, order.key, attach.order_raw(order.raw, status.raw), record, problems)


__all__ = [
    "ColumnMap", "CreditNoteColumns", "CustomerColumns", "ExportFolder", "XmlReader", "credit_note_problems",
    "load_column_map", "read_credit_notes", "read_customers", "strict_xml",
]
