"""The real snapper reads subvault's snapshots; subvault keeps snapper's."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from subvault.btrfs import local_scan

pytestmark = pytest.mark.skipif(shutil.which("snapper") is None and os.environ.get("SUBVAULT_REQUIRE_PRIVILEGED") != "1", reason="snapper not installed")


@pytest.fixture
def snapper_config(homelab):
    name = f"subvault-test-{uuid.uuid4().hex[:8]}"
    path = Path("/etc/snapper/configs") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'SUBVOLUME="{homelab.paths["var_lib_pvc"]}"\nFSTYPE="btrfs"\nTIMELINE_CREATE="no"\nNUMBER_CLEANUP="no"\n')
    yield name
    path.unlink(missing_ok=True)


def _snapper(config, *args):
    return subprocess.run(["snapper", "--no-dbus", "-c", config, *args], capture_output=True, text=True, check=True).stdout


def test_snapper_lists_subvault_snapshots_with_descriptions(homelab, snapper_config):
    homelab.cli("snapshot")
    homelab.cli("snap-all", "before-flux-update-20261126-0300")
    out = _snapper(snapper_config, "--csvout", "list", "--columns", "number,description,cleanup,userdata")
    rows = [line.split(",") for line in out.strip().splitlines()[1:]]
    by_num = {r[0]: r for r in rows}
    assert by_num["1"][1] == "timeline" and by_num["1"][2] == "timeline"
    assert by_num["2"][1] == "before-flux-update-20261126-0300" and by_num["2"][2] == "number"
    assert "subvault=prechange" in by_num["2"][3]


def test_snapper_made_snapshots_are_recognised_and_kept(homelab, snapper_config):
    pvc = homelab.paths["var_lib_pvc"]
    homelab.cli("snapshot")  # creates .snapshots and #1
    _snapper(snapper_config, "create", "--description", "made-by-snapper", "--cleanup-algorithm", "number")
    snaps = local_scan.scan("var_lib_pvc", pvc)
    mine = [s for s in snaps if s.description == "made-by-snapper"]
    assert len(mine) == 1 and mine[0].kind == "foreign" and not mine[0].owned
    # numbering continues after snapper's snapshot, and prune leaves it alone
    homelab.cli("snap-all", "after")
    assert max(s.number for s in local_scan.scan("var_lib_pvc", pvc)) == mine[0].number + 1
    text = homelab.config.read_text().replace("prechange_keep = 10", "prechange_keep = 0")
    homelab.config.write_text(text)
    homelab.cli("prune")
    left = local_scan.scan("var_lib_pvc", pvc)
    assert [s.description for s in left if not s.owned] == ["made-by-snapper"]
    assert "made-by-snapper" in _snapper(snapper_config, "list")


def test_attack_snapper_cleanup_enabled_for_a_protected_subvolume_fails_check(homelab):
    """Issue 13.9: snapper's own cleanup would delete subvault's snapshots (the incremental base too)."""
    name = f"subvault-test-{uuid.uuid4().hex[:8]}"
    path = Path("/etc/snapper/configs") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'SUBVOLUME="{homelab.paths["var_lib_pvc"]}"\nFSTYPE="btrfs"\nTIMELINE_CLEANUP="yes"\nNUMBER_CLEANUP="yes"\n')
    try:
        homelab.cli("snapshot")
        res = homelab.cli("check", check=False)
        assert res.returncode == 1
        assert f"snapper config {name}" in res.stdout + res.stderr, res.stdout + res.stderr
        path.write_text(f'SUBVOLUME="{homelab.paths["var_lib_pvc"]}"\nFSTYPE="btrfs"\nTIMELINE_CLEANUP="no"\nNUMBER_CLEANUP="no"\n')
        res = homelab.cli("check", check=False)
        assert f"snapper config {name}" not in res.stdout + res.stderr
    finally:
        path.unlink(missing_ok=True)
