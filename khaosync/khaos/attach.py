"""Status documents attached to the records they describe.

Khaos Control answers "what is this order's despatch state" (ExportOrderStatusEx) and "how
much of this item can be sold" (ExportStockStatus) apart from the records themselves, and
keyed differently: an order status names its order by ``SORDER_CODE``, a stock status its
item by ``CODE``. khaosync stages one record per order and per stock item, so a status is
attached to the record it belongs to; the staged raw is the record's own element, then
``STATUS_MARK``, then the status element, so both stay exactly as KC sent them and the
record's own part can be taken back out when only the status changes.
"""

from __future__ import annotations

from khaosync.khaos.models import OrderStatus, SalesOrder, StockItem, StockStatus

ORDER_STATUS_MARK = b"\n<!-- ExportOrderStatusEx -->\n"
STOCK_STATUS_MARK = b"\n<!-- ExportStockStatus -->\n"


def own_raw(raw: bytes) -> bytes:
    """A staged raw without the status attached to it."""
    for mark in (ORDER_STATUS_MARK, STOCK_STATUS_MARK):
        if mark in raw:
            return raw.split(mark, 1)[0]
    return raw


def status_raw(raw: bytes) -> bytes | None:
    for mark in (ORDER_STATUS_MARK, STOCK_STATUS_MARK):
        if mark in raw:
            return raw.split(mark, 1)[1]
    return None


def with_order_status(order: SalesOrder, status: OrderStatus) -> SalesOrder:
    """The order with the status's state, invoices and cancellation. A cancellation is never
    undone by a later answer that lacks it: KC does not un-cancel an order."""
    return order.model_copy(update={
        "status": status.status,
        "complete": status.complete,
        "cancellation": status.cancellation or order.cancellation,
        "cancelled": order.cancelled or status.cancellation is not None,
        "invoices": status.invoices,
    })


def with_stock_status(item: StockItem, status: StockStatus) -> StockItem:
    return item.model_copy(update={"stock_level": status.level, "stock_status": status.status})


def order_raw(order_raw_bytes: bytes, status_raw_bytes: bytes) -> bytes:
    return own_raw(order_raw_bytes) + ORDER_STATUS_MARK + status_raw_bytes


def stock_raw(item_raw_bytes: bytes, status_raw_bytes: bytes) -> bytes:
    return own_raw(item_raw_bytes) + STOCK_STATUS_MARK + status_raw_bytes


__all__ = [
    "ORDER_STATUS_MARK", "STOCK_STATUS_MARK", "order_raw", "own_raw", "status_raw", "stock_raw", "with_order_status",
    "with_stock_status",
]
