"""No traceback is ever the output of a command; one failing target never stops the others.

Seen on a fresh machine: `offsite` into a read-only bucket directory (an OSError that
also stopped `run` before prune and metrics), `restore --into` a regular file, and
`restore --into /proc/1`.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from subvault.btrfs import adapter


def _one_line_error(proc) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all(len(line) < 400 for line in errors), proc.stderr
    return "\n".join(errors)


@pytest.fixture
def readonly_bucket(homelab, tmp_path):
    """An offsite target whose bucket directory is read-only (a read-only btrfs subvolume: EROFS on write)."""
    key = tmp_path / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    bucket = homelab.fs.mountpoint / "bucket"
    adapter.create_subvolume(bucket)
    subprocess.run(["btrfs", "property", "set", "-ts", str(bucket), "ro", "true"], check=True)
    homelab.config.write_text(homelab.config.read_text().replace("prechange_keep = 10", 'prechange_keep = 10\ntargets = ["offsite"]') + f'''
[[exclude]]
path = "{bucket}"
reason = "the bucket"

[[target]]
name = "offsite"
type = "object"
url = "file://{bucket}"
recipients = ["{recipient}"]
keep = "8d 5w 12m"
full_every = "30d"
mac_key = "{tmp_path}/offsite.mac"
''')
    yield bucket
    subprocess.run(["btrfs", "property", "set", "-ts", str(bucket), "ro", "false"], check=False)


def test_offsite_into_read_only_bucket_is_one_line(homelab, readonly_bucket):
    homelab.cli("snapshot")
    proc = homelab.cli("offsite", check=False)
    errors = _one_line_error(proc)
    assert proc.returncode == 1
    assert all("Read-only file system" in line and str(readonly_bucket) in line for line in errors.splitlines()), errors


def test_run_goes_on_to_prune_and_metrics_after_offsite_fails(homelab, readonly_bucket, tmp_path):
    metrics = tmp_path / "run.prom"
    proc = homelab.cli("run", "--json", "--metrics-file", str(metrics), check=False)
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert proc.returncode == 3 and doc["exit_code"] == 3, "snapshots were taken, offsite failed: partial"
    actions = {(i["subject"], i["action"]) for i in doc["result"]["items"]}
    assert ("var_lib_pvc", "created") in actions
    assert ("var_lib_pvc", "keep") in actions, "prune ran after the failed offsite"
    assert any("Read-only file system" in e for e in doc["result"]["errors"])
    assert metrics.exists() and "subvault_snapshots" in metrics.read_text()


def test_restore_into_a_regular_file_is_one_line(homelab, tmp_path):
    homelab.cli("snapshot")
    afile = tmp_path / "not-a-dir"
    afile.write_text("x")
    proc = homelab.cli("restore", "home", "--into", str(afile), check=False)
    _one_line_error(proc)
    assert proc.returncode in (1, 2)
    assert afile.read_text() == "x"


def test_restore_into_proc_is_one_line(homelab):
    homelab.cli("snapshot")
    proc = homelab.cli("restore", "home", "--into", "/proc/1", check=False)
    _one_line_error(proc)
    assert proc.returncode in (1, 2)
    proc = homelab.cli("restore", "home", "--into", "/proc/1", "--json", check=False)
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == proc.returncode and "error" in doc
