"""Every reporting command prints valid, versioned JSON in every state, with its exit code.

The states are built once for the module on one loop filesystem, each in its own
subvolume with its own config (every state's container is excluded; the configured
subvolumes inside are protected all the same), so the whole matrix runs against real
btrfs without one filesystem per case. The filesystem's top level holds only
subvolumes, so it is no data of its own to cover.

- nothing: subvolumes and a btrfs target, nothing taken yet;
- fresh: `run` done, replicated, a successful drill recorded;
- stale: the newest snapshots are three days old;
- unreachable: the btrfs target is an ssh host that refuses connections;
- unprotected: a subvolume nobody configured or excluded;
- offsite_empty: an object target whose bucket holds nothing;
- drill_never: replicated, but no drill ever ran.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from subvault.btrfs import adapter, local
from subvault.demo.testbed import LoopFs
from subvault.dr.state import record_drill

REPO = Path(__file__).resolve().parents[2]

STATES = ["nothing", "fresh", "stale", "unreachable", "unprotected", "offsite_empty", "drill_never"]
SUBVOLS = ["root", "var_lib_microshift"]  # a long name: columns must stay aligned


class State:
    def __init__(self, name: str, base: Path, mnt: Path):
        self.name = name
        self.dir = mnt / name
        self.config = base / f"{name}.toml"
        self.state_dir = base / f"state-{name}"
        self.target_dir = mnt / "targets" / name
        self.scratch = mnt / "scratch" / name
        self.object_target: str | None = None
        self.btrfs_target: str | None = None

    def cli(self, *args: str):
        return subprocess.run([sys.executable, "-m", "subvault.cli.main", "--config", str(self.config), *args],
                              capture_output=True, text=True, cwd=REPO, timeout=300)


def _write_config(st: State, mnt: Path, targets: str, target_names: list[str]) -> None:
    lines = ["[defaults]", 'timeline = "24h 7d 4w"', f'state_dir = "{st.state_dir}"', f"targets = {json.dumps(target_names)}", ""]
    for name in SUBVOLS:
        lines += ["[[subvolume]]", f'name = "{name}"', f'path = "{st.dir / name}"', ""]
    for other in [*STATES, "targets", "scratch", "stray"]:
        if other != "stray" or st.name != "unprotected":
            lines += ["[[exclude]]", f'path = "{mnt / other}"', 'reason = "another test state"', ""]
    st.config.write_text("\n".join(lines) + targets)


def _local_target(st: State) -> str:
    st.target_dir.mkdir(parents=True)
    st.btrfs_target = "pi"
    return f'\n[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "{st.target_dir}"\nkeep = "24h 8d 5w"\n'


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("needs root and loop devices")
    base = tmp_path_factory.mktemp("json-states")
    fs = LoopFs(image=base / "src.img", mountpoint=base / "mnt", size="1G").create()
    try:
        mnt = fs.mountpoint
        built: dict[str, State] = {}
        for top in ("targets", "scratch"):
            adapter.create_subvolume(mnt / top)
        for name in STATES:
            st = State(name, base, mnt)
            adapter.create_subvolume(st.dir)
            st.scratch.mkdir()
            for sub in SUBVOLS:
                adapter.create_subvolume(st.dir / sub)
                (st.dir / sub / "hello.txt").write_text(f"{name} {sub}\n")
            built[name] = st
        _build(built, base, mnt)
        yield built
    finally:
        fs.close()


def _build(s: dict[str, State], base: Path, mnt: Path) -> None:
    _write_config(s["nothing"], mnt, _local_target(s["nothing"]), ["pi"])

    for name in ("fresh", "drill_never"):
        st = s[name]
        _write_config(st, mnt, _local_target(st), ["pi"])
        assert st.cli("run").returncode == 0
        (st.dir / "root" / "hello.txt").write_text("changed\n")
    record_drill(s["fresh"].state_dir, {"source": "pi"}, ok=True, finished=datetime.now(UTC))

    st = s["stale"]
    _write_config(st, mnt, "", [])
    old = datetime.now(UTC) - timedelta(days=3)
    for sub in SUBVOLS:
        local.create(sub, st.dir / sub, kind="timeline", description="timeline", now=old)
    # a description with a line break must not break the `list` table
    local.create("root", st.dir / "root", kind="prechange", description="before\nupgrade", now=old)

    st = s["unreachable"]
    st.btrfs_target = "pi"
    _write_config(st, mnt, '\n[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "ssh://root@127.0.0.1:9/srv/backup"\nkeep = "24h 8d 5w"\n', ["pi"])
    assert st.cli("snapshot").returncode == 0

    st = s["unprotected"]
    _write_config(st, mnt, "", [])
    assert st.cli("snapshot").returncode == 0
    adapter.create_subvolume(mnt / "stray")  # excluded by every other state's config

    st = s["offsite_empty"]
    key = base / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    bucket = base / "bucket"
    bucket.mkdir()
    st.object_target = "offsite"
    _write_config(st, mnt, f'''
[[target]]
name = "offsite"
type = "object"
url = "file://{bucket}"
recipients = ["{recipient}"]
keep = "8d 5w 12m"
full_every = "30d"
mac_key = "{base}/offsite.mac"
''', ["offsite"])
    assert st.cli("snapshot").returncode == 0
    (base / "offsite.mac").write_text(os.urandom(32).hex() + "\n")
    (base / "offsite.mac").chmod(0o600)


LOCAL_TARGET = {"nothing", "fresh", "drill_never"}  # states whose btrfs target is a local directory


def _commands(st: State) -> dict[str, list[str]]:
    """Every command that takes --json, by name; the changing ones as dry runs (pre-change, which has none, last)."""
    verify_target = st.object_target or st.btrfs_target or "offsite"
    cmds = {
        "status": ["status"],
        "check": ["check"],
        "list": ["list"],
        "list-local": ["list", "--local"],
        "list-one": ["list", "var_lib_microshift"],
        "list-unknown": ["list", "no_such_subvolume"],
        "snapshot": ["snapshot", "--dry-run"],
        "snap-all": ["snap-all", "before-upgrade", "--dry-run"],
        "prune": ["prune", "--dry-run"],
        "run": ["run", "--dry-run"],
        "replicate": ["replicate", "--dry-run"],
        "offsite": ["offsite", "--dry-run"],
        "verify": ["verify", "--target", verify_target],
        "diff": ["diff", "root", "1"],
        "restore": ["restore", "root", "--dry-run", "--into", str(st.scratch)],
        "rollback": ["rollback", "root", "1", "--dry-run", "--fstab", "/dev/null"],
        "dr-capture": ["dr", "capture", "--dry-run"],
        "drill": ["drill", "--from", "no_such_target"],
        "pull": ["pull", "--dry-run"],
    }
    if st.name in LOCAL_TARGET:
        cmds["prune-received"] = ["prune-received", "--root", str(st.target_dir), "--keep", "24h", "--dry-run"]
    cmds["pre-change"] = ["pre-change", "--flux", "off", "--desc", "json-matrix"]
    return cmds


_NAMES = [*_commands(State("nothing", Path("/"), Path("/"))).keys()]


def _matrix():
    for state in STATES:
        names = [n for n in _NAMES if n != "prune-received" or state in LOCAL_TARGET]
        for name in names:
            yield pytest.param(state, name, id=f"{state}-{name}")


@pytest.mark.parametrize("state,name", list(_matrix()))
def test_every_reporting_command_prints_versioned_json_in_every_state(states, state, name):
    st = states[state]
    argv = _commands(st)[name]
    proc = st.cli(*argv, "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"`subvault {' '.join(argv)} --json` in state {state} printed no JSON (exit {proc.returncode}):\n"
                    f"stdout: {proc.stdout[:2000]}\nstderr: {proc.stderr[:2000]}")
    assert doc["version"] == 1
    assert doc["command"] == (" ".join(argv[:2]) if argv[0] == "dr" else argv[0])
    assert proc.returncode in (0, 1, 2, 3)
    assert doc["exit_code"] == proc.returncode
    assert ("result" in doc) != ("error" in doc)
    if "error" in doc:
        assert proc.returncode != 0 and doc["error"] and "\n" not in doc["error"]
    _expectations(state, argv, proc.returncode, doc)


def _expectations(state: str, argv: list[str], code: int, doc: dict) -> None:
    """What each state must say, beyond being JSON."""
    command = argv[0]
    if command == "status":
        assert code == 0
        rows = doc["result"]
        assert {r["subvolume"] for r in rows} == set(SUBVOLS)
        assert all(isinstance(r["cadence"], (int, float)) for r in rows)
    if command == "check":
        kinds = {p["kind"] for p in doc["result"]["problems"]}
        assert code == (0 if state in ("fresh", "drill_never") else 1), doc
        if state == "unprotected":
            assert "unprotected" in kinds
        if state == "stale":
            assert kinds == {"stale"}
        if state == "drill_never":
            assert any("drill" in w for w in doc["result"]["warnings"])
    if command == "list" and argv[1:] == ["no_such_subvolume"]:
        assert code == 2
    if command == "verify" and state == "offsite_empty":
        assert code == 1, "an empty bucket is not a verified backup"
    if command == "verify" and state != "offsite_empty":
        assert code == 2, "verify needs an object target"
    if command == "drill":
        assert code == 2
    if command == "pre-change":
        assert code == 0, doc


# Commands whose text is an Outcome: "subject  action  detail" lines.
OUTCOME_TEXT = {"snapshot", "snap-all", "prune", "run", "replicate", "offsite", "verify", "restore", "rollback", "prune-received", "pull"}
# A word said twice ("target target:"); numbers repeat by nature ("2026-12-02 02:02"), so only words with a letter count.
DOUBLED = re.compile(r"\b(\w*[A-Za-z]\w*)(:?) \1\2(?=\W)")


def _text_matrix():
    for state in STATES:
        for name in _NAMES:
            if name == "pre-change" or (name == "prune-received" and state not in LOCAL_TARGET):
                continue
            yield pytest.param(state, name, id=f"{state}-{name}")


@pytest.mark.parametrize("state,name", list(_text_matrix()))
def test_text_output_is_for_a_person_in_every_state(states, state, name):
    """No traceback; human sizes; no doubled words; aligned columns; one line per table row."""
    st = states[state]
    argv = _commands(st)[name]
    proc = st.cli(*argv)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode in (0, 1, 2, 3)
    assert all(line.startswith(("error: ", "warning: ")) for line in proc.stderr.splitlines()), proc.stderr
    assert not re.search(r"\d{4,} bytes", out), f"sizes are for a person: {out}"
    assert not DOUBLED.search(out), f"doubled word {DOUBLED.search(out).group(0)!r} in: {out}"
    if name in OUTCOME_TEXT:
        lines = [line.removeprefix("[dry-run] ") for line in proc.stdout.splitlines()]
        action_cols = {len(re.match(r"\S+ +", l).group(0)) for l in lines if re.match(r"\S+ +\S", l)}
        assert len(action_cols) <= 1, f"columns not aligned:\n{proc.stdout}"
    if name == "status":
        table = [line for line in proc.stdout.splitlines() if not line.startswith("error: ")]  # whole errors follow the table
        header, *rows = table
        cols = [m.start() for m in re.finditer(r"\S+", header)]
        for row in rows:
            for c in cols[1:6]:
                assert row[c - 1] == " " and row[c] != " ", f"status columns not aligned:\n{proc.stdout}"
    if name == "list" and state == "stale":
        assert "before\\nupgrade" in proc.stdout and "\nupgrade" not in proc.stdout, proc.stdout
