"""``order_wire_ok``: map's one check of its own order dicts, without building the model.

True must mean the model would take the dict and give it back unchanged, to the byte; False
only sends the dict to the model, which accepts it or says why.
"""

import copy
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from khaosync.ometria import wire
from khaosync.ometria.models import CheckedOrder, Order, order_wire_ok

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from json_paths import parent, paths  # noqa: E402

D = Decimal


def base() -> dict:
    return {
        "@type": "order", "id": "2042", "timestamp": "2026-03-29T00:30:00Z", "currency": "GBP",
        "grand_total": D("59.98"), "subtotal": D("45.82"), "discount": D("0.00"), "shipping": D("4.16"), "tax": D("10.00"),
        "status": "complete", "is_valid": True, "store": "web", "channel": "online", "web_id": "WEB-2042",
        "shipping_method": "DPD",
        "customer": {"id": "11", "email": "ada@example.co.uk", "firstname": "Ada", "lastname": "Lovelace"},
        "properties": {"sorder_code": "SO02042", "tracking": [{"invoice": "INV9", "courier": "DPD"}],
                       "delivery_refund_in_lines": D("4.99")},
        "lineitems": [
            {"product_id": "300", "variant_id": "315", "sku": "TEE-NVY-M", "quantity": D("2"), "unit_price": D("22.91"),
             "subtotal": D("45.82"), "discount": D("0.00"), "tax": D("9.17"), "total": D("54.99"),
             "quantity_refunded": D("1"), "refunded": D("27.50"),
             "variant_options": [{"id": "navy", "type": "colour", "label": "Navy"}, {"id": "m", "type": "size"}],
             "properties": {"stock_code_ordered": "TEE-NAVY-M"}},
        ],
    }


def test_a_valid_order_passes_and_is_what_the_model_gives_back():
    order = base()
    assert order_wire_ok(order)
    model = Order.model_validate(order)
    assert model.to_wire() == order and wire.dumps(model.to_wire()) == wire.dumps_valid(order)
    checked = CheckedOrder(order)
    assert checked.to_wire() is order and checked.grand_total == D("59.98") and checked == model


@pytest.mark.parametrize("path, value", [
    (("customer", "email"), "ada@@example.com"),      # Ometria refuses the whole record
    (("id",), "ada@example.com"),                      # an id must never be an email
    (("id",), " "),
    (("currency",), "XXX"),
    (("grand_total",), 59.98),                         # a float
    (("grand_total",), D("59.985")),                   # finer than a penny
    (("grand_total",), D("NaN")),
    (("timestamp",), "2026-03-29T00:30:00"),           # no zone
    (("lineitems", 0, "quantity"), D("-1")),
    (("lineitems", 0, "refunded"), D("0.001")),
    (("lineitems", 0, "variant_id"), "a@b"),
    (("lineitems", 0, "surprise"), 1),                 # an unknown field
    (("properties", "weight"), 1.5),                   # a float inside properties
    (("lineitems", 0, "variant_options", 0, "extra"), "x"),
])
def test_what_the_model_refuses_is_not_passed(path, value):
    order = base()
    node = order
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    assert not order_wire_ok(order)
    with pytest.raises(ValidationError):
        Order.model_validate(order)


def test_what_it_is_unsure_of_it_leaves_to_the_model():
    # Valid for the model, but not in the exact form map builds: declined, not refused.
    for change in ({"grand_total": 5998}, {"timestamp": "2026-03-29T01:30:00+01:00"}, {"billing_address": {"city": "Leeds"}}):
        order = {**base(), **change}
        if "grand_total" in change:
            order["grand_total"] = 59
        assert not order_wire_ok(order)
        Order.model_validate(order)


_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=6),
    st.decimals(allow_nan=True, allow_infinity=True, places=None), st.decimals(places=2, allow_nan=False,
                                                                               allow_infinity=False),
    st.sampled_from(["a@b.co", "x@y", "", "GBP", "JPY", "KWD", "2026-03-29T00:30:00Z", "2026-03-29T00:30:00.123456Z"]),
    st.lists(st.none(), max_size=1), st.just({}),
)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_whatever_it_passes_the_model_gives_back_byte_for_byte(data):
    order = copy.deepcopy(base())
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(list(paths(order))))
        node = parent(order, path)
        if data.draw(st.booleans()) and isinstance(node, dict):
            del node[path[-1]]  # a field left out
        else:
            node[path[-1]] = data.draw(_ANY)
    if order_wire_ok(order):
        model = Order.model_validate(order)  # must not raise
        assert model.to_wire() == order
        assert wire.dumps(model.to_wire()) == wire.dumps_valid(order)
