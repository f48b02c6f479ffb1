#!/usr/bin/env python3
"""The whole `subvault offsite` against `send | zstd | age | rclone rcat`, on loopback and a shaped link.

Usage (as root):  .venv/bin/python bench/bench_offsite_cli.py [--mib 600] [--rounds 3] [--link both|loopback|shaped] [--rate-mib 20]

Builds the homelab layout (subvault/demo/testbed.py) on a loop file, writes about --mib MiB
over the eight protected subvolumes (about 60% incompressible, 40% compressible runs; the
logs all text), takes one snapshot set with `subvault snapshot`, and starts a real
`rclone serve s3`: on 127.0.0.1 (loopback), then inside a network namespace behind a veth
shaped to --rate-mib MiB/s with tbf (bench_offsite_link.shaped_server). Against each
server, for --rounds rounds, alternating which goes first:
  subvault  `subvault --config X offsite` as a process, into a fresh prefix each round
            (so it uploads the eight full streams every time)
  rcat      for each of the eight snapshots in turn, the raw standard:
            btrfs send -q SNAP | COMPRESS | age -r R | rclone rcat bench:bench/PREFIX/NAME
            (COMPRESS is subvault's own zstd argv, so like is compared with like)
Both read the same snapshots from the page cache (read once before the rounds).
Prints per run the wall seconds, MiB/s of snapshot data, CPU seconds of everything the run
started (exact, from rusage) and of the S3 server (from /proc), and the CPU split by
program (sampled 10 times a second from /proc: short-lived processes lose up to 0.1 s
each, so the split is approximate); then the medians, the median of the rounds' own
ratios (rcat seconds / subvault seconds = subvault's throughput over rcat's) and issue 15's
row. The machine may be shared: read medians and CPU, not one run.

Holds /tmp/subvault-btrfs.lock (the shared loop-device lock) for the whole run: taken here
with flock(2), unless a parent `flock /tmp/subvault-btrfs.lock ...` passed its locked
descriptor down. Removes the loop device, the mount, the namespace, the veth and the
servers whatever happens (Ctrl-C and SIGTERM included).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from bench_offsite import make_input, rclone_remote_env  # noqa: E402
from bench_offsite_link import shaped_server  # noqa: E402
from s3server import S3Server, rclone_binary  # noqa: E402

from subvault import process  # noqa: E402
from subvault.demo.testbed import PROTECTED, LoopFs, build_homelab, exclude_foreign, homelab_config  # noqa: E402
from subvault.offsite.upload import COMPRESS  # noqa: E402

LOCK = "/tmp/subvault-btrfs.lock"
WEIGHTS = {"var_lib_pvc": 6, "var_lib_containers": 4, "root": 3, "data": 3, "home": 2}  # the rest 1 each
CLK = os.sysconf("SC_CLK_TCK")


def hold_lock() -> object:
    """Hold the shared loop-device lock; return what keeps it (an open file, or the inherited fd)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == LOCK:
                return int(fd)  # `flock LOCK cmd` handed its locked descriptor down: already held
        except OSError:
            continue
    f = open(LOCK, "a")  # noqa: SIM115 (held until the process ends)
    if not _try_lock(f):
        print(f"waiting for {LOCK} (another helper's loop devices)", flush=True)
        fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _try_lock(f) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def fill(paths: dict[str, Path], mib: int) -> int:
    """Write about mib MiB over the protected subvolumes; return the bytes written."""
    total = sum(WEIGHTS.get(n, 1) for n in PROTECTED)
    written = 0
    for name in PROTECTED:
        size = (mib * WEIGHTS.get(name, 1) // total) << 20
        if name == "var_log":  # logs: text, compressing about 10x
            line = b"Dec  2 03:00:01 vps1 k3s[812]: I1202 reconciler.go:224 volume attached for pod nextcloud-0 %06d\n"
            with open(paths[name] / "messages.1", "wb") as fh:
                i = 0
                while fh.tell() < size:
                    fh.write(b"".join(line % (i + k) for k in range(1000)))
                    i += 1000
            written += (paths[name] / "messages.1").stat().st_size
            continue
        for k, part in enumerate((size * 3 // 4, size - size * 3 // 4)):  # one big file and a smaller one
            f = paths[name] / f"data-{k}.bin"
            make_input(f, part, seed=len(name) * 10 + k)  # its own mix of incompressible and compressible 4 MiB runs
            written += part
    os.sync()
    return written


def cli(cfg: Path, *args: str) -> process.Result:
    return process.run([sys.executable, "-m", "subvault.cli.main", "--config", str(cfg), *args], what=f"subvault {args[0]}")


def target_toml(url: str, endpoint: str, creds: Path, mac: Path, recipient: str) -> str:
    return (f'\n[[target]]\nname = "offsite"\ntype = "object"\nurl = "{url}"\nendpoint = "{endpoint}"\n'
            f'credentials = "{creds}"\nrecipients = ["{recipient}"]\nkeep = "8d 5w 12m"\nmac_key = "{mac}"\n')


class CpuSampler:
    """CPU seconds by program name of every descendant of this process, sampled from /proc."""

    def __init__(self, skip: int, interval: float = 0.1) -> None:
        self.skip, self.interval = skip, interval  # skip: the S3 server (a child too), counted apart
        self.seen: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def by_program(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for comm, ticks in self.seen.values():
            out[comm] = out.get(comm, 0.0) + ticks / CLK
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):  # sampling on a timer: the thing measured runs meanwhile
            for pid in _descendants(os.getpid(), self.skip):
                stat = _stat(pid)
                if stat is not None:
                    self.seen[pid] = stat


def _descendants(root: int, skip: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid == skip:
            continue
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                kids = [int(k) for k in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
                out += [k for k in kids if k != skip]
                todo += kids
        except (OSError, ValueError):
            continue
    return out


def _stat(pid: int) -> tuple[str, int] | None:
    """(program name, user + system ticks) of pid, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, int(fields[11]) + int(fields[12])


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _server_cpu(pid: int) -> float:
    stat = _stat(pid)
    return stat[1] / CLK if stat else float("nan")


def timed(run, server_pid: int) -> dict:
    cpu0, srv0 = _children_cpu(), _server_cpu(server_pid)
    with CpuSampler(skip=server_pid) as sampler:
        t0 = time.perf_counter()
        run()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu": _children_cpu() - cpu0, "server_cpu": _server_cpu(server_pid) - srv0,
            "split": sampler.by_program()}


def run_subvault(bed: dict, prefix: str) -> None:
    cfg = bed["work"] / f"{prefix}.toml"
    url = f"s3://bench/{prefix}"
    cfg.write_text(bed["base_config"].replace("STATE", str(bed["work"] / f"state-{prefix}"))
                   + target_toml(url, bed["endpoint"], bed["creds"], bed["work"] / "offsite.mac", bed["recipient"]))
    doc = json.loads(cli(cfg, "offsite", "--json").stdout)
    uploaded = [i for i in doc["result"]["items"] if i["action"] == "uploaded"]
    if len(uploaded) != len(PROTECTED):
        raise SystemExit(f"subvault offsite uploaded {len(uploaded)} of {len(PROTECTED)}: {doc}")


def run_rcat(bed: dict, prefix: str) -> None:
    for name, snap in bed["snapshots"].items():
        process.pipeline([["btrfs", "send", "-q", str(snap)], list(COMPRESS), ["age", "-r", bed["recipient"]],
                          [rclone_binary(), "rcat", f"bench:bench/{prefix}/{name}.zst.age"]]).run()


def section(bed: dict, settings: dict[str, str], label: str, rounds: int) -> dict[str, list[dict]]:
    bed["endpoint"] = settings["BENCH_S3_ENDPOINT"]
    creds = bed["work"] / f"s3-{label}.env"
    creds.write_text(f"AWS_ACCESS_KEY_ID={settings['BENCH_S3_KEY']}\nAWS_SECRET_ACCESS_KEY={settings['BENCH_S3_SECRET']}\n")
    creds.chmod(0o600)
    bed["creds"] = creds
    os.environ.update(rclone_remote_env(bed["endpoint"], settings["BENCH_S3_KEY"], settings["BENCH_S3_SECRET"]))
    pid = int(settings["BENCH_S3_PID"])
    mib = bed["bytes"] / (1 << 20)
    print(f"\n{label}: {mib:.0f} MiB of snapshot data in {len(PROTECTED)} subvolumes, load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    runs: dict[str, list[dict]] = {"subvault": [], "rcat": []}
    for r in range(rounds):
        order = ["subvault", "rcat"] if r % 2 == 0 else ["rcat", "subvault"]
        for mode in order:
            prefix = f"{label}-{r}-{mode}"
            res = timed(lambda m=mode, p=prefix: (run_subvault if m == "subvault" else run_rcat)(bed, p), pid)
            res["stored_mib"] = sum(f.stat().st_size for f in Path(settings["BENCH_S3_ROOT"], "bench", prefix).rglob("*")
                                    if f.is_file()) / (1 << 20)
            process.run(["rm", "-rf", str(Path(settings["BENCH_S3_ROOT"], "bench", prefix))])
            os.sync()
            runs[mode].append(res)
            split = ", ".join(f"{k} {v:.1f}" for k, v in sorted(res["split"].items(), key=lambda kv: -kv[1]) if v >= 0.05)
            print(f"  round {r} {mode:8s} {res['seconds']:6.2f} s  {mib / res['seconds']:6.1f} MiB/s  cpu {res['cpu']:5.1f} s "
                  f"(~{split})  server cpu {res['server_cpu']:5.1f} s  stored {res['stored_mib']:.0f} MiB", flush=True)
    return runs


def summary(label: str, goal_link: str, runs: dict[str, list[dict]], mib: float, rounds: int) -> str:
    for mode, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("seconds", "cpu", "server_cpu")}
        print(f"median {label} {mode:8s} {med['seconds']:6.2f} s  {mib / med['seconds']:6.1f} MiB/s  "
              f"cpu {med['cpu']:5.1f} s  server cpu {med['server_cpu']:5.1f} s")
    ratio = statistics.median(rc["seconds"] / sv["seconds"] for rc, sv in zip(runs["rcat"], runs["subvault"], strict=True))
    print(f"{label}: subvault throughput / rcat throughput {ratio:.2f}x (median of {rounds} rounds' own ratios); "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return f"| `subvault offsite` vs `send \\| zstd \\| age \\| rclone rcat`, {goal_link} | {ratio:.2f}x | >= 1.0x | " \
           f"{'met' if ratio >= 1.0 else 'NOT met'} |"


@contextmanager
def loopback_server(work: Path) -> Iterator[dict[str, str]]:
    server = S3Server.start(work / "s3root-loopback")
    try:
        server.make_bucket("bench")
        assert server.proc is not None
        yield {"BENCH_S3_ENDPOINT": server.endpoint, "BENCH_S3_KEY": server.access_key,
               "BENCH_S3_SECRET": server.secret_key, "BENCH_S3_ROOT": str(server.root), "BENCH_S3_PID": str(server.proc.pid)}
    finally:
        server.stop()


def build(work: Path, mib: int, fs: LoopFs) -> dict:
    fs.create()
    paths = build_homelab(fs.mountpoint)
    written = fill(paths, mib)
    base = homelab_config(paths, state_dir=Path("STATE"), extra="\n" + exclude_foreign(work))
    base = base.replace("[defaults]\n", '[defaults]\ntargets = ["offsite"]\n', 1)
    process.run(["age-keygen", "-o", str(work / "id.txt")])
    recipient = process.run(["age-keygen", "-y", str(work / "id.txt")]).stdout.strip()
    cli_cfg = work / "snapshot.toml"  # the target is never used by `snapshot`; each offsite run writes its own
    cli_cfg.write_text(base.replace("STATE", str(work / "state-snapshot"))
                       + f'\n[[target]]\nname = "offsite"\ntype = "object"\nurl = "file://{work}/unused"\nrecipients = ["{recipient}"]\n')
    cli(cli_cfg, "snapshot")
    snapshots = {n: max(paths[n].glob(".snapshots/*/snapshot"), key=lambda p: int(p.parent.name)) for n in PROTECTED}
    for snap in snapshots.values():  # into the page cache: both sides read the snapshots warm
        process.pipeline([["btrfs", "send", "-q", str(snap)]], stdout=process.DEVNULL).run()
    size = sum(f.stat().st_size for n in PROTECTED for f in snapshots[n].rglob("*") if f.is_file())
    print(f"built: {written >> 20} MiB written, {size >> 20} MiB in the {len(PROTECTED)} snapshots", flush=True)
    return {"work": work, "base_config": base, "snapshots": snapshots, "recipient": recipient, "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=600, help="data over the eight subvolumes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--link", choices=["both", "loopback", "shaped"], default="both")
    ap.add_argument("--rate-mib", type=int, default=20)
    args = ap.parse_args()
    lock = hold_lock()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-offsite-cli-"))
    fs = LoopFs(work / "src.img", work / "mnt", size=f"{max(2, args.mib * 3 // 1024 + 1)}G")
    rows = []
    print(f"{os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, compress {' '.join(COMPRESS)}")
    try:
        bed = build(work, args.mib, fs)
        mib = bed["bytes"] / (1 << 20)
        if args.link in ("both", "loopback"):
            with loopback_server(work) as settings:
                runs = section(bed, settings, "loopback", args.rounds)
            rows.append(summary("loopback", "`rclone serve s3` on loopback", runs, mib, args.rounds))
        if args.link in ("both", "shaped"):
            print(f"(shaped: the same {mib:.0f} MiB; about {mib * 0.7 / args.rate_mib:.0f} s a run at {args.rate_mib} MiB/s "
                  "if the compressed stream is about 70% of the data)")
            with shaped_server(work / "shaped", args.rate_mib) as settings:
                runs = section(bed, settings, "shaped", args.rounds)
            rows.append(summary("shaped", f"link shaped to {args.rate_mib} MiB/s (tbf on a veth)", runs, mib, args.rounds))
        print(f"\n| path | measured (median of {args.rounds} rounds' ratios, {len(PROTECTED)} subvolumes, {mib:.0f} MiB) | goal | |")
        print("|---|---|---|---|")
        print("\n".join(rows))
        print(f"\n{time.monotonic() - started:.0f} s with the lock held; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        fs.close()
        process.run(["rm", "-rf", str(work)])
        del lock


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every `finally` cleans up


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices, network namespace)")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted: loop device, mount, namespace, veth and servers removed") from None
