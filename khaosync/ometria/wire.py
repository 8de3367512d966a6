"""The exact bytes khaosync sends to Ometria, and their hash.

Money is computed as ``Decimal`` and must reach Ometria as a JSON number without ever
passing through a float: ``Decimal("19.99")`` is written ``19.99``, never ``19.990000000000002``.
The encoding is canonical (sorted keys, no spaces, UTF-8), so the same record always gives
the same bytes and the same content hash: that is what makes diff, plans and the ledger
comparable byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

RECORD_LIMIT = 60 * 1024  # bytes of one record's JSON; Ometria refuses larger ("Record is too large.")
BATCH_LIMIT = 100         # records per push request
RECORD_TYPES = ("product", "contact", "order", "custom_event")  # push order: products before orders


class RecordTooLarge(ValueError):
    def __init__(self, type_: str, id_: str, size: int):
        self.type, self.id, self.size = type_, id_, size
        super().__init__(f"{type_} {id_}: {size} bytes, over Ometria's {RECORD_LIMIT}-byte record limit")


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {value}")
        text = format(value, "f")
        # A negative zero (-0.00, -0.000 for three-decimal currencies) is written as zero.
        return text.lstrip("-") if value == 0 else text
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=False) + ":" + _encode(v) for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, float):
        raise TypeError("floats are not allowed in an Ometria record: use Decimal")
    return json.dumps(value, ensure_ascii=False)


def dumps(record: dict) -> bytes:
    """Canonical JSON bytes of one record (a dict with Decimals, strings, bools, lists)."""
    return _encode(record).encode("utf-8")


def loads(body: bytes) -> dict:
    """Read a body back with exact decimals (for diff and reconcile)."""
    return json.loads(body, parse_float=Decimal)


def content_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def check_size(type_: str, id_: str, body: bytes) -> None:
    if len(body) > RECORD_LIMIT:
        raise RecordTooLarge(type_, id_, len(body))


def batch_body(bodies: list[bytes]) -> bytes:
    """One push request's body: a JSON array of already-encoded records."""
    return b"[" + b",".join(bodies) + b"]"
