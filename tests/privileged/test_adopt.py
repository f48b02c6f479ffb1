"""`subvault adopt` takes over a real snapper + btrbk installation (issue 16).

Real snapper and real btrbk (the Debian packages) build the history on loop
filesystems in the homelab layout: snapper timeline and number snapshots, and several
`btrbk run`s to a local disk and to a "Pi" over a real sshd on 127.0.0.1, each run's
snapshot and its copies renamed to an earlier time as btrbk would have named them.
Then `adopt --apply` and `subvault run`. Everything that edits /etc or systemd is
pointed at a root under tmp_path (`--root`, as `snapper --root`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import run_cli
from sshd import sshd  # noqa: F401 - fixture

from subvault.adopt.btrbk_conf import format_snapshot_name, parse_snapshot_name
from subvault.btrfs import adapter, local
from subvault.btrfs.snapper import parse_info, render_info, write_atomic
from subvault.demo.testbed import LoopFs, build_homelab
from subvault.timeutil import local_zone

pytestmark = pytest.mark.skipif(
    (shutil.which("snapper") is None or shutil.which("btrbk") is None) and os.environ.get("SUBVAULT_REQUIRE_PRIVILEGED") != "1",
    reason="snapper or btrbk not installed",
)

SNAPPER_SUBS = ("root", "var_lib_pvc")
BTRBK_SUBS = ("root", "var_lib_pvc", "var_lib_microshift")
DAYS = (4, 3, 2, 1)  # simulated btrbk runs, days ago; the last run was an hour ago
TZ = local_zone(None)


class Installation:
    def __init__(self, tmp_path: Path, sshd):
        self.tmp = tmp_path
        self.root = tmp_path / "root"
        self.pool = self.root / "mnt" / "pool"
        self.sshd = sshd
        self.filesystems: list[LoopFs] = []
        self.bin = tmp_path / "bin"

    def fs(self, name: str, mountpoint: Path) -> LoopFs:
        fs = LoopFs(image=self.tmp / f"{name}.img", mountpoint=mountpoint, size="1G")
        self.filesystems.append(fs)
        return fs.create()

    def close(self) -> None:
        for fs in reversed(self.filesystems):
            fs.close()

    # -- snapper -------------------------------------------------------------------
    def snapper(self, config: str, *args: str) -> str:
        return subprocess.run(["snapper", "--no-dbus", "--root", str(self.root), "-c", config, *args],
                              capture_output=True, text=True, check=True).stdout

    def snapper_config(self, name: str) -> Path:
        return self.root / "etc/snapper/configs" / name

    # -- btrbk ---------------------------------------------------------------------
    def btrbk(self, *args: str) -> str:
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        proc = subprocess.run(["btrbk", "-c", str(self.btrbk_conf), *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout


@pytest.fixture
def installation(tmp_path, sshd):  # noqa: F811
    inst = Installation(tmp_path, sshd)
    try:
        _build(inst)
        yield inst
    finally:
        inst.close()


def _build(inst: Installation) -> None:
    inst.fs("src", inst.pool)
    paths = build_homelab(inst.pool)
    inst.usb = inst.fs("usb", inst.tmp / "usb").mountpoint / "btrbk"
    inst.pi = inst.fs("pi", inst.tmp / "pi").mountpoint / "backup"
    inst.usb.mkdir()
    inst.pi.mkdir()
    # snapper: configs under the root, SUBVOLUME inside it (as `snapper --root` reads them)
    (inst.root / "etc/snapper/configs").mkdir(parents=True)
    for name in SNAPPER_SUBS:
        adapter.create_subvolume(paths[name] / ".snapshots")
        inst.snapper_config(name).write_text(
            f'SUBVOLUME="/mnt/pool/{name}"\nFSTYPE="btrfs"\nNUMBER_CLEANUP="yes"\nNUMBER_LIMIT="50"\n'
            'TIMELINE_CREATE="yes"\nTIMELINE_CLEANUP="yes"\nTIMELINE_MIN_AGE="1800"\n'
            'TIMELINE_LIMIT_HOURLY="24"\nTIMELINE_LIMIT_DAILY="7"\nTIMELINE_LIMIT_WEEKLY="4"\n'
            'TIMELINE_LIMIT_MONTHLY="0"\nTIMELINE_LIMIT_YEARLY="0"\n'
        )
    now = datetime.now(UTC)
    for name in SNAPPER_SUBS:
        for hours in (5, 4, 3, 2):
            (paths[name] / "snapper-hour.txt").write_text(f"{hours}h ago\n")
            inst.snapper(name, "create", "--cleanup-algorithm", "timeline", "--description", "timeline")
            _redate_newest(paths[name], now - timedelta(hours=hours))
        inst.snapper(name, "create", "--cleanup-algorithm", "number", "--description", "vor-flux-update-20261126-030000")
    # btrbk: the post's settings, to a local disk and to the Pi over ssh
    inst.bin.mkdir()
    (inst.bin / "ssh").write_text(
        "#!/bin/sh\n"  # btrbk has no ssh -o option; this stands in for root's ~/.ssh/config
        f"exec /usr/bin/ssh -o UserKnownHostsFile={inst.sshd.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes \"$@\"\n"
    )
    (inst.bin / "ssh").chmod(0o755)
    inst.btrbk_conf = inst.tmp / "btrbk.conf"
    inst.btrbk_conf.write_text(
        "timestamp_format        long\n"
        "snapshot_preserve_min   latest\n"
        "snapshot_preserve       no\n"
        "target_preserve_min     no\n"
        "target_preserve         24h 8d 5w\n"
        "stream_compress         zstd\n"
        f"ssh_identity            {inst.sshd.client_key}\n"
        "ssh_user                root\n"
        f"volume {inst.pool}\n"
        "  snapshot_dir btrbk_snapshots\n"
        f"  target send-receive {inst.usb}\n"
        f"  target send-receive ssh://127.0.0.1:{inst.sshd.port}{inst.pi}\n"
        + "".join(f"  subvolume {name}\n" for name in BTRBK_SUBS)
    )
    (inst.pool / "btrbk_snapshots").mkdir()
    for days in DAYS:
        for name in BTRBK_SUBS:
            (paths[name] / "btrbk-day.txt").write_text(f"{days} days ago\n")
        inst.btrbk("run")
        when = now - timedelta(days=days - 1, hours=1) if days == 1 else now - timedelta(days=days)
        _redate_btrbk_run(inst, when)
    # btrbk's schedule: its Debian timer enabled under the root, and a cron line
    units = inst.root / "lib/systemd/system"
    units.mkdir(parents=True)
    for unit in ("btrbk.timer", "btrbk.service"):
        shutil.copy(f"/lib/systemd/system/{unit}", units / unit)
    subprocess.run(["systemctl", f"--root={inst.root}", "enable", "btrbk.timer"], check=True, capture_output=True)
    (inst.root / "etc/cron.d").mkdir(parents=True)
    (inst.root / "etc/cron.d/btrbk").write_text("# btrbk hourly\n17 * * * * root /usr/bin/btrbk -q run\n")
    inst.paths = paths


def _redate_newest(sub: Path, when: datetime) -> None:
    """Give snapper's newest snapshot an earlier date, as if the timeline had made it then."""
    num = max(local.scan("x", sub, with_uuids=False), key=lambda s: s.number).number
    info_path = sub / ".snapshots" / str(num) / "info.xml"
    info = parse_info(info_path.read_text())
    write_atomic(info_path, render_info(type(info)(info.num, when, info.description, info.cleanup, info.type, info.userdata)))


def _redate_btrbk_run(inst: Installation, when: datetime) -> None:
    """Rename the snapshots btrbk made just now, and their copies on both targets, to `when` (btrbk's long format)."""
    for d in (inst.pool / "btrbk_snapshots", inst.usb, inst.pi):
        for entry in sorted(d.iterdir()):
            parsed = parse_snapshot_name(entry.name, TZ)
            if parsed and parsed[1] > when:
                entry.rename(d / format_snapshot_name(parsed[0], when, "long", TZ))


def _uuids(*mounts: Path) -> dict[str, str]:
    """uuid -> path of every subvolume on the filesystems mounted at mounts."""
    return {s.uuid: s.path for m in mounts for s in adapter.list_subvolumes(m)}


def _adopt(inst: Installation, config: Path, *args: str, check: bool = True):
    opts = [f"UserKnownHostsFile={inst.sshd.known_hosts}", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes"]
    ssh = [x for o in opts for x in ("--ssh-option", o)]
    return run_cli("--config", str(config), "adopt", "--root", str(inst.root), "--snapper", "--btrbk", str(inst.btrbk_conf),
                   *ssh, *args, check=check)


def test_adopt_apply_then_run_sends_incrementally_and_loses_no_history(installation, tmp_path):
    inst = installation
    config = tmp_path / "subvault.toml"
    mounts = (inst.pool, inst.usb.parent, inst.pi.parent)
    before = _uuids(*mounts)
    snapper_before = {n: inst.snapper(n, "--csvout", "list", "--columns", "number,description") for n in SNAPPER_SUBS}
    btrbk_entries = {d: sorted(p.name for p in d.iterdir()) for d in (inst.usb, inst.pi)}
    assert all(len(v) >= len(BTRBK_SUBS) * len(DAYS) for v in btrbk_entries.values()), btrbk_entries

    # Without --apply: the config and the exact hand-over commands, nothing changed.
    shown = _adopt(inst, config, "--write", str(config))
    assert f"snapper --no-dbus --root {inst.root} -c var_lib_pvc set-config TIMELINE_CREATE=no" in shown.stdout
    assert "systemctl disable --now btrbk.timer" in shown.stdout and "etc/cron.d/btrbk" in shown.stdout
    assert "SUBVAULT_CONFIG=" in shown.stdout
    assert _uuids(*mounts).keys() == before.keys()
    env = {"SUBVAULT_SYSROOT": str(inst.root)}
    check = run_cli("--config", str(config), "check", "--json", check=False, env=env)
    overlap = [p for p in json.loads(check.stdout)["result"]["problems"] if p["kind"] == "neighbour"]
    assert {Path(p["subject"]).name for p in overlap} == set(SNAPPER_SUBS), check.stdout

    applied = _adopt(inst, config, "--apply")
    assert "error" not in applied.stderr, applied.stdout + applied.stderr
    check = run_cli("--config", str(config), "check", "--json", check=False, env=env)
    assert not [p for p in json.loads(check.stdout)["result"]["problems"] if p["kind"] == "neighbour"], check.stdout

    run = run_cli("--config", str(config), "run", "--json", check=False, env=env)
    result = json.loads(run.stdout)["result"]
    sent = [i for i in result["items"] if i["action"] == "sent"]
    assert sent and not [i for i in sent if i["data"]["full"]], run.stdout + run.stderr
    assert {i["subject"] for i in sent} == {f"{s}→{t}" for s in BTRBK_SUBS for t in ("btrbk", "127")}, run.stdout
    assert not result["errors"], result["errors"]

    # Every snapshot and target entry that existed before is still there (by uuid: renames keep it).
    after = _uuids(*mounts)
    assert before.keys() <= after.keys(), sorted(set(before) - set(after))
    # snapper still lists its history, numbers unchanged, now subvault's to prune.
    for n in SNAPPER_SUBS:
        listed = inst.snapper(n, "--csvout", "list", "--columns", "number,description")
        assert set(snapper_before[n].splitlines()) <= set(listed.splitlines())
        conf = inst.snapper_config(n).read_text()
        assert 'TIMELINE_CREATE="no"' in conf and 'TIMELINE_CLEANUP="no"' in conf and 'NUMBER_CLEANUP="no"' in conf
    wants = inst.root / "etc/systemd/system/timers.target.wants"
    assert not os.path.lexists(wants / "btrbk.timer") and os.path.lexists(wants / "subvault-run.timer")
    assert "# disabled by subvault adopt: 17 * * * *" in (inst.root / "etc/cron.d/btrbk").read_text()

    # restore --from each target, from an entry btrbk made four days ago.
    for target in ("btrbk", "127"):
        into = inst.pool / f"restored-{target}"
        into.mkdir()
        at = (datetime.now(UTC) - timedelta(days=3, hours=12)).astimezone(TZ).strftime("%Y-%m-%dT%H:%M")
        run_cli("--config", str(config), "restore", "var_lib_pvc", "--from", target, "--at", at, "--into", str(into), env=env)
        assert (into / "var_lib_pvc" / "btrbk-day.txt").read_text() == "4 days ago\n"

    # A second adopt --apply finds everything done and changes nothing.
    again = _adopt(inst, config, "--apply", check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert before.keys() <= _uuids(*mounts).keys()


def test_target_btrbk_reached_with_options_ssh_config_lacks_is_one_line_naming_file_and_line(installation, tmp_path):
    inst = installation
    proc = run_cli("--config", str(tmp_path / "s.toml"), "adopt", "--root", str(inst.root), "--btrbk", str(inst.btrbk_conf),
                   check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    target_line = next(n for n, line in enumerate(inst.btrbk_conf.read_text().splitlines(), 1) if "ssh://" in line)
    assert len(lines) == 1 and f"{inst.btrbk_conf}:{target_line}:" in lines[0] and "--ssh-option" in lines[0], proc.stderr


def test_snapper_config_for_a_non_btrfs_path_is_one_line_naming_file_and_line(installation, tmp_path):
    inst = installation
    plain = tmp_path / "root" / "srv"
    plain.mkdir()
    bad = inst.snapper_config("srv")
    bad.write_text('FSTYPE="btrfs"\nSUBVOLUME="/srv"\n')
    proc = run_cli("--config", str(tmp_path / "s.toml"), "adopt", "--root", str(inst.root), "--snapper", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {bad}:2: SUBVOLUME=\"/srv\" ({plain}) is not on btrfs; subvault adopts btrfs configs only"] or \
        f"{bad}:2:" in proc.stderr, proc.stderr
