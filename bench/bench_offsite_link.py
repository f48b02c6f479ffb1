#!/usr/bin/env python3
"""The S3 offsite path on a link shaped to 20 MiB/s, against `rclone rcat` (run as root).

Creates a network namespace `svbench` with a veth pair (10.231.0.1 here, 10.231.0.2 in
the namespace), shapes both directions with tbf (this kernel has no netem: no added
latency), runs `rclone serve s3` inside the namespace, and alternates for --rounds rounds:
  rcat   cat INPUT | zstd | age | rclone rcat   to the server over the shaped link
  s3     subvault.offsite.upload through the S3 store to the same server
(the children of bench_offsite.py). Prints medians, the ratio and issue 15's row. Removes
the namespace, the veth and the server whatever happens.

Usage: .venv/bin/python bench/bench_offsite_link.py [--size-mib 256] [--part-mib 64] [--rounds 3] [--rate-mib 20]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from bench_offsite import make_input  # noqa: E402
from s3server import SERVE_FLAGS, rclone_binary  # noqa: E402

from subvault import process  # noqa: E402

NS, HOST_IF, NS_IF = "svbench", "svb0", "svb1"
HOST_IP, NS_IP, PORT = "10.231.0.1", "10.231.0.2", 18931


def sh(*argv: str, check: bool = True) -> None:
    subprocess.run(argv, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if not check else None)


def link_up(rate_mib: int) -> None:
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF, "netns", NS)
    sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/30", "dev", NS_IF)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
    for prefix in ([], ["ip", "netns", "exec", NS]):
        dev = NS_IF if prefix else HOST_IF
        sh(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate_mib}mibps", "burst", "512kb", "latency", "100ms")


def link_down() -> None:
    sh("ip", "link", "del", HOST_IF, check=False)
    sh("ip", "netns", "del", NS, check=False)


def wait_listening(host: str, port: int, timeout: float = 30.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)  # polling for the listener to appear
    raise SystemExit("rclone serve s3 did not start listening in the namespace")


@contextmanager
def shaped_server(work: Path, rate_mib: int) -> Iterator[dict[str, str]]:
    """`rclone serve s3` over work/s3root in the namespace, behind a link shaped to rate_mib MiB/s.

    Yield the BENCH_S3_* settings (endpoint, keys, bucket "bench", root); remove the
    server, the namespace and the veth whatever happens.
    """
    server = None
    try:
        link_down()
        link_up(rate_mib)
        key, secret = "AK" + secrets.token_hex(8), "SK" + secrets.token_hex(16)
        (work / "s3root" / "bench").mkdir(parents=True)
        server = subprocess.Popen(["ip", "netns", "exec", NS, rclone_binary(), "serve", "s3", str(work / "s3root"),
                                   "--addr", f"{NS_IP}:{PORT}", "--auth-key", f"{key},{secret}",
                                   "--force-path-style=true", "--config", "/dev/null", *SERVE_FLAGS],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(NS_IP, PORT)
        yield {"BENCH_S3_ENDPOINT": f"http://{NS_IP}:{PORT}", "BENCH_S3_KEY": key, "BENCH_S3_SECRET": secret,
               "BENCH_S3_BUCKET": "bench", "BENCH_S3_ROOT": str(work / "s3root"), "BENCH_S3_PID": str(server.pid)}
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        link_down()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--part-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate-mib", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-offsite-link-"))
    try:
        with shaped_server(work, args.rate_mib) as settings:
            measure_link(args, work, {**os.environ, **settings})
    finally:
        process.run(["rm", "-rf", str(work)])


def measure_link(args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    src = work / "input.bin"
    make_input(src, args.size_mib << 20)
    process.run(["age-keygen", "-o", str(work / "id.txt")])
    recipient = process.run(["age-keygen", "-y", str(work / "id.txt")]).stdout.strip()
    runs: dict[str, list[float]] = {"rcat": [], "s3": []}
    rss: list[float] = []
    print(f"input {args.size_mib} MiB, parts {args.part_mib} MiB, link {args.rate_mib} MiB/s (tbf), load {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        for mode in runs:
            out = work / mode
            out.mkdir()
            res = subprocess.run([sys.executable, str(Path(__file__).parent / "bench_offsite.py"), "--child", mode,
                                  "--input", str(src), "--dir", str(out), "--recipient", recipient,
                                  "--part-mib", str(args.part_mib)], env=env, capture_output=True, text=True, check=True)
            child = json.loads(res.stdout.strip().splitlines()[-1])
            secs = child["seconds"]
            runs[mode].append(secs)
            if mode == "s3":
                rss.append(child["self_rss_mib"])
            process.run(["rm", "-rf", str(out)])
            for d in (work / "s3root" / "bench").glob(f"{mode}-*"):
                process.run(["rm", "-rf", str(d)])
            print(f"  round {r} {mode:5s} {secs:6.2f} s  {args.size_mib / secs:6.1f} MiB/s of input", flush=True)
    rcat, s3 = statistics.median(runs["rcat"]), statistics.median(runs["s3"])
    ratio = statistics.median(r / s for r, s in zip(runs["rcat"], runs["s3"], strict=True))  # each round's own ratio
    print(f"median rcat {rcat:.2f} s, s3 {s3:.2f} s: subvault/rcat throughput {ratio:.2f}x; "
          f"s3 peak RSS {max(rss):.0f} MiB; load after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n| path | measured (median of {args.rounds} rounds' ratios) | goal | |\n|---|---|---|---|")
    print(f"| S3 offsite on a link shaped to {args.rate_mib} MiB/s vs `rclone rcat` | {ratio:.2f}x | >= 1.0x | "
          f"{'met' if ratio >= 1.0 else 'NOT met'} |")


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespace)")
    main()
