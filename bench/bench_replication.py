#!/usr/bin/env python3
"""Replication, measured in one run on the same data (run as root).

On the homelab layout (8 subvolumes, --mib of data in total, 3 GiB by default) on a
loop filesystem, to a second loop filesystem, each case sending exactly what its raw
pipeline sends:
  full sends, then incremental ones after a 5% change:
    raw `btrfs send [-p] | btrfs receive` per subvolume    vs  subvault replicate
    raw `btrfs send | ssh host btrfs receive` (one ssh per subvolume)  vs  subvault over ssh
  a whole incremental run after another 5% change (snapshot 8, send, prune):
    `btrbk run` (Debian's btrbk, equivalent btrbk.conf)  vs  `subvault run` (the CLI process)

Usage: .venv/bin/python bench/bench_replication.py [--mib 3072] [--no-ssh] [--no-btrbk]
Prints seconds and the ratios the issue asks for (goal: replication/raw <= 1.05, subvault/btrbk <= 0.8).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIPHER = "aes128-gcm@openssh.com"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "privileged"))

from subvault.btrfs import local  # noqa: E402
from subvault.config.load import parse_config  # noqa: E402
from subvault.context import Context  # noqa: E402
from subvault.demo.testbed import PROTECTED, LoopFs  # noqa: E402
from subvault.run.replicate import replicate  # noqa: E402
from subvault.timeutil import utcnow  # noqa: E402


def sh(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pipe(a: list[str], b: list[str]) -> None:
    p1 = subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p2 = subprocess.Popen(b, stdin=p1.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p1.stdout.close()
    if p2.wait() or p1.wait():
        raise SystemExit(f"raw pipeline failed: {a} | {b}")


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def fill(paths: dict[str, Path], mib: int) -> None:
    weights = {"var_lib_pvc": 4, "var_lib_containers": 3, "root": 2}
    total = sum(weights.get(n, 1) for n in PROTECTED)
    for name in PROTECTED:
        size = mib * weights.get(name, 1) // total
        with open(paths[name] / "data.bin", "wb") as fh:
            for _ in range(size):
                fh.write(os.urandom(1 << 20))


def change(paths: dict[str, Path], mib: int, fraction: float = 0.05) -> None:
    """Overwrite `fraction` of each subvolume's data in place (a 5% change)."""
    for name in PROTECTED:
        f = paths[name] / "data.bin"
        size = f.stat().st_size
        n = int(size * fraction) >> 20
        with open(f, "r+b") as fh:
            for i in range(n):
                fh.seek((i * 7919 % max(size >> 20, 1)) << 20)
                fh.write(os.urandom(1 << 20))


def config(paths, url: str, state: Path, extra: str = "") -> str:
    lines = ["[defaults]", 'timeline = "48h"', 'targets = ["t"]', f'state_dir = "{state}"', ""]
    for n in PROTECTED:
        lines += ["[[subvolume]]", f'name = "{n}"', f'path = "{paths[n]}"', ""]
    lines += ["[[target]]", 'name = "t"', 'type = "btrfs"', f'url = "{url}"', 'keep = "24h 8d 5w"', extra]
    return "\n".join(lines) + "\n"


def snapshot_all(paths, now) -> dict[str, Path]:
    return {n: local.create(n, paths[n], kind="timeline", description="timeline", now=now).path for n in PROTECTED}


def raw(snaps, parents, dest: Path, remote: list[str] | None = None) -> float:
    drop_caches()
    start = time.perf_counter()
    for n in PROTECTED:
        d = dest / n / ("inc" if parents else "full")
        d.mkdir(parents=True, exist_ok=True)
        send = ["btrfs", "send", "-q", *(["-p", str(parents[n])] if parents else []), str(snaps[n])]
        recv = [*remote, f"btrfs receive {d}"] if remote else ["btrfs", "receive", str(d)]
        pipe(send, recv)
    return time.perf_counter() - start


def ours(ctx: Context, meter: bool = True) -> float:
    drop_caches()
    start = time.perf_counter()
    out = replicate(ctx, meter=meter)
    took = time.perf_counter() - start
    if out.errors:
        raise SystemExit("\n".join(out.errors))
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=3072, help="data in total (the issue: about 3 GiB)")
    ap.add_argument("--no-ssh", action="store_true")
    ap.add_argument("--no-btrbk", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="subvault-bench-rep-"))
    size = f"{max(4, args.mib * 5 // 1024 + 2)}G"
    fss = [LoopFs(work / f"{n}.img", work / n, size=size) for n in ("src", "tgt")]
    servers = []
    try:
        for fs in fss:
            fs.create()
        src, tgt = (fs.mountpoint for fs in fss)
        paths = {}
        for n in PROTECTED:
            sh(["btrfs", "subvolume", "create", str(src / n)])
            paths[n] = src / n
        fill(paths, args.mib)
        results: dict[str, float] = {}
        now = utcnow()
        t1, t2 = now - timedelta(hours=2), now - timedelta(hours=1)
        minute = timedelta(minutes=1)
        cfg_local = parse_config(config(paths, str(tgt / "sv"), work / "state"))
        (tgt / "sv").mkdir()
        cfg_ssh = remote = None
        if not args.no_ssh:
            from sshd import Sshd

            server = Sshd(work / "sshd").start()
            servers.append(server)
            opts = ", ".join(f'"{o}"' for o in server.ssh_options())
            extra = f'ssh_identity = "{server.client_key}"\nssh_options = [{opts}]\nssh_cipher = "{CIPHER}"\n'
            remote = ["ssh", "-p", str(server.port), "-i", str(server.client_key), "-c", CIPHER,
                      *sum((["-o", o] for o in server.ssh_options()), []), "root@127.0.0.1"]
            (tgt / "svssh").mkdir()
            cfg_ssh = parse_config(config(paths, server.url(tgt / "svssh"), work / "state", extra))
        # Each case sends exactly what its raw pipeline sends: the full sends run while
        # only the first snapshot exists, the incremental ones after the 5% change.
        s1 = snapshot_all(paths, t1)
        results["raw local full"] = raw(s1, None, tgt / "raw")
        results["subvault local full"] = ours(Context(cfg_local, now=t1 + minute))
        if cfg_ssh is not None:
            results["raw ssh full"] = raw(s1, None, tgt / "rawssh", remote)
            results["subvault ssh full"] = ours(Context(cfg_ssh, now=t1 + minute))
        change(paths, args.mib)
        s2 = snapshot_all(paths, t2)
        results["raw local incremental"] = raw(s2, s1, tgt / "raw")
        results["subvault local incremental"] = ours(Context(cfg_local, now=t2 + minute))
        if cfg_ssh is not None:
            results["raw ssh incremental"] = raw(s2, s1, tgt / "rawssh", remote)
            results["subvault ssh incremental"] = ours(Context(cfg_ssh, now=t2 + minute))
        if not args.no_btrbk:
            results.update(bench_btrbk(paths, src, tgt, work, args.mib))
        report(results)
    finally:
        for s in servers:
            s.stop()
        for fs in reversed(fss):
            fs.close()
        shutil.rmtree(work)  # the images are sparse but hold every byte sent


def bench_btrbk(paths, src: Path, tgt: Path, work: Path, mib: int) -> dict[str, float]:
    """`btrbk run` vs `subvault run` (the CLI, a whole process), each after the same 5% change.

    Both take 8 snapshots, send them incrementally to the local target and prune.
    btrbk's first (full) run is not timed; subvault's target already holds the
    incremental base from the cases above.
    """
    snapdir = src / "btrbk_snaps"
    sh(["btrfs", "subvolume", "create", str(snapdir)])
    (tgt / "btrbk").mkdir()
    conf = work / "btrbk.conf"
    conf.write_text(
        "\n".join(
            [
                "timestamp_format long",
                "snapshot_preserve_min latest",
                "snapshot_preserve no",
                # `latest`: btrbk sends only what target_preserve keeps, and a second
                # run within the hour would otherwise send nothing.
                "target_preserve_min latest",
                "target_preserve 24h 8d 5w",
                f"lockfile {work / 'btrbk.lock'}",
                f"volume {src}",
                "  snapshot_dir btrbk_snaps",
                f"  target send-receive {tgt / 'btrbk'}",
                *[f"  subvolume {n}" for n in PROTECTED],
                "",
            ]
        )
    )
    sv_conf = work / "subvault.toml"
    sv_conf.write_text(config(paths, str(tgt / "sv"), work / "state"))
    sh(["btrbk", "-c", str(conf), "run"])  # full
    before = received(tgt / "btrbk")
    change(paths, mib)
    drop_caches()
    start = time.perf_counter()
    sh(["btrbk", "-c", str(conf), "run"])
    btrbk = time.perf_counter() - start
    if received(tgt / "btrbk") - before != len(PROTECTED):
        raise SystemExit("btrbk run did not send one new snapshot per subvolume: the comparison would be void")
    before = received(tgt / "sv")
    drop_caches()
    start = time.perf_counter()
    sh([str(REPO / ".venv" / "bin" / "subvault"), "--config", str(sv_conf), "run"])
    ours_s = time.perf_counter() - start
    if received(tgt / "sv") - before != len(PROTECTED):
        raise SystemExit("subvault run did not send one new snapshot per subvolume: the comparison would be void")
    return {"btrbk run incremental": btrbk, "subvault run incremental": ours_s}


def received(root: Path) -> int:
    """Count the read-only subvolumes below root, a directory at the top of its filesystem."""
    out = subprocess.run(["btrfs", "subvolume", "list", "-r", str(root)], capture_output=True, text=True, check=True)
    return sum(1 for line in out.stdout.splitlines() if Path(line.split(" path ", 1)[-1]).parts[0] == root.name)


def report(r: dict[str, float]) -> None:
    for k, v in r.items():
        print(f"{k:<32} {v:8.2f} s")
    pairs = [
        ("local full", "subvault local full", "raw local full"),
        ("local incremental", "subvault local incremental", "raw local incremental"),
        ("ssh full", "subvault ssh full", "raw ssh full"),
        ("ssh incremental", "subvault ssh incremental", "raw ssh incremental"),
        ("run vs btrbk", "subvault run incremental", "btrbk run incremental"),
    ]
    for label, a, b in pairs:
        if a in r and b in r:
            print(f"ratio {label:<20} {r[a] / r[b]:.3f}")
    print("\n| path | measured (time ratio subvault/anchor) | goal | |\n|---|---|---|---|")
    for label, a, b in pairs:
        if a in r and b in r:
            ratio = r[a] / r[b]
            print(f"| replication {label} | {ratio:.2f}x the anchor's time | <= 1.0x | {'met' if ratio <= 1.0 else 'NOT met'} |")


if __name__ == "__main__":
    main()
