"""snap-all's fast start (cli/fast.py): served without click only when it may be, and then
indistinguishable from the full CLI: the same snapshots, the same output, the same exit code.

`program` runs what users install (`python -m subvault`: cli/entry.py); `full` runs the
full CLI alone (`python -m subvault.cli.main`), the path taken when the fast start declines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from subvault.btrfs import adapter
from subvault.btrfs.snapdir import PENDING
from subvault.btrfs.snapper import parse_info
from subvault.config import compiled
from subvault.config.load import load_config
from subvault.lock import exclusive

REPO = Path(__file__).resolve().parents[2]


def _run(module: str, config: Path, *args: str | bytes, importtime: bool = False, env: dict[str, str] | None = None,
         **kw: object) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", module, "--config", str(config), *args]
    if "stdout" not in kw:
        kw["capture_output"] = True
    return subprocess.run(argv, text=True, cwd=REPO, env=env or os.environ.copy(), **kw)  # type: ignore[call-overload]  # kw is subprocess.run's


def program(config: Path, *args: str | bytes, importtime: bool = False, **kw: object) -> subprocess.CompletedProcess[str]:
    return _run("subvault", config, *args, importtime=importtime, **kw)


def full(config: Path, *args: str | bytes, **kw: object) -> subprocess.CompletedProcess[str]:
    return _run("subvault.cli.main", config, *args, **kw)


def served_fast(config: Path, description: str) -> tuple[bool, subprocess.CompletedProcess[str]]:
    """Run `snap-all description` through the program; whether the fast start served it (click never loaded)."""
    proc = program(config, "snap-all", description, importtime=True)
    fast = not loaded_click(proc)
    proc.stderr = "".join(line + "\n" for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return fast, proc


def loaded_click(proc: subprocess.CompletedProcess[str]) -> bool:
    """Whether the process (run with -X importtime) imported click, i.e. ran the full CLI."""
    return "click" in {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def warm(homelab) -> None:
    """A locked command of the full CLI saves the compiled config the fast start reads."""
    full(homelab.config, "snapshot", "--force").check_returncode()


def configured(homelab) -> dict[str, Path]:
    return {sub.name: Path(sub.path) for sub in load_config(homelab.config).subvolume}


def warm_with_a_subvolume_at(homelab, name: str) -> Path:
    """Add a subvolume "odd" at <mount>/name to the config, then warm; return its path."""
    odd = homelab.fs.mountpoint / name
    adapter.create_subvolume(odd)
    homelab.config.write_text(homelab.config.read_text() + f'\n[[subvolume]]\nname = "odd"\npath = "{odd}"\n')
    warm(homelab)
    return odd


def newest(sub: Path) -> Path:
    sdir = sub / ".snapshots"
    return sdir / str(max(int(n) for n in os.listdir(sdir) if n.isdigit()))


def shape(proc: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """Exit code and output with the snapshot numbers taken out (the two runs take different ones)."""
    def strip(text: str) -> str:
        return re.sub(r"/\.snapshots/\d+/", "/.snapshots/N/", text)
    return proc.returncode, strip(proc.stdout), strip(proc.stderr)


def test_fast_start_serves_snap_all_and_writes_what_the_full_cli_writes(homelab):
    warm(homelab)
    fast, by_fast = served_fast(homelab.config, "before upgrade")
    assert fast, by_fast.stderr
    subs = configured(homelab)
    fast_made = {name: newest(path) for name, path in subs.items()}
    by_full = full(homelab.config, "snap-all", "before upgrade")
    full_made = {name: newest(path) for name, path in subs.items()}

    assert shape(by_fast) == shape(by_full) and by_fast.returncode == 0
    assert len(by_fast.stdout.splitlines()) == len(subs)
    for name in subs:
        a, b = fast_made[name], full_made[name]
        assert int(b.name) == int(a.name) + 1
        assert adapter.show(a / "snapshot").readonly
        assert not (a / PENDING).exists()
        assert sorted(os.listdir(a)) == sorted(os.listdir(b)) == ["info.xml", "snapshot"]
        assert os.stat(a).st_mode == os.stat(b).st_mode and os.stat(a / "info.xml").st_mode == os.stat(b / "info.xml").st_mode
        ia, ib = parse_info((a / "info.xml").read_text()), parse_info((b / "info.xml").read_text())
        assert (ia.description, ia.cleanup, ia.type, ia.userdata) == (ib.description, ib.cleanup, ib.type, ib.userdata)
        assert ia.userdata_dict == {"subvault": "prechange"} and ia.cleanup == "number"
    # and every later command reads them as its own pre-change snapshots
    listing = full(homelab.config, "list", "--json")
    assert listing.returncode == 0 and listing.stdout.count('"prechange"') >= 2 * len(subs)


def test_fast_start_declines_an_edited_config(homelab):
    warm(homelab)
    homelab.config.write_text(homelab.config.read_text() + "\n# edited\n")
    fast, proc = served_fast(homelab.config, "x")
    assert not fast and proc.returncode == 0, proc.stderr


def test_fast_start_declines_a_config_the_schema_would_refuse_now(homelab):
    warm(homelab)
    subs = configured(homelab)
    homelab.config.write_text(homelab.config.read_text() + "\n[defaults.nonsense]\n")
    fast, proc = served_fast(homelab.config, "x")
    assert not fast and proc.returncode == 2, proc.stderr
    assert not any((p / ".snapshots" / "2").exists() for p in subs.values())


def test_fast_start_declines_a_half_done_snapshot_and_the_full_cli_finishes_it(homelab):
    warm(homelab)
    data = homelab.paths["data"]
    stale = data / ".snapshots" / "7"
    stale.mkdir()
    (stale / PENDING).write_text("create pid=1\n")
    fast, proc = served_fast(homelab.config, "x")
    assert not fast and proc.returncode == 0, proc.stderr
    assert not stale.exists()  # finish_pending removed the unfinished one


def test_fast_start_declines_a_missing_snapshots_dir(homelab):
    warm(homelab)
    adapter.delete(homelab.paths["data"] / ".snapshots" / "1" / "snapshot")
    for name in os.listdir(homelab.paths["data"] / ".snapshots" / "1"):
        os.unlink(homelab.paths["data"] / ".snapshots" / "1" / name)
    os.rmdir(homelab.paths["data"] / ".snapshots" / "1")
    adapter.delete(homelab.paths["data"] / ".snapshots")
    fast, proc = served_fast(homelab.config, "x")
    assert not fast and proc.returncode == 0, proc.stderr
    assert (homelab.paths["data"] / ".snapshots" / "1" / "info.xml").exists()


def test_fast_start_declines_a_subvolume_that_is_not_one_and_the_full_cli_reports_it(homelab):
    plain = homelab.fs.mountpoint / "plain"
    plain.mkdir()
    homelab.config.write_text(homelab.config.read_text() + f'\n[[subvolume]]\nname = "plain"\npath = "{plain}"\n')
    full(homelab.config, "snapshot", "--force", "root").check_returncode()  # warms
    fast, proc = served_fast(homelab.config, "x")
    assert not fast and proc.returncode == 3
    assert f"error: plain: {plain} is a directory, not a btrfs subvolume" in proc.stderr


def test_lock_held_is_the_same_error_either_way(homelab):
    warm(homelab)
    with exclusive(homelab.state):
        fast, by_fast = served_fast(homelab.config, "x")
        by_full = full(homelab.config, "snap-all", "x")
    assert fast
    assert shape(by_fast) == shape(by_full)
    assert by_fast.returncode != 0 and by_fast.stderr.startswith("error: another subvault (pid ")


def test_a_failing_subvolume_is_reported_alike_and_the_others_are_done(homelab):
    warm(homelab)
    sdir = homelab.paths["data"] / ".snapshots"
    subprocess.run(["chattr", "+i", str(sdir)], check=True)
    try:
        fast, by_fast = served_fast(homelab.config, "x")
        by_full = full(homelab.config, "snap-all", "x")
    finally:
        subprocess.run(["chattr", "-i", str(sdir)], check=True)
    assert fast
    assert shape(by_fast) == shape(by_full)
    assert by_fast.returncode == 3
    assert by_fast.stderr.startswith(f"error: data: snapshot {homelab.paths['data']}: Operation not permitted")
    assert sorted(os.listdir(sdir)) == ["1"]  # nothing half-made under the refusing directory
    assert (homelab.paths["root"] / ".snapshots" / "3" / "info.xml").exists()


@pytest.mark.parametrize("args", [("--json", "snap-all", "x"), ("snap-all", "--dry-run", "x"), ("-v", "snap-all", "x"),
                                  ("snap-all", "x", "y"), ("snap-all", "--", "-x"), ("snap-all", "  ")])
def test_any_other_command_line_is_the_full_clis(homelab, args):
    warm(homelab)
    proc = program(homelab.config, *args, importtime=True)
    assert loaded_click(proc)


def test_attack_compiled_config_writable_by_others_is_ignored(homelab):
    """Threat: a user who can write the compiled config would choose what snap-all snapshots and
    where its lock is. It is trusted only when owned by the reader and writable by no one else."""
    warm(homelab)
    runtime = Path(compiled.runtime_dir())
    (saved,) = [p for p in runtime.iterdir() if p.name.startswith("compiled-")]
    saved.chmod(0o666)
    fast, proc = served_fast(homelab.config, "x")
    assert not fast and proc.returncode == 0
    saved.chmod(0o600)
    os.chown(saved, 65534, 65534)
    fast, proc = served_fast(homelab.config, "x")
    assert not fast and proc.returncode == 0
    os.chown(saved, 0, 0)
    runtime.chmod(0o777)
    try:
        fast, proc = served_fast(homelab.config, "x")
    finally:
        runtime.chmod(0o700)
    assert not fast and proc.returncode == 0


def test_dry_run_saves_no_compiled_config(homelab):
    full(homelab.config, "snapshot", "--dry-run").check_returncode()
    fast, proc = served_fast(homelab.config, "x")
    assert not fast and proc.returncode == 0


def buffered_env() -> dict[str, str]:
    """The environment without PYTHONUNBUFFERED (this machine sets it; users' shells do not)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("unbuffered", [False, True])
def test_output_that_cannot_be_written_is_one_error_line_and_exit_1_either_way(homelab, unbuffered):
    warm(homelab)
    env = os.environ.copy() if unbuffered else buffered_env()
    got = []
    for run in (program, full):
        with open("/dev/full", "w") as sink:
            proc = run(homelab.config, "snap-all", "x", env=env, stdout=sink, stderr=subprocess.PIPE)
        got.append((proc.returncode, proc.stderr))
    assert got[0] == got[1] == (1, "error: snap-all: No space left on device\n")


def test_stdout_that_is_not_utf8_gets_the_same_rows_either_way(homelab):
    odd = warm_with_a_subvolume_at(homelab, "\u00fbn\u00ef")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    by_fast, by_full = program(homelab.config, "snap-all", "x", env=env), full(homelab.config, "snap-all", "x", env=env)
    assert shape(by_fast) == shape(by_full)
    assert by_fast.returncode == 0 and f"{odd}/.snapshots/" in by_fast.stdout


def test_rows_come_before_errors_in_one_file_either_way(homelab, tmp_path):
    warm(homelab)
    sdir = homelab.paths["data"] / ".snapshots"
    subprocess.run(["chattr", "+i", str(sdir)], check=True)
    try:
        logs = []
        for run in (program, full):
            log = tmp_path / f"{run.__name__}.log"
            with open(log, "w") as sink:
                run(homelab.config, "snap-all", "x", env=buffered_env(), stdout=sink, stderr=subprocess.STDOUT)
            logs.append(re.sub(r"/\.snapshots/\d+/", "/.snapshots/N/", log.read_text()))
    finally:
        subprocess.run(["chattr", "-i", str(sdir)], check=True)
    assert logs[0] == logs[1]
    assert logs[0].splitlines()[-1].startswith("error: data: ")


@pytest.mark.parametrize("description", [b"bad\xffbyte", "ctl\x01red", "esc\x1b[31m", "vt\x0bvt", "\ufffe"])
def test_a_description_info_xml_cannot_hold_is_refused_before_anything_changes(homelab, description):
    warm(homelab)
    subs = configured(homelab)
    before = {name: sorted(os.listdir(path / ".snapshots")) for name, path in subs.items()}
    for run in (program, full):
        proc = run(homelab.config, "snap-all", description)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: DESCRIPTION ") and len(proc.stderr.splitlines()) == 1
    assert {name: sorted(os.listdir(path / ".snapshots")) for name, path in subs.items()} == before


def test_a_closed_stderr_changes_nothing_either_way(homelab):
    warm(homelab)
    subs = configured(homelab)
    outs = []
    for run in (program, full):
        before = {name: newest(path) for name, path in subs.items()}
        proc = run(homelab.config, "snap-all", "x", stderr=subprocess.DEVNULL, stdout=subprocess.PIPE,
                   preexec_fn=lambda: os.close(2))
        assert proc.returncode == 0
        assert all(int(newest(path).name) == int(before[name].name) + 1 for name, path in subs.items())
        outs.append(re.sub(r"/\.snapshots/\d+/", "/.snapshots/N/", proc.stdout))
    assert outs[0] == outs[1] != ""


def test_a_stdout_in_another_encoding_gets_the_same_bytes_either_way(homelab):
    warm_with_a_subvolume_at(homelab, "donn\u00e9es")
    env = {**os.environ, "PYTHONIOENCODING": "latin-1"}
    got = []
    for run in (program, full):
        proc = subprocess.run([sys.executable, "-m", "subvault" if run is program else "subvault.cli.main", "--config",
                               str(homelab.config), "snap-all", "x"], capture_output=True, cwd=REPO, env=env)
        got.append((proc.returncode, re.sub(rb"/\.snapshots/\d+/", b"/.snapshots/N/", proc.stdout)))
    assert got[0] == got[1] and got[0][0] == 0
    assert b"donn\xe9es" in got[0][1]


def test_entries_named_with_other_digits_are_no_snapshot_numbers(homelab):
    warm(homelab)
    sdir = homelab.paths["data"] / ".snapshots"
    (sdir / "\u00b2").write_text("")
    (sdir / "\u0667").mkdir()
    for run in (program, full):
        proc = run(homelab.config, "snap-all", "x")
        assert proc.returncode == 0, proc.stderr
    assert sorted(n for n in os.listdir(sdir) if n.isascii() and n.isdigit()) == ["1", "2", "3"]
