"""Restore, diff and rollback from local snapshots, on real btrfs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from subvault.btrfs import adapter


def _xattr(path, name):
    return os.getxattr(path, name)


def test_restore_keeps_owner_mode_times_xattrs_acls(homelab):
    pvc = homelab.paths["var_lib_pvc"]
    f = pvc / "nextcloud" / "config.php"
    os.chown(f, 1234, 5678)
    os.chmod(f, 0o640)
    os.setxattr(f, "user.origin", b"nextcloud")
    subprocess.run(["setfacl", "-m", "u:4321:r", str(f)], check=True)
    os.utime(f, (1_700_000_000, 1_700_000_000))
    homelab.cli("snapshot")
    f.unlink()
    # dry run changes nothing and says what it would do
    dry = homelab.cli("restore", "var_lib_pvc", "nextcloud/config.php", "--at", "1", "--dry-run").stdout
    assert "would-copy" in dry and not f.exists()
    homelab.cli("restore", "var_lib_pvc", "nextcloud/config.php", "--at", "1")
    st = f.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777, int(st.st_mtime)) == (1234, 5678, 0o640, 1_700_000_000)
    assert _xattr(f, "user.origin") == b"nextcloud"
    acl = subprocess.run(["getfacl", "-c", str(f)], capture_output=True, text=True, check=True).stdout
    assert "user:4321:r--" in acl


def test_restore_never_overwrites_without_flag(homelab):
    f = homelab.paths["home"] / "user" / "notes.txt"
    homelab.cli("snapshot")
    f.write_text("changed\n")
    proc = homelab.cli("restore", "home", "user", "--at", "latest", check=False)
    assert proc.returncode == 1
    assert "exist at the destination" in proc.stderr and "--overwrite" in proc.stderr
    assert f.read_text() == "changed\n"
    homelab.cli("restore", "home", "user", "--at", "latest", "--overwrite")
    assert f.read_text() == "remember the drill\n"


def test_restore_whole_subvolume_into_other_dir_uses_reflinks(homelab, tmp_path):
    homelab.cli("snapshot")
    into = homelab.paths["var_tmp"] / "restored"
    homelab.cli("restore", "var_lib_pvc", "--into", str(into))
    assert (into / "nextcloud" / "blob.bin").read_bytes() == (homelab.paths["var_lib_pvc"] / "nextcloud" / "blob.bin").read_bytes()
    assert not (into / ".snapshots").exists()


def test_diff_lists_changed_paths(homelab):
    home = homelab.paths["home"]
    homelab.cli("snapshot")
    (home / "user" / "new.txt").write_text("new\n")
    (home / "user" / "notes.txt").write_text("edited\n")
    homelab.cli("snapshot", "--force")
    (home / "user" / "new.txt").unlink()
    changes = json.loads(homelab.cli("diff", "home", "1", "2", "--json").stdout)["result"]
    got = {(c["kind"], c["path"]) for c in changes}
    assert ("added", "user/new.txt") in got
    assert ("modified", "user/notes.txt") in got
    current = json.loads(homelab.cli("diff", "home", "2", "current", "--json").stdout)["result"]
    assert ("deleted", "user/new.txt") in {(c["kind"], c["path"]) for c in current}
    assert not (home / ".snapshots" / ".subvault-diff-current").exists()


@pytest.fixture
def sysroot(fs, tmp_path):
    """A root filesystem in snapper's layout: subvolume 'root' mounted by default, .snapshots mounted."""
    root_sub = fs.mountpoint / "root"
    adapter.create_subvolume(root_sub)
    (root_sub / "etc").mkdir()
    (root_sub / "etc" / "os-release").write_text("v1\n")
    adapter.create_subvolume(root_sub / ".snapshots")
    state = tmp_path / "state"
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(f'[defaults]\nstate_dir = "{state}"\n[[subvolume]]\nname = "root"\npath = "{root_sub}"\n')
    return root_sub, cfg


def _fstab(tmp_path, lines):
    p = tmp_path / "fstab"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_rollback_sets_writable_snapshot_as_default(sysroot, tmp_path):
    from conftest import run_cli

    root_sub, cfg = sysroot
    run_cli("--config", str(cfg), "snapshot")
    (root_sub / "etc" / "os-release").write_text("v2-broken\n")
    fstab = _fstab(tmp_path, [f"UUID=x {root_sub} btrfs defaults 0 0", f"UUID=x {root_sub}/.snapshots btrfs subvol=root/.snapshots 0 0"])
    dry = run_cli("--config", str(cfg), "rollback", "root", "1", "--fstab", fstab, "--dry-run").stdout
    assert "would-create" in dry
    before = adapter.get_default(root_sub)
    assert before == adapter.TOP_LEVEL_ID
    out = json.loads(run_cli("--config", str(cfg), "rollback", "root", "1", "--fstab", fstab, "--json").stdout)
    new = [i for i in out["result"]["items"] if i["action"] == "default"][0]["data"]
    assert adapter.get_default(root_sub) == new["id"]
    new_root = root_sub / ".snapshots" / str(new["number"]) / "snapshot"
    assert (new_root / "etc" / "os-release").read_text() == "v1\n"
    assert not adapter.show(new_root).readonly
    # the state before the rollback was kept read-only
    assert any("rollback backup" in (root_sub / ".snapshots" / n / "info.xml").read_text() for n in os.listdir(root_sub / ".snapshots"))


@pytest.mark.parametrize(
    "lines, reason",
    [
        (["UUID=x {root} btrfs subvol=root 0 0", "UUID=x {root}/.snapshots btrfs subvol=root/.snapshots 0 0"], "ignores the default subvolume"),
        (["UUID=x {root} btrfs defaults 0 0"], "empty .snapshots"),
        ([], "fstab has no entry"),
    ],
)
def test_rollback_refuses_unbootable_layout(sysroot, tmp_path, lines, reason):
    from conftest import run_cli

    root_sub, cfg = sysroot
    run_cli("--config", str(cfg), "snapshot")
    fstab = _fstab(tmp_path, [l.format(root=root_sub) for l in lines])
    proc = run_cli("--config", str(cfg), "rollback", "root", "1", "--fstab", fstab, check=False)
    assert proc.returncode == 1 and reason in proc.stderr
    assert adapter.get_default(root_sub) == adapter.TOP_LEVEL_ID
    assert sorted(os.listdir(root_sub / ".snapshots")) == ["1"]  # nothing created


def test_rollback_refuses_top_level(fs, tmp_path):
    from conftest import run_cli

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[defaults]\nstate_dir = "{tmp_path}/s"\n[[subvolume]]\nname = "top"\npath = "{fs.mountpoint}"\n')
    run_cli("--config", str(cfg), "snapshot")
    fstab = _fstab(tmp_path, [f"UUID=x {fs.mountpoint} btrfs defaults 0 0", f"UUID=x {fs.mountpoint}/.snapshots btrfs defaults 0 0"])
    proc = run_cli("--config", str(cfg), "rollback", "top", "1", "--fstab", fstab, check=False)
    assert proc.returncode == 1 and "top-level subvolume" in proc.stderr


# ---------------------------------------------------------------- restore across type changes

KINDS = ("file", "dir", "symlink", "dirlink", "fifo")


def _make(path, kind, outside):
    """Create one entry of `kind` at path (a directory always has contents)."""
    if kind == "file":
        path.write_text(f"file {path.name}\n")
    elif kind == "dir":
        (path / "inner").mkdir(parents=True)
        (path / "inner" / "leaf.txt").write_text("leaf\n")
        (path / "top.txt").write_text("top\n")
    elif kind == "symlink":
        path.symlink_to(outside / "target.txt")
    elif kind == "dirlink":
        path.symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(path)


def _tree(root):
    """Every entry under root: relative path -> (kind, content or link target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if os.path.islink(p):
                out[rel] = ("symlink", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", None)
            elif os.path.isfile(p):
                out[rel] = ("file", open(p, "rb").read())
            else:
                out[rel] = ("special", oct(st.st_mode))
    return out


def _restore_json(homelab, *args, check=True):
    proc = homelab.cli("restore", *args, "--json", check=check)
    return proc, (json.loads(proc.stdout).get("result") if proc.stdout.strip() else None)


@pytest.mark.timeout(120)  # before the fix, cp wrote a file into a fifo at the destination and hung
def test_restore_replaces_every_type_change_and_dry_run_promises_exactly_that(homelab, tmp_path):
    """file, directory with contents, symlink, symlink to a directory and fifo, each replaced by each other kind."""
    data = homelab.paths["data"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("outside the subvolume\n")
    mix = data / "mix"
    mix.mkdir()
    pairs = [(a, b) for a in KINDS for b in KINDS if a != b or a in ("file", "symlink", "fifo")]
    for was, now in pairs:
        _make(mix / f"{was}-then-{now}", was, outside)
    (mix / "deep" / "a").mkdir(parents=True)
    (mix / "deep" / "a" / "b.txt").write_text("deep\n")
    homelab.cli("snapshot")
    snap_tree = _tree(mix)
    for was, now in pairs:
        p = mix / f"{was}-then-{now}"
        if was == "dir":
            subprocess.run(["rm", "-rf", str(p)], check=True)
        else:
            p.unlink()
        _make(p, now, outside)
    subprocess.run(["rm", "-rf", str(mix / "deep" / "a")], check=True)
    (mix / "deep" / "a").write_text("a file where a directory was\n")
    before = _tree(mix)

    proc, _ = _restore_json(homelab, "data", "mix", "--at", "1", check=False)
    assert proc.returncode == 1 and "--overwrite" in proc.stderr
    assert _tree(mix) == before, "a refused restore changes nothing"

    _, dry = _restore_json(homelab, "data", "mix", "--at", "1", "--overwrite", "--dry-run")
    assert _tree(mix) == before, "a dry run changes nothing"
    _, real = _restore_json(homelab, "data", "mix", "--at", "1", "--overwrite")
    assert [i["action"] for i in dry["items"]] == ["would-copy"] and [i["action"] for i in real["items"]] == ["restored"]
    assert dry["items"][0]["detail"] == real["items"][0]["detail"]
    assert dry["items"][0]["data"]["replaced"] == real["items"][0]["data"]["replaced"]
    assert len(real["items"][0]["data"]["replaced"]) == len(pairs) + 1
    assert _tree(mix) == snap_tree
    assert (outside / "target.txt").read_text() == "outside the subvolume\n"
    assert sorted(p.name for p in outside.iterdir()) == ["target.txt"], "nothing was written through a symlink"


def test_attack_restore_never_writes_through_a_symlink_at_the_destination(homelab, tmp_path):
    """A local user swaps a file for a symlink to a file root owns; restoring --overwrite must not write there."""
    f = homelab.paths["home"] / "user" / "notes.txt"
    homelab.cli("snapshot")
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    f.unlink()
    f.symlink_to(victim)
    homelab.cli("restore", "home", "user/notes.txt", "--at", "1", "--overwrite")
    assert victim.read_text() == "root:secret\n"
    assert not f.is_symlink() and f.read_text() == "remember the drill\n"


def test_restore_path_below_a_replaced_ancestor(homelab):
    """Restoring user/notes.txt when `user` became a file (or a symlink to elsewhere) replaces the ancestor."""
    home = homelab.paths["home"]
    homelab.cli("snapshot")
    subprocess.run(["rm", "-rf", str(home / "user")], check=True)
    (home / "user").write_text("not a directory\n")
    proc = homelab.cli("restore", "home", "user/notes.txt", "--at", "1", check=False)
    assert proc.returncode == 1 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    _, dry = _restore_json(homelab, "home", "user/notes.txt", "--at", "1", "--overwrite", "--dry-run")
    _, real = _restore_json(homelab, "home", "user/notes.txt", "--at", "1", "--overwrite")
    assert dry["items"][0]["data"]["replaced"] == real["items"][0]["data"]["replaced"]
    assert (home / "user" / "notes.txt").read_text() == "remember the drill\n"


def test_restore_refuses_to_remove_a_directory_holding_a_subvolume(homelab):
    data = homelab.paths["data"]
    (data / "thing").write_text("a file in the snapshot\n")
    homelab.cli("snapshot")
    (data / "thing").unlink()
    (data / "thing").mkdir()
    subprocess.run(["btrfs", "subvolume", "create", str(data / "thing" / "nested")], check=True, capture_output=True)
    for extra in ((), ("--dry-run",)):
        proc = homelab.cli("restore", "data", "thing", "--at", "1", "--overwrite", *extra, check=False)
        assert proc.returncode == 1 and "subvolume or mount" in proc.stderr, proc.stderr
    assert adapter.is_subvolume(data / "thing" / "nested")


def test_local_restore_at_a_uuid_tells_apart_snapshots_of_one_second(homelab):
    f = homelab.paths["home"] / "user" / "notes.txt"
    homelab.cli("snapshot")
    f.write_text("second\n")
    homelab.cli("snapshot", "--force")
    snaps = homelab.paths["home"] / ".snapshots"
    first = adapter.show(snaps / "1" / "snapshot").uuid
    homelab.cli("restore", "home", "user/notes.txt", "--at", first[:8], "--overwrite")
    assert f.read_text() == "remember the drill\n"
    bad = homelab.cli("restore", "home", "--at", "someday", check=False)
    assert bad.returncode == 2 and "not a snapshot number, uuid or time" in bad.stderr


def test_restore_into_a_symlink_to_a_directory_restores_into_that_directory(homelab, tmp_path):
    homelab.cli("snapshot")
    real = homelab.paths["var_tmp"] / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    homelab.cli("restore", "home", "--into", str(link))
    assert link.is_symlink() and (real / "user" / "notes.txt").read_text() == "remember the drill\n"
