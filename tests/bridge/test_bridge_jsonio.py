"""The strict JSON parser for client text: every failure is a ValueError (→ bad_json), never an
internal error, and the request id is recovered from text that does not parse."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstage.bridge._jsonio import parse_json, recover_id

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_parses_or_raises_value_error(text):
    try:
        parse_json(text)
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(_json)
def test_valid_json_round_trips(value):
    assert parse_json(json.dumps(value)) == value


@pytest.mark.parametrize("text, why", [
    ("[" * 5000 + "]" * 5000, "deep"), ('{"a": ' * 3000 + "1" + "}" * 3000, "deep"), ("1" + "0" * 400, "range"), ("-1" + "0" * 400, "range"),
    ("1e400", "range"), ("[NaN]", "finite"), ("-Infinity", "finite"), ("9" * 5000, "digits")])
def test_hostile_numbers_and_nesting_are_value_errors(text, why):
    with pytest.raises(ValueError, match=why):
        parse_json(text)


def test_request_id_is_recovered_from_broken_text():
    assert recover_id('{"type": "set", "id": "a\\"b", "value": NaN}') == 'a"b'
    assert recover_id('{"type": "set", "value": 1e999}') == ""
    assert recover_id('{"id": 5, "x": [') == ""
    assert recover_id(b'{"id": "x"}') == ""
