"""systemd units: rendered, installed, verified by systemd-analyze, uninstalled."""

from __future__ import annotations

import stat
from datetime import timedelta
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


def test_units_have_timers_and_on_failure(tmp_path: Path, exe: Path) -> None:
    units = dict((p.name, t) for p, t in systemd.install(tmp_path / "units", str(exe), "/etc/subvault/subvault.toml", True))
    assert set(units) == set(systemd.UNIT_NAMES)
    for service in ("subvault-run.service", "subvault-check.service"):
        assert "OnFailure=subvault-notify@%n.service" in units[service]
        assert "Environment=SUBVAULT_CONFIG=/etc/subvault/subvault.toml" in units[service]
    assert f"ExecStart={exe} run\n" in units["subvault-run.service"]
    assert "OnCalendar=hourly" in units["subvault-run.timer"]
    assert "OnCalendar=daily" in units["subvault-check.timer"]
    assert f"ExecStart={exe} notify-failure %i" in units["subvault-notify@.service"]


def test_every_service_has_a_start_timeout(tmp_path: Path, exe: Path) -> None:
    """A oneshot service has no start timeout by default: a hung run would block every later timer for ever."""
    units = dict((p.name, t) for p, t in systemd.install(tmp_path / "units", str(exe), "/etc/subvault/subvault.toml", True))
    for name in ("subvault-run.service", "subvault-check.service", "subvault-notify@.service"):
        lines = [line for line in units[name].splitlines() if line.startswith("TimeoutStartSec=")]
        assert len(lines) == 1 and lines[0] not in ("TimeoutStartSec=infinity", "TimeoutStartSec=0"), (name, lines)
    assert "TimeoutStartSec=1d\n" in units["subvault-run.service"]
    assert "TimeoutStartSec=1h\n" in units["subvault-check.service"]
    longer = dict((p.name, t) for p, t in systemd.install(tmp_path, str(exe), "/x.toml", True, run_timeout=timedelta(hours=36)))
    assert "TimeoutStartSec=36h\n" in longer["subvault-run.service"]


def test_dry_run_writes_nothing(tmp_path: Path, exe: Path) -> None:
    systemd.install(tmp_path / "units", str(exe), "/etc/subvault/subvault.toml", True)
    assert not (tmp_path / "units").exists()


def test_metrics_files_and_quoting(tmp_path: Path, exe: Path) -> None:
    units = dict((p.name, t) for p, t in systemd.install(tmp_path, str(exe), "/etc/sub vault/50%.toml", True, "/var/lib/node_exporter"))
    run = units["subvault-run.service"]
    assert "--metrics-file /var/lib/node_exporter/subvault-run.prom" in run
    assert 'Environment="SUBVAULT_CONFIG=/etc/sub vault/50%%.toml"' in run


def test_install_then_uninstall_touches_only_its_own_files(tmp_path: Path, exe: Path) -> None:
    dest = tmp_path / "units"
    written = systemd.install(dest, str(exe), "/etc/subvault/subvault.toml", False)
    assert all(p.read_text() == t for p, t in written)
    (dest / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    removed = systemd.uninstall(dest)
    assert sorted(p.name for p in removed) == sorted(systemd.UNIT_NAMES)
    assert [p.name for p in dest.iterdir()] == ["other.service"]


def test_foreign_unit_of_same_name_is_refused(tmp_path: Path, exe: Path) -> None:
    (tmp_path / "subvault-run.service").write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(systemd.NotOwned, match="not written by subvault"):
        systemd.install(tmp_path, str(exe), "/etc/subvault/subvault.toml", False)
    assert systemd.uninstall(tmp_path) == []
