"""`check`, `status` and notifications on real btrfs, with a loopback HTTP receiver for Apprise and pings."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from httpreceiver import HttpReceiver  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from subvault.btrfs import adapter, local, local_scan  # noqa: E402


def _notify(homelab, url):
    homelab.config.write_text(homelab.config.read_text() + f'\n[notify]\nurls = ["json://127.0.0.1:{url.port}/hook"]\nping = "{url.url}/ping"\n')


def test_invariant_5_new_unprotected_subvolume_fails_check_then_recovers(homelab):
    with HttpReceiver() as rx:
        _notify(homelab, rx)
        homelab.cli("run")
        assert homelab.cli("check").returncode == 0
        stray = homelab.fs.mountpoint / "var_lib_newapp"
        adapter.create_subvolume(stray)
        proc = homelab.cli("check", check=False)
        assert proc.returncode == 1
        assert f"unprotected: {stray}" in proc.stdout and "[[exclude]]" in proc.stdout
        failure = rx.wait(lambda r: r.path == "/hook")
        assert str(stray) in json.dumps(failure.json())
        homelab.config.write_text(homelab.config.read_text().replace("[notify]", f'[[exclude]]\npath = "{stray}"\nreason = "scratch"\n\n[notify]'))
        assert homelab.cli("check").returncode == 0
        recovery = rx.wait(lambda r: r.path == "/hook" and r is not failure)
        assert "recover" in json.dumps(recovery.json()).lower()


def test_stale_snapshots_fail_freshness(homelab):
    old = datetime.now(UTC) - timedelta(days=3)
    for name in homelab.paths:
        if name in ("var_cache", "var_tmp", "var_lib_kubelet"):
            continue
        local.create(name, homelab.paths[name], kind="timeline", description="timeline", now=old)
    proc = homelab.cli("check", "--json", check=False)
    assert proc.returncode == 1
    problems = json.loads(proc.stdout)["result"]["problems"]
    stale = [p for p in problems if p["kind"] == "stale"]
    assert len(stale) == 8
    assert all("newest copy is" in p["message"] and " old, limit " in p["message"] for p in stale)
    homelab.cli("run")
    assert homelab.cli("check").returncode == 0


def test_nested_subvolume_inside_protected_is_flagged(homelab):
    homelab.cli("run")
    nested = homelab.paths["var_lib_pvc"] / "nested-vol"
    adapter.create_subvolume(nested)
    proc = homelab.cli("check", check=False)
    assert proc.returncode == 1 and "nested" in proc.stdout and str(nested) in proc.stdout


def test_missing_configured_path_is_flagged(homelab, tmp_path):
    homelab.cli("run")
    homelab.config.write_text(homelab.config.read_text() + f'\n[[subvolume]]\nname = "gone"\npath = "{tmp_path}/gone"\n')
    proc = homelab.cli("check", check=False)
    assert proc.returncode == 1 and f"{tmp_path}/gone does not exist" in proc.stdout


def test_status_table_and_metrics(homelab, tmp_path):
    homelab.cli("run")
    out = homelab.cli("status").stdout
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "var_lib_pvc" in out and "local" in out
    metrics = tmp_path / "subvault.prom"
    homelab.cli("check", "--metrics-file", str(metrics))
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert families["subvault_check_problems"].samples[0].value == 0
    run_metrics = tmp_path / "subvault-run.prom"
    homelab.cli("run", "--metrics-file", str(run_metrics))
    run_families = {f.name: f for f in text_string_to_metric_families(run_metrics.read_text())}
    counts = {s.labels["subvolume"]: s.value for s in run_families["subvault_snapshots"].samples}
    assert counts["var_lib_pvc"] == 1
    # The collector refuses a series written by two files: run's and check's share none.
    series = lambda fams: {(s.name, tuple(sorted(s.labels.items()))) for f in fams.values() for s in f.samples}  # noqa: E731
    assert not series(families) & series(run_families)


def test_run_pings_start_and_success(homelab):
    with HttpReceiver() as rx:
        _notify(homelab, rx)
        homelab.cli("run")
        start = rx.wait(lambda r: r.path.startswith("/ping/start"))
        done = rx.wait(lambda r: r.path.rstrip("/") == "/ping" or r.path.startswith("/ping?"))
        assert start and done


def test_malformed_apprise_url_is_config_error(homelab):
    homelab.config.write_text(homelab.config.read_text() + '\n[notify]\nurls = ["tgram://"]\n')
    proc = homelab.cli("check", check=False)
    assert proc.returncode == 2 and "notify: urls[0]" in proc.stderr


def test_unreachable_notification_url_warns_and_check_still_reports(homelab):
    homelab.config.write_text(homelab.config.read_text() + '\n[notify]\nurls = ["json://127.0.0.1:9/hook"]\n')
    proc = homelab.cli("check", check=False)
    assert proc.returncode == 1  # nothing snapshotted yet: stale
    assert "stale" in proc.stdout and "warning:" in proc.stderr


def test_invariant_11_group_readable_notify_secrets_file_refused(homelab, tmp_path):
    secrets = tmp_path / "notify.urls"
    secrets.write_text("tgram://123456789:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/987654321\n")
    secrets.chmod(0o640)
    homelab.config.write_text(homelab.config.read_text() + f'\n[notify]\nurls_file = "{secrets}"\n')
    homelab.cli("snapshot")
    proc = homelab.cli("check", check=False)
    assert proc.returncode == 1 and "accessible by group or others" in proc.stderr and "chmod 600" in proc.stderr
    assert "AAAAAAAA" not in proc.stderr + proc.stdout
    secrets.chmod(0o600)
    proc = homelab.cli("check", check=False)
    assert "AAAAAAAA" not in proc.stderr + proc.stdout


def test_invariant_11_check_warns_when_inline_notify_tokens_are_readable_by_others(homelab):
    homelab.config.write_text(homelab.config.read_text() + '\n[notify]\nurls = ["json://127.0.0.1:9/hook"]\n')
    homelab.config.chmod(0o644)
    proc = homelab.cli("check", check=False)
    assert f"warning: {homelab.config} holds notify tokens" in proc.stderr and f"chmod 600 {homelab.config}" in proc.stderr
    homelab.config.chmod(0o600)
    proc = homelab.cli("check", check=False)
    assert "holds notify tokens" not in proc.stderr


# -- invariant 5 over every mounted btrfs filesystem (issue 11, item 4) --------------


def _add(homelab, text: str) -> None:
    homelab.config.write_text(homelab.config.read_text() + "\n" + text + "\n")


def _mount(argv: list[str], where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *argv, str(where)], check=True)
    return where


def _umount(*paths: Path) -> None:
    for path in paths:
        subprocess.run(["umount", str(path)], check=False)


def test_invariant_5_btrfs_filesystem_with_no_configured_subvolume_fails_check(homelab, make_fs):
    homelab.cli("run")
    assert homelab.cli("check").returncode == 0
    other = make_fs("other", size="256M")
    adapter.create_subvolume(other.mountpoint / "appdata")
    proc = homelab.cli("check", check=False)
    assert proc.returncode == 1, proc.stdout
    assert f"unprotected: {other.mountpoint}/appdata" in proc.stdout
    uuid = adapter.filesystem_uuid(other.mountpoint)
    assert f'filesystem = "{uuid}"' in proc.stdout, "says how to exclude the whole filesystem"
    _add(homelab, f'[[exclude]]\nfilesystem = "{uuid}"\nreason = "scratch disk"')
    proc = homelab.cli("check", check=False)
    assert proc.returncode == 0, proc.stdout


def test_invariant_5_files_at_the_top_level_of_a_data_disk_fail_check(homelab, make_fs):
    homelab.cli("run")
    disk = make_fs("disk", size="256M")
    (disk.mountpoint / "photos").mkdir()
    (disk.mountpoint / "photos" / "a.jpg").write_bytes(b"\xff\xd8 not much of a photo")
    proc = homelab.cli("check", check=False)
    assert proc.returncode == 1, proc.stdout
    assert f"unprotected: {disk.mountpoint}" in proc.stdout and "top level" in proc.stdout
    _add(homelab, f'[[subvolume]]\nname = "disk"\npath = "{disk.mountpoint}"')
    homelab.cli("run")
    assert homelab.cli("check").returncode == 0
    assert [s.kind for s in local_scan.scan("disk", disk.mountpoint)] == ["timeline"]


def test_invariant_5_bind_mount_and_second_mount_of_one_filesystem(homelab, tmp_path):
    homelab.cli("run")
    bind = _mount(["--bind", str(homelab.paths["var_lib_pvc"])], tmp_path / "bind")
    again = _mount(["-t", "btrfs", "-o", "subvol=/data", homelab.fs.device], tmp_path / "again")
    try:
        proc = homelab.cli("check", check=False)
        assert proc.returncode == 0, proc.stdout
        adapter.create_subvolume(homelab.paths["data"] / "nested")
        proc = homelab.cli("check", check=False)
        assert proc.returncode == 1
        lines = [line for line in proc.stdout.splitlines() if line.startswith("nested:")]
        assert len(lines) == 1, proc.stdout
    finally:
        _umount(bind, again)


def test_invariant_5_subvolume_mounted_nowhere_is_flagged_and_can_be_excluded(homelab, make_fs, tmp_path):
    disk = make_fs("sys", size="256M")
    adapter.create_subvolume(disk.mountpoint / "root")
    adapter.create_subvolume(disk.mountpoint / "root.old")
    uuid = adapter.filesystem_uuid(disk.mountpoint)
    _umount(disk.mountpoint)
    sysroot = _mount(["-t", "btrfs", "-o", "subvol=/root", disk.device], tmp_path / "sysroot")
    try:
        _add(homelab, f'[[subvolume]]\nname = "sysroot"\npath = "{sysroot}"')
        homelab.cli("run")
        proc = homelab.cli("check", check=False)
        assert proc.returncode == 1, proc.stdout
        assert "'root.old'" in proc.stdout and "not mounted" in proc.stdout
        assert f'filesystem = "{uuid}"' in proc.stdout and 'subvolume = "root.old"' in proc.stdout
        _add(homelab, f'[[exclude]]\nfilesystem = "{uuid}"\nsubvolume = "root.old"\nreason = "rollback leftover"')
        proc = homelab.cli("check", check=False)
        assert proc.returncode == 0, proc.stdout
    finally:
        _umount(sysroot)


def test_invariant_5_loose_files_in_a_top_level_mounted_nowhere_fail_check(homelab, make_fs, tmp_path):
    # The usual layout mounts only subvolumes (/ = subvol=root): files left in the top
    # level are still data nothing protects, and check once passed over them.
    homelab.cli("run")
    disk = make_fs("toponly", size="256M")
    adapter.create_subvolume(disk.mountpoint / "app")
    (disk.mountpoint / "loosefile").write_text("not in any subvolume\n")
    subprocess.run(["umount", str(disk.mountpoint)], check=True)
    app = _mount(["-t", "btrfs", "-o", "subvol=app", disk.device], tmp_path / "app")
    try:
        _add(homelab, f'[[subvolume]]\nname = "app"\npath = "{app}"')
        homelab.cli("run")
        proc = homelab.cli("check", check=False)
        assert proc.returncode == 1, proc.stdout
        assert "top level" in proc.stdout and "loosefile" in proc.stdout, proc.stdout
        assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "subvault-check-top-" in line]
    finally:
        _umount(app)
        subprocess.run(["mount", "-t", "btrfs", disk.device, str(disk.mountpoint)], check=False)  # the fixture unmounts it
