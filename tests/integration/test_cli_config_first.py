"""Commands that act on the config load and validate it before they write anything.

`install-systemd` once wrote timers for a config that every run would then refuse, so
the first sign of a broken config was an hourly failure notification.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "subvault.cli.main", *args], capture_output=True, text=True, cwd=REPO,
                          stdin=subprocess.DEVNULL, timeout=60)


@pytest.mark.parametrize("text", [
    '[defaults]\ntimeline = "24x"\n',  # invalid
    None,  # missing
    '[defaults\n',  # not TOML
])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_install_systemd_refuses_an_invalid_config_and_writes_nothing(tmp_path, text, dry_run):
    config = tmp_path / "subvault.toml"
    if text is not None:
        config.write_text(text)
    dest = tmp_path / "units"
    dest.mkdir()
    proc = cli("--config", str(config), "install-systemd", "--dest", str(dest), *dry_run)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {config}: "), line
    assert proc.stdout == "" and list(dest.iterdir()) == []


def test_install_systemd_writes_units_for_a_valid_config(tmp_path):
    config = tmp_path / "subvault.toml"
    config.write_text(f'[defaults]\nstate_dir = "{tmp_path / "state"}"\n')
    dest = tmp_path / "units"
    dest.mkdir()
    proc = cli("--config", str(config), "install-systemd", "--dest", str(dest), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "subvault-run.service" in proc.stdout and list(dest.iterdir()) == []
