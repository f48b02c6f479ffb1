"""`subvault init` covers every subvolume on the mounted btrfs filesystems."""

from __future__ import annotations

import subprocess

from conftest import run_cli

from subvault.config.load import parse_config


def test_init_covers_every_subvolume(homelab, tmp_path):
    mnt = homelab.fs.mountpoint
    # one subvolume mounted on its own, like /var/lib/pvc on the homelab server
    pvc_mount = tmp_path / "pvc-mount"
    pvc_mount.mkdir()
    subprocess.run(["mount", "-o", "subvol=var_lib_pvc", homelab.fs.device, str(pvc_mount)], check=True)
    try:
        _check_init(homelab, mnt, pvc_mount, tmp_path)
    finally:
        subprocess.run(["umount", str(pvc_mount)], check=True)


def _check_init(homelab, mnt, pvc_mount, tmp_path):
    homelab.cli("snapshot")  # snapshots must not appear in the starter config
    text = run_cli("init", "--output", "-").stdout
    cfg = parse_config(text)
    protected = {s.path for s in cfg.subvolume}
    excluded = {e.path: e.reason for e in cfg.exclude}
    assert str(pvc_mount) in protected and str(mnt) in protected
    for name in ("root", "var_cache", "var_lib_kubelet"):
        assert excluded.get(str(mnt / name)) == "review me"
    assert not any(".snapshots" in p for p in protected | set(excluded))
    out = tmp_path / "etc" / "subvault.toml"
    run_cli("init", "--output", str(out))
    assert parse_config(out.read_text())
    proc = run_cli("init", "--output", str(out), check=False)
    assert proc.returncode == 1 and "--force" in proc.stderr
