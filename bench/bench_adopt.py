#!/usr/bin/env python3
"""`subvault adopt`, measured (run as root; issue 16's performance rows).

1. `adopt` on the homelab's 8 subvolumes with 2,000 snapper snapshots (snapper's own
   info.xml, timeline cleanup) and 500 btrbk target entries (verified receives:
   read-only, with a received_uuid), plus btrbk's latest local snapshot of each.
   Timed as a whole process: `adopt --write` (reads and plans; repeatable), in
   rounds, and the one `adopt --apply` (hands over: 2,000 take-overs, 500 moves).
2. The first `subvault run` after `adopt --apply` against btrbk's own next
   incremental `btrbk run`, on the same data after the same change: each round
   builds two identical btrbk installations (same bytes, same change), lets btrbk
   run on one and adopts the other, alternating which goes first.

Usage: .venv/bin/python bench/bench_adopt.py [--snapshots 2000] [--entries 500] [--rounds 3] [--mib 256]
Prints per-round figures, medians, the ratios and the goals (met / NOT met).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from subvault.adopt.btrbk_conf import format_snapshot_name, parse_snapshot_name  # noqa: E402
from subvault.btrfs import libbtrfsutil  # noqa: E402
from subvault.btrfs.snapper import Info, render_info  # noqa: E402
from subvault.demo.testbed import PROTECTED, LoopFs, build_homelab  # noqa: E402
from subvault.timeutil import local_zone  # noqa: E402

SUBVAULT = [str(REPO / ".venv" / "bin" / "subvault")]
TZ = local_zone(None)


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def timed(argv: list[str], **kw) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def snapshot(src: Path, dst: Path) -> None:
    if libbtrfsutil.available():
        libbtrfsutil.create_snapshot(str(src), str(dst), readonly=True)
    else:
        sh(["btrfs", "subvolume", "snapshot", "-r", str(src), str(dst)])


def receive(snap: Path, into: Path) -> None:
    p1 = subprocess.Popen(["btrfs", "send", "-q", str(snap)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p2 = subprocess.Popen(["btrfs", "receive", str(into)], stdin=p1.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert p1.stdout is not None
    p1.stdout.close()
    if p2.wait() or p1.wait():
        raise SystemExit(f"btrfs send {snap} | btrfs receive {into} failed")


def btrbk_conf(path: Path, volume: Path, target: Path, work: Path, tag: str) -> None:
    path.write_text("\n".join([
        "timestamp_format long", "snapshot_preserve_min latest", "snapshot_preserve no",
        # `latest`: btrbk sends what target_preserve keeps, and a second run within the hour would otherwise send nothing.
        "target_preserve_min latest", "target_preserve 24h 8d 5w", f"lockfile {work / f'btrbk-{tag}.lock'}",
        f"volume {volume}", "  snapshot_dir btrbk_snapshots", f"  target send-receive {target}",
        *[f"  subvolume {n}" for n in PROTECTED], "",
    ]))


# -- 1. adopt with 2,000 snapshots and 500 entries ------------------------------------------------

def build_large(work: Path, n_snapshots: int, n_entries: int) -> tuple[Path, Path, list[LoopFs]]:
    """The installation under root: snapper configs and snapshots, btrbk.conf, one local target."""
    root = work / "root"
    pool = root / "mnt" / "pool"
    fss = [LoopFs(work / "src.img", pool, size="4G").create(), LoopFs(work / "tgt.img", work / "tgt", size="4G").create()]
    paths = build_homelab(pool)
    target = work / "tgt" / "btrbk"
    target.mkdir()
    (root / "etc/snapper/configs").mkdir(parents=True)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    per = n_snapshots // len(PROTECTED)
    for name in PROTECTED:
        (root / "etc/snapper/configs" / name).write_text(
            f'SUBVOLUME="/mnt/pool/{name}"\nFSTYPE="btrfs"\nTIMELINE_CREATE="yes"\nTIMELINE_CLEANUP="yes"\n'
            'NUMBER_CLEANUP="yes"\nNUMBER_LIMIT="50"\nTIMELINE_LIMIT_HOURLY="24"\nTIMELINE_LIMIT_DAILY="7"\n'
            'TIMELINE_LIMIT_WEEKLY="4"\nTIMELINE_LIMIT_MONTHLY="12"\nTIMELINE_LIMIT_YEARLY="10"\n'
        )
        sdir = paths[name] / ".snapshots"
        sh(["btrfs", "subvolume", "create", str(sdir)])
        for num in range(1, per + 1):
            ndir = sdir / str(num)
            ndir.mkdir()
            snapshot(paths[name], ndir / "snapshot")
            info = Info(num=num, date=now - timedelta(hours=per - num + 1), description="timeline", cleanup="timeline")
            (ndir / "info.xml").write_text(render_info(info))  # snapper's own: no subvault userdata
    # btrbk: its latest local snapshot per subvolume, received on the target, and older
    # entries (read-only snapshots of that receive keep its received_uuid: verified receives)
    (pool / "btrbk_snapshots").mkdir()
    per_entries, extra = divmod(n_entries, len(PROTECTED))
    for i, name in enumerate(PROTECTED):
        latest = format_snapshot_name(name, now - timedelta(minutes=30), "long", TZ)
        snapshot(paths[name], pool / "btrbk_snapshots" / latest)
        receive(pool / "btrbk_snapshots" / latest, target)
        for k in range(1, per_entries + (1 if i < extra else 0)):
            snapshot(target / latest, target / format_snapshot_name(name, now - timedelta(hours=6 * k), "long", TZ))
    btrbk_conf(work / "btrbk.conf", pool, target, work, "large")
    return root, work / "btrbk.conf", fss


def bench_adopt(work: Path, n_snapshots: int, n_entries: int, rounds: int) -> dict[str, object]:
    root, conf, fss = build_large(work / "large", n_snapshots, n_entries)
    try:
        config = work / "large" / "subvault.toml"
        base = [*SUBVAULT, "--config", str(config), "adopt", "--root", str(root), "--snapper", "--btrbk", str(conf)]
        plan = json.loads(subprocess.run([*base, "--dry-run", "--json"], capture_output=True, text=True, check=True).stdout)
        kinds: dict[str, int] = {}
        for a in plan["result"]["plan"]["actions"]:
            kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
        if kinds.get("take-over") != n_snapshots // len(PROTECTED) * len(PROTECTED) or kinds.get("move-entry") != n_entries:
            raise SystemExit(f"the installation is not what the bench claims: {kinds}")
        plans, dries = [], []
        for _ in range(rounds):  # alternating, so load hits both alike
            plans.append(timed([*base, "--write", str(config), "--force"]))
            dries.append(timed([*base, "--dry-run", "--json"]))
        config.unlink()
        env = {**os.environ, "SUBVAULT_SYSROOT": str(root)}
        apply_s = timed([*base, "--apply"], env=env)
        again_s = timed([*base, "--apply"], env=env)
        return {"plan": plans, "dry": dries, "apply": apply_s, "again": again_s, "kinds": kinds}
    finally:
        for fs in reversed(fss):
            fs.close()


# -- 2. the first run after adopt vs btrbk's next run ---------------------------------------------

def fill(vol: Path, blobs: dict[str, bytes]) -> dict[str, Path]:
    paths = {}
    for name in PROTECTED:
        paths[name] = vol / name
        sh(["btrfs", "subvolume", "create", str(paths[name])])
        (paths[name] / "data.bin").write_bytes(blobs[name])
    return paths


def change(paths: dict[str, Path], seed: int) -> None:
    """Overwrite 5% of each data.bin in place: the same offsets and bytes for a given seed."""
    import random

    rng = random.Random(seed)
    for name in PROTECTED:
        f = paths[name] / "data.bin"
        mib = f.stat().st_size >> 20
        with open(f, "r+b") as fh:
            for i in range(max(1, mib // 20)):
                fh.seek(((i * 7919) % max(mib, 1)) << 20)
                fh.write(rng.randbytes(1 << 20))


def redate(*dirs: Path, hours: int = 2) -> None:
    """Name btrbk's snapshot and its copy `hours` earlier, as an hourly btrbk would have: on both sides alike, so
    subvault's timeline is due (btrbk's own run snapshots whatever the time)."""
    for d in dirs:
        for e in sorted(d.iterdir()):
            parsed = parse_snapshot_name(e.name, TZ)
            if parsed:
                e.rename(d / format_snapshot_name(parsed[0], parsed[1] - timedelta(hours=hours), "long", TZ))


def received(root: Path) -> int:
    out = subprocess.run(["btrfs", "subvolume", "list", "-r", "-o", str(root)], capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def bench_run(work: Path, mib: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    src = LoopFs(work / "run-src.img", work / "run-src", size=f"{max(4, mib * rounds * 3 // 1024 + 2)}G").create()
    tgt = LoopFs(work / "run-tgt.img", work / "run-tgt", size=f"{max(4, mib * rounds * 3 // 1024 + 2)}G").create()
    btrbk_s, ours_s, adopt_s = [], [], []
    try:
        per = max(1, mib // len(PROTECTED))
        for r in range(rounds):
            blobs = {n: os.urandom(per << 20) for n in PROTECTED}
            sides = {}
            for side in ("btrbk", "adopted"):
                vol = src.mountpoint / f"{side}{r}"
                tdir = tgt.mountpoint / f"{side}{r}"
                sh(["btrfs", "subvolume", "create", str(vol)])
                tdir.mkdir()
                (vol / "btrbk_snapshots").mkdir()
                paths = fill(vol, blobs)
                conf = work / f"btrbk-{side}{r}.conf"
                btrbk_conf(conf, vol, tdir, work, f"{side}{r}")
                sh(["btrbk", "-c", str(conf), "run"])  # the full send: history, not timed
                redate(vol / "btrbk_snapshots", tdir)
                sides[side] = (paths, conf, tdir)
            del blobs
            for side in sides:
                change(sides[side][0], seed=r)
            order = ("btrbk", "adopted") if r % 2 == 0 else ("adopted", "btrbk")
            for side in order:
                paths, conf, tdir = sides[side]
                before = received(tdir)
                os.sync()
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
                if side == "btrbk":
                    btrbk_s.append(timed(["btrbk", "-c", str(conf), "run"]))
                    if received(tdir) - before != len(PROTECTED):
                        raise SystemExit("btrbk run did not send one new snapshot per subvolume: the comparison would be void")
                    continue
                root = work / f"root{r}"
                config = root / "etc/subvault/subvault.toml"
                env = {**os.environ, "SUBVAULT_SYSROOT": str(root)}
                adopt_s.append(timed([*SUBVAULT, "--config", str(config), "adopt", "--root", str(root),
                                      "--btrbk", str(conf), "--apply"], env=env))
                os.sync()
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
                proc_start = time.perf_counter()
                proc = subprocess.run([*SUBVAULT, "--config", str(config), "run", "--json"], capture_output=True, text=True, env=env)
                ours_s.append(time.perf_counter() - proc_start)
                sent = [i for i in json.loads(proc.stdout)["result"]["items"] if i["action"] == "sent"]
                if proc.returncode != 0 or len(sent) != len(PROTECTED) or any(i["data"]["full"] for i in sent):
                    raise SystemExit(f"the first run after adopt did not send {len(PROTECTED)} incrementals:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
            print(f"  round {r + 1}: btrbk run {btrbk_s[-1]:.2f} s, subvault run after adopt {ours_s[-1]:.2f} s "
                  f"(adopt --apply {adopt_s[-1]:.2f} s; {order[0]} first)", flush=True)
    finally:
        tgt.close()
        src.close()
    return btrbk_s, ours_s, adopt_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapshots", type=int, default=2000)
    ap.add_argument("--entries", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mib", type=int, default=256, help="data per installation in the run comparison, in total over 8 subvolumes")
    ap.add_argument("--only", choices=("adopt", "run"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="subvault-bench-adopt-"))
    rows = []
    try:
        print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        if args.only != "run":
            start = time.perf_counter()
            a = bench_adopt(work, args.snapshots, args.entries, args.rounds)
            print(f"adopt: built {args.snapshots} snapper snapshots and {args.entries} btrbk entries in {time.perf_counter() - start:.0f} s; "
                  f"plan: {a['kinds']}")
            print(f"  adopt --write (reads, plans, writes):   {' '.join(f'{x:.2f}' for x in a['plan'])} s")  # type: ignore[union-attr]
            print(f"  adopt --dry-run --json:                 {' '.join(f'{x:.2f}' for x in a['dry'])} s")  # type: ignore[union-attr]
            print(f"  adopt --apply (once: it hands over):    {a['apply']:.2f} s")
            print(f"  adopt --apply again (all done, skips):  {a['again']:.2f} s")
            pm = statistics.median(a["plan"])  # type: ignore[arg-type]
            ap_s = float(a["apply"])  # type: ignore[arg-type]
            what = f"{args.snapshots:,} snapper snapshots, {args.entries} target entries"
            rows.append([f"`adopt` ({what})", f"{pm:.2f} s", "< 2 s", "met" if pm < 2 else "NOT met"])
            rows.append([f"`adopt --apply` ({what}; one round)", f"{ap_s:.2f} s", "< 2 s", "met" if ap_s < 2 else "NOT met"])
        if args.only != "adopt":
            print(f"first run after adopt vs btrbk's next run ({args.mib} MiB over 8 subvolumes, 5% changed, {args.rounds} rounds):", flush=True)
            b, o, _ = bench_run(work, args.mib, args.rounds)
            bm, om = statistics.median(b), statistics.median(o)
            ratio = om / bm
            print(f"  medians: btrbk run {bm:.2f} s, subvault run {om:.2f} s, ratio {ratio:.2f} (goal <= 1.1)")
            rows.append(["first `subvault run` after adopt vs btrbk's next `btrbk run`", f"{ratio:.2f}x ({om:.2f} s / {bm:.2f} s)",
                         "<= 1.1x", "met" if ratio <= 1.1 else "NOT met"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| path | measured (median of {args.rounds}) | goal | |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
