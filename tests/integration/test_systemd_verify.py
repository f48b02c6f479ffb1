"""The units subvault installs pass the real `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from subvault import systemd


@pytest.fixture
def exe(tmp_path: Path) -> Path:
    """An executable standing in for the installed `subvault` (systemd-analyze checks it)."""
    path = tmp_path / "bin" / "subvault"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path, exe: Path) -> None:
    written = systemd.install(tmp_path / "units", str(exe), "/etc/subvault/subvault.toml", False, str(tmp_path))
    result = systemd.verify([p for p, _ in written])
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if "subvault" in line]
    assert ours == [], result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    written = systemd.install(tmp_path, "/nonexistent/subvault", "/etc/subvault/subvault.toml", False)
    assert systemd.verify([p for p, _ in written]).returncode != 0
