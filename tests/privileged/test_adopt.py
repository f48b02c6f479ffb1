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
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import run_cli
from sshd import sshd  # noqa: F401 - fixture

from subvault.adopt.btrbk_conf import format_snapshot_name, parse_snapshot_name
from subvault.btrfs import adapter, local_scan
from subvault.btrfs.snapdir import write_atomic
from subvault.btrfs.snapper import parse_info, render_info
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
    num = max(local_scan.scan("x", sub, with_uuids=False), key=lambda s: s.number).number
    info_path = sub / ".snapshots" / str(num) / "info.xml"
    info = parse_info(info_path.read_text())
    write_atomic(info_path, render_info(type(info)(info.num, when, info.description, info.cleanup, info.type, info.userdata)))


def _redate_btrbk_run(inst: Installation, when: datetime) -> None:
    """Rename the snapshots btrbk made just now, and their copies on both targets, to `when` (btrbk's long format)."""
    for d in (inst.pool / "btrbk_snapshots", inst.usb, getattr(inst, "pi", None)):
        if d is None:
            continue
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


def _state(inst: Installation) -> dict[str, object]:
    """Everything adopt could change: every file under the root (the pool, /etc, systemd, cron),
    btrbk.conf, and every subvolume on the three filesystems with its flags."""
    files: dict[str, object] = {"btrbk.conf": inst.btrbk_conf.read_bytes()}
    for top, dirs, names in os.walk(inst.root):
        for n in dirs + names:
            p = Path(top) / n
            if p.is_symlink():
                files[str(p)] = ("->", os.readlink(p))
            elif p.is_file():
                files[str(p)] = (p.stat().st_mode, p.read_bytes())
            else:
                files[str(p)] = p.stat().st_mode
    for m in (inst.pool, inst.usb.parent, inst.pi.parent):
        for s in adapter.list_subvolumes(m):
            files[f"{m}//{s.path}"] = (s.uuid, s.received_uuid, s.readonly)
    return files


def test_adopt_dry_run_apply_changes_nothing_and_json_says_what_it_would_do(installation, tmp_path):
    inst = installation
    config, written = tmp_path / "subvault.toml", tmp_path / "written.toml"
    entries = {d: [p.name for p in d.iterdir()] for d in (inst.usb, inst.pi)}
    before = _state(inst)

    proc = _adopt(inst, config, "--apply", "--dry-run", "--json", "--write", str(written))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["command"], doc["exit_code"]) == ("adopt", 0)
    plan, outcome = doc["result"]["plan"], doc["result"]["outcome"]
    kinds: dict[str, int] = {}
    for a in plan["actions"]:
        kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
    assert kinds == {
        "disable-timer": 1, "disable-cron": 1, "snapper-config": len(SNAPPER_SUBS),
        "move-local": len(BTRBK_SUBS),  # btrbk kept only its latest snapshot of each
        "move-entry": sum(len(v) for v in entries.values()),
        "take-over": 5 * len(SNAPPER_SUBS),  # 4 timeline + 1 number snapshot each
        "install-timers": 1,
    }, kinds
    moved = {a["data"]["src"] for a in plan["actions"] if a["kind"] == "move-entry"}
    assert moved == {f"{d}/{n}" for d, names in entries.items() for n in names}
    assert {s["name"] for s in plan["subvolumes"]} == set(BTRBK_SUBS)
    assert {(t["name"], t["keep"], t["compress"]) for t in plan["targets"]} == {("btrbk", "25h 9d 6w", "none"), ("127", "25h 9d 6w", "zstd")}
    assert any("TIMELINE_MIN_AGE=1800" in line and "no equivalent" in line for line in plan["toml"].splitlines())
    from subvault.config.load import parse_config

    assert {s.name for s in parse_config(plan["toml"]).subvolume} == set(BTRBK_SUBS)
    assert outcome["dry_run"] is True and [(i["subject"], i["action"]) for i in outcome["items"]] == [(str(written), "would-write")]
    # --dry-run: no file written, no snapper or btrbk config touched, no timer, nothing moved.
    assert not written.exists() and not config.exists()
    assert _state(inst) == before

    # --json without --dry-run or --apply: the config is written, and only that.
    proc = _adopt(inst, config, "--json", "--write", str(written))
    doc = json.loads(proc.stdout)
    assert [(i["subject"], i["action"]) for i in doc["result"]["outcome"]["items"]] == [(str(written), "wrote")]
    assert written.read_text() == doc["result"]["plan"]["toml"] and written.stat().st_mode & 0o777 == 0o600
    assert _state(inst) == before


# kill -9 of `adopt --apply` right after a rename, before the flip back to read-only:
# "entry": the second target entry is in the staging container, still writable;
# "local": btrbk's first local snapshot is in .snapshots/N, still writable, its info.xml pending.
KILL_AT = """
import os, runpy, sys
from subvault.adopt import flip
real, calls = flip.set_readonly, []
def set_readonly(path, readonly):
    if readonly and {marker!r} in str(path):
        calls.append(path)
        if len(calls) == {nth}:
            os.kill(os.getpid(), 9)
    real(path, readonly)
flip.set_readonly = set_readonly
sys.argv = ["subvault", *{args!r}]
runpy.run_module("subvault.cli.main", run_name="__main__")
"""


@pytest.mark.parametrize("where, marker, nth", [("entry", "/.adopt-", 2), ("local", "/.snapshots/", 1)])
def test_adopt_apply_killed_mid_move_resumes_and_loses_nothing(installation, tmp_path, where, marker, nth):
    inst = installation
    config = tmp_path / "subvault.toml"
    mounts = (inst.pool, inst.usb.parent, inst.pi.parent)
    before = _uuids(*mounts)
    opts = [x for o in (f"UserKnownHostsFile={inst.sshd.known_hosts}", "StrictHostKeyChecking=yes", "IdentitiesOnly=yes")
            for x in ("--ssh-option", o)]
    args = ["--config", str(config), "adopt", "--root", str(inst.root), "--snapper", "--btrbk", str(inst.btrbk_conf), *opts, "--apply"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    killed = subprocess.run([sys.executable, "-c", KILL_AT.format(marker=marker, nth=nth, args=args)],
                            capture_output=True, text=True, env=env, cwd=Path(__file__).parents[2])
    assert killed.returncode == -9, killed.stdout + killed.stderr
    if where == "entry":
        staged = list(inst.usb.glob("*/.adopt-*/*")) + list(inst.pi.glob("*/.adopt-*/*"))
        assert len(staged) == nth and not all(adapter.show(p).readonly for p in staged), staged
    else:
        pending = [p for name in BTRBK_SUBS for p in (inst.pool / name / ".snapshots").glob("*/info.xml.adopt")]
        assert len(pending) == 1 and not adapter.show(pending[0].parent / "snapshot").readonly, pending
    assert before.keys() <= _uuids(*mounts).keys()  # nothing lost even now

    again = _adopt(inst, config, "--apply", check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    after = _uuids(*mounts)
    assert before.keys() <= after.keys(), sorted(set(before) - set(after))
    assert not list(inst.usb.glob("*/.adopt-*")) and not list(inst.pi.glob("*/.adopt-*"))
    assert not [p for name in BTRBK_SUBS for p in (inst.pool / name / ".snapshots").glob("*/info.xml.adopt")]
    for d in (inst.usb, inst.pi):
        assert not [p for p in d.iterdir() if parse_snapshot_name(p.name, TZ)], sorted(d.iterdir())  # all moved
        for entry in d.glob("*/*/*"):
            shown = adapter.show(entry)
            assert shown.readonly and shown.received_uuid, entry
    # ... and the result is what a later run understands: every send incremental.
    run = run_cli("--config", str(config), "run", "--json", check=False, env={"SUBVAULT_SYSROOT": str(inst.root)})
    result = json.loads(run.stdout)["result"]
    sent = [i for i in result["items"] if i["action"] == "sent"]
    assert len(sent) == 2 * len(BTRBK_SUBS) and not [i for i in sent if i["data"]["full"]], run.stdout + run.stderr
    assert not result["errors"], result["errors"]


def test_ssh_target_without_python3_is_refused_up_front_naming_the_target_and_what_to_install(tmp_path):
    """The entries on an ssh target move with a few lines of python3 there (flip.py); without it,
    --apply says so in one line before it changes anything."""
    from subvault.demo.testbed_ssh import Sshd

    no_python = tmp_path / "bin-no-python3"
    no_python.mkdir()
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for tool in sorted(Path(d).iterdir()) if Path(d).is_dir() else []:
            if not tool.name.startswith("python") and not (no_python / tool.name).exists():
                (no_python / tool.name).symlink_to(tool)
    home = tmp_path / "home"  # root's ~/.bashrc here would put pyenv's python3 back on PATH
    home.mkdir()
    server = Sshd(tmp_path / "sshd", env={"PATH": str(no_python), "HOME": str(home)}).start()
    root = tmp_path / "root"
    fss = [LoopFs(tmp_path / "src.img", root / "mnt" / "pool").create(), LoopFs(tmp_path / "pi.img", tmp_path / "pi").create()]
    try:
        pool, pi = fss[0].mountpoint, fss[1].mountpoint / "backup"
        pi.mkdir()
        adapter.create_subvolume(pool / "data")
        (pool / "btrbk_snapshots").mkdir()
        name = format_snapshot_name("data", datetime.now(UTC) - timedelta(hours=1), "long", TZ)
        adapter.snapshot(pool / "data", pool / "btrbk_snapshots" / name)
        send = subprocess.Popen(["btrfs", "send", "-q", str(pool / "btrbk_snapshots" / name)], stdout=subprocess.PIPE)
        subprocess.run(["btrfs", "receive", str(pi)], stdin=send.stdout, check=True, capture_output=True)
        assert send.wait() == 0
        conf = tmp_path / "btrbk.conf"
        conf.write_text(f"ssh_identity {server.client_key}\nssh_user root\nvolume {pool}\n  snapshot_dir btrbk_snapshots\n"
                        f"  target send-receive ssh://127.0.0.1:{server.port}{pi}\n  subvolume data\n")
        before = {p: sorted(x.name for x in p.iterdir()) for p in (pool / "btrbk_snapshots", pi)}
        ssh = [x for o in server.ssh_options() for x in ("--ssh-option", o)]
        proc = run_cli("adopt", "--root", str(root), "--btrbk", str(conf), *ssh, "--apply", check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"127.0.0.1:{server.port}" in errors[0] and "python3" in errors[0] and "apt install" in errors[0], proc.stderr
        # Up front: nothing changed, not even the config file.
        assert not (root / "etc/subvault/subvault.toml").exists() and not (root / "etc/systemd").exists()
        assert {p: sorted(x.name for x in p.iterdir()) for p in before} == before
        assert adapter.show(pi / name).readonly
    finally:
        server.stop()
        for fs in reversed(fss):
            fs.close()


@pytest.fixture
def btrbk_days(tmp_path):
    """btrbk only, the retention of its man page example: every snapshot for 2 days, dailies for 14.

    Real `btrbk run`s to a local target, each re-dated to an earlier time as btrbk names
    it, several on each of the last days; btrbk's own last run pruned what it would."""
    inst = Installation(tmp_path, None)
    try:
        inst.fs("src", inst.pool)
        adapter.create_subvolume(inst.pool / "data")
        inst.usb = inst.fs("usb", tmp_path / "usb").mountpoint / "btrbk"
        inst.usb.mkdir()
        inst.bin.mkdir()
        inst.btrbk_conf = tmp_path / "btrbk.conf"
        inst.btrbk_conf.write_text(
            "timestamp_format long\nsnapshot_preserve_min 2d\nsnapshot_preserve 14d\n"
            f"volume {inst.pool}\n  snapshot_dir btrbk_snapshots\n  target send-receive {inst.usb}\n  subvolume data\n"
        )
        (inst.pool / "btrbk_snapshots").mkdir()
        now = datetime.now(UTC)
        for hours in (6 * 24, 5 * 24, 5 * 24 - 3, 4 * 24, 3 * 24, 2 * 24, 2 * 24 - 2, 24, 20, 5, 3, 1):
            (inst.pool / "data" / "hour.txt").write_text(f"{hours}h ago\n")
            inst.btrbk("run")
            _redate_btrbk_run(inst, now - timedelta(hours=hours))
        inst.btrbk("run")  # btrbk prunes by its own policy: what is left is what btrbk keeps
        (inst.pool / "data" / "hour.txt").write_text("now\n")
        yield inst
    finally:
        inst.close()


def test_first_run_after_adopt_deletes_no_local_snapshot_btrbk_was_keeping(btrbk_days, tmp_path):
    inst = btrbk_days
    kept = sorted(p.name for p in (inst.pool / "btrbk_snapshots").iterdir())
    assert len(kept) >= 8, kept
    before = _uuids(inst.pool)
    btrbk_uuids = {u for u, p in before.items() if "btrbk_snapshots" in str(p)}
    config = tmp_path / "subvault.toml"
    applied = run_cli("--config", str(config), "adopt", "--root", str(inst.root), "--btrbk", str(inst.btrbk_conf), "--apply")
    run = run_cli("--config", str(config), "run", "--json", check=False, env={"SUBVAULT_SYSROOT": str(inst.root)})
    assert not json.loads(run.stdout)["result"]["errors"], run.stdout
    gone = [before[u] for u in btrbk_uuids - _uuids(inst.pool).keys()]
    assert not gone, f"the first run deleted btrbk snapshots it was keeping: {gone}"
    assert 'timeline = "96h 15d"' in config.read_text(), applied.stdout


def test_invariant_3_writable_target_entry_with_a_received_uuid_is_reported_never_deleted(btrbk_days, tmp_path):
    # An adopt move cut off between its two flips leaves a complete copy writable under its
    # final name. An interrupted receive never has a received_uuid: this is not a partial.
    from subvault.adopt.flip import set_readonly

    inst = btrbk_days
    config = tmp_path / "subvault.toml"
    run_cli("--config", str(config), "adopt", "--root", str(inst.root), "--btrbk", str(inst.btrbk_conf), "--apply")
    (container,) = [p for p in inst.usb.iterdir() if p.is_dir() and not p.name.startswith("data.")]
    entry = sorted((container / "data").iterdir())[0]
    received = adapter.show(entry).received_uuid
    assert received
    set_readonly(entry, False)
    run = run_cli("--config", str(config), "run", "--json", check=False, env={"SUBVAULT_SYSROOT": str(inst.root)})
    result = json.loads(run.stdout)["result"]
    assert entry.exists(), run.stdout
    assert not [i for i in result["items"] if i["action"] == "delete-partial"], run.stdout
    lines = [w for w in result["warnings"] if str(entry) in w]
    assert len(lines) == 1 and "ro true" in lines[0], result["warnings"]
    assert adapter.show(entry).received_uuid == received


def test_snapper_snapshots_with_missing_or_corrupt_info_xml_are_listed_as_staying_manual(tmp_path):
    inst = Installation(tmp_path, None)
    try:
        inst.fs("src", inst.pool)
        adapter.create_subvolume(inst.pool / "data")
        adapter.create_subvolume(inst.pool / "data" / ".snapshots")
        (inst.root / "etc/snapper/configs").mkdir(parents=True)
        inst.snapper_config("data").write_text('SUBVOLUME="/mnt/pool/data"\nFSTYPE="btrfs"\nTIMELINE_CREATE="yes"\n')
        for _ in range(3):
            inst.snapper("data", "create", "--cleanup-algorithm", "timeline")
        snaps = inst.pool / "data" / ".snapshots"
        (snaps / "1" / "info.xml").unlink()
        (snaps / "2" / "info.xml").write_text("<?xml version=\"1.0\"?>\n<snapshot><num>2</nu")
        proc = run_cli("--config", str(tmp_path / "s.toml"), "adopt", "--root", str(inst.root), "--snapper", "--dry-run")
        manual = proc.stdout[proc.stdout.index("stays manual"):] if "stays manual" in proc.stdout else proc.stdout
        assert f"{snaps / '1'}" in manual and f"{snaps / '2'}" in manual, proc.stdout
        assert f"{snaps / '3'}" not in manual, proc.stdout
    finally:
        inst.close()
