"""Parsers of snapper configs and btrbk.conf (subvault.adopt), and the pure adoption planner."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from subvault.adopt.btrbk_conf import (
    btrbk_retention,
    format_snapshot_name,
    parse_btrbk_conf,
    parse_snapshot_name,
    preserve_to_keep,
)
from subvault.adopt.found import BtrbkSnapshot, FoundBtrbk, FoundSnapper, Inputs, Scheduler
from subvault.adopt.plan import plan_adoption
from subvault.adopt.planned import AdoptPlan
from subvault.adopt.snapper_conf import parse_snapper_config
from subvault.adopt.source import AdoptInputError
from subvault.config.load import parse_config
from subvault.model import LocalSnapshot

UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")

SNAPPER = '''# subvolume to snapshot
SUBVOLUME="/var/lib/pvc"
FSTYPE="btrfs"
NUMBER_CLEANUP="yes"
NUMBER_MIN_AGE="1800"
NUMBER_LIMIT="50"
NUMBER_LIMIT_IMPORTANT="10"
TIMELINE_CREATE="yes"
TIMELINE_CLEANUP="yes"
TIMELINE_MIN_AGE="1800"
TIMELINE_LIMIT_HOURLY="24"
TIMELINE_LIMIT_DAILY="7"
TIMELINE_LIMIT_WEEKLY="4"
TIMELINE_LIMIT_MONTHLY="0"
TIMELINE_LIMIT_YEARLY="0"
'''

# The homelab post's btrbk: only the latest local snapshot as parent, 24h 8d 5w on the Pi.
BTRBK = '''timestamp_format        long
snapshot_preserve_min   latest
snapshot_preserve       no
target_preserve_min     no
target_preserve         24h 8d 5w
stream_compress         zstd
ssh_identity            /etc/btrbk/ssh/id_ed25519
ssh_user                root

volume /mnt/btr_pool
  snapshot_dir btrbk_snapshots
  target send-receive ssh://pi.wg/mnt/backup/vps1
  subvolume root
  subvolume var_lib_pvc
    group apps
  subvolume home
    target raw ssh://nas/backup/raw
'''


def test_snapper_config_maps_limits_and_flags():
    conf = parse_snapper_config("pvc", SNAPPER, "/etc/snapper/configs/pvc")
    assert conf.subvolume == "/var/lib/pvc"
    assert conf.timeline_policy() == "24h 7d 4w"
    assert conf.number_limit() == 50
    assert conf.timeline_create and conf.timeline_cleanup and conf.number_cleanup
    unmapped = {u[0].split("=")[0]: u[1] for u in conf.unmapped()}
    assert unmapped == {"TIMELINE_MIN_AGE": 10, "NUMBER_MIN_AGE": 5, "NUMBER_LIMIT_IMPORTANT": 7}


def test_snapper_defaults_and_ranges():
    conf = parse_snapper_config("x", 'SUBVOLUME="/"\nTIMELINE_LIMIT_HOURLY="2-10"\nNUMBER_LIMIT="2-20"\n', "f")
    assert conf.timeline_policy() == "10h 10d 10m 10y"  # snapper's defaults where unset (weekly 0)
    assert conf.number_limit() == 20


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('SUBVOLUME="/srv"\nFSTYPE="ext4"\n', 2, "adopts btrfs configs only"),
        ('SUBVOLUME="/srv"\nFSTYPE="lvm(xfs)"\n', 2, "adopts btrfs configs only"),
        ('FSTYPE="btrfs"\n', None, "no SUBVOLUME"),
        ('SUBVOLUME="/srv"\nTIMELINE_LIMIT_DAILY="many"\n', 2, "not a number"),
        ('SUBVOLUME="/srv"\nTIMELINE_CLEANUP="maybe"\n', 2, "not yes or no"),
        ('SUBVOLUME="/srv"\njust words\n', 2, "KEY="),
    ],
)
def test_snapper_bad_input_names_file_and_line(text, line, words):
    with pytest.raises(AdoptInputError) as exc:
        parse_snapper_config("x", text, "/etc/snapper/configs/x")
    assert str(exc.value).startswith("/etc/snapper/configs/x" + (f":{line}:" if line else ":"))
    assert words in str(exc.value)
    assert "\n" not in str(exc.value)


def test_btrbk_sections_inherit_options():
    conf = parse_btrbk_conf(BTRBK, "/etc/btrbk/btrbk.conf")
    subs = {s.snapshot_name: s for s in conf.subvolumes}
    assert list(subs) == ["root", "var_lib_pvc", "home"]
    assert subs["root"].full_path == "/mnt/btr_pool/root"
    assert subs["root"].snapshot_dir == "/mnt/btr_pool/btrbk_snapshots"
    t = subs["root"].targets[0]
    assert (t.type, t.url, t.get("target_preserve"), t.get("ssh_user"), t.get("stream_compress")) == (
        "send-receive", "ssh://pi.wg/mnt/backup/vps1", "24h 8d 5w", "root", "zstd")
    assert [x.type for x in subs["home"].targets] == ["send-receive", "raw"]
    assert conf.groups == {"apps": ["var_lib_pvc"]}


def test_btrbk_subvolume_options_override_volume_target():
    text = "volume /p\n target /mnt/t\n target_preserve 7d\nsubvolume a\nsubvolume b\n target_preserve 2d\n"
    conf = parse_btrbk_conf(text, "f")
    a, b = conf.subvolumes
    assert a.targets[0].get("target_preserve") == "7d"
    # the volume-level target's own option wins over the subvolume's (target → subvolume → volume)
    assert b.targets[0].get("target_preserve") == "7d"


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("volume /p\n subvolume *\n", 2, "wildcards"),
        ("volume /p\n subvolume a\n target ftp://x/y\n", 3, "path or ssh://"),
        ("volume /p\n subvolume a\n frobnicate yes\n", 3, "not a btrbk option"),
        ("volume /p\n subvolume a\n target ssh://pi/b\n backend_remote btrfs-progs-sudo\n", 4, "sudo"),
        ("timestamp_format weird\nvolume /p\n subvolume a\n", 1, "timestamp_format"),
        ("target /x\n", 1, "outside a volume"),
        # Values btrbk itself refuses: they used to become keep "all" / "latest" or a traceback-free
        # error about "the adopted config" that named neither btrbk.conf nor its line.
        ("volume /p\n target /t\n target_preserve_min no\n target_preserve 24x\n subvolume a\n", 4, "target_preserve"),
        ("volume /p\n target /t\n target_preserve_min forever\n subvolume a\n", 3, "target_preserve_min"),
        ("snapshot_preserve 3q\nvolume /p\n target /t\n subvolume a\n", 1, "snapshot_preserve"),
        ("volume /p\n target ssh://pi/b\n ssh_port abc\n subvolume a\n", 3, "ssh_port"),
        ("ssh_user -oProxyCommand=x\nvolume /p\n target ssh://pi/b\n subvolume a\n", 1, "ssh_user"),
        ("volume /p\n target ssh://pi:xx/b\n subvolume a\n", 2, "ssh://[user@]host[:port]/directory"),
        ("volume /p\n target ssh://pi\n subvolume a\n", 2, "ssh://[user@]host[:port]/directory"),
    ],
)
def test_btrbk_bad_input_names_file_and_line(text, line, words):
    with pytest.raises(AdoptInputError) as exc:
        parse_btrbk_conf(text, "/etc/btrbk/btrbk.conf")
    assert str(exc.value).startswith(f"/etc/btrbk/btrbk.conf:{line}:"), str(exc.value)
    assert words in str(exc.value)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("root.20261126", ("root", datetime(2026, 11, 25, 23, 0, tzinfo=UTC), 0)),
        ("root.20261126T0300", ("root", datetime(2026, 11, 26, 2, 0, tzinfo=UTC), 0)),
        ("root.20261126T0300_2", ("root", datetime(2026, 11, 26, 2, 0, tzinfo=UTC), 2)),
        ("var.lib.20261126T030015+0100", ("var.lib", datetime(2026, 11, 26, 2, 0, 15, tzinfo=UTC), 0)),
        ("root.20260701T0300", ("root", datetime(2026, 7, 1, 1, 0, tzinfo=UTC), 0)),
        ("root.notadate", None),
        ("root.20261340", None),
    ],
)
def test_btrbk_names_every_format(name, expected):
    assert parse_snapshot_name(name, BERLIN) == expected


@pytest.mark.parametrize("fmt", ["short", "long", "long-iso"])
def test_btrbk_name_round_trip(fmt):
    when = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    name = format_snapshot_name("pvc", when, fmt, BERLIN)
    got = parse_snapshot_name(name, BERLIN)
    day_start = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # short names hold only the local day
    assert got == ("pvc", day_start if fmt == "short" else when, 0)


def test_preserve_mapping_keeps_at_least_what_btrbk_keeps():
    # btrbk keeps delta <= N: N + 1 periods counting the current one; subvault's N counts N.
    assert preserve_to_keep("24h 8d 5w", "no") == ("25h 9d 6w", [preserve_to_keep("24h 8d 5w", "no")[1][0]])
    assert preserve_to_keep("no", "latest") == ("latest", [])
    assert preserve_to_keep("14d", "all")[0] == "all"
    keep, notes = preserve_to_keep("24h 8d", "18h")
    assert keep == "25h 9d" and any("no minimum age" in n for n in notes)
    assert preserve_to_keep("*d 0w", "latest")[0] == "*d 0w"
    assert btrbk_retention("14d", "2d")[0] == "96h 15d"  # every snapshot of today + 2 days, hourly
    assert btrbk_retention("no", "latest")[0] is None


@pytest.mark.parametrize("value", ["24h 7d* 4w", "7x", "3d 4d"])
def test_btrbk_retention_btrbk_refuses_is_refused_naming_file_and_line(value):
    text = f"volume /mnt/pool\n  target /usb\n  subvolume root\n    target_preserve {value}\n"
    with pytest.raises(AdoptInputError) as err:
        parse_btrbk_conf(text, "/etc/btrbk/btrbk.conf")
    assert str(err.value).startswith("/etc/btrbk/btrbk.conf:4: target_preserve"), err.value


def _snap(num: int, cleanup: str, owned: bool = False) -> LocalSnapshot:
    return LocalSnapshot("pvc", num, Path(f"/var/lib/pvc/.snapshots/{num}/snapshot"), datetime(2026, 11, 20, num, tzinfo=UTC),
                         "timeline" if cleanup == "timeline" else "x", cleanup, "foreign", owned, uuid=f"u{num}")


def _homelab_inputs() -> Inputs:
    conf = parse_btrbk_conf(BTRBK, "/etc/btrbk/btrbk.conf")
    snapper = parse_snapper_config("var_lib_pvc", SNAPPER, "/etc/snapper/configs/var_lib_pvc")
    pvc = next(s for s in conf.subvolumes if s.snapshot_name == "var_lib_pvc")
    root = next(s for s in conf.subvolumes if s.snapshot_name == "root")
    home = next(s for s in conf.subvolumes if s.snapshot_name == "home")
    t0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    entries = (BtrbkSnapshot("var_lib_pvc.20261126T0300", t0, received_uuid="L1"),
               BtrbkSnapshot("var_lib_pvc.20261125T0300", t0.replace(day=25), received_uuid="L0"),
               BtrbkSnapshot("var_lib_pvc.20261124T0300", t0.replace(day=24), received_uuid=None, readonly=False))
    return Inputs(
        host="vps1",
        snapper=[FoundSnapper(snapper, "/var/lib/pvc", "fs:258", (_snap(1, "timeline"), _snap(2, "number"), _snap(3, "")))],
        btrbk=conf,
        btrbk_found=[
            FoundBtrbk(pvc, "fs:258", (BtrbkSnapshot("var_lib_pvc.20261126T0300", t0, uuid="L1"),), (entries,)),
            FoundBtrbk(root, "fs:256", (), ((),)),
            FoundBtrbk(home, "fs:257", (), ((), ())),
        ],
        schedulers=[Scheduler("systemd", "/usr/lib/systemd/system/btrbk.timer", unit="btrbk.timer")],
    )


def test_plan_homelab_config_loads_and_says_what_has_no_equivalent():
    plan = plan_adoption(_homelab_inputs())
    cfg = parse_config(plan.toml)
    subs = {s.name: s for s in cfg.subvolume}
    assert set(subs) == {"var_lib_pvc", "root", "home"}
    assert subs["var_lib_pvc"].path == "/var/lib/pvc"  # snapper's path, matched to btrbk by identity
    assert cfg.timeline_of(subs["var_lib_pvc"]) == "24h 7d 4w" and cfg.prechange_keep_of(subs["var_lib_pvc"]) == 50
    assert cfg.timeline_of(subs["root"]) == "2h"  # btrbk only kept a parent; two periods of the target's finest unit
    (pi,) = cfg.target
    assert (pi.name, pi.url, pi.keep, pi.compress, pi.ssh_identity) == (
        "pi", "ssh://root@pi.wg/mnt/backup/vps1", "25h 9d 6w", "zstd", "/etc/btrbk/ssh/id_ed25519")
    assert "NUMBER_LIMIT_IMPORTANT=10: no equivalent" in plan.toml
    assert "btrbk group apps" in plan.toml
    assert any("raw target ssh://nas/backup/raw" in m and "not adopted" in m for m in plan.manual)


def test_plan_moves_only_verified_entries_into_subvault_layout():
    plan = plan_adoption(_homelab_inputs())
    moves = [a for a in plan.actions if a.kind == "move-entry"]
    assert [(a.data["src"], a.data["dst"]) for a in moves] == [
        ("/mnt/backup/vps1/var_lib_pvc.20261125T0300", "/mnt/backup/vps1/vps1/var_lib_pvc/var_lib_pvc.20261125T020000Z"),
        ("/mnt/backup/vps1/var_lib_pvc.20261126T0300", "/mnt/backup/vps1/vps1/var_lib_pvc/var_lib_pvc.20261126T020000Z"),
    ]
    assert any("var_lib_pvc.20261124T0300 is writable and has no received_uuid, so it is not a verified receive" in m for m in plan.manual)
    local = [a for a in plan.actions if a.kind == "move-local"]
    assert [a.data["src"] for a in local] == ["/mnt/btr_pool/btrbk_snapshots/var_lib_pvc.20261126T0300"]


def test_plan_takes_over_timeline_and_number_snapshots_only_and_deletes_nothing():
    plan = plan_adoption(_homelab_inputs())
    takeovers = {a.data["number"]: a.data["kind"] for a in plan.actions if a.kind == "take-over"}
    assert takeovers == {1: "timeline", 2: "prechange"}
    assert any("without a cleanup algorithm" in m for m in plan.manual)
    assert not any("delete" in a.kind for a in plan.actions)
    cmds = [a.command for a in plan.actions if a.command]
    assert "snapper -c var_lib_pvc set-config TIMELINE_CREATE=no TIMELINE_CLEANUP=no NUMBER_CLEANUP=no EMPTY_PRE_POST_CLEANUP=no" in cmds
    assert "systemctl disable --now btrbk.timer" in cmds


def _btrbk_only(preserve_lines: str, snapshots: tuple[BtrbkSnapshot, ...] = ()) -> tuple[Inputs, str]:
    conf = parse_btrbk_conf(f"{preserve_lines}volume /mnt/pool\n  target /usb\n  subvolume data\n", "/etc/btrbk/btrbk.conf")
    return Inputs(host="h", btrbk=conf, btrbk_found=[FoundBtrbk(conf.subvolumes[0], "fs:256", snapshots, ((),))]), "data"


@pytest.mark.parametrize(("lines", "timeline"), [
    ("snapshot_preserve_min 2d\nsnapshot_preserve 14d\n", "96h 15d"),
    ("", "all"),  # btrbk's default: snapshot_preserve_min all
    ("snapshot_preserve_min all\nsnapshot_preserve 14d\n", "all"),
    ("snapshot_preserve_min latest\nsnapshot_preserve 7d 4w\n", "8d 5w"),
    ("snapshot_preserve_min latest\nsnapshot_preserve no\n", "2d"),  # only the parent: the floor
])
def test_plan_local_timeline_keeps_at_least_what_btrbk_snapshot_preserve_kept(lines, timeline):
    inp, name = _btrbk_only(lines)
    plan = plan_adoption(inp)
    (sub,) = plan.subvolumes
    assert sub.timeline == timeline, plan.toml
    assert "kept only its snapshots as parents" not in plan.toml


def test_plan_local_timeline_is_all_when_btrbk_snapshots_share_an_hour_inside_its_minimum_window():
    t0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    snaps = (BtrbkSnapshot("data.20261126", t0, 0, uuid="a"), BtrbkSnapshot("data.20261126_1", t0, 1, uuid="b"))
    inp, _ = _btrbk_only("timestamp_format short\nsnapshot_preserve_min 2d\nsnapshot_preserve 14d\n", snaps)
    plan = plan_adoption(inp)
    assert plan.subvolumes[0].timeline == "all"
    assert any("share an hour" in m for m in plan.manual)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("snapshot_name", "expected"), [("rööt", "root"), ("é", "e"), ("日本", "subvolume"), ("日本_db", "db")])
def test_plan_non_ascii_btrbk_snapshot_name_is_adopted_under_an_ascii_name_and_ends(snapshot_name, expected):
    conf = parse_btrbk_conf(f"snapshot_preserve_min latest\nvolume /mnt/pool\n  target /usb\n  subvolume data\n"
                            f"    snapshot_name {snapshot_name}\n", "/etc/btrbk/btrbk.conf")
    plan = plan_adoption(Inputs(host="h", btrbk=conf, btrbk_found=[FoundBtrbk(conf.subvolumes[0], "fs:256", (), ((),))]))
    assert [s.name for s in plan.subvolumes] == [expected]
    assert f'"{snapshot_name}" is named "{expected}"' in plan.toml
    parse_config(plan.toml)


def _plan_of(text: str) -> AdoptPlan:
    conf = parse_btrbk_conf(text, "/etc/btrbk/btrbk.conf")
    found = [FoundBtrbk(s, f"fs:{256 + i}", (), tuple(() for _ in s.targets)) for i, s in enumerate(conf.subvolumes)]
    return plan_adoption(Inputs(host="h", btrbk=conf, btrbk_found=found))


def test_plan_per_subvolume_target_preserve_on_one_target_keeps_the_most_and_says_what_each_had():
    plan = _plan_of("target_preserve_min no\nvolume /mnt/pool\n  subvolume root\n    target send-receive /usb\n"
                    "    target_preserve 1d\n  subvolume home\n    target send-receive /usb\n    target_preserve 30d\n")
    cfg = parse_config(plan.toml)
    (usb,) = cfg.target
    assert usb.keep == "31d" and "root 2d" in plan.toml and "home 31d" in plan.toml
    assert "/etc/btrbk/btrbk.conf:5" in plan.toml and "/etc/btrbk/btrbk.conf:8" in plan.toml


def test_plan_subvolume_target_preserve_overriding_a_volume_level_target_is_adopted():
    plan = _plan_of("target_preserve_min no\ntarget_preserve 7d\nvolume /mnt/pool\n  target send-receive /usb\n"
                    "  subvolume root\n    target_preserve 2d\n  subvolume home\n")
    (usb,) = parse_config(plan.toml).target
    assert usb.keep == "8d"


def test_plan_same_target_line_twice_is_adopted_once():
    plan = _plan_of("volume /mnt/pool\n  subvolume root\n    target /usb\n    target /usb\n")
    cfg = parse_config(plan.toml)
    assert [t.name for t in cfg.target] == ["usb"] and "/etc/btrbk/btrbk.conf:4: target /usb is listed again" in plan.toml


def test_btrbk_subvolume_twice_is_one_line_naming_file_and_line():
    with pytest.raises(AdoptInputError) as err:
        parse_btrbk_conf("volume /mnt/pool\n  subvolume root\n    target /usb\n  subvolume root\n", "/etc/btrbk/btrbk.conf")
    assert str(err.value).startswith('/etc/btrbk/btrbk.conf:4: subvolume "root" is listed again (first at line 2)')


def test_btrbk_same_target_with_different_ssh_settings_is_one_line_naming_file_and_line():
    text = ("volume /mnt/pool\n  subvolume root\n    target ssh://pi/b\n    ssh_identity /k1\n"
            "  subvolume home\n    target ssh://pi/b\n    ssh_identity /k2\n")
    with pytest.raises(AdoptInputError) as err:
        _plan_of(text)
    assert str(err.value).startswith("/etc/btrbk/btrbk.conf:6: target ssh://pi/b is reached with other"), err.value


def test_plan_snapper_snapshots_with_unreadable_info_xml_stay_manual():
    inp = _homelab_inputs()
    fs = inp.snapper[0]
    inp.snapper = [FoundSnapper(fs.conf, fs.path, fs.ident, fs.snapshots, ("/var/lib/pvc/.snapshots/7",))]
    plan = plan_adoption(inp)
    assert any("1 snapper snapshots with a missing or unreadable info.xml (/var/lib/pvc/.snapshots/7)" in m for m in plan.manual)


def test_snapper_subvolume_that_does_not_exist_says_so_naming_file_and_line(tmp_path):
    from subvault.adopt.discover import snapper_configs

    cdir = tmp_path / "etc/snapper/configs"
    cdir.mkdir(parents=True)
    (cdir / "gone").write_text('FSTYPE="btrfs"\nSUBVOLUME="/srv/gone"\n')
    with pytest.raises(AdoptInputError) as err:
        snapper_configs(str(tmp_path))
    assert str(err.value).startswith(f'{cdir / "gone"}:2: SUBVOLUME="/srv/gone"') and "does not exist" in str(err.value)


@pytest.mark.parametrize("existing", ["dir", "file"])
def test_adopt_write_to_a_directory_or_a_different_existing_file_is_a_usage_error(tmp_path, existing):
    from subvault.adopt.run import _write
    from subvault.errors import UsageError

    dest = tmp_path / "out"
    dest.mkdir() if existing == "dir" else dest.write_text("# mine\n")
    with pytest.raises(UsageError) as err:
        _write(str(dest), "# adopted\n", force=False)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    assert ("is a directory" if existing == "dir" else "exists and differs") in str(err.value)


@pytest.mark.parametrize("url,expected", [
    ("ssh://[::1]/mnt/backup", "ssh://root@[::1]:2222/mnt/backup"),
    ("ssh://[fd00::5]:22/mnt/backup", "ssh://root@[fd00::5]:22/mnt/backup"),
    ("ssh://pi/mnt/backup", "ssh://root@pi:2222/mnt/backup"),
    ("ssh://pi:22/mnt/backup", "ssh://root@pi:22/mnt/backup"),
])
def test_btrbk_ssh_port_reaches_the_url_for_ipv6_hosts_too(url, expected):
    from subvault.adopt.connection import connection

    conf = parse_btrbk_conf(f"ssh_port 2222\nvolume /mnt/pool\n  subvolume data\n    target {url}\n", "/etc/btrbk/btrbk.conf")
    target = conf.subvolumes[0].targets[0]
    assert connection(target).url == expected
