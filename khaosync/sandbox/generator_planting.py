"""Where planted faults go: distinct record positions, how many per kind, the id counters.

Shared by ``generate`` and ``advance``.
"""

from __future__ import annotations

from random import Random

from khaosync.sandbox.generator_catalogue import FIRST_STOCK_ID
from khaosync.sandbox.generator_orders import FIRST_CREDIT_ID, FIRST_INVOICE_ID, FIRST_ITEM_ID, FIRST_SORDER_ID
from khaosync.sandbox.generator_people import FIRST_ADDRESS_ID, FIRST_COMPANY_ID, FIRST_CONTACT_ID

CHUNK = 5000  # orders held in memory before they are written
EXISTING_CUSTOMER_SHARE = 0.55  # customers who already had an account when the range starts


def empty_planted() -> dict:
    return {
        "shared_email": [], "renamed_stock_code": [], "ometria_unsubscribed": [], "ometria_duplicate_order": [],
        "ometria_storefront_order": [], "bad_email": [], "unknown_currency": [], "negative_quantity": [],
        "missing_field": [], "company_without_contacts": [], "broken_xml": [], "hostile_xml": [],
        "duplicate_in_response": {"company": [], "sales_order": []}, "total_mismatch": [], "unknown_product": [],
        "product_incomplete": [], "dst_ambiguous": [], "dst_gap_adjacent": [],
    }


def first_ids() -> dict[str, int]:
    return {"company": FIRST_COMPANY_ID, "address": FIRST_ADDRESS_ID, "contact": FIRST_CONTACT_ID,
            "stock_item": FIRST_STOCK_ID, "sales_order": FIRST_SORDER_ID, "sorder_item": FIRST_ITEM_ID,
            "invoice": FIRST_INVOICE_ID, "credit_note": FIRST_CREDIT_ID}


def scaled(total: int, share: float, minimum: int = 1) -> int:
    """How many records get a fault: a share of the world, never fewer than ``minimum``."""
    return max(minimum, round(total * share))


class IndexPicker:
    """Chooses distinct record positions for planted roles, so no record carries two of them."""

    def __init__(self, rng: Random, size: int, blocked: list[range] | None = None):
        self.rng = rng
        self.size = size
        self.blocked = blocked or []
        self.used: set[int] = set()  # membership tests only; never iterated

    def _free(self, index: int) -> bool:
        return index not in self.used and not any(index in block for block in self.blocked)

    def pick(self, low: int, high: int) -> int:
        low, high = max(0, low), min(high, self.size)
        if low < high:
            for _ in range(64):
                index = self.rng.randrange(low, high)
                if self._free(index):
                    self.used.add(index)
                    return index
            for index in range(low, high):
                if self._free(index):
                    self.used.add(index)
                    return index
        raise ValueError("the world is too small to plant every fault on its own record; "
                         "use more customers or orders")
