"""Disaster recovery on the layouts a real machine has, driven by `subvault run` with [dr] configured.

- A drill right after the first `run` passes: its verdict depends only on whether the
  backups are good, whatever nested subvolumes the machine has (snapshot containers,
  container layers, a nested protected one, a nested excluded one, one made after the
  capture).
- A btrfs on a whole, unpartitioned disk is captured, drilled and restored.
- A btrfs spanning several devices is left out of the capture with one line saying what
  to do; `run` does not end partial because of it.

Real loop devices and mounts; every one made here is undone in `finally`, pass or fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from subvault import process
from subvault.btrfs import adapter, local_scan
from subvault.demo.machine import NO_CACHE, Machine, machine_config
from subvault.demo.testbed import PROTECTED, build_homelab
from subvault.dr.digest import tree_digest
from subvault.dr.workspace import Workspace


def _dr_table(m, drill_dir: Path, disks: list[str]) -> str:
    listed = ", ".join(f'"{d}"' for d in disks)
    return (f'\n[dr]\ncapture_dir = "{m.capture_dir}"\ndisks = [{listed}]\nfstab = "{m.fstab}"\n'
            f'boot_dirs = []\ndrill_dir = "{drill_dir}"\n')


def _drill(cli, tmp_path: Path, *extra: str) -> dict:
    res = cli("drill", "--from", "pi", "--workdir", str(tmp_path / "drill"), "--json", *extra, check=False)
    assert res.stdout, res.stderr
    return json.loads(res.stdout)["result"]


def _failed(report: dict) -> list:
    return [c for c in report["checks"] if not c["ok"]]


def _pi_entry(pi, sub: str) -> Path:
    return max(pi.mountpoint.glob(f"*/{sub}/{sub}.*"), key=lambda p: p.name)


# ---- the drill right after the first run, with every kind of nested subvolume

@pytest.fixture
def machine(tmp_path):
    """The GPT machine, its first partition made swap: [dr] boot_dirs names directories only, and
    an ESP left out would (rightly) be a plan warning that fails every drill here."""
    m = Machine(tmp_path)
    try:
        m.build()
        process.run(["mkswap", "-q", m.esp], env=NO_CACHE)
        swap = m.uuid(m.esp)
        m.fstab.write_text("\n".join(
            f"UUID={swap} none swap defaults 0 0" if "/boot/efi" in line else line for line in m.fstab.read_text().splitlines()
        ) + "\n")
        yield m
    finally:
        m.close()


def _nest(m: Machine) -> dict[str, Path]:
    """Add the nested subvolumes a real machine has; return the nested protected and excluded ones."""
    layers = m.paths["var_lib_containers"] / "storage" / "btrfs" / "subvolumes"
    layers.mkdir(parents=True)
    adapter.create_subvolume(layers / "l1")  # a Podman/Docker layer: a writable nested subvolume
    (layers / "l1" / "bin").mkdir()
    (layers / "l1" / "bin" / "sh").write_bytes(b"\x7fELF layer")
    adapter.snapshot(layers / "l1", layers / "l2", readonly=True)  # a read-only layer
    srv = m.paths["data"] / "srv"
    adapter.create_subvolume(srv)  # nested, protected on its own
    (srv / "www").mkdir()
    (srv / "www" / "index.html").write_text("hello\n")
    scratch = m.paths["var"] / "scratch"
    adapter.create_subvolume(scratch)  # nested, excluded
    (scratch / "junk").write_text("x\n")
    return {"srv": srv, "scratch": scratch}


def test_drill_right_after_the_first_run_passes(machine, make_fs, tmp_path):
    pi = make_fs("pi", size="2G")
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(machine_config(machine, pi.mountpoint, tmp_path / "state") + _dr_table(machine, tmp_path / "drill", [str(machine.image)]))

    def cli(*args, check=True):
        return run_cli("--config", str(cfg), *args, check=check)

    cli("run")
    captured = json.loads((machine.capture_dir / "latest" / "manifest.json").read_text())["btrfs"][0]["subvolumes"]
    assert {f"{n}/.snapshots" for n in PROTECTED} <= {s["path"] for s in captured}  # the layout this run leaves
    report = _drill(cli, tmp_path)
    assert report["ok"], _failed(report)
    assert {f"content {n}" for n in PROTECTED} <= {c["name"] for c in report["checks"]}


def test_drill_passes_with_every_kind_of_nested_subvolume(machine, make_fs, tmp_path):
    pi = make_fs("pi", size="2G")
    nested = _nest(machine)
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(
        machine_config(machine, pi.mountpoint, tmp_path / "state")
        + f'\n[[subvolume]]\nname = "data_srv"\npath = "{nested["srv"]}"\n'
        + f'\n[[exclude]]\npath = "{nested["scratch"]}"\nreason = "scratch space"\n'
        + _dr_table(machine, tmp_path / "drill", [str(machine.image)])
    )

    def cli(*args, check=True):
        return run_cli("--config", str(cfg), *args, check=check)

    cli("run")
    report = _drill(cli, tmp_path)
    assert report["ok"], _failed(report)
    assert "content data_srv" in {c["name"] for c in report["checks"]}

    # A nested subvolume made after the capture: the next snapshot holds its placeholder, the capture does not.
    adapter.create_subvolume(machine.paths["home"] / "later")
    (machine.paths["home"] / "later" / "f").write_text("after\n")
    cli("snapshot", "--force")
    cli("replicate")
    report = _drill(cli, tmp_path)
    assert report["ok"], _failed(report)


def test_content_check_still_catches_a_damaged_backup_beside_a_nested_subvolume(machine, make_fs, tmp_path):
    """Leaving nested subvolumes out must not blind the check: a changed file next to one still fails it."""
    pi = make_fs("pi", size="2G")
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(machine_config(machine, pi.mountpoint, tmp_path / "state") + _dr_table(machine, tmp_path / "drill", [str(machine.image)]))

    def cli(*args, check=True):
        return run_cli("--config", str(cfg), *args, check=check)

    cli("run")
    sent = adapter.show(_pi_entry(pi, "home")).received_uuid
    source = Path(next(s.path for s in local_scan.scan("home", machine.paths["home"], with_uuids=True) if s.uuid == sent))
    process.run(["btrfs", "property", "set", "-ts", str(source), "ro", "false"])
    (source / "user" / "notes.txt").write_text("tampered\n")
    process.run(["btrfs", "property", "set", "-ts", str(source), "ro", "true"])
    report = _drill(cli, tmp_path)
    home = next(c for c in report["checks"] if c["name"] == "content home")
    assert not report["ok"] and not home["ok"] and "user/notes.txt" in home["detail"], home
    assert all(c["ok"] for c in report["checks"] if c["name"].startswith("content ") and c["name"] != "content home")


# ---- a btrfs on a whole, unpartitioned disk

class WholeDisk:
    """A machine whose btrfs fills an unpartitioned disk (here an image on a whole-image loop device)."""

    def __init__(self, tmp: Path, size_mib: int = 1280) -> None:
        self.tmp, self.image, self.size = tmp, tmp / "data.img", size_mib << 20
        self.ws = Workspace(tmp / "whole")

    def build(self) -> WholeDisk:
        with open(self.image, "wb") as fh:
            fh.truncate(self.size)
        process.run(["mkfs.btrfs", "-q", "-f", "-L", "data", str(self.image)], env=NO_CACHE)
        self.mount()
        self.paths = build_homelab(self.top)
        adapter.set_default(adapter.show(self.paths["root"]).id, self.top)
        self.uuid = adapter.filesystem_uuid(self.top)
        self.fstab = self.paths["root"] / "etc" / "fstab"
        # A data disk: the machine's root is elsewhere, on a disk this capture does not hold.
        self.fstab.write_text(f"UUID={self.uuid} /srv btrfs subvol=data 0 0\nUUID={self.uuid} /var/lib/pvc btrfs subvol=var_lib_pvc 0 0\n")
        return self

    def mount(self) -> None:
        self.ws.root.mkdir(parents=True, exist_ok=True)
        self.dev = self.ws.attach(str(self.image), 0, self.size)
        self.top = self.ws.mount(self.dev, "top", "btrfs", "subvolid=5")

    @property
    def capture_dir(self) -> Path:
        return self.paths["var"] / "lib" / "subvault" / "dr"

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def whole(tmp_path):
    w = WholeDisk(tmp_path)
    try:
        yield w.build()
    finally:
        w.close()


def test_whole_disk_btrfs_is_captured_drilled_and_restored(whole, make_fs, tmp_path):
    pi = make_fs("pi", size="2G")
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(machine_config(whole, pi.mountpoint, tmp_path / "state") + _dr_table(whole, tmp_path / "drill", []))

    def cli(*args, check=True):
        return run_cli("--config", str(cfg), *args, check=check)

    done = cli("run", "--json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr  # the disk is found under the subvolumes and captured
    manifest = json.loads((whole.capture_dir / "latest" / "manifest.json").read_text())
    assert [(f["type"], f["uuid"]) for f in manifest["filesystems"]] == [("btrfs", whole.uuid)]
    assert manifest["disks"][0]["table"]["label"] == "none"

    report = _drill(cli, tmp_path)
    assert report["ok"], _failed(report)
    names = {c["name"] for c in report["checks"]}
    assert {f"content {n}" for n in PROTECTED} | {f"partition table {manifest['disks'][0]['name']}"} <= names

    expected = {}
    for n in PROTECTED:
        sent = adapter.show(_pi_entry(pi, n)).received_uuid
        expected[n] = tree_digest(next(s.path for s in local_scan.scan(n, whole.paths[n], with_uuids=True) if s.uuid == sent)).digest
    whole.close()
    with open(whole.image, "r+b") as fh:  # a new disk: zeroed, and with a stale GPT on it
        fh.truncate(0)
        fh.truncate(whole.size)
    process.run(["sfdisk", "-q", str(whole.image)], input="label: gpt\n,,\n")
    cli("dr", "restore", "--from", "pi", "--disk", str(whole.image), "--yes")
    assert process.run(["sfdisk", "--dump", str(whole.image)], check=False).returncode != 0  # no table: the fs fills the disk
    whole.mount()
    assert adapter.filesystem_uuid(whole.top) == whole.uuid
    for n in PROTECTED:
        assert tree_digest(whole.top / n).digest == expected[n], n
    again = cli("dr", "restore", "--from", "pi", "--disk", str(whole.image), "--yes", "--json", check=False)
    assert again.returncode != 0 and "in use" in again.stderr  # mounted again: refused, nothing touched
    whole.close()
    again = cli("dr", "restore", "--from", "pi", "--disk", str(whole.image), "--yes", "--json")
    redone = [i["detail"] for i in json.loads(again.stdout)["result"]["items"] if "already" not in i["detail"]]
    assert not any(d.startswith(("partition", "mkfs", "receive")) for d in redone), redone  # resumable


# ---- a btrfs on several devices

@pytest.fixture
def multi(tmp_path):
    ws = Workspace(tmp_path / "multi")
    ws.root.mkdir(parents=True)
    try:
        devs = []
        for i in (1, 2):
            img = tmp_path / f"m{i}.img"
            with open(img, "wb") as fh:
                fh.truncate(768 << 20)
            devs.append(ws.attach(str(img), 0, 768 << 20))
        process.run(["mkfs.btrfs", "-q", "-f", "-d", "single", "-m", "raid1", *devs], env=NO_CACHE)
        top = ws.mount(devs[0], "top", "btrfs", "subvolid=5")
        yield ws, top, devs
    finally:
        ws.close()


def _multi_config(top: Path, pi, tmp_path: Path) -> Path:
    for name in ("root", "var"):
        adapter.create_subvolume(top / name)
    (top / "root" / "etc").mkdir()
    (top / "root" / "etc" / "fstab").write_text("UUID=x / btrfs subvol=root 0 0\n")
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(
        f'[defaults]\ntimeline = "24h"\nstate_dir = "{tmp_path / "state"}"\ntargets = ["pi"]\n\n'
        f'[[subvolume]]\nname = "root"\npath = "{top / "root"}"\n\n[[subvolume]]\nname = "var"\npath = "{top / "var"}"\n\n'
        f'[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "{pi.mountpoint}"\nkeep = "all"\n\n'
        f'[dr]\ncapture_dir = "{top / "var" / "lib" / "subvault" / "dr"}"\nfstab = "{top / "root" / "etc" / "fstab"}"\nboot_dirs = []\n'
    )
    return cfg


def test_multi_device_btrfs_is_refused_in_one_line_and_run_is_not_partial(multi, make_fs, tmp_path):
    ws, top, devs = multi
    pi = make_fs("pi", size="1G")
    cfg = _multi_config(top, pi, tmp_path)

    capture = run_cli("--config", str(cfg), "dr", "capture", check=False)
    assert capture.returncode == 1, capture.stdout + capture.stderr
    lines = [ln for ln in (capture.stdout + capture.stderr).splitlines() if "2 devices" in ln]
    assert len(lines) == 1 and "subvault restore" in lines[0], capture.stdout + capture.stderr
    uuid = adapter.filesystem_uuid(top)
    assert f"mkfs.btrfs -U {uuid} -d single -m raid1 DEVICE…" in lines[0] and all(d in lines[0] for d in devs)

    done = run_cli("--config", str(cfg), "run", check=False)
    assert done.returncode == 0, done.stdout + done.stderr  # snapshots and replication are done; the capture is a warning
    assert "2 devices" in done.stdout + done.stderr


def test_multi_device_btrfs_beside_a_captured_disk_is_left_out_and_the_rest_drills(whole, multi, make_fs, tmp_path):
    _, top, _ = multi
    adapter.create_subvolume(top / "pool")
    (top / "pool" / "photo.jpg").write_bytes(b"\xff\xd8 photo")
    pi = make_fs("pi", size="2G")
    cfg = tmp_path / "subvault.toml"
    cfg.write_text(machine_config(whole, pi.mountpoint, tmp_path / "state")
                   + f'\n[[subvolume]]\nname = "pool"\npath = "{top / "pool"}"\n' + _dr_table(whole, tmp_path / "drill", []))

    def cli(*args, check=True):
        return run_cli("--config", str(cfg), *args, check=check)

    done = cli("run", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "spans 2 devices" in done.stdout + done.stderr
    manifest = json.loads((whole.capture_dir / "latest" / "manifest.json").read_text())
    assert [f["uuid"] for f in manifest["filesystems"]] == [whole.uuid]
    assert "pool" not in {p["name"] for p in manifest["protected"]}
    assert _pi_entry(pi, "pool").is_dir()  # the pool is still replicated: only the capture leaves it out
    report = _drill(cli, tmp_path)
    assert report["ok"], _failed(report)
