"""Loop devices and mounts one restore or drill made, undone in reverse by `close()`.

Rules:
- Partitions are attached as loop devices by offset (`losetup -o OFFSET --sizelimit
  SIZE`), never with `losetup -P`: some kernels create no partition devices, and a
  loop by offset works the same on a disk and on an image file.
- Only what this workspace made is ever unmounted or detached; `close()` never raises
  and is safe to call twice.
- Every mount is checked to be of the device we meant: a btrfs with the same UUID as a
  mounted one must never be confused with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from subvault import process
from subvault.errors import Refused


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.loops: list[str] = []
        self.mounts: list[Path] = []
        self._attached: dict[tuple[str, int, int], str] = {}

    def __enter__(self) -> "Workspace":
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attach(self, disk: str, offset: int, size: int) -> str:
        """Return a loop device for disk[offset:offset+size], attaching it once."""
        key = (disk, offset, size)
        if key not in self._attached:
            dev = process.run(
                ["losetup", "--find", "--show", "-o", str(offset), "--sizelimit", str(size), disk], what=f"losetup {disk}"
            ).stdout.strip()
            self.loops.append(dev)
            self._attached[key] = dev
        return self._attached[key]

    def mount(self, device: str, name: str, fstype: str, options: str = "") -> Path:
        """Mount device at <root>/<name>; raise Refused if what got mounted is not device."""
        where = self.root / name
        where.mkdir(parents=True, exist_ok=True)
        argv = ["mount", "-t", fstype, *(["-o", options] if options else []), device, str(where)]
        process.run(argv, what=f"mount {device}")
        self.mounts.append(where)
        source = process.run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(where)], check=False).stdout.strip()
        if source.split("[", 1)[0] != device:
            raise Refused(f"mounting {device} at {where} mounted {source or 'something else'}; stopped before writing anything")
        return where

    def bind(self, source: str, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        process.run(["mount", "--bind", source, str(target)], what=f"bind {source}")
        self.mounts.append(target)

    def close(self) -> None:
        """Unmount and detach everything made here, newest first; never raises."""
        for where in reversed(self.mounts):
            if os.path.ismount(where):
                res = process.run(["umount", str(where)], check=False)
                if res.returncode != 0:
                    process.run(["umount", "-l", str(where)], check=False)
        self.mounts.clear()
        for dev in reversed(self.loops):
            process.run(["losetup", "-d", dev], check=False)
        self.loops.clear()
        self._attached.clear()
