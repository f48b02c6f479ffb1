"""Prometheus textfile output: content parses back, and the write is atomic."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from subvault.notify.metrics import LayerStatus, MetricsWriteFailed, build_registry, previous_successes, render, write_textfile

WHEN = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_layer_and_problem_metrics_parse_back(tmp_path: Path) -> None:
    layers = [
        LayerStatus("root", "local", WHEN, 1800.0, 0, 31),
        LayerStatus("var_lib_pvc", "replica:pi", WHEN, 3600.0, 144_000_000, 12),
        LayerStatus("var_lib_pvc", "offsite:offsite", None, None, 0, 0),
    ]
    path = tmp_path / "subvault.prom"
    write_textfile(path, build_registry(layers, {"unprotected": 1, "stale": 2}))
    got = samples(path.read_text())
    pvc = (("layer", "replica:pi"), ("subvolume", "var_lib_pvc"))
    assert got[("subvault_last_success_timestamp_seconds", pvc)] == WHEN.timestamp()
    assert got[("subvault_newest_copy_age_seconds", pvc)] == 3600.0
    assert got[("subvault_sent_bytes", pvc)] == 144_000_000
    assert got[("subvault_snapshots", pvc)] == 12
    assert got[("subvault_check_problems", ())] == 3
    assert got[("subvault_check_problems_by_kind", (("kind", "stale"),))] == 2
    never = (("layer", "offsite:offsite"), ("subvolume", "var_lib_pvc"))
    assert ("subvault_last_success_timestamp_seconds", never) not in got
    assert got[("subvault_snapshots", never)] == 0


def test_run_file_has_no_problem_gauge_and_check_file_reports_zero() -> None:
    assert "subvault_check_problems" not in render(build_registry([LayerStatus("root", "local", WHEN, 1.0, 0, 1)]))
    assert samples(render(build_registry(problems={})))[("subvault_check_problems", ())] == 0


def test_write_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "subvault.prom"
    path.write_text("old\n")
    write_textfile(path, build_registry(problems={}, generated_at=WHEN))
    assert os.listdir(tmp_path) == ["subvault.prom"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert "subvault_last_run_timestamp_seconds" in path.read_text()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MetricsWriteFailed, match="cannot write metrics file .*--metrics-file"):
        write_textfile(tmp_path / "nope" / "subvault.prom", build_registry(problems={}))


def test_previous_successes_read_back(tmp_path: Path) -> None:
    path = tmp_path / "subvault.prom"
    write_textfile(path, build_registry([LayerStatus("root", "replica:pi", WHEN, 1.0, 0, 1)], generated_at=WHEN))
    assert previous_successes(path) == {("root", "replica:pi"): WHEN.timestamp()}
    assert previous_successes(tmp_path / "missing.prom") == {}
    (tmp_path / "junk.prom").write_text("not { metrics\n")
    assert previous_successes(tmp_path / "junk.prom") == {}
