"""Exit codes as documented: 2 for usage errors, 1 for failures, each with one line saying what is wrong.

These run the real CLI against a config whose paths need no btrfs: every case is
decided before a filesystem is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(tmp_path):
    key = tmp_path / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    mac = tmp_path / "offsite.mac"
    mac.write_text(os.urandom(32).hex() + "\n")
    mac.chmod(0o600)
    path = tmp_path / "subvault.toml"
    path.write_text(f'''[defaults]
timeline = "24h 7d 4w"
state_dir = "{tmp_path}/state"
targets = ["offsite"]

[[subvolume]]
name = "root"
path = "{tmp_path}/root"

[[subvolume]]
name = "home"
path = "{tmp_path}/home"

[[target]]
name = "offsite"
type = "object"
url = "file://{bucket}"
recipients = ["{recipient}"]
keep = "8d 5w 12m"
mac_key = "{mac}"
''')
    return path


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "subvault.cli.main", "--config", str(cfg), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def _usage(proc) -> str:
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("args", [
    ["snapshot", "nope"],
    ["list", "nope"],
    ["diff", "nope", "1"],
    ["restore", "nope"],
    ["rollback", "nope", "1"],
    ["replicate", "--target", "nope"],
    ["offsite", "--target", "nope"],
    ["verify", "--target", "nope"],
    ["restore", "root", "--from", "nope", "--into", "/tmp"],
])
def test_unknown_subvolume_or_target_name_is_a_usage_error(cfg, args):
    line = _usage(cli(cfg, *args))
    assert '"nope"' in line and "known:" in line


@pytest.mark.parametrize("args", [
    ["restore", "root", "--at", "yesterday"],
    ["restore", "root", "--at", "2026-13-45"],
])
def test_bad_at_is_a_usage_error(cfg, args):
    line = _usage(cli(cfg, *args))
    assert "--at" in line


def test_rollback_names_its_own_argument_not_at(cfg):
    line = _usage(cli(cfg, "rollback", "root", "abc"))
    assert "NUMBER" in line and "--at" not in line


def test_snap_all_empty_description_is_a_usage_error(cfg):
    line = _usage(cli(cfg, "snap-all", ""))
    assert "DESCRIPTION" in line


def test_replicate_to_an_object_target_is_refused(cfg):
    line = _usage(cli(cfg, "replicate", "--target", "offsite"))
    assert "offsite --target offsite" in line


def test_usage_error_under_json_is_a_versioned_json_error(cfg):
    proc = cli(cfg, "list", "nope", "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2 and doc == {"version": 1, "command": "list", "exit_code": 2, "error": doc["error"]}
    assert '"nope"' in doc["error"]


def test_verify_on_an_empty_bucket_is_a_failure(cfg):
    proc = cli(cfg, "verify", "--target", "offsite")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "root→offsite: no restore point in offsite" in proc.stderr
    assert "home→offsite: no restore point in offsite" in proc.stderr
