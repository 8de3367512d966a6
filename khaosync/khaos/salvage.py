"""Getting the good records out of a document that does not parse as a whole.

One broken or hostile record must not cost the other 199 in its batch, and re-asking KC is
not always possible (orders come by date window, not by id). So when a document fails, we
cut it at each opening tag of the record element (``<COMPANY>``, ``<SALES_ORDER>``, ...),
which never nests, and parse every piece on its own. A record with an unclosed tag spoils
only its own piece; the next record starts at the next opening tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# How each record names its key, by (record element, root element): an element holding the
# stable numeric id, or (the status documents) an attribute holding a code.
_KEYS: dict[tuple[str, str], bytes] = {
    ("COMPANY", "COMPANYS"): rb"<COMPANY_ID>\s*(\d+)\s*</",
    ("STOCK_ITEM", "STOCK_ITEMS"): rb"<STOCK_ID>\s*(\d+)\s*</",
    ("SALES_ORDER", "SALES_ORDERS"): rb"<SORDER_ID>\s*(\d+)\s*</",
    ("ORDER_STATUS", "STATUS_LIST"): rb"^<ORDER_STATUS\b[^>]*?\sSORDER_CODE\s*=\s*[\"']([^\"'<>&]+)[\"']",
    ("STOCK_ITEM", "STOCK_STATUS"): rb"^<STOCK_ITEM\b[^>]*?\sCODE\s*=\s*[\"']([^\"'<>&]+)[\"']",
}


@dataclass(frozen=True)
class Piece:
    raw: bytes          # the record's bytes as KC sent them, from its opening tag
    key: str | None     # the stable id if it can be read from the text, else None
    start: int = 0      # where it begins in the document (what comes before the first is the prolog)


def cut(document: bytes, record_tag: str, root_tag: str) -> list[Piece]:
    """Split ``document`` into one piece per ``<record_tag>`` occurrence."""
    opening = re.compile(rb"<" + record_tag.encode() + rb"(?=[\s>/])")
    root_close = b"</" + root_tag.encode() + b">"
    key_re = re.compile(_KEYS[(record_tag, root_tag)])
    starts = [m.start() for m in opening.finditer(document)]
    pieces = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(document)
        raw = document[start:end].rstrip()
        if i + 1 == len(starts) and raw.endswith(root_close):
            raw = raw[: -len(root_close)].rstrip()  # the root's closing tag is not part of the record
        match = key_re.search(raw)
        pieces.append(Piece(raw=raw, key=match.group(1).decode("utf-8", "replace").strip() if match else None,
                            start=start))
    return pieces


def wrap(piece: bytes, root_tag: str) -> bytes:
    """A one-record document the ordinary parser can read."""
    return b"<" + root_tag.encode() + b">" + piece + b"</" + root_tag.encode() + b">"
