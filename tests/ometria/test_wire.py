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
