#!/usr/bin/env python3
"""What the hostile-peer checks (issue 13) cost: an incremental `run` over ssh, this
checkout against the version before them, in one run on the same data (run as root).

The old version (default 3534958, the commit before the issue-13 work) is unpacked with
`git archive` into its own directory with its own venv (kept between runs, --old-dir).
Each version has its own 8 source subvolumes (the homelab layout, identical bytes), its
own directory on one target filesystem, and its own real sshd on 127.0.0.1 whose forced
command is the `subvault serve` that version ships (the new one bound with `--host`, the
form the docs call safe). Each round applies the same 5% change to both, moves every
timeline snapshot's date back an hour (so a timeline snapshot is due again: `run` takes
8 snapshots, sends 8 incrementals and prunes), drops the page cache and times each
version's `subvault run` CLI process, alternating which goes first. Both must add one
entry per subvolume on the target, or the round is void.

Usage: .venv/bin/python bench/bench_hostile.py [--mib 1024] [--rounds 5] [--old 3534958]
Prints seconds per round, medians, the ratio new/old and the goal (< 1.05): met / NOT met.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIPHER = "aes128-gcm@openssh.com"
GOAL = 1.05
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_replication import drop_caches, received, sh  # noqa: E402

from subvault.context import host_name  # noqa: E402
from subvault.demo.testbed import PROTECTED, LoopFs  # noqa: E402
from subvault.demo.testbed_ssh import Sshd  # noqa: E402

_DATE = re.compile(r"<date>([^<]+)</date>")


def prepare_old(commit: str, where: Path) -> Path:
    """Unpack `commit` into where (once) with its own venv; return its venv's bin directory."""
    bin_dir = where / ".venv" / "bin"
    stamp = where / ".commit"
    if (bin_dir / "subvault").exists() and stamp.exists() and stamp.read_text().strip() == commit:
        return bin_dir
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    sh([sys.executable, "-m", "venv", str(where / ".venv")])
    sh([str(bin_dir / "pip"), "install", "-q", "-e", str(where)])
    stamp.write_text(commit + "\n")
    return bin_dir


def fill_same(trees: list[Path], mib: int) -> None:
    """Write the same random bytes into data.bin of each subvolume of every tree."""
    weights = {"var_lib_pvc": 4, "var_lib_containers": 3, "root": 2}
    total = sum(weights.get(n, 1) for n in PROTECTED)
    for name in PROTECTED:
        files = [open(t / name / "data.bin", "wb") for t in trees]  # noqa: SIM115 - closed below
        try:
            for _ in range(mib * weights.get(name, 1) // total):
                block = os.urandom(1 << 20)
                for fh in files:
                    fh.write(block)
        finally:
            for fh in files:
                fh.close()


def change_same(trees: list[Path], fraction: float = 0.05) -> None:
    """Overwrite the same `fraction` of each data.bin in every tree with the same bytes."""
    for name in PROTECTED:
        size = (trees[0] / name / "data.bin").stat().st_size
        blocks = max(size >> 20, 1)
        picks = [(i * 7919 + int(time.time())) % blocks for i in range(int(size * fraction) >> 20)]
        for at in picks:
            block = os.urandom(1 << 20)
            for t in trees:
                with open(t / name / "data.bin", "r+b") as fh:
                    fh.seek(at << 20)
                    fh.write(block)


def age_snapshots(tree: Path, by: timedelta) -> None:
    """Move every snapper snapshot's date under tree back by `by` (a timeline snapshot is due again)."""
    for info in tree.glob("*/.snapshots/*/info.xml"):
        text = info.read_text()
        m = _DATE.search(text)
        if not m:
            continue
        when = datetime.fromisoformat(m.group(1).strip()) - by
        info.write_text(text[: m.start(1)] + when.strftime("%Y-%m-%d %H:%M:%S") + text[m.end(1) :])


def config(tree: Path, server: Sshd, root: Path, state: Path) -> str:
    opts = ", ".join(f'"{o}"' for o in server.ssh_options())
    lines = ["[defaults]", 'timeline = "48h"', 'targets = ["t"]', f'state_dir = "{state}"', ""]
    for n in PROTECTED:
        lines += ["[[subvolume]]", f'name = "{n}"', f'path = "{tree / n}"', ""]
    lines += ["[[target]]", 'name = "t"', 'type = "btrfs"', f'url = "{server.url(root)}"', 'keep = "24h 8d 5w"',
              f'ssh_identity = "{server.client_key}"', f"ssh_options = [{opts}]", f'ssh_cipher = "{CIPHER}"']
    return "\n".join(lines) + "\n"


def timed_run(cli: Path, conf: Path, target_root: Path, trace: Path | None = None) -> float:
    before = received(target_root)
    drop_caches()
    wrap = ["strace", "-f", "-qq", "-tt", "-e", "trace=execve", "-o", str(trace)] if trace else []
    start = time.perf_counter()
    res = subprocess.run([*wrap, str(cli), "--config", str(conf), "run"], capture_output=True, text=True)
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{cli} run failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    if received(target_root) - before != len(PROTECTED):
        raise SystemExit(f"{cli} run did not send one new snapshot per subvolume: the round would be void\n{res.stdout}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024, help="data per version, in total over the 8 subvolumes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--old", default="3534958", help="the version to compare against (a commit)")
    ap.add_argument("--old-dir", type=Path, default=None, help="where the old version and its venv live (kept)")
    ap.add_argument("--trace", type=Path, default=None, help="after the rounds, one more untimed round under strace (execve) into DIR/<version>.trace")
    args = ap.parse_args()
    old_bin = prepare_old(args.old, args.old_dir or Path(tempfile.gettempdir()) / f"subvault-bench-old-{args.old}")
    versions = {
        "old": (old_bin / "subvault", str(old_bin / "python"), ()),
        "new": (REPO / ".venv" / "bin" / "subvault", str(REPO / ".venv" / "bin" / "python"), ("--host", host_name())),
    }
    work = Path(tempfile.mkdtemp(prefix="subvault-bench-hostile-"))
    size = f"{max(4, args.mib * 3 // 1024 + 2)}G"
    fss = [LoopFs(work / f"{n}.img", work / n, size=size) for n in ("src", "tgt")]
    servers: list[Sshd] = []
    times: dict[str, list[float]] = {v: [] for v in versions}
    try:
        for fs in fss:
            fs.create()
        src, tgt = (fs.mountpoint for fs in fss)
        trees, confs, roots = {}, {}, {}
        for v, (_cli, python, flags) in versions.items():
            trees[v] = src / v
            trees[v].mkdir()
            for n in PROTECTED:
                sh(["btrfs", "subvolume", "create", str(trees[v] / n)])
            roots[v] = tgt / v
            roots[v].mkdir()
            # subvault.cli.main runs as a module in both versions (the old one's replication_cmds did too; this one's does not)
            forced = shlex.join([python, "-m", "subvault.cli.main", "serve", "--root", str(roots[v]), *flags])
            server = Sshd(work / f"sshd-{v}", forced_command=forced).start()
            servers.append(server)
            confs[v] = work / f"{v}.toml"
            confs[v].write_text(config(trees[v], server, roots[v], work / f"state-{v}"))
        fill_same(list(trees.values()), args.mib)
        for v, (cli, _python, _flags) in versions.items():
            timed_run(cli, confs[v], roots[v])  # the full send, not timed
        for r in range(args.rounds):
            for t in trees.values():
                age_snapshots(t, timedelta(hours=1))
            change_same(list(trees.values()))
            order = list(versions) if r % 2 == 0 else list(reversed(versions))
            for v in order:
                times[v].append(timed_run(versions[v][0], confs[v], roots[v]))
            print(f"round {r + 1}: " + "  ".join(f"{v} {times[v][-1]:.2f} s" for v in versions), flush=True)
        report(times, args)
        if args.trace:
            args.trace.mkdir(parents=True, exist_ok=True)
            for t in trees.values():
                age_snapshots(t, timedelta(hours=1))
            change_same(list(trees.values()))
            for v in versions:
                timed_run(versions[v][0], confs[v], roots[v], trace=args.trace / f"{v}.trace")
    finally:
        for s in servers:
            s.stop()
        for fs in reversed(fss):
            fs.close()
        shutil.rmtree(work)


def report(times: dict[str, list[float]], args: argparse.Namespace) -> None:
    med = {v: statistics.median(ts) for v, ts in times.items()}
    for v, ts in times.items():
        print(f"{v:<4} median {med[v]:.2f} s  rounds " + " ".join(f"{t:.2f}" for t in ts))
    ratio = med["new"] / med["old"]
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average (1, 5, 15 min): {' '.join(load)}")
    print("\n| path | measured | goal | |\n|---|---|---|---|")
    print(f"| incremental `run` over ssh, this checkout vs {args.old} ({args.mib} MiB, 5% change, "
          f"median of {len(times['new'])}) | {ratio:.3f}x ({med['new']:.2f} s vs {med['old']:.2f} s) | < {GOAL} | "
          f"{'met' if ratio < GOAL else 'NOT met'} |")


if __name__ == "__main__":
    main()
