"""engine.jsonio: fast JSON for bodies and columns, never a different value."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import jsonio

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
