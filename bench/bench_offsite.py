"""Offsite upload throughput and memory against the raw `src | zstd | age > file` pipeline.

Usage:  .venv/bin/python bench/bench_offsite.py [--size-mib 1024] [--part-mib 64] [--rounds 5] [--dir DIR] [--input FILE]
                                              [--modes raw,s3,sink,...]

Generates one input (about 60% incompressible, 40% compressible runs), then runs, each
in a fresh Python process so peak RSS is its own:
  raw     cat INPUT | COMPRESS | age -r R > FILE, fsynced    (subvault.process.pipeline;
          COMPRESS is the executor's own zstd argv, so like is compared with like)
  upload  subvault.offsite.upload.upload(store, cat INPUT) (parts of --part-mib) into a
          store without `stage` (the buffered path S3 takes)
  staged  the same into the FileStore, whose `stage` lets age write each part in place
  s3      the same through the S3 store into a real `rclone serve s3` on 127.0.0.1
  rcat    cat INPUT | COMPRESS | age -r R | rclone rcat into the same server (the standard
          streaming multipart client the S3 path is to match)
  sink    the already compressed and encrypted bytes written through S3 store streams, in
          objects of a part's size, to the same server, nothing else: what the server and
          this client take at best on this machine (the server shares the CPUs), a ceiling
          for the s3 run
alternately for --rounds rounds, and prints per run the wall seconds, MiB/s of input,
CPU seconds (the process and all its children) and peak RSS of the Python process
(VmHWM from /proc/self/status: ru_maxrss would carry the forking parent's size over
fork and exec);
then the medians and the ratios upload/raw. The machine may be shared: read the
medians and the CPU ratio, not one run. Never a timed test: a report to read.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from subvault import process  # noqa: E402
from subvault.offsite.manifest import MacKey  # noqa: E402
from subvault.offsite.upload import COMPRESS, UploadRequest, upload  # noqa: E402
from subvault.stores.file import FileStore  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from offsite_fixtures import BufferedFileStore  # noqa: E402


def make_input(path: Path, size: int, seed: int = 42) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 << 20)
            if rng.random() < 0.6:
                f.write(os.urandom(n))
            else:
                f.write((rng.randbytes(4096) + bytes(4096)) * (n // 8192) + bytes(n % 8192))
            left -= n


def run_raw(src: Path, out_dir: Path, recipient: str) -> None:
    out = out_dir / "raw.zst.age"
    with open(out, "wb") as f:
        process.pipeline([["cat", str(src)], list(COMPRESS), ["age", "-r", recipient]], stdout=f).run()
        os.fsync(f.fileno())


def run_upload(src: Path, out_dir: Path, recipient: str, part_mib: int, staged: bool) -> None:
    (out_dir / "store").mkdir(exist_ok=True)
    req = UploadRequest("bench", "u1", None, ("u1",), datetime.now(UTC), ["cat", str(src)], (recipient,))
    store = (FileStore if staged else BufferedFileStore)(out_dir / "store")
    upload(store, req, MacKey.load_or_create(out_dir / "mac"), part_size=part_mib << 20)


def _s3_env() -> tuple[str, str, str, str]:
    return (os.environ["BENCH_S3_ENDPOINT"], os.environ["BENCH_S3_KEY"], os.environ["BENCH_S3_SECRET"],
            os.environ["BENCH_S3_BUCKET"])


def s3_store(out_dir: Path) -> Any:
    """The S3 store of one run, under a fresh prefix (made before the clock starts: start-up)."""
    from subvault.stores.credentials import Credentials
    from subvault.stores.s3 import S3Store

    endpoint, key, secret, bucket = _s3_env()
    return S3Store(bucket, f"{out_dir.name}-{os.getpid()}", Credentials(key, secret), endpoint=endpoint)


def run_s3(src: Path, out_dir: Path, recipient: str, part_mib: int, store: Any) -> None:
    req = UploadRequest("bench", "u1", None, ("u1",), datetime.now(UTC), ["cat", str(src)], (recipient,))
    upload(store, req, MacKey.load_or_create(out_dir / "mac"), part_size=part_mib << 20)


def run_sink(src: Path, part_mib: int, store: Any) -> None:
    chunk = memoryview(bytearray(1 << 20))
    previous = None
    with open(src, "rb", buffering=0) as f:
        for index in itertools.count():
            streamed = store.stream(f"sink-{index:06d}")  # objects of a part's size, as the upload writes
            left = part_mib << 20
            while left and (n := f.readinto(chunk[:min(left, len(chunk))])):
                view = chunk[:n]
                left -= n
                while view:
                    view = view[os.write(streamed.fd, view):]
            streamed.end_input()
            if previous is not None:
                previous.commit()  # one object finishing while the next is written, as the upload does
            previous = streamed
            if left:
                break
    previous.commit()


def rclone_remote_env(endpoint: str, key: str, secret: str) -> dict[str, str]:
    """Environment defining the rclone remote `bench:` for that S3 server (no config file)."""
    return {"RCLONE_CONFIG": "/dev/null", "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other", "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": key, "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": secret,
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true"}


def run_rcat(src: Path, out_dir: Path, recipient: str) -> None:
    endpoint, key, secret, bucket = _s3_env()
    os.environ.update(rclone_remote_env(endpoint, key, secret))
    dest = [_rclone(), "rcat", f"bench:{bucket}/{out_dir.name}-{os.getpid()}/raw.zst.age"]
    process.pipeline([["cat", str(src)], list(COMPRESS), ["age", "-r", recipient], dest]).run()


def _rclone() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
    from s3server import rclone_binary

    return rclone_binary()


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _vm_hwm_kib() -> int:
    """This process's own peak resident set (VmHWM, KiB): reset by exec, unlike ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _server_cpu_seconds() -> float:
    """CPU seconds the S3 server has used so far (0 without one)."""
    pid = os.environ.get("BENCH_S3_PID")
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_main(mode: str, src: Path, out_dir: Path, recipient: str, part_mib: int) -> None:
    # Imports and start-up are not the work measured: for s3 and sink that includes importing
    # boto3 and making the client (about 0.17 s of CPU on the 2-vCPU VM, once per process,
    # whatever the stream's size); it is printed apart as startup_seconds.
    store, startup = None, 0.0
    if mode in ("s3", "sink"):
        started = time.perf_counter()
        store = s3_store(out_dir)
        startup = time.perf_counter() - started
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    if mode == "raw":
        run_raw(src, out_dir, recipient)
    elif mode == "s3":
        run_s3(src, out_dir, recipient, part_mib, store)
    elif mode == "rcat":
        run_rcat(src, out_dir, recipient)
    elif mode == "sink":
        run_sink(src, part_mib, store)
    else:
        run_upload(src, out_dir, recipient, part_mib, staged=mode == "staged")
    seconds = time.perf_counter() - started
    print(json.dumps({
        "cpu_seconds": _cpu_seconds() - cpu_before,
        "seconds": seconds,
        "self_rss_mib": _vm_hwm_kib() / 1024,
        "startup_seconds": startup,
    }))


def measure(mode: str, src: Path, work: Path, recipient: str, part_mib: int) -> dict:
    out_dir = work / mode
    out_dir.mkdir()
    if mode == "sink":
        src = work / "cipher.bin"
    server_before = _server_cpu_seconds()
    res = process.run([sys.executable, __file__, "--child", mode, "--input", str(src), "--dir", str(out_dir),
                       "--recipient", recipient, "--part-mib", str(part_mib)])
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result["server_cpu_seconds"] = _server_cpu_seconds() - server_before
    result["stored_mib"] = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) / (1 << 20)
    process.run(["rm", "-rf", str(out_dir)])
    if os.environ.get("BENCH_S3_ROOT"):
        for d in Path(os.environ["BENCH_S3_ROOT"], "bench").glob(f"{mode}-*"):
            process.run(["rm", "-rf", str(d)])
    os.sync()  # the next run starts with no writeback or discard of this one pending
    return result


MODES = ("raw", "upload", "staged", "rcat", "s3", "sink")


def report(runs: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """Print the medians, the ratios to raw and issue 15's rows for the modes that were run."""
    keys = ("seconds", "cpu_seconds", "server_cpu_seconds", "self_rss_mib")
    med = {m: {k: statistics.median(r[k] for r in rs) for k in keys} for m, rs in runs.items()}
    for m in runs:
        print(f"median {m:6s} {med[m]['seconds']:6.2f} s  {args.size_mib / med[m]['seconds']:7.1f} MiB/s  "
              f"cpu {med[m]['cpu_seconds']:6.2f} s  server cpu {med[m]['server_cpu_seconds']:5.2f} s  "
              f"rss {med[m]['self_rss_mib']:6.1f} MiB")
    for m in ("upload", "staged", "s3"):
        if m in runs:
            print(f"{m} throughput / raw pipeline (ratio of the medians of {args.rounds}; the table below takes each round's own ratio): "
                  f"{med['raw']['seconds'] / med[m]['seconds']:.2f}x; "
                  f"CPU time {m}/raw: {med[m]['cpu_seconds'] / med['raw']['cpu_seconds']:.2f}x "
                  f"(+ the S3 server's {med[m]['server_cpu_seconds']:.2f} s); "
                  f"peak RSS {max(r['self_rss_mib'] for r in runs[m]):.0f} MiB "
                  f"for a {args.size_mib} MiB stream in {args.part_mib} MiB parts")

    # Ratios are medians of each round's own ratio (runs of one round are seconds apart,
    # so a burst of load from elsewhere weighs on both sides of it alike).
    def paired(num: str, den: str) -> float | None:
        if num not in runs or den not in runs:
            return None
        return statistics.median(runs[num][i]["seconds"] / runs[den][i]["seconds"] for i in range(args.rounds))

    def fig(x: float | None) -> str:
        return "not run" if x is None else f"{x:.2f}x"

    up, st, s3, rc, ceiling = (paired("raw", "upload"), paired("raw", "staged"), paired("raw", "s3"),
                               paired("rcat", "s3"), paired("raw", "sink"))
    rss = {m: max(r['self_rss_mib'] for r in runs[m]) for m in runs}
    limit = 1.5 * args.part_mib
    if "sink" in runs:
        print(f"ceiling: the bare ciphertext through the S3 store into rclone serve s3 takes {med['sink']['seconds']:.2f} s "
              f"({fig(ceiling)} raw); the whole S3 upload reaches {fig(paired('sink', 's3'))} of that")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n| path | measured (median of {args.rounds} rounds' ratios, {args.size_mib} MiB, {args.part_mib} MiB parts) | goal | |")
    print("|---|---|---|---|")
    if s3 is not None:
        print(f"| offsite upload through the S3 store to `rclone serve s3` (loopback) | {s3:.2f}x raw "
              f"(server ceiling {fig(ceiling)}), peak RSS {rss['s3']:.0f} MiB | >= 0.95x raw, RSS <= {limit:.0f} MiB | "
              f"{'met' if s3 >= 0.95 and rss['s3'] <= limit else 'NOT met'} |")
    if rc is not None:
        print(f"| the same vs `rclone rcat` to the same server (loopback) | {rc:.2f}x | >= 1.0x | "
              f"{'met' if rc >= 1.0 else 'NOT met'} |")
    if st is not None:
        print(f"| offsite upload into the file store (staged) | {st:.2f}x raw, peak RSS {rss['staged']:.0f} MiB | "
              f"keep >= 0.95x | {'met' if st >= 0.95 else 'NOT met'} |")
    if up is not None:
        print(f"| store with neither `stage` nor `stream` (memory:// only; buffered) | {up:.2f}x raw, "
              f"peak RSS {rss['upload']:.0f} MiB | none (no production store takes this path) | - |")
    print("| link shaped to 20 MiB/s (tbf on a veth) | bench_offsite_link.py | >= 1.0x rcat | see there |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--part-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--child", choices=["raw", "upload", "staged", "s3", "rcat", "sink"])
    ap.add_argument("--input", type=Path, help="an existing input file instead of a generated one")
    ap.add_argument("--recipient")
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"comma-separated subset of {','.join(MODES)} (raw is always run: every ratio is to it)")
    args = ap.parse_args()
    if args.child:
        child_main(args.child, args.input, args.dir, args.recipient, args.part_mib)
        return
    work = Path(tempfile.mkdtemp(prefix="bench-offsite-", dir=args.dir))
    from s3server import S3Server

    server = S3Server.start(work / "s3root")
    server.make_bucket("bench")
    os.environ.update(BENCH_S3_ENDPOINT=server.endpoint, BENCH_S3_KEY=server.access_key,
                      BENCH_S3_SECRET=server.secret_key, BENCH_S3_BUCKET="bench",
                      BENCH_S3_ROOT=str(work / "s3root"), BENCH_S3_PID=str(server.proc.pid))
    try:
        src = args.input or work / "input.bin"
        if args.input is None:
            make_input(src, args.size_mib << 20)
            os.sync()
        args.size_mib = src.stat().st_size >> 20
        process.run(["age-keygen", "-o", str(work / "id.txt")])
        recipient = process.run(["age-keygen", "-y", str(work / "id.txt")]).stdout.strip()
        with open(work / "cipher.bin", "wb") as f:  # the sink's input: the stream as the raw pipeline writes it
            process.pipeline([["cat", str(src)], list(COMPRESS), ["age", "-r", recipient]], stdout=f).run()
        print(f"input {args.size_mib} MiB, parts {args.part_mib} MiB, {os.cpu_count()} CPUs, "
              f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        wanted = {"raw", *args.modes.split(",")}
        runs: dict[str, list[dict]] = {m: [] for m in MODES if m in wanted}
        for round_ in range(args.rounds):
            print(f"  round {round_} load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
            for mode in runs:
                r = measure(mode, src, work, recipient, args.part_mib)
                runs[mode].append(r)
                print(f"  round {round_} {mode:6s} {r['seconds']:6.2f} s  {args.size_mib / r['seconds']:7.1f} MiB/s  "
                      f"cpu {r['cpu_seconds']:6.2f} s  server cpu {r['server_cpu_seconds']:5.2f} s  "
                      f"rss {r['self_rss_mib']:6.1f} MiB  stored {r['stored_mib']:.0f} MiB"
                      + (f"  (start-up, not timed: {r['startup_seconds']:.2f} s)" if r["startup_seconds"] else ""), flush=True)
        report(runs, args)
    finally:
        server.stop()
        process.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
