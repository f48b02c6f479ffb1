"""Every --dry-run changes nothing: not the filesystems, targets, bucket, state dir or /etc.

The class test for "dry runs change nothing": one fingerprint of everything subvault
could touch, taken before and after each changing command run with --dry-run, in a
state where each of them has real work to do.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def _fingerprint(*roots: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = ("absent",)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                out[path] = (st.st_mode, st.st_size if not os.path.isdir(path) else 0, st.st_mtime_ns if not os.path.isdir(path) else 0)
    return out


def _subvolumes(mount: Path) -> list[str]:
    return subprocess.run(["btrfs", "subvolume", "list", "-o", str(mount)], capture_output=True, text=True, check=True).stdout.splitlines()


@pytest.fixture
def busy(homelab, make_fs, tmp_path):
    """A homelab with a local btrfs target and a file:// offsite target, each with work due."""
    key = tmp_path / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    tgt = make_fs("tgt")
    backup = tgt.mountpoint / "backup"
    backup.mkdir()
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    homelab.config.write_text(homelab.config.read_text().replace("prechange_keep = 10", 'prechange_keep = 1\ntargets = ["pi", "offsite"]') + f'''
[[target]]
name = "pi"
type = "btrfs"
url = "{backup}"
keep = "1h"

[[target]]
name = "offsite"
type = "object"
url = "file://{bucket}"
recipients = ["{recipient}"]
keep = "8d 5w 12m"
full_every = "30d"
part_size_mib = 1
mac_key = "{tmp_path}/offsite.mac"
''')
    homelab.cli("snap-all", "one")
    homelab.cli("snap-all", "two")  # prechange_keep = 1: one is due for pruning
    (homelab.paths["home"] / "user").mkdir(exist_ok=True)
    (homelab.paths["home"] / "user" / "notes.txt").write_text("live\n")
    roots = [homelab.fs.mountpoint, tgt.mountpoint, bucket, homelab.state, tmp_path / "offsite.mac", Path("/etc/systemd/system")]
    # A subvolume's generation is compared too, and reading a file or directory may update its
    # atime, a write the kernel commits in its own time (the test's walk, or the dry run's reads,
    # landing in a commit mid-test under load). The test is about subvault's writes, so no atimes.
    for fs in (homelab.fs, tgt):
        subprocess.run(["mount", "-o", "remount,noatime", str(fs.mountpoint)], check=True)
    return homelab, roots, backup


@pytest.mark.parametrize("args", [
    ["run"],
    ["snapshot"],
    ["snap-all", "would-not-exist"],
    ["replicate"],
    ["offsite"],
    ["prune"],
    ["restore", "home", "user", "--at", "latest", "--overwrite"],
    ["pre-change", "--flux", "off", "--", "true"],
    ["install-systemd"],
    ["init"],
], ids=lambda a: a[0])
def test_dry_run_changes_nothing(busy, args):
    homelab, roots, backup = busy
    before = _fingerprint(*roots), _subvolumes(homelab.fs.mountpoint)
    extra = ["--dry-run"]
    cmd = args[:1] + extra + args[1:] if "--" not in args else args[:args.index("--")] + extra + args[args.index("--"):]
    proc = homelab.cli(*cmd, check=False)
    assert proc.returncode == 0, proc.stderr
    after = _fingerprint(*roots), _subvolumes(homelab.fs.mountpoint)
    changed = {k for k in set(before[0]) | set(after[0]) if before[0].get(k) != after[0].get(k)}
    assert not changed, sorted(changed)[:10]
    assert before[1] == after[1]


def test_prune_received_dry_run_changes_nothing(busy):
    homelab, roots, backup = busy
    homelab.cli("replicate")
    before = _fingerprint(*roots)
    homelab.cli("prune-received", "--root", str(backup), "--keep", "1h", "--dry-run")
    assert _fingerprint(*roots) == before
