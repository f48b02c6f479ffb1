"""JSON output: indented as json.dumps(indent=2) does; long lists one element per line."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from subvault.cli.render import LONG_LIST, dumps_pretty

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_short_documents_print_exactly_as_json_indent_2(value):
    assert dumps_pretty(value) == json.dumps(value, indent=2)


def test_a_long_list_puts_each_element_on_one_line_and_parses_back():
    value = {"result": [{"n": i, "tags": {"a": [i]}} for i in range(LONG_LIST + 1)]}
    text = dumps_pretty(value)
    assert json.loads(text) == value
    assert len(text.splitlines()) == LONG_LIST + 1 + 4
