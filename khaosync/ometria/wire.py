"""The exact bytes khaosync sends to Ometria, and their hash.

Money is computed as ``Decimal`` and must reach Ometria as a JSON number without ever
passing through a float: ``Decimal("19.99")`` is written ``19.99``, never ``19.990000000000002``.
The encoding is canonical (sorted keys, no spaces, UTF-8), so the same record always gives
the same bytes and the same content hash: that is what makes diff, plans and the ledger
comparable byte for byte.

The bytes are made by orjson (C): keys sorted (``OPT_SORT_KEYS``, code-point order, as
Python's ``sorted``), each Decimal handed over as a ready JSON number (``orjson.Fragment``).
``reference_dumps`` is the plain-Python definition of the same bytes; it is what the fast path
is tested against, and it still encodes what orjson will not (an integer beyond 64 bits, a
non-string key) or raises the error that says why a value cannot be sent.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import orjson

RECORD_LIMIT = 60 * 1024  # bytes of one record's JSON; Ometria refuses larger ("Record is too large.")
BATCH_LIMIT = 100         # records per push request
RECORD_TYPES = ("product", "contact", "order", "custom_event")  # push order: products before orders


class RecordTooLarge(ValueError):
    def __init__(self, type_: str, id_: str, size: int):
        self.type, self.id, self.size = type_, id_, size
        super().__init__(f"{type_} {id_}: {size} bytes, over Ometria's {RECORD_LIMIT}-byte record limit")


def _number(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    text = format(value, "f")
    # A negative zero (-0.00, -0.000 for three-decimal currencies) is written as zero.
    return text.lstrip("-") if value == 0 else text


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=False) + ":" + _encode(v) for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, float):
        raise TypeError("floats are not allowed in an Ometria record: use Decimal")
    return json.dumps(value, ensure_ascii=False)


def reference_dumps(record: dict) -> bytes:
    """The definition of the canonical bytes, in plain Python (slow; ``dumps`` gives the same)."""
    return _encode(record).encode("utf-8")


def _fragment(value: Any, _Fragment=orjson.Fragment, _Decimal=Decimal) -> orjson.Fragment:
    # ``_number`` inlined: this runs once per amount of every record mapped.
    if type(value) is _Decimal:
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {value}")
        return _Fragment(format(value, "f").lstrip("-") if not value else format(value, "f"))
    raise TypeError(f"not a JSON value: {type(value).__name__}")


_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# The only types orjson may meet on the fast path: anything else (a float, a date, an enum, a
# subclass) goes to ``reference_dumps``, which encodes or refuses it exactly as it always has.
_SCALARS = frozenset({str, int, bool, type(None), Decimal})
_CONTAINERS = frozenset({dict, list, tuple})


def _plain(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            if not all(type(k) is str for k in node):
                return False
            children = node.values()
        else:
            children = node
        for child in children:
            kind = type(child)
            if kind in _CONTAINERS:
                stack.append(child)
            elif kind not in _SCALARS:
                return False
    return True


def dumps_valid(record: dict) -> bytes:
    """``dumps`` for the dict of a record our own model has validated (``to_wire()``).

    The model already refused floats and anything that is not a JSON value (``Money``,
    ``Properties``), so the value check is not repeated here: validated once, not twice.
    """
    try:
        return orjson.dumps(record, default=_fragment, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return reference_dumps(record)  # a 65-bit integer, a lone surrogate, a NaN: say it exactly


def dumps(record: dict) -> bytes:
    """Canonical JSON bytes of one record (a dict with Decimals, strings, bools, lists)."""
    if type(record) is not dict or not _plain(record):
        return reference_dumps(record)
    return dumps_valid(record)


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
