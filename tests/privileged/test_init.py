"""`subvault init` covers every subvolume on the mounted btrfs filesystems."""

from __future__ import annotations

import json
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
    text = run_cli("init", str(mnt), "--output", "-").stdout
    cfg = parse_config(text)
    protected = {s.path for s in cfg.subvolume}
    excluded = {e.path: e.reason for e in cfg.exclude}
    assert str(pvc_mount) in protected
    # Real subvolumes reachable inside the top level are data: protected, never "review me".
    for name in ("root", "var_cache", "var_lib_kubelet", "home"):
        assert str(mnt / name) in protected
    # The top level holds only subvolumes: not data, and no exclude (it would cover
    # every subvolume created under it later).
    assert str(mnt) not in protected and str(mnt) not in excluded
    assert "review me" not in text
    assert not any(".snapshots" in p for p in protected | set(excluded))
    out = tmp_path / "etc" / "subvault.toml"
    run_cli("init", str(mnt), "--output", str(out))
    assert out.stat().st_mode & 0o777 == 0o600
    assert parse_config(out.read_text())
    proc = run_cli("init", str(mnt), "--output", str(out), check=False)
    assert proc.returncode == 1 and "--force" in proc.stderr


def test_init_config_passes_check_after_one_run(make_fs, tmp_path):
    # The acceptance: what init writes is accepted by `check` as written.
    from subvault.demo.testbed import build_homelab

    fs = make_fs("initfs")
    paths = build_homelab(fs.mountpoint)
    layers = paths["var_lib_containers"] / "storage" / "btrfs" / "subvolumes"
    layers.mkdir(parents=True)
    subprocess.run(["btrfs", "-q", "subvolume", "create", str(layers / "abc123")], check=True)
    text = run_cli("init", str(fs.mountpoint), "--output", "-").stdout
    cfg_path = tmp_path / "subvault.toml"
    cfg_path.write_text(text.replace("[defaults]\n", f'[defaults]\nstate_dir = "{tmp_path / "state"}"\n', 1))
    run_cli("--config", str(cfg_path), "config", "check")
    proc = run_cli("--config", str(cfg_path), "snapshot", "--dry-run", "--json")
    run_cli("--config", str(cfg_path), "run")
    proc = run_cli("--config", str(cfg_path), "check", "--json", check=False)
    problems = json.loads(proc.stdout)["result"]["problems"]
    mine = [p for p in problems if str(fs.mountpoint) in p["subject"] or fs.device in p["message"]]
    assert [p for p in mine if p["kind"] in ("unprotected", "nested", "missing", "exclude-without-reason")] == []


def test_top_level_with_files_of_its_own_is_data(make_fs, tmp_path):
    fs = make_fs("plaindata")
    (fs.mountpoint / "photos").mkdir()
    (fs.mountpoint / "photos" / "a.jpg").write_bytes(b"jpeg")
    cfg = parse_config(run_cli("init", str(fs.mountpoint), "--output", "-").stdout)
    assert str(fs.mountpoint) in {s.path for s in cfg.subvolume}
    cfg_path = tmp_path / "subvault.toml"
    cfg_path.write_text(f'[defaults]\nstate_dir = "{tmp_path / "state"}"\n')
    # An unconfigured top level holding files is data nobody protects: check says so.
    other = make_fs("plaindata2")
    (other.mountpoint / "f.txt").write_text("x")
    sub = other.mountpoint / "sub"
    subprocess.run(["btrfs", "-q", "subvolume", "create", str(sub)], check=True)
    cfg_path.write_text(f'[defaults]\nstate_dir = "{tmp_path / "state"}"\n\n[[subvolume]]\nname = "sub"\npath = "{sub}"\n')
    proc = run_cli("--config", str(cfg_path), "check", "--json", check=False)
    problems = json.loads(proc.stdout)["result"]["problems"]
    assert any(p["kind"] == "unprotected" and p["subject"] == str(other.mountpoint) for p in problems), problems


def test_invariant_11_init_writes_the_config_0600(homelab, tmp_path):
    """The config may come to hold notify tokens: nobody but its owner reads it, from the start."""
    out = tmp_path / "etc" / "subvault.toml"
    run_cli("init", "--output", str(out))
    assert out.stat().st_mode & 0o777 == 0o600
    out.chmod(0o644)
    run_cli("init", "--output", str(out), "--force")
    assert out.stat().st_mode & 0o777 == 0o600
