"""Snapper's on-disk layout: <subvolume>/.snapshots/<N>/{snapshot,info.xml}.

Rules:
- info.xml is written atomically (temp file, fsync, rename) and only after the
  snapshot subvolume exists; it is removed first when deleting.
- Each directory subvault is changing holds a marker file PENDING while the change is
  in flight. A directory with a marker is subvault's, and is finished or removed by
  `finish_pending` before the next change; snapper ignores directories without info.xml.
- subvault marks its snapshots with userdata `subvault=<kind>`; anything without it
  (snapper's own, the user's) is foreign and never deleted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime

from subvault.btrfs.snapdir import info_xml


@dataclass(frozen=True)
class Info:
    """The fields of one info.xml."""

    num: int
    date: datetime  # aware UTC
    description: str
    cleanup: str
    type: str = "single"
    userdata: tuple[tuple[str, str], ...] = ()

    @property
    def userdata_dict(self) -> dict[str, str]:
        return dict(self.userdata)


def render_info(info: Info) -> str:
    """Given Info, return info.xml text in the form snapper writes and reads."""
    return info_xml(info.num, info.date, info.description, info.cleanup, info.userdata, kind=info.type)


# The form subvault and snapper write: simple elements, no entities, comments, CDATA,
# attributes or carriage returns. Anything else goes through ElementTree (_parse_info_xml);
# both give the same Info for every text the fast form accepts (tests/unit/test_snapper_info.py).
_FIELD = r"[^<>&\x00-\x08\x0b-\x1f\ufffe\uffff]*"  # no markup, no control characters (tab and newline allowed)
_WS = r"[ \t\n]*"  # XML whitespace
_FAST_INFO = re.compile(
    rf'\A(?:<\?xml version="1\.0"(?: encoding="(?i:utf-8)")?\?>)?{_WS}<snapshot>{_WS}'
    rf"<type>({_FIELD})</type>{_WS}<num>({_FIELD})</num>{_WS}<date>({_FIELD})</date>{_WS}"
    rf"(?:<description>({_FIELD})</description>{_WS})?(?:<cleanup>({_FIELD})</cleanup>{_WS})?"
    rf"((?:<userdata>{_WS}<key>{_FIELD}</key>{_WS}<value>{_FIELD}</value>{_WS}</userdata>{_WS})*)"
    rf"</snapshot>{_WS}\Z"
)
_FAST_USERDATA = re.compile(rf"<key>({_FIELD})</key>{_WS}<value>({_FIELD})</value>")


def parse_info(text: str) -> Info:
    """Given info.xml text, return Info. Raise ValueError if it is not a snapper info.xml.

    10,000 of these are read by `list` and `prune`: the common form is matched by one
    regular expression (no XML tree), everything else is parsed as XML.
    """
    fields = fast_info_fields(text)
    if fields is None:
        return _parse_info_xml(text)
    type_, num, date, description, cleanup, userdata = fields
    return Info(num=num, date=date, description=description, cleanup=cleanup, type=type_, userdata=userdata)


InfoFields = tuple[str, int, datetime, str, str, tuple[tuple[str, str], ...]]


def fast_info_fields(text: str) -> InfoFields | None:
    """(type, num, date, description, cleanup, userdata) of an info.xml in the common form, or
    None when the text is not in it (then parse_info's XML parser decides). Raise ValueError
    on a bad num or date. No Info object: `scan` calls this once per snapshot."""
    m = _FAST_INFO.match(text)
    if m is None:
        return None
    type_, num, date, description, cleanup, userdata = m.groups()
    try:
        num_i = int(num.strip())
        when = _utc(date.strip())
    except ValueError as exc:
        raise ValueError(f"bad num or date: {exc}") from None
    pairs = tuple([(k.strip(), v.strip()) for k, v in _FAST_USERDATA.findall(userdata) if k]) if userdata else ()
    return type_.strip(), num_i, when, (description or "").strip(), (cleanup or "").strip(), pairs


def _utc(text: str) -> datetime:
    """snapper's "YYYY-MM-DD HH:MM:SS", read as UTC (any offset written in it is replaced, as before)."""
    if len(text) == 19 and text[10] == " " and text[13] == ":" and text[16] == ":":
        try:
            return datetime.fromisoformat(text + "+00:00")  # 7x faster than .replace(tzinfo=UTC); same value
        except ValueError:
            pass
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _parse_info_xml(text: str) -> Info:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from None
    if root.tag != "snapshot":
        raise ValueError("root element is not <snapshot>")

    def text_of(tag: str, default: str = "") -> str:
        el = root.find(tag)
        return (el.text or "").strip() if el is not None else default

    try:
        num = int(text_of("num"))
        date = datetime.fromisoformat(text_of("date")).replace(tzinfo=UTC)  # "YYYY-MM-DD HH:MM:SS"
    except ValueError as exc:
        raise ValueError(f"bad num or date: {exc}") from None
    userdata = []
    for ud in root.findall("userdata"):
        k, v = ud.find("key"), ud.find("value")
        if k is not None and k.text:
            userdata.append((k.text.strip(), (v.text or "").strip() if v is not None else ""))
    return Info(
        num=num,
        date=date,
        description=text_of("description"),
        cleanup=text_of("cleanup"),
        type=text_of("type", "single"),
        userdata=tuple(userdata),
    )


