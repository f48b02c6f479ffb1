"""info.xml: the one-regex fast form reads every text exactly as the XML parser does."""

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subvault.btrfs.snapper import _FAST_INFO, Info, _parse_info_xml, parse_info, render_info

SNAPPER_WRITTEN = """<?xml version="1.0"?>
<snapshot>
  <type>single</type>
  <num>42</num>
  <date>2026-11-30 10:00:01</date>
  <description>timeline</description>
  <cleanup>timeline</cleanup>
</snapshot>
"""


def _same(text: str):
    try:
        expected = _parse_info_xml(text)
    except ValueError:
        expected = ValueError
    try:
        got = parse_info(text)
    except ValueError:
        got = ValueError
    assert got == expected


def test_snapper_and_subvault_forms_take_the_fast_path():
    assert _FAST_INFO.match(SNAPPER_WRITTEN)
    info = Info(num=7, date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), description="d", cleanup="number",
                userdata=(("subvault", "prechange"), ("x", "")))
    assert _FAST_INFO.match(render_info(info))
    assert parse_info(render_info(info)) == info
    _same(SNAPPER_WRITTEN)


@pytest.mark.parametrize("text", [
    SNAPPER_WRITTEN.replace("timeline</description>", "a &amp; b</description>"),
    SNAPPER_WRITTEN.replace("<num>42", "<num> 42 "),
    SNAPPER_WRITTEN.replace("<num>42", "<num>x"),
    SNAPPER_WRITTEN.replace("  <cleanup>timeline</cleanup>\n", ""),
    SNAPPER_WRITTEN.replace("<type>single</type>", ""),
    SNAPPER_WRITTEN.replace("<snapshot>", "<snapshot a='1'>"),
    SNAPPER_WRITTEN.replace("</snapshot>", "<userdata><key> </key><value>v</value></userdata></snapshot>"),
    SNAPPER_WRITTEN.replace("</snapshot>", "<userdata><key></key><value>v</value></userdata></snapshot>"),
    SNAPPER_WRITTEN.replace("timeline</description>", "a\x0bb</description>"),
    SNAPPER_WRITTEN.replace("\n", "\r\n"),
    "  " + SNAPPER_WRITTEN,
    SNAPPER_WRITTEN.replace("<?xml version=\"1.0\"?>", ""),
    SNAPPER_WRITTEN + "<x/>",
    "",
    SNAPPER_WRITTEN.replace("10:00:01", "10:00:01+02:00"),
    SNAPPER_WRITTEN.replace("2026-11-30 10:00:01", "2026-11-30T10:00:01Z"),
    SNAPPER_WRITTEN.replace("2026-11-30 10:00:01", "2026-11-30"),
    SNAPPER_WRITTEN.replace("2026-11-30 10:00:01", "2026-11-30 10"),
    SNAPPER_WRITTEN.replace("2026-11-30 10:00:01", " 2026-11-30 10:00:01.250 "),
])
def test_odd_texts_read_the_same_either_way(text):
    _same(text)


_piece = st.text(alphabet=st.sampled_from(list("ab <>&;\t\n\r\x0b\u00a0 0123:-")), max_size=6)


@settings(max_examples=400, deadline=None)
@given(st.lists(_piece, min_size=12, max_size=12))
def test_any_perturbed_text_reads_the_same_either_way(pieces):
    parts = ['<?xml version="1.0"?>', "<snapshot>", "<type>", "single", "</type><num>", "3", "</num><date>",
             "2026-01-01 00:00:00", "</date><description>", "d", "</description><userdata><key>", "k",
             "</key><value>", "v", "</value></userdata></snapshot>"]
    text = "".join(p + (pieces[i] if i < len(pieces) else "") for i, p in enumerate(parts))
    _same(text)
