"""scan without uuids on a plain directory: which .snapshots entries are snapshots, and what they say."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from subvault.btrfs import local_scan
from subvault.btrfs.snapdir import OWNER_KEY, PENDING
from subvault.btrfs.snapper import Info, render_info

WHEN = datetime(2026, 11, 30, 10, 0, 1, tzinfo=UTC)


def _entry(sdir, num, text=None):
    ndir = sdir / str(num)
    (ndir / "snapshot").mkdir(parents=True)
    if text is not None:
        (ndir / "info.xml").write_text(text)
    return ndir


def test_scan_keeps_whole_snapshots_and_leaves_out_the_rest(tmp_path):
    sdir = tmp_path / "sub" / ".snapshots"
    ours = render_info(Info(num=1, date=WHEN, description="before", cleanup="number", userdata=((OWNER_KEY, "prechange"),)))
    _entry(sdir, 1, ours)
    snapper_form = ('<?xml version="1.0"?>\n<snapshot>\n  <type>single</type>\n  <num>2</num>\n'
                    "  <date>2026-11-30 10:00:01</date>\n  <description>a &amp; b</description>\n</snapshot>\n")
    _entry(sdir, 2, snapper_form)  # an entity: the XML parser's form
    _entry(sdir, 3, ours.replace("<num>1", "<num>3"))
    (sdir / "3" / PENDING).write_text("create pid=1\n")  # in flight
    _entry(sdir, 4, "not xml")
    _entry(sdir, 5)  # no info.xml
    (sdir / "6" / "snapshot").mkdir(parents=True)
    os.mkfifo(sdir / "6" / "info.xml")  # never waited on
    (sdir / "notes").mkdir()
    _entry(sdir, 10, ours.replace("<num>1", "<num>10"))

    found = local_scan.scan("sub", tmp_path / "sub", with_uuids=False)
    assert [s.number for s in found] == [1, 2, 10]
    first, second = found[0], found[1]
    assert (first.kind, first.owned, first.description, first.cleanup, first.date) == ("prechange", True, "before", "number", WHEN)
    assert first.path == sdir / "1" / "snapshot" and first.userdata == {OWNER_KEY: "prechange"}
    assert (second.kind, second.owned, second.description) == ("foreign", False, "a & b")
    assert local_scan.read_snapshot("sub", sdir / "10") == found[2]
    assert local_scan.read_snapshot("sub", sdir / "3") is None


def test_scan_of_a_missing_snapshots_dir_is_empty(tmp_path):
    assert local_scan.scan("sub", tmp_path, with_uuids=False) == []
