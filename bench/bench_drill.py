"""Drill time against the raw receive of the same data (goal: drill <= 1.2x raw).

Builds a machine image (GPT, ESP, btrfs in the homelab layout with DATA_MIB of data in
var_lib_pvc), replicates it to a btrfs target on a loop file, captures it, then times:
  raw:   for every protected subvolume, `btrfs send <target entry> | btrfs receive` into a
         fresh btrfs on a loop file (what a by-hand restore of the data costs);
  drill: `subvault drill` (partition, mkfs, the same receives, writable snapshots,
         digests of both sides, UUID and fstab checks).
Run as root: .venv/bin/python bench/bench_drill.py [DATA_MIB]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from subvault import process
from subvault.dr.parse import parse_sfdisk_dump
from subvault.dr.workspace import Workspace
from subvault.testbed import PROTECTED, LoopFs, build_homelab, homelab_config

SCRIPT = 'label: gpt\n\nsize=64MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\ntype=0FC63DAF-8483-4772-8E79-3D69E4F7C709\n'
NO_CACHE = {"BLKID_FILE": "/dev/null"}


def cli(cfg: Path, *args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "subvault.cli.main", "--config", str(cfg), *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"subvault {' '.join(args)}: exit {res.returncode}\n{res.stderr}")
    return res.stdout


def main(data_mib: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="subvault-bench-drill-"))
    image = base / "machine.img"
    ws = Workspace(base / "machine")
    pi = LoopFs(base / "pi.img", base / "pi", size=f"{max(2, data_mib * 3 // 1024 + 2)}G")
    scratch = LoopFs(base / "raw.img", base / "raw", size=f"{max(2, data_mib * 2 // 1024 + 2)}G")
    try:
        with open(image, "wb") as fh:
            fh.truncate((data_mib * 2 + 1024) << 20)
        process.run(["sfdisk", "-q", str(image)], input=SCRIPT)
        table = parse_sfdisk_dump(process.run(["sfdisk", "--dump", str(image)]).stdout)
        esp, root = [ws.attach(str(image), p.start * 512, p.size * 512) for p in table.partitions]
        process.run(["mkfs.vfat", "-F", "32", esp], env=NO_CACHE)
        process.run(["mkfs.btrfs", "-q", "-f", root], env=NO_CACHE)
        top, efi = ws.mount(root, "top", "btrfs", "subvolid=5"), ws.mount(esp, "esp", "vfat")
        paths = build_homelab(top, data_mib=data_mib)
        (paths["root"] / "etc" / "fstab").write_text("")
        pi.create()
        cfg = base / "subvault.toml"
        text = homelab_config(paths, state_dir=base / "state").replace("prechange_keep = 10", 'prechange_keep = 10\ntargets = ["pi"]')
        cfg.write_text(text + f'\n[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "{pi.mountpoint}"\nkeep = "all"\n')
        cli(cfg, "run")
        capture = base / "capture"
        cli(cfg, "dr", "capture", "--dest", str(capture), "--disk", str(image), "--fstab", str(paths["root"] / "etc" / "fstab"),
            "--boot-dir", f"/boot/efi={efi}", "--firmware", "uefi")
        entries = [max(pi.mountpoint.glob(f"*/{n}/{n}.*"), key=lambda p: p.name) for n in PROTECTED]
        process.run(["sync"])
        scratch.create()
        t0 = time.monotonic()
        for e in entries:
            with process.pipeline([["btrfs", "send", "-q", str(e)], ["btrfs", "receive", str(scratch.mountpoint)]], stdout=subprocess.DEVNULL) as p:
                p.run()
        process.run(["sync"])
        raw = time.monotonic() - t0
        t0 = time.monotonic()
        out = json.loads(cli(cfg, "drill", "--from", "pi", "--capture", str(capture), "--workdir", str(base / "drill"), "--json"))
        drill = time.monotonic() - t0
        r = out["result"]
        print(f"data {data_mib} MiB in var_lib_pvc, {r['bytes_received']} bytes received by the drill")
        print(f"raw send|receive of {len(entries)} subvolumes: {raw:.2f}s")
        print(f"subvault drill (ok={r['ok']}, reported RTO {r['rto_seconds']:.2f}s): {drill:.2f}s")
        print(f"ratio drill/raw: {drill / raw:.2f}x (goal <= 1.2x)")
    finally:
        scratch.close()
        pi.close()
        ws.close()
        process.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices)")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512)
