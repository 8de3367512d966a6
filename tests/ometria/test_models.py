"""Ometria record models: strict shapes, exact money, the wire form and the 60 KB limit."""

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from khaosync.ometria import wire
from khaosync.ometria.models import (
    Contact, CustomEvent, MarketingOptin, Order, Product, is_ometria_email, minor_units, record_from_wire,
)
from khaosync.sandbox.ometria_validation import validate_record

WHEN = datetime(2026, 10, 1, 9, 12, tzinfo=UTC)


def order(**over) -> Order:
    data = dict(id="2038", timestamp=WHEN, currency="GBP", grand_total=Decimal("19.99"), subtotal=Decimal("16.66"),
                discount=Decimal("0.00"), tax=Decimal("3.33"), shipping=Decimal("0.00"), status="shipped",
                is_valid=True, customer={"id": "1015", "email": "ada@example.com"},
                lineitems=[{"product_id": "300", "variant_id": "315", "sku": "JNS001", "quantity": Decimal("1"),
                            "unit_price": Decimal("16.66"), "total": Decimal("19.99")}])
    data.update(over)
    return Order(**data)


def test_contact_wire_form_uses_aliases_and_leaves_out_nones():
    contact = Contact(collection="khaos", id="7086", customer_id="1075", email="a.b@example.com",
                      marketing_optin=MarketingOptin.OPTED_IN, date_of_birth=date(1972, 6, 4),
                      timestamp_acquired=datetime(2026, 9, 23, 10, 15, tzinfo=timezone(timedelta(hours=1))))
    assert contact.to_wire() == {
        "@type": "contact", "@collection": "khaos", "id": "7086", "customer_id": "1075", "email": "a.b@example.com",
        "marketing_optin": "EXPLICITLY_OPTEDIN", "date_of_birth": "1972-06-04",
        "timestamp_acquired": "2026-09-23T09:15:00Z",
    }
    body = contact.encode()
    assert validate_record(json.loads(body), body.decode()) is None  # the emulator, as strict as Ometria, agrees


def test_force_optin_cannot_be_sent():
    with pytest.raises(ValidationError, match="force_optin"):
        Contact.model_validate({"@type": "contact", "@collection": "khaos", "id": "1", "@force_optin": True})
    with pytest.raises(ValidationError):
        Contact(collection="khaos", id="1", force_optin=True)


@pytest.mark.parametrize("field,value", [
    ("marketing_optin", "OPTED_IN"), ("email", "not an email"), ("email", "zoë@example.com"),
    ("phone_number", "07700 900123"), ("phone_number", "+0123"), ("country_id", "gb"), ("gender", "F"),
    ("id", "ada@example.com"), ("id", " "), ("customer_id", "x@y.com"), ("timestamp_acquired", datetime(2026, 1, 1)),
    ("unknown_field", "x"),
])
def test_contact_rejects_what_ometria_would(field, value):
    with pytest.raises(ValidationError):
        Contact(**{"collection": "khaos", "id": "1", field: value})


def test_money_is_exact_on_the_wire_and_floats_are_refused():
    body = order(grand_total=Decimal("19.99")).encode()
    assert b'"grand_total":19.99' in body and b"19.990000" not in body
    with pytest.raises(ValidationError, match="float"):
        order(grand_total=19.99)


@pytest.mark.parametrize("properties", [
    {"weight": 1.5}, {"nested": {"deep": [Decimal("1"), 0.25]}}, {"when": date(2026, 10, 1)}, {"bad": Decimal("NaN")},
    {"odd": {1: "x"}}, {"set": {1, 2}},
])
def test_properties_refuse_what_json_cannot_write_exactly(properties):
    # The wire encoder trusts a validated record: the model is where a float or a date is stopped.
    for build in (lambda: order(properties=properties), lambda: Product(id="1", properties=properties),
                  lambda: order(lineitems=[{"product_id": "1", "quantity": Decimal(1), "properties": properties}])):
        with pytest.raises(ValidationError):
            build()


def test_properties_keep_exact_values():
    props = {"code": "SO1", "count": 3, "gift": True, "none": None, "refund": Decimal("1.20"),
             "list": ["a", {"b": Decimal("-0.00")}]}
    body = order(properties=props).encode()
    assert body == wire.reference_dumps(order(properties=props).to_wire())
    assert b'"properties":{"code":"SO1","count":3,"gift":true,"list":["a",{"b":0.00}],"none":null,"refund":1.20}' \
        in body


@pytest.mark.parametrize("currency,amount,ok", [
    ("GBP", "19.99", True), ("GBP", "19.990", True), ("GBP", "19.999", False), ("JPY", "1999", True),
    ("JPY", "19.99", False), ("KWD", "1.999", True), ("ZZZ", "1", False), ("XXX", "1", False), ("gbp", "1", False),
])
def test_currency_and_its_decimals(currency, amount, ok):
    lines = [{"product_id": "1", "quantity": Decimal(1), "total": Decimal(amount)}]
    build = lambda: order(currency=currency, grand_total=Decimal(amount), subtotal=None, discount=None, tax=None,  # noqa: E731
                          shipping=None, lineitems=lines)
    if ok:
        assert build().grand_total == Decimal(amount)
    else:
        with pytest.raises(ValidationError):
            build()
    assert minor_units("JPY") == 0 and minor_units("GBP") == 2 and minor_units("KWD") == 3


def test_line_quantity_is_never_negative():
    with pytest.raises(ValidationError):
        order(lineitems=[{"product_id": "1", "quantity": Decimal(-1)}])
    with pytest.raises(ValidationError):
        order(lineitems=[{"product_id": "1", "quantity": Decimal(1), "quantity_refunded": Decimal(-1)}])


def test_order_needs_a_zoned_timestamp_and_lines():
    with pytest.raises(ValidationError):
        order(timestamp=datetime(2026, 1, 1))
    with pytest.raises(ValidationError):
        Order(id="1", timestamp=WHEN, currency="GBP", grand_total=Decimal(0))


def test_product_and_recommendation_gaps():
    product = Product(id="300", title="Jeans", sku="JNS001", price=Decimal("67.00"), currency="GBP",
                      url="https://shop.example.co.uk/p/JNS001", is_variant=False,
                      attributes=[{"type": "colour", "id": "navy", "label": "Navy"}],
                      listings=[{"store": "uk", "price": Decimal("67.00"), "currency": "GBP"}])
    assert product.missing_for_recommendations() == []
    assert Product(id="1", title=" ", price=Decimal("0.00")).missing_for_recommendations() == [
        "title", "price above zero", "url"]
    with pytest.raises(ValidationError):
        Product(id="1", url="shop.example.co.uk/p/1")
    with pytest.raises(ValidationError):
        Product(id="1", attributes=[{"type": "colour"}])


def test_custom_event_needs_an_identity_and_a_short_type():
    CustomEvent(id="e1", event_type="order_shipped", timestamp=WHEN, identity_account_id="1015")
    with pytest.raises(ValidationError, match="identity"):
        CustomEvent(id="e1", event_type="order_shipped", timestamp=WHEN)
    with pytest.raises(ValidationError):
        CustomEvent(id="e1", event_type="x" * 32, timestamp=WHEN, identity_account_id="1")


def test_a_record_over_60_kb_is_refused():
    big = Product(id="1", properties={"notes": "x" * wire.RECORD_LIMIT})
    with pytest.raises(wire.RecordTooLarge, match="61440-byte record limit"):
        big.encode()


def test_bodies_read_back_to_equal_records():
    for record in (order(), Contact(collection="khaos", id="7", marketing_optin=MarketingOptin.OPTED_OUT),
                   Product(id="300", price=Decimal("1.50"), currency="EUR")):
        assert record_from_wire(record.encode()) == record
    with pytest.raises(ValueError, match="@type"):
        record_from_wire({"id": "1"})


@given(st.decimals(min_value=Decimal("-1000000"), max_value=Decimal("1000000"), places=2))
def test_any_two_decimal_amount_survives_the_wire(amount):
    record = order(grand_total=amount)
    assert record_from_wire(record.encode()).grand_total == amount


@pytest.mark.parametrize("email,ok", [
    ("a.b@example.com", True), ("a+tag@mail.example.co.uk", True), ("a@b", False), ("a@@b.com", False),
    ("a b@example.com", False), ("a@example.c0m", False), ("a.@example.com", False), ("", False),
])
def test_ometria_email_rule(email, ok):
    assert is_ometria_email(email) is ok
