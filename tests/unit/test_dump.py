"""Parsing `btrfs receive --dump`: escaping and orphan names never reach the result."""

from __future__ import annotations

from subvault.btrfs.dump import unescape
from subvault.cli.textout import printable
from subvault.run.diff import parse_dump


def test_unescape_every_form_btrfs_progs_prints() -> None:
    assert unescape(r"new\nline") == "new\nline"
    assert unescape(r"with\ space") == "with space"
    assert unescape(r"tab\there") == "tab\there"
    assert unescape(r"\303\274n\303\257c\303\270d\303\251") == "ünïcødé"
    assert unescape(r"back\\slash") == "back\\slash"
    assert unescape(r"not-utf8-\377").encode("utf-8", "surrogateescape") == b"not-utf8-\xff"
    assert unescape("plain") == "plain"


def test_printable_keeps_one_line() -> None:
    assert printable("new\nline") == "new\\nline"
    assert printable("a\\b") == "a\\\\b"
    assert printable(unescape(r"x\377")) == "x\\xff"
    assert printable("ünïcødé") == "ünïcødé"
    # What a terminal would not show as itself: a line separator, a bidi override.
    assert printable("a\u2028b\u202ec") == "a\\u2028b\\u202ec"


def test_reversed_stream_maps_orphans_back_to_real_names() -> None:
    dump = "\n".join([
        "snapshot ./s uuid=a transid=1 parent_uuid=b parent_transid=2",
        "rename ./s/gone dest=./s/o259-7-0",
        "unlink ./s/o259-7-0/acl.txt",
        "rename ./s/o259-7-0/sub dest=./s/o261-7-0",
        "unlink ./s/o261-7-0/deep.txt",
        "rmdir ./s/o261-7-0",
        "rmdir ./s/o259-7-0",
        "mkdir ./s/o300-9-0",
        "mkfile ./s/o300-9-0/new.txt",
        "rename ./s/o300-9-0 dest=./s/fresh",
        "rename ./s/a.txt dest=./s/o301-9-0",
        "rename ./s/o301-9-0 dest=./s/b.txt",
        "write ./s/kept.txt offset=0 len=3",
    ])
    got = {(c.kind, c.path) for c in parse_dump(dump)}
    assert got == {
        ("deleted", "gone/acl.txt"), ("deleted", "gone/sub/deep.txt"), ("deleted", "gone/sub"), ("deleted", "gone"),
        ("added", "fresh"), ("added", "fresh/new.txt"), ("renamed", "b.txt"), ("modified", "kept.txt"),
    }
