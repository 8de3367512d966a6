"""The msgspec mirrors map reads staged orders with: sound or silent.

Whatever text a mirror reads must give, attribute for attribute, what the pydantic model reads
from it (the rules then cannot tell them apart); what it is not sure of it leaves to the model.
"""

import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from khaosync.khaos import models, staged
from khaosync.store import staging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from json_paths import parent, paths  # noqa: E402

START = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


def _order(**changes) -> models.SalesOrder:
    base = dict(
        sorder_id=2042, sorder_code="SO02042", associated_ref="WEB-2042", company_id=11, contact_id=70,
        order_date=START, last_updated=START, order_amount=Decimal("59.98"), currency="GBP", site="1",
        delivery_gross=Decimal("4.99"), delivery_net=Decimal("4.16"), cancelled=False, complete=True,
        lines=[models.OrderLine(sorder_item_id=1, stock_id=300, stock_code="TEE-NVY-M", qty=Decimal("2"),
                                price_gross=Decimal("27.495"), price_net=Decimal("22.91"), tax_rate=Decimal("20"),
                                discount=Decimal("0.00"), description="Tee \u00e9 \"navy\"\n")],
        invoices=[models.Invoice(invoice_id=9, invoice_code="INV9", stage_id=70, issued=START, ship_date=date(2026, 3, 30),
                                 boxes=[models.Box(shipped=True, courier="DPD")],
                                 items=[models.InvoiceItem(sorder_item_id=1, qty=Decimal("2"))])],
        cancellation=models.Cancellation(when=START, reason="changed mind"),
    )
    base.update(changes)
    return models.SalesOrder(**base)


def _note() -> models.CreditNote:
    return models.CreditNote(credit_id=6001, credit_code="CR6001", sorder_id=2042, issued=START, currency="GBP",
                             delivery_refund=Decimal("4.99"), total=Decimal("32.49"),
                             lines=[models.CreditNoteLine(sorder_item_id=1, qty=Decimal("1"), value=Decimal("27.50"))])


def same(mirror, model) -> None:
    """Attribute for attribute, recursively, with the same types and the same Decimal text."""
    if isinstance(model, BaseModel):
        assert type(mirror).__name__ == type(model).__name__
        for name in type(model).model_fields:
            same(getattr(mirror, name), getattr(model, name))
    elif isinstance(model, list):
        assert isinstance(mirror, list) and len(mirror) == len(model)
        for a, b in zip(mirror, model):
            same(a, b)
    else:
        assert type(mirror) is type(model) and mirror == model, (mirror, model)
        if isinstance(model, Decimal):
            assert str(mirror) == str(model)
        if isinstance(model, datetime):
            assert mirror.utcoffset() == model.utcoffset() and mirror.isoformat() == model.isoformat()


@pytest.mark.parametrize("name", sorted(staged.MIRRORS))
def test_each_mirror_has_its_models_fields_and_defaults(name):
    import msgspec

    model, mirror = getattr(models, name), staged.MIRRORS[name]
    fields = {f.name: f for f in msgspec.structs.fields(mirror)}
    assert set(fields) == set(model.model_fields)
    for field_name, info in model.model_fields.items():
        f = fields[field_name]
        if info.is_required():
            assert f.required, field_name
        else:
            default = info.get_default(call_default_factory=True)
            assert not f.required and (f.default if f.default is not msgspec.NODEFAULT else f.default_factory()) \
                == default, field_name


def test_canonical_text_is_read_and_equals_the_model():
    for record, read in ((_order(), staged.sales_order), (_order(cancellation=None, complete=None, lines=[]),
                                                          staged.sales_order), (_note(), staged.credit_note)):
        text = models.canonical_json(record)
        mirror = read(text)
        assert mirror is not None
        same(mirror, type(record).model_validate_json(text))
        assert read(text.encode()) is not None
    assert staged.sales_order(models.canonical_json(_order())).key == "2042"
    assert staged.sales_order(models.canonical_json(_order())).invoices[0].label == "INV9"


def test_text_as_staged_without_its_nulls_is_read_and_equals_the_model():
    for record, read in ((_order(), staged.sales_order), (_order(cancellation=None, complete=None, lines=[]),
                                                          staged.sales_order), (_note().model_copy(update={"sorder_id": None}), staged.credit_note)):
        whole = models.canonical_json(record)
        kept = staging.stored_parsed(whole)
        assert "null" in whole and "null" not in kept  # the records have null members to leave out
        mirror = read(kept)
        assert mirror is not None
        same(mirror, type(record).model_validate_json(whole))
        assert type(record).model_validate_json(kept) == record


@pytest.mark.parametrize("change", [
    ('"order_amount":"59.98"', '"order_amount":59.98'),          # a JSON number: the model refuses a float
    ('"order_amount":"59.98"', '"order_amount":"NaN"'),          # not a number: the model refuses it
    ('"order_amount":"59.98"', '"order_amount":"Infinity"'),
    ('"order_amount":"59.98"', '"order_amount":"5.998E+1"'),      # another spelling of an amount
    ('"order_date":"2026-03-29T00:30:00Z"', '"order_date":"2026-03-29T01:30:00+01:00"'),  # an offset: model converts
    ('"order_date":"2026-03-29T00:30:00Z"', '"order_date":"2026-03-29T00:30:00"'),        # naive: the model refuses
    ('"site":"1"', '"site":"1","surprise":1'),                   # an unknown field
    ('"sorder_id":2042', '"sorder_id":"2042"'),                  # a string id: lax for the model, not canonical
    ('"cancelled":false', '"cancelled":0'),
    ('{', '{ '),                                                 # not the canonical spacing
])
def test_text_that_is_not_canonical_is_left_to_the_model(change):
    text = models.canonical_json(_order())
    assert change[0] in text
    assert staged.sales_order(text.replace(change[0], change[1], 1)) is None


def test_a_record_with_a_missing_field_is_left_to_the_model():
    doc = json.loads(models.canonical_json(_order()))
    del doc["currency"]  # the model's default fills it; canonical text always writes it
    assert staged.sales_order(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)) is None


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**20), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "1.10", "-0.00", "NaN", "sNaN", "-Infinity", "1e3", " 1.5", "1_000", "0x10",
                     "2026-03-29T00:30:00Z", "2026-03-29T00:30:00.5Z", "2026-03-29T00:30:00+00:00",
                     "2026-03-29T00:30:00-05:00", "2026-03-29", "2026-02-30", "24:00", "\u00e9\u2028", "x\"y"]),
    st.text(max_size=8), st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=3), st.none(), max_size=1),
)


def _like(value):
    """A value of the same JSON kind, often still canonical: the mirror's reading is exercised too."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-(2**63), 2**63 - 1)
    if isinstance(value, str):
        return st.one_of(st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str), st.text(max_size=6),
                         st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
                         st.dates().map(date.isoformat))
    return st.nothing()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), note=st.booleans())
def test_whatever_a_mirror_reads_the_model_reads_the_same(data, note):
    # Any value anywhere (amounts, ids, datetimes, lists, nulls), written canonically or not:
    # the mirror either declines, or reads exactly what the model reads.
    record = _note() if note else _order()
    doc = json.loads(models.canonical_json(record))
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(list(paths(doc))))
        node = parent(doc, path)
        like = _like(node[path[-1]])
        node[path[-1]] = data.draw(st.one_of(like, like, like, _VALUES))
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=data.draw(st.sampled_from([False] * 3 + [True])))
    if data.draw(st.booleans()):  # as staging keeps it: the null members left out
        text = staging.stored_parsed(text)
    mirror = (staged.credit_note if note else staged.sales_order)(text)
    if mirror is not None:
        same(mirror, type(record).model_validate_json(text))
