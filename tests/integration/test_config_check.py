"""`subvault config check` through the real CLI: every problem at once, warnings about this host, exposed tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "subvault.cli.main", "--config", str(config), *args],
        capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL,
    )


def test_config_check_reports_every_error_with_the_real_path(tmp_path):
    real = tmp_path / "conf" / "backup.toml"
    real.parent.mkdir()
    real.write_text(
        '[[target]]\nname = "local"\ntype = "btrfs"\nurl = "/mnt/l"\n'
        '[[target]]\nname = "a"\ntype = "btrfs"\nurl = "/mnt/a"\n'
        '[[target]]\nname = "usb"\ntype = "btrfs"\nurl = "/mnt/a/"\n'
        '[[target]]\nname = "offsite"\ntype = "object"\nurl = "file:///srv/o"\nrecipients = ["age1nope"]\nfull_every = "0d"\n'
    )
    link = tmp_path / "subvault.toml"
    link.symlink_to(real)
    proc = _cli(link, "config", "check")
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert all(line.startswith(f"error: {real}: ") for line in lines), lines
    for want in ('target "local": name:', 'target "usb": url:', 'target "offsite": full_every:', 'target "offsite": recipients[0]:'):
        assert any(want in line for line in lines), (want, lines)
    assert len(lines) == 4, lines


def test_config_check_warns_about_paths_that_are_not_subvolumes(tmp_path):
    config = tmp_path / "subvault.toml"
    plain = tmp_path / "plain"
    plain.mkdir()
    config.write_text(
        f'[[subvolume]]\nname = "gone"\npath = "{tmp_path}/gone"\n[[subvolume]]\nname = "plain"\npath = "{plain}"\n'
    )
    config.chmod(0o600)
    proc = _cli(config, "config", "check")
    assert proc.returncode == 0, proc
    assert proc.stdout.startswith("ok: 2 subvolumes")
    warnings = proc.stderr.splitlines()
    assert any(w.startswith(f'warning: {config}: subvolume "gone": path: ') and "does not exist" in w for w in warnings), warnings
    assert any(w.startswith(f'warning: {config}: subvolume "plain": path: ') and "not a btrfs subvolume" in w for w in warnings), warnings


def test_invariant_11_config_with_inline_tokens_readable_by_others_is_warned(tmp_path):
    config = tmp_path / "subvault.toml"
    config.write_text('[notify]\nurls = ["json://127.0.0.1:9/hook"]\n')
    config.chmod(0o644)
    proc = _cli(config, "config", "check")
    assert proc.returncode == 0, proc
    assert f"warning: {config} holds notify tokens" in proc.stderr and "chmod 600" in proc.stderr
    config.chmod(0o600)
    proc = _cli(config, "config", "check")
    assert proc.returncode == 0 and "notify tokens" not in proc.stderr, proc
    os.chmod(config, 0o640)
    assert "notify tokens" in _cli(config, "config", "check").stderr
