"""CLI usage errors that need no btrfs: one line, exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "subvault.cli.main", *args], capture_output=True, text=True, cwd=REPO)


def test_unknown_timezone_is_a_usage_error(tmp_path):
    for zone in ("Mars/Olympus", "../../etc/passwd"):
        proc = cli("prune-received", "--root", str(tmp_path), "--keep", "1d", "--timezone", zone)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert "--timezone" in proc.stderr


def test_a_bad_drill_boot_option_is_refused_before_a_target_is_looked_for(tmp_path):
    # With no target configured, the option's own error must come first (exit 2), not "no target".
    config = tmp_path / "subvault.toml"
    config.write_text(f'[defaults]\nstate_dir = "{tmp_path / "state"}"\n')
    for bad in (["--boot-expect", "("], ["--boot-port", "22", "--boot-port", "22"], ["--boot-command", ""], ["--boot-expect", "ok"]):
        proc = cli("--config", str(config), "drill", "--boot", *bad)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "Traceback" not in proc.stderr and "no btrfs target" not in proc.stderr, proc.stderr
        assert "--boot-" in proc.stderr, proc.stderr


def test_wait_of_nan_or_forever_is_a_usage_error(tmp_path):
    for bad in ("nan", "-1", "inf"):
        proc = cli("--config", str(tmp_path / "none.toml"), "--wait", bad, "status")
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "--wait" in proc.stderr and "Traceback" not in proc.stderr


def test_a_usage_error_is_one_line_and_under_json_a_json_document():
    import json

    proc = cli("status", "--bogus")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: no such option '--bogus' (see `subvault status --help`)\n"
    proc = cli("list", "--json", "a", "b")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["command"], doc["exit_code"]) == ("list", 2) and "`subvault list --help`" in doc["error"]
