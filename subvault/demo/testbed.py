"""Throwaway btrfs filesystems on sparse files, for `subvault demo` and the test suite.

Rules:
- Every loop device and mount made here is undone by `LoopFs.close()`, which never
  raises and is safe to call twice; use it as a context manager.
- The homelab layout is the one from the user's post: eight protected subvolumes and
  three excluded ones, each a top-level subvolume.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from subvault import process
from subvault.btrfs.mounts import mounts_now
from subvault.errors import CommandFailed
from subvault.plan.coverage import is_at_or_under, norm_path

PROTECTED = ["root", "var_lib_pvc", "var_lib_microshift", "data", "home", "var", "var_log", "var_lib_containers"]
EXCLUDED = {"var_cache": "ephemeral", "var_tmp": "ephemeral", "var_lib_kubelet": "rebuilt by the kubelet"}


@dataclass
class LoopFs:
    """A btrfs filesystem on a sparse file, loop-attached and mounted."""

    image: Path
    mountpoint: Path
    size: str = "1G"
    label: str = "subvault-test"
    device: str | None = None
    mkfs_args: list[str] = field(default_factory=list)

    def create(self) -> LoopFs:
        self.image.parent.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as fh:
            fh.truncate(_bytes(self.size))
        try:
            process.run(["mkfs.btrfs", "-q", "-f", "-L", self.label, *self.mkfs_args, str(self.image)], what="mkfs.btrfs")
            self.device = process.run(["losetup", "--find", "--show", str(self.image)], what="losetup").stdout.strip()
            process.run(["mount", "-t", "btrfs", self.device, str(self.mountpoint)], what="mount")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Unmount (recursively) and detach; never raises."""
        if self.mountpoint.exists():
            for _ in range(3):
                res = process.run(["umount", "-R", str(self.mountpoint)], check=False)
                if res.returncode != 0 or not os.path.ismount(self.mountpoint):
                    break
            if os.path.ismount(self.mountpoint):
                process.run(["umount", "-R", "-l", str(self.mountpoint)], check=False)
        if self.device:
            process.run(["losetup", "-d", self.device], check=False)
            self.device = None
        else:
            # mkfs or losetup may have failed half-way: detach anything bound to the image.
            out = process.run(["losetup", "-j", str(self.image)], check=False).stdout
            for line in out.splitlines():
                dev = line.split(":", 1)[0]
                if dev:
                    process.run(["losetup", "-d", dev], check=False)

    def __enter__(self) -> LoopFs:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bytes(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    size = size.strip().upper()
    if size[-1] in units:
        return int(float(size[:-1]) * units[size[-1]])
    return int(size)


def build_homelab(mnt: Path, *, data_mib: int = 1) -> dict[str, Path]:
    """Create the homelab post's subvolumes under mnt with a little sample data.

    Return name -> path for all eleven subvolumes.
    """
    paths: dict[str, Path] = {}
    for name in PROTECTED + list(EXCLUDED):
        path = mnt / name
        process.run(["btrfs", "subvolume", "create", str(path)], what="create subvolume")
        paths[name] = path
    _sample_data(paths, data_mib)
    return paths


def _sample_data(paths: dict[str, Path], data_mib: int) -> None:
    (paths["root"] / "etc").mkdir()
    (paths["root"] / "etc" / "hostname").write_text("vps1\n")
    (paths["root"] / "etc" / "fstab").write_text("UUID=0000 / btrfs defaults 0 0\n")
    pvc = paths["var_lib_pvc"] / "nextcloud"
    pvc.mkdir()
    (pvc / "config.php").write_text("<?php $CONFIG = array('instanceid' => 'demo');\n")
    with open(pvc / "blob.bin", "wb") as fh:
        fh.write(os.urandom(data_mib << 20))
    (paths["var_lib_microshift"] / "etcd").mkdir()
    (paths["var_lib_microshift"] / "etcd" / "member.db").write_bytes(os.urandom(64 << 10))
    (paths["data"] / "gitops").mkdir()
    (paths["data"] / "gitops" / "kustomization.yaml").write_text("resources: []\n")
    (paths["home"] / "user").mkdir()
    (paths["home"] / "user" / "notes.txt").write_text("remember the drill\n")
    (paths["var"] / "lib").mkdir()
    (paths["var_log"] / "messages").write_text("boot ok\n")
    (paths["var_lib_containers"] / "storage").mkdir()
    (paths["var_cache"] / "dnf").mkdir()


def homelab_config(paths: dict[str, Path], *, state_dir: Path, timeline: str = "24h 7d 4w", extra: str = "") -> str:
    """Return a subvault.toml for the homelab layout at paths."""
    lines = [
        "[defaults]",
        f'timeline = "{timeline}"',
        "prechange_keep = 10",
        f'state_dir = "{state_dir}"',
        "",
    ]
    for name in PROTECTED:
        lines += ["[[subvolume]]", f'name = "{name}"', f'path = "{paths[name]}"', ""]
    for name, reason in EXCLUDED.items():
        lines += ["[[exclude]]", f'path = "{paths[name]}"', f'reason = "{reason}"', ""]
    return "\n".join(lines) + extra


def foreign_filesystems(own: Path) -> dict[str, str]:
    """Return {uuid: a mount path} of every btrfs filesystem mounted now with no mount under `own`."""
    mounts, _ = mounts_now()
    mine = {m.fs_uuid for m in mounts if is_at_or_under(m.mount_path, norm_path(str(own)))}
    return {m.fs_uuid: m.mount_path for m in mounts if m.fs_uuid not in mine}


def exclude_foreign(own: Path) -> str:
    """Config text excluding every btrfs filesystem mounted outside `own` now.

    A demo or a test checks only what it made: the machine's own filesystems, and
    other tests' on a shared machine, are not its business.
    """
    lines = []
    for uuid, mount in sorted(foreign_filesystems(own).items()):
        lines += ["[[exclude]]", f'filesystem = "{uuid}"', f'reason = "not part of this test bed (mounted at {mount})"', ""]
    return "\n".join(lines)


def scratch_dir(prefix: str = "subvault-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


__all__ = ["LoopFs", "build_homelab", "homelab_config", "PROTECTED", "EXCLUDED", "CommandFailed"]
