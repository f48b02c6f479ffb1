"""Offsite upload throughput and memory against the raw `src | zstd | age > file` pipeline.

Usage:  .venv/bin/python bench/bench_offsite.py [--size-mib 1024] [--part-mib 64] [--rounds 5] [--dir DIR] [--input FILE]

Generates one input (about 60% incompressible, 40% compressible runs), then runs, each
in a fresh Python process so peak RSS is its own:
  raw     cat INPUT | COMPRESS | age -r R > FILE, fsynced    (subvault.process.pipeline;
          COMPRESS is the executor's own zstd argv, so like is compared with like)
  upload  subvault.offsite.upload.upload(store, cat INPUT) (parts of --part-mib) into a
          store without `stage` (the buffered path S3 takes)
  staged  the same into the FileStore, whose `stage` lets age write each part in place
alternately for --rounds rounds, and prints per run the wall seconds, MiB/s of input,
CPU seconds (the process and all its children) and peak RSS of the Python process;
then the medians and the ratios upload/raw. The machine may be shared: read the
medians and the CPU ratio, not one run. Never a timed test: a report to read.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from subvault import process  # noqa: E402
from subvault.offsite.manifest import MacKey  # noqa: E402
from subvault.offsite.upload import COMPRESS, UploadRequest, upload  # noqa: E402
from subvault.stores.file import FileStore  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from offsite_fixtures import BufferedFileStore  # noqa: E402


def make_input(path: Path, size: int) -> None:
    rng = random.Random(42)
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
    req = UploadRequest("bench", "u1", None, ("u1",), datetime.now(timezone.utc), ["cat", str(src)], (recipient,))
    store = (FileStore if staged else BufferedFileStore)(out_dir / "store")
    upload(store, req, MacKey.load_or_create(out_dir / "mac"), part_size=part_mib << 20)


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def child_main(mode: str, src: Path, out_dir: Path, recipient: str, part_mib: int) -> None:
    cpu_before = _cpu_seconds()  # imports and start-up are not the work measured
    started = time.perf_counter()
    if mode == "raw":
        run_raw(src, out_dir, recipient)
    else:
        run_upload(src, out_dir, recipient, part_mib, staged=mode == "staged")
    seconds = time.perf_counter() - started
    print(json.dumps({
        "cpu_seconds": _cpu_seconds() - cpu_before,
        "seconds": seconds,
        "self_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def measure(mode: str, src: Path, work: Path, recipient: str, part_mib: int) -> dict:
    out_dir = work / mode
    out_dir.mkdir()
    res = process.run([sys.executable, __file__, "--child", mode, "--input", str(src), "--dir", str(out_dir),
                       "--recipient", recipient, "--part-mib", str(part_mib)])
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result["stored_mib"] = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) / (1 << 20)
    process.run(["rm", "-rf", str(out_dir)])
    os.sync()  # the next run starts with no writeback or discard of this one pending
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--part-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--child", choices=["raw", "upload", "staged"])
    ap.add_argument("--input", type=Path, help="an existing input file instead of a generated one")
    ap.add_argument("--recipient")
    args = ap.parse_args()
    if args.child:
        child_main(args.child, args.input, args.dir, args.recipient, args.part_mib)
        return
    work = Path(tempfile.mkdtemp(prefix="bench-offsite-", dir=args.dir))
    try:
        src = args.input or work / "input.bin"
        if args.input is None:
            make_input(src, args.size_mib << 20)
            os.sync()
        args.size_mib = src.stat().st_size >> 20
        process.run(["age-keygen", "-o", str(work / "id.txt")])
        recipient = process.run(["age-keygen", "-y", str(work / "id.txt")]).stdout.strip()
        print(f"input {args.size_mib} MiB, parts {args.part_mib} MiB, {os.cpu_count()} CPUs")
        runs: dict[str, list[dict]] = {"raw": [], "upload": [], "staged": []}
        for round_ in range(args.rounds):
            for mode in runs:
                r = measure(mode, src, work, recipient, args.part_mib)
                runs[mode].append(r)
                print(f"  round {round_} {mode:6s} {r['seconds']:6.2f} s  {args.size_mib / r['seconds']:7.1f} MiB/s  "
                      f"cpu {r['cpu_seconds']:6.2f} s  rss {r['self_rss_mib']:6.1f} MiB  stored {r['stored_mib']:.0f} MiB",
                      flush=True)
        med = {m: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "cpu_seconds", "self_rss_mib")}
               for m, rs in runs.items()}
        for m in runs:
            print(f"median {m:6s} {med[m]['seconds']:6.2f} s  {args.size_mib / med[m]['seconds']:7.1f} MiB/s  "
                  f"cpu {med[m]['cpu_seconds']:6.2f} s  rss {med[m]['self_rss_mib']:6.1f} MiB")
        for m in ("upload", "staged"):
            print(f"{m} throughput / raw pipeline (median of {args.rounds}): "
                  f"{med['raw']['seconds'] / med[m]['seconds']:.2f}x; "
                  f"CPU time {m}/raw: {med[m]['cpu_seconds'] / med['raw']['cpu_seconds']:.2f}x; "
                  f"peak RSS {max(r['self_rss_mib'] for r in runs[m]):.0f} MiB "
                  f"for a {args.size_mib} MiB stream in {args.part_mib} MiB parts")
    finally:
        process.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
