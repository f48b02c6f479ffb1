"""The drill record (<state_dir>/drill.json) that `check` reads: a cache, safe to lose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from subvault.dr.state import DRILL_FILE, last_drill, last_drill_success, record_drill

T = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def test_no_record_means_no_success(tmp_path):
    assert last_drill_success(tmp_path) is None and last_drill(tmp_path) is None


def test_success_is_recorded(tmp_path):
    record_drill(tmp_path, {"rto_seconds": 12.5}, ok=True, finished=T)
    assert last_drill_success(tmp_path) == T
    assert last_drill(tmp_path)["rto_seconds"] == 12.5


def test_a_failed_drill_keeps_the_previous_success(tmp_path):
    record_drill(tmp_path, {}, ok=True, finished=T)
    record_drill(tmp_path, {"error": "x"}, ok=False, finished=T + timedelta(days=1))
    assert last_drill_success(tmp_path) == T
    assert last_drill(tmp_path)["ok"] is False


def test_a_corrupt_file_reads_as_no_success(tmp_path):
    (tmp_path / DRILL_FILE).write_text("{not json")
    assert last_drill_success(tmp_path) is None
    record_drill(tmp_path, {}, ok=True, finished=T)  # and is replaced by the next drill
    assert last_drill_success(tmp_path) == T


def test_a_missing_state_dir_is_created(tmp_path):
    record_drill(tmp_path / "deep" / "state", {}, ok=True, finished=T)
    assert last_drill_success(tmp_path / "deep" / "state") == T

