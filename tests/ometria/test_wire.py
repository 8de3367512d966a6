from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from khaosync.ometria import wire


def test_decimals_are_written_exactly():
    body = wire.dumps({"grand_total": Decimal("19.99"), "discount": Decimal("-0.10"), "tax": Decimal("0.00")})
    assert body == b'{"discount":-0.10,"grand_total":19.99,"tax":0.00}'


def test_negative_zero_is_plain_zero():
    assert wire.dumps({"a": Decimal("-0.00"), "b": Decimal("-0.000"), "c": Decimal("-0")}) == b'{"a":0.00,"b":0.000,"c":0}'


def test_floats_are_refused():
    with pytest.raises(TypeError, match="use Decimal"):
        wire.dumps({"price": 1.1})


def test_keys_sorted_and_unicode_kept():
    assert wire.dumps({"b": "Zoë", "a": [1, True, None]}) == '{"a":[1,true,null],"b":"Zoë"}'.encode()


@given(st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-10**9, max_value=10**9))
def test_round_trip_is_exact(amount):
    assert wire.loads(wire.dumps({"v": amount}))["v"] == amount


def test_size_limit():
    wire.check_size("order", "1", b"x" * wire.RECORD_LIMIT)
    with pytest.raises(wire.RecordTooLarge, match="61441 bytes"):
        wire.check_size("order", "1", b"x" * (wire.RECORD_LIMIT + 1))


def test_batch_body_is_a_json_array():
    bodies = [wire.dumps({"id": str(i), "@type": "product"}) for i in range(3)]
    assert wire.loads(wire.batch_body(bodies)) == [{"id": "0", "@type": "product"}, {"id": "1", "@type": "product"},
                                                   {"id": "2", "@type": "product"}]


# -- the fast encoder gives the reference bytes, or the reference's error ---------------------------

_decimals = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-10**12, max_value=10**12),
    st.sampled_from([Decimal("-0"), Decimal("-0.00"), Decimal("-0.000"), Decimal("1E+3"), Decimal("1E-9"),
                     Decimal("123.4500"), Decimal("-1E+30")]),
)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**70),
                     st.text(), _decimals)
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(st.text(), inner, max_size=4)),
    max_leaves=30)


def _outcome(encode, value):
    try:
        return encode(value)
    except Exception as exc:  # the same failure, whatever path raised it
        return type(exc)


@given(st.dictionaries(st.text(), _values, max_size=6))
def test_dumps_is_byte_identical_to_the_reference(record):
    assert _outcome(wire.dumps, record) == _outcome(wire.reference_dumps, record)
    assert _outcome(wire.dumps_valid, record) == _outcome(wire.reference_dumps, record)


@given(st.dictionaries(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\ud800\udfff")), _scalars,
                       max_size=4))
def test_keys_sort_and_escape_as_the_reference(record):
    assert _outcome(wire.dumps, record) == _outcome(wire.reference_dumps, record)


@pytest.mark.parametrize("record", [
    {"v": Decimal("NaN")}, {"v": Decimal("Infinity")}, {"v": [1.5]}, {"v": {"w": 0.1}}, {1: "int key"},
    {"v": 2**64}, {"v": "\ud800"}, {"v": {1, 2}}, {"v": object()},
])
def test_what_orjson_will_not_take_is_encoded_or_refused_as_before(record):
    assert _outcome(wire.dumps, record) == _outcome(wire.reference_dumps, record)


def test_a_date_is_refused_not_written_as_orjson_would():
    from datetime import date
    with pytest.raises(TypeError):
        wire.dumps({"v": date(2026, 12, 1)})
    with pytest.raises(TypeError):
        wire.dumps_valid({"v": date(2026, 12, 1)})
