#!/usr/bin/env python3
"""Replication, measured in one run on the same data (run as root).

On the homelab layout (8 subvolumes, --mib of data in total) on a loop filesystem,
to a second loop filesystem:
  full, then a 5% change (incremental):
    raw `btrfs send [-p] | btrfs receive` per subvolume   vs  subvault replicate (metered, and --no-meter)
    raw `btrfs send | ssh host btrfs receive` (a new ssh per subvolume)  vs  subvault over ssh (one connection)
  a whole incremental run (snapshot 8 + send + prune):  `btrbk run`  vs  subvault (snapshot, replicate, prune)

Usage: .venv/bin/python bench/bench_replication.py [--mib 1024] [--no-ssh] [--no-btrbk]
Prints seconds and the ratios the issue asks for (goal: replication/raw <= 1.05, subvault/btrbk <= 0.8).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "privileged"))

from subvault.btrfs import local  # noqa: E402
from subvault.config.load import parse_config  # noqa: E402
from subvault.run.context import Context  # noqa: E402
from subvault.run.holds import all_holds  # noqa: E402
from subvault.run.local import prune as local_prune  # noqa: E402
from subvault.run.replicate import replicate  # noqa: E402
from subvault.testbed import PROTECTED, LoopFs  # noqa: E402
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
    ap.add_argument("--mib", type=int, default=1024)
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
        s1 = snapshot_all(paths, now - timedelta(hours=2))
        results["raw local full"] = raw(s1, None, tgt / "raw")
        (tgt / "sv").mkdir()
        ctx = Context(parse_config(config(paths, str(tgt / "sv"), work / "state")), now=now - timedelta(hours=2) + timedelta(minutes=1))
        results["subvault local full"] = ours(ctx)
        change(paths, args.mib)
        s2 = snapshot_all(paths, now - timedelta(hours=1))
        results["raw local incremental"] = raw(s2, s1, tgt / "raw")
        ctx = Context(ctx.config, now=now - timedelta(hours=1) + timedelta(minutes=1))
        results["subvault local incremental"] = ours(ctx)
        if not args.no_ssh:
            from sshd import Sshd

            server = Sshd(work / "sshd").start()
            servers.append(server)
            opts = ", ".join(f'"{o}"' for o in server.ssh_options())
            extra = f'ssh_identity = "{server.client_key}"\nssh_options = [{opts}]\nssh_cipher = "aes128-gcm@openssh.com"\n'
            remote = ["ssh", "-p", str(server.port), "-i", str(server.client_key), "-c", "aes128-gcm@openssh.com",
                      *sum((["-o", o] for o in server.ssh_options()), []), "root@127.0.0.1"]
            results["raw ssh full"] = raw(s1, None, tgt / "rawssh", remote)
            (tgt / "svssh").mkdir()
            cfg = parse_config(config(paths, server.url(tgt / "svssh"), work / "state", extra))
            results["subvault ssh full"] = ours(Context(cfg, now=now - timedelta(hours=2) + timedelta(minutes=1)))
            results["raw ssh incremental"] = raw(s2, s1, tgt / "rawssh", remote)
            results["subvault ssh incremental"] = ours(Context(cfg, now=now - timedelta(hours=1) + timedelta(minutes=1)))
        if not args.no_btrbk:
            results.update(bench_btrbk(paths, src, tgt, work, args.mib, ctx.config))
        report(results)
    finally:
        for s in servers:
            s.stop()
        for fs in reversed(fss):
            fs.close()


def bench_btrbk(paths, src: Path, tgt: Path, work: Path, mib: int, sv_config) -> dict[str, float]:
    """One full, then one incremental `btrbk run` vs subvault's snapshot + replicate + prune on the same data."""
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
                "target_preserve_min no",
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
    sh(["btrbk", "-c", str(conf), "run"])  # full
    change(paths, mib)
    drop_caches()
    start = time.perf_counter()
    sh(["btrbk", "-c", str(conf), "run"])
    btrbk = time.perf_counter() - start
    ctx = Context(sv_config, now=utcnow())
    drop_caches()
    start = time.perf_counter()
    snapshot_all(paths, ctx.now)
    out = replicate(ctx)
    pr = local_prune(ctx, holds=all_holds)
    ours_s = time.perf_counter() - start
    if out.errors or pr.errors:
        raise SystemExit("\n".join(out.errors + pr.errors))
    return {"btrbk run incremental": btrbk, "subvault run incremental": ours_s}


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


if __name__ == "__main__":
    main()
