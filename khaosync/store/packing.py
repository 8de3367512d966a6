"""Outbound bodies and lineage kept small: zstd frames primed with a fixed dictionary.

An outbound body is canonical JSON of about a kilobyte, half of it key names that every body
of its type repeats. Deflated alone it halves; primed with a dictionary of those key names and
the shape they come in (no values: no data of any merchant) it shrinks to about a third, and
zstd does it in a few microseconds a record (zlib takes several times as long).

``outbound_entry`` holds the packed bytes with their ``encoding``; ``outbound_record`` is a
view that unpacks them (``khaosync_unpack``, registered on every connection ``open_store``
makes), so every reader, SQL ``json_extract`` included, sees the bytes push sends.

The dictionary is part of the stored format: a row packed with it reads back only with the
same bytes. Never edit ``DICTIONARY``; a better one is a new encoding next to this one
(``tests/store/test_packing.py`` pins its digest).
"""

from __future__ import annotations

import sqlite3

import zstandard

ENCODING = "zstd-d1"

# Key names and shapes of Ometria's records as khaosync sends them (ometria/models.py) and of
# lineage (mapping/outcome.py), values blanked. zstd finds the nearest match cheapest: the
# most common record, the order, comes last.
DICTIONARY = b"".join((
    b'[{"entity":"company","key":"","version":1},{"entity":"stock_item","key":"","version":1},'
    b'{"entity":"credit_note","key":"","version":1},{"entity":"sales_order","key":"","version":1}]',
    b'{"@type":"product","attributes":[{"id":"","label":"","type":""}],"currency":"","id":"","image_url":"",'
    b'"is_active":true,"is_in_stock":true,"is_variant":false,"listings":[{"currency":"","image_url":"",'
    b'"is_active":true,"price":0,"special_price":0,"store":"","title":"","url":""}],"price":0,"properties":{},'
    b'"sku":"","special_price":0,"special_price_dt_from":"","special_price_dt_to":"","title":"","url":""}',
    b'{"@collection":"","@type":"contact","country_id":"","customer_id":"","date_of_birth":"","email":"",'
    b'"firstname":"","gender":"","id":"","lastname":"","marketing_optin":"EXPLICITLY_OPTEDIN","middlename":"",'
    b'"phone_number":"","prefix":"","properties":{"acquisition_source":"","loyalty_tier":""},"store_ids":[""],'
    b'"timestamp_acquired":"","timestamp_subscribed":"","timestamp_unsubscribed":"","timezone":""}',
    b'{"@type":"order","billing_address":{"city":"","country_code":"","postcode":"","state":""},"channel":"",'
    b'"coupon_code":"","currency":"","customer":{"email":"","firstname":"","id":"","lastname":""},"discount":0,'
    b'"grand_total":0,"id":"","is_valid":true,"lineitems":[{"discount":0,"is_on_sale":false,"product_id":"",'
    b'"properties":{},"quantity":0,"quantity_refunded":0,"refunded":0,"sku":"","subtotal":0,"tax":0,"total":0,'
    b'"unit_price":0,"variant_id":"","variant_options":[{"id":"","label":"","type":""}]}],"payment_method":"",'
    b'"properties":{"credit_notes":[""],"delivery_refund_in_lines":0,"sorder_code":"","tracking":[{'
    b'"consignment_ref":"","courier":"","despatched_at":"","invoice":"","tracking_number":""}]},'
    b'"shipping":0,"shipping_address":{"city":"","country_code":"","postcode":"","state":""},'
    b'"shipping_method":"","status":"","store":"","subtotal":0,"tax":0,"timestamp":"","web_id":""}',
))

_DICT = zstandard.ZstdCompressionDict(DICTIONARY, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
# No checksum and no dictionary id in the frame (the encoding names the dictionary); the
# content size is kept, so a frame says how large it unpacks.
_PACK = zstandard.ZstdCompressor(level=3, dict_data=_DICT, write_checksum=False, write_dict_id=False)
_UNPACK = zstandard.ZstdDecompressor(dict_data=_DICT)


def pack(data: bytes | str) -> bytes:
    """The stored form (``ENCODING``) of a body or a lineage."""
    return _PACK.compress(data.encode() if isinstance(data, str) else bytes(data))


def unpack(stored: bytes | None, encoding: str | None) -> bytes | None:
    """Exactly the bytes that were packed, from a row's stored bytes and ``encoding``."""
    if stored is None:
        return None
    if encoding is None:
        return stored
    if encoding == ENCODING:
        return _UNPACK.decompress(stored)
    raise ValueError(f"outbound record kept as {encoding!r}: this khaosync cannot read it")


def unpack_text(stored: bytes | None, encoding: str | None) -> str | None:
    """A packed text (lineage's JSON) as text."""
    data = unpack(stored, encoding)
    return data.decode() if isinstance(data, bytes) else data


def _pack_sql(data: bytes | str | None) -> bytes | None:
    return None if data is None else pack(data)


def register(conn: sqlite3.Connection) -> None:
    """The SQL functions the ``outbound_record`` view, its triggers and the migration call."""
    conn.create_function("khaosync_pack", 1, _pack_sql, deterministic=True)
    conn.create_function("khaosync_unpack", 2, unpack, deterministic=True)
    conn.create_function("khaosync_unpack_text", 2, unpack_text, deterministic=True)
