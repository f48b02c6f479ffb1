#!/usr/bin/env python3
"""Local layers, measured in one run on the same loop filesystem (run as root).

  snap-all over the 8 homelab subvolumes  vs  8 `snapper --no-dbus -c X create`
                                          vs  the raw loop of 8 `btrfs subvolume snapshot -r`
  `list --json` and `prune --dry-run` with N snapshots (default 10,000), alternating,
  and where their time goes (listing, info.xml, planning, rendering, start-up)
  `subvault --help` and a `run` with nothing due

Every `subvault` here is a whole process on Debian's own interpreter, /usr/bin/python3,
started as the console script starts it (`from subvault.cli.main import main`), with this
checkout first on sys.path and the venv's site-packages last (as Debian's dist-packages
would be; the venv's interpreter may be another build, its compiled packages are for the
same CPython 3.11 ABI). Not PYTHONPATH: that would put the venv's packages before the
system's, and a .pth file the system's site runs on every start (this sandbox has one that
imports certifi) would then load the venv's heavier certifi and slow even a bare start.
The checkout is byte-compiled first and PYTHONDONTWRITEBYTECODE is dropped, as on an
installed system: without .pyc files every start compiles subvault's modules from source.

Usage: .venv/bin/python bench/bench_local.py [--snapshots 10000] [--rounds 10]
Prints medians and the ratios the issues ask for (issue 14: start-up; issue 15: list/prune).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from subvault.btrfs.snapdir import OWNER_KEY  # noqa: E402
from subvault.btrfs.snapper import Info, render_info  # noqa: E402
from subvault.demo.testbed import PROTECTED, LoopFs, build_homelab, homelab_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
SITE_PACKAGES = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
START_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
# The program as installed (`subvault = subvault.cli.entry:main`), and the full CLI alone
# (click and the schema, what snap-all costs when its fast start declines).
CLI = [SYSTEM_PYTHON, "-c", f"import sys; sys.path.insert(1, {str(REPO)!r}); sys.path.append({SITE_PACKAGES!r}); "
       "from subvault.cli.entry import main; sys.exit(main())"]
FULL_CLI = [SYSTEM_PYTHON, "-c", f"import sys; sys.path.insert(1, {str(REPO)!r}); sys.path.append({SITE_PACKAGES!r}); "
            "from subvault.cli.main import main; sys.exit(main())"]

# The libraries every subvault command imports before it can do anything: the floor under snap-all.
FLOOR = [SYSTEM_PYTHON, "-c", f"import sys; sys.path.append({SITE_PACKAGES!r}); import click, msgspec"]


def timed(argv: list[str], **kw) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=START_ENV, **kw)
    return time.perf_counter() - start


def median_of(fn, rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def bench_snap_all(paths, config: Path, rounds: int) -> dict[str, float]:
    configs = []
    for name in PROTECTED:
        cfg = Path("/etc/snapper/configs") / f"bench-{name}"
        cfg.write_text(f'SUBVOLUME="{paths[name]}"\nFSTYPE="btrfs"\nTIMELINE_CREATE="no"\n')
        configs.append(cfg.name)
    try:
        def subvault_once() -> float:
            return timed([*CLI, "--config", str(config), "snap-all", "bench"])

        def full_once() -> float:
            return timed([*FULL_CLI, "--config", str(config), "snap-all", "bench"])

        def snapper_once() -> float:
            start = time.perf_counter()
            for c in configs:
                subprocess.run(["snapper", "--no-dbus", "-c", c, "create", "-d", "bench", "-c", "number"], check=True)
            return time.perf_counter() - start

        counter = iter(range(10**6))

        def raw_once() -> float:
            n = next(counter)
            start = time.perf_counter()
            for name in PROTECTED:
                subprocess.run(["btrfs", "subvolume", "snapshot", "-r", str(paths[name]), str(paths[name] / f".raw-{n}")],
                               check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - start

        from subvault.config.load import load_config
        from subvault.context import Context
        from subvault.run.local import snap_all

        cfg = load_config(config)

        def in_process_once() -> float:
            start = time.perf_counter()
            out = snap_all(Context(cfg), "bench")
            took = time.perf_counter() - start
            assert not out.errors, out.errors
            return took

        return {
            "subvault snap-all (in-process)": median_of(in_process_once, rounds),
            "subvault snap-all": median_of(subvault_once, rounds),
            "subvault snap-all (full CLI)": median_of(full_once, rounds),
            "snapper x8": median_of(snapper_once, rounds),
            "raw btrfs snapshot x8": median_of(raw_once, rounds),
        }
    finally:
        for c in configs:
            (Path("/etc/snapper/configs") / c).unlink(missing_ok=True)


def fill_snapshots(paths, total: int) -> None:
    """Create `total` real timeline snapshots spread over the 8 subvolumes, dated hourly back in time.

    Through libbtrfsutil when present (10,000 in about 35 s instead of a process each).
    """
    from subvault.btrfs import libbtrfsutil

    per = total // len(PROTECTED)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for name in PROTECTED:
        sdir = paths[name] / ".snapshots"
        start = max((int(n) for n in os.listdir(sdir) if n.isdigit()), default=0) + 1
        for i in range(per):
            num = start + i
            ndir = sdir / str(num)
            ndir.mkdir()
            if libbtrfsutil.available():
                libbtrfsutil.create_snapshot(str(paths[name]), str(ndir / "snapshot"), readonly=True)
            else:
                subprocess.run(["btrfs", "subvolume", "snapshot", "-r", str(paths[name]), str(ndir / "snapshot")],
                               check=True, stdout=subprocess.DEVNULL)
            info = Info(num=num, date=now - timedelta(hours=per - i), description="timeline", cleanup="timeline",
                        userdata=((OWNER_KEY, "timeline"),))
            (ndir / "info.xml").write_text(render_info(info))


def breakdown(config: Path, rounds: int) -> dict[str, float]:
    """Where `list --json` / `prune --dry-run` spend their time, in-process (medians, seconds)."""
    import io
    from contextlib import redirect_stdout

    from subvault.btrfs import local_scan
    from subvault.btrfs.adapter import list_subvolumes
    from subvault.cli.render import emit_json
    from subvault.config.load import load_config
    from subvault.context import Context
    from subvault.plan.local import plan_prune
    from subvault.run.listing import list_snapshots

    cfg = load_config(config)
    ctx = Context(cfg)
    subs = list(cfg.subvolume)

    def t(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def scan_all():
        index = local_scan.FsIndex()
        return [local_scan.scan(s.name, s.path, with_uuids=True, fs_subvols=index) for s in subs]

    snaps = scan_all()
    listings = list_snapshots(ctx, targets=False)
    out = {}
    out["list the filesystem's subvolumes (libbtrfsutil)"] = median_of(lambda: t(lambda: list_subvolumes(subs[0].path)), rounds)
    out["scan: listing + read and parse every info.xml"] = median_of(lambda: t(scan_all), rounds)
    out["plan retention (all subvolumes)"] = median_of(lambda: t(lambda: [
        plan_prune(sn, timeline=cfg.timeline_of(s), prechange_keep=cfg.prechange_keep_of(s), now=ctx.now, tz=ctx.tz)
        for s, sn in zip(subs, snaps, strict=True)]), rounds)
    def render():
        with redirect_stdout(io.StringIO()):
            emit_json("list", listings)

    out["render list --json"] = median_of(lambda: t(render), rounds)
    out["interpreter + imports (`subvault --help`)"] = median_of(lambda: timed([*CLI, "--help"]), rounds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapshots", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    subprocess.run([SYSTEM_PYTHON, "-m", "compileall", "-q", str(REPO / "subvault")], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="subvault-bench-"))
    START_ENV["SUBVAULT_RUNTIME_DIR"] = str(work / "run")  # the compiled config the first `run` saves
    fs = LoopFs(image=work / "bench.img", mountpoint=work / "mnt", size="8G")
    with fs:
        paths = build_homelab(fs.mountpoint, data_mib=4)
        config = work / "subvault.toml"
        config.write_text(homelab_config(paths, state_dir=work / "state", timeline="24h 7d 4w 6m"))
        subprocess.run([*CLI, "--config", str(config), "run"], check=True, stdout=subprocess.DEVNULL, env=START_ENV)

        snap = bench_snap_all(paths, config, args.rounds)
        bare = median_of(lambda: timed([SYSTEM_PYTHON, "-c", "pass"]), args.rounds)
        floor = median_of(lambda: timed(FLOOR), args.rounds)
        help_t = median_of(lambda: timed([*CLI, "--help"]), args.rounds)
        idle_run = median_of(lambda: timed([*CLI, "--config", str(config), "run"]), args.rounds)

        fill_snapshots(paths, args.snapshots)
        list_t, prune_t = [], []
        for _ in range(max(3, args.rounds // 2)):  # alternating, so load hits both alike
            list_t.append(timed([*CLI, "--config", str(config), "list", "--json"]))
            prune_t.append(timed([*CLI, "--config", str(config), "prune", "--dry-run"]))
        parts = breakdown(config, 5)

    os.rmdir(work / "mnt")
    shutil.rmtree(work / "run", ignore_errors=True)
    (work / "bench.img").unlink(missing_ok=True)
    print(f"snap-all over 8 subvolumes (median of {args.rounds}):")
    for k, v in snap.items():
        print(f"  {k:<24} {v * 1000:8.1f} ms")
    print(f"  ratio in-process/snapper {snap['subvault snap-all (in-process)'] / snap['snapper x8']:.2f}")
    print(f"  ratio in-process/raw    {snap['subvault snap-all (in-process)'] / snap['raw btrfs snapshot x8']:.2f}")
    print(f"  ratio snapper/raw       {snap['snapper x8'] / snap['raw btrfs snapshot x8']:.2f}")
    print_startup(snap, bare, floor, help_t, idle_run, args.rounds)
    print(f"\nwhere the time goes with {args.snapshots} snapshots (in-process, medians of 5); what remains:")
    for k, v in parts.items():
        print(f"  {k:<48} {v * 1000:7.0f} ms")
    print(f"  runs: list {' '.join(f'{x:.3f}' for x in list_t)}; prune {' '.join(f'{x:.3f}' for x in prune_t)}")
    lm, pm = statistics.median(list_t), statistics.median(prune_t)
    print_table([f"`list --json` / `prune --dry-run` with {args.snapshots:,} snapshots", f"{lm:.2f} s / {pm:.2f} s",
                 "< 0.5 s each", "met" if lm < 0.5 and pm < 0.5 else "NOT met"], len(list_t))


def print_startup(snap: dict[str, float], bare: float, floor: float, help_t: float, idle_run: float, rounds: int) -> None:
    """Issue 14's start-up goals: whole processes on /usr/bin/python3, medians."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    sv, snapper, raw = snap["subvault snap-all"], snap["snapper x8"], snap["raw btrfs snapshot x8"]
    print(f"\nstart-up, whole process on {SYSTEM_PYTHON} (median of {rounds}; bare `{SYSTEM_PYTHON} -c pass`: {bare * 1000:.0f} ms)")
    print("| path | measured | goal | |\n|---|---|---|---|")
    print(f"| `subvault --help` | {help_t * 1000:.0f} ms ({(help_t - bare) * 1000:.0f} above bare) | < 50 ms | {verdict(help_t < 0.050)} |")
    print(f"| `run` with nothing due | {idle_run * 1000:.0f} ms ({(idle_run - bare) * 1000:.0f} above bare) | < 150 ms | {verdict(idle_run < 0.150)} |")
    print(f"| `snap-all` x8 / `snapper --no-dbus create` x8 | {sv * 1000:.0f} / {snapper * 1000:.0f} ms = {sv / snapper:.2f}x"
          f" | <= 0.6x | {verdict(sv / snapper <= 0.6)} |")
    print(f"| `snap-all` x8 / raw `btrfs subvolume snapshot -r` x8 | {sv * 1000:.0f} / {raw * 1000:.0f} ms = {sv / raw:.2f}x"
          f" | <= 2.0x | {verdict(sv / raw <= 2.0)} |")
    full = snap["subvault snap-all (full CLI)"]
    print(f"snap-all's fast start (cli/fast.py) serves these rounds; when it declines, the full CLI takes {full * 1000:.0f} ms"
          f" = {full / snapper:.2f}x snapper. Its floor: the interpreter importing click and msgspec alone takes"
          f" {floor * 1000:.0f} ms = {floor / snapper:.2f}x snapper x8, {floor / raw:.2f}x the raw loop")


def print_table(row: list[str], rounds: int) -> None:
    """Issue 15's table, this bench's row filled in (the other rows are the other benches')."""
    print(f"\n| path | measured (median of {rounds}) | goal | |\n|---|---|---|---|")
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
