"""engine.jsonio: fast JSON for bodies and columns, never a different value."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import jsonio
from engine.canonical import canonical_json

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(_json_values)
def test_what_is_written_reads_back_as_the_same_value(value: Any) -> None:
    # Columns are written with dumps_text and read with the standard library.
    assert json.loads(jsonio.dumps_text(value)) == value
    assert json.loads(jsonio.dumps(value)) == value


def test_what_orjson_refuses_is_still_written() -> None:
    huge = {"n": 10**30, "m": -(10**25)}
    assert json.loads(jsonio.dumps_text(huge)) == huge
    assert jsonio.dumps({1: "a"}) == b'{"1":"a"}'


def test_output_is_compact_utf8() -> None:
    assert jsonio.dumps({"名": "值", "a": [1, 2]}) == '{"名":"值","a":[1,2]}'.encode()


@pytest.mark.parametrize("raw", [
    b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e400}',
    b'{"a": "\\ud800"}', b"\xff", b'{"a": 1} x', b"",
])
def test_bodies_are_parsed_strictly(raw: bytes) -> None:
    with pytest.raises(jsonio.JSONDecodeError):
        jsonio.loads_body(raw)
    assert issubclass(jsonio.JSONDecodeError, ValueError)


def test_a_body_never_yields_a_float_that_is_not_finite() -> None:
    value = jsonio.loads_body(b'{"a": 1e308, "b": -0.0}')
    assert all(math.isfinite(v) for v in value.values())



@pytest.mark.parametrize("text", [
    '{"a": 1, "a": 2}', "-0", "-0.0", "[1e400]", "[-1e400]", "[123456789012345678901]",
    "[-9223372036854775809]", "[18446744073709551615]", "[9223372036854775807]",
    '"\\ud800"', '{"k": "\\udc00x"}', "[1E5, 0.1e-400, 2.2250738585072011e-308]",
    "NaN", "[Infinity]", '{"id": "110105199001011234", "n": 1234567890123456789012}',
    '{"a": [1.0, 1, true, null, "é\\n", 5e-324, 1.7976931348623157e308]}',
])
def test_columns_read_exactly_as_the_standard_library_reads_them(text: str) -> None:
    # repr tells 1 from 1.0 and True, and a huge integer from a float near it.
    assert repr(jsonio.loads_column(text)) == repr(json.loads(text))


@given(_json_values)
def test_any_column_value_reads_back_exactly(value: Any) -> None:
    for text in (jsonio.dumps_text(value), json.dumps(value), json.dumps(value, indent=1)):
        assert repr(jsonio.loads_column(text)) == repr(json.loads(text))


# -- orjson's output of what orjson read, for the audit -----------------------------------

_odd_numbers = st.sampled_from([2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**30, 1e-7, 1.5e-5,
                                0.00001, -2.5e-9, 1e-10, 1e16, 1e20, 5e-324, 0.0001])
_audit_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | _odd_numbers
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["f2a4c1de-6b1e-4c55-9d7e-0b7c8f3e2a11", "09:00:00.000001",
                       "a+e+1/Z", "x:1e-5", "1e+22", "0.00001"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(_audit_values)
def test_what_orjson_read_is_vouched_for_only_where_it_is_the_standard_librarys(
        value: Any) -> None:
    for text in (jsonio.dumps_text(value), json.dumps(value), json.dumps(value, indent=1)):
        standard = json.loads(text)
        try:
            read = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        written = orjson.dumps(read, option=orjson.OPT_SORT_KEYS)
        if jsonio.read_as_standard(written):
            assert repr(read) == repr(standard)
        if jsonio.same_as_canonical(written):
            assert written == canonical_json(standard).encode()


@pytest.mark.parametrize(("value", "standard", "canonical"), [
    ({"id": "f2a4c1de-6b1e-4c55-9d7e-0b7c8f3e2a11", "at": "2026-03-01T09:00:00.000000+00:00",
      "sealed": "a+e+1/Z", "s": "x1e-5 t00.00001 q1e+22", "n": [1, -2, 0.5, 1e-4, 1e15]},
     True, True),
    ({"s": "x:1e-5,1e+22"}, False, False),  # on the safe side: a number, as far as it can tell
    ({"n": 2**64}, False, False), ({"n": [-(2**63) - 1]}, False, False),
    ({"n": 1e16}, False, False), ({"n": 1e-7}, True, False), ({"n": -1.5e-5}, True, False),
    ({"n": 1e-10}, True, True), ({"n": [0.00005]}, True, False),
])
def test_only_numbers_count_not_strings_that_look_like_them(value: Any, standard: bool,
                                                            canonical: bool) -> None:
    written = orjson.dumps(orjson.loads(jsonio.dumps(value)), option=orjson.OPT_SORT_KEYS)
    assert jsonio.read_as_standard(written) is standard
    assert jsonio.same_as_canonical(written) is canonical
