"""Loop devices and mounts one restore or drill made, undone in reverse by `close()`.

Rules:
- Partitions are attached as loop devices by offset (`losetup -o OFFSET --sizelimit
  SIZE`), never with `losetup -P`: some kernels create no partition devices, and a
  loop by offset works the same on a disk and on an image file.
- Only what this workspace made is ever unmounted or detached; `close()` never raises
  and is safe to call twice.
- Every mount is checked to be of the device we meant: a btrfs with the same UUID as a
  mounted one must never be confused with it.
- A journaled workspace (`dr restore`) lives in a directory that belongs to it alone and
  writes down every loop device before and after attaching it (`workspace.json`), so
  that after a SIGKILL the next run can tell its own leftovers from anyone else's:
  mounts below its directory, and loop devices the journal names that are still
  attached to the same file at the same offset and size (`find_leftovers`). Nothing
  else is ever released.
- `direct_io(device)` switches one of our loop devices to reach its backing file with
  direct I/O (`losetup --direct-io=on`, on the attached device, so that a refusal leaves
  it attached, ours to detach, and merely buffered). Best effort: where the backing
  filesystem refuses O_DIRECT the device stays buffered, which is only slower. When a
  drill uses it: executor.py.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subvault import process
from subvault.errors import Refused

JOURNAL = "workspace.json"
LOCK = "lock"


class Workspace:
    def __init__(self, root: Path, *, journal: bool = False) -> None:
        self.root = root
        self.loops: list[str] = []
        self.mounts: list[Path] = []
        self._attached: dict[tuple[str, int, int], str] = {}
        self.journal = journal
        self._records: list[dict[str, Any]] = []

    def __enter__(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attach(self, disk: str, offset: int, size: int) -> str:
        """Return a loop device for disk[offset:offset+size], attaching it once."""
        key = (disk, offset, size)
        if key not in self._attached:
            record = {"device": None, "file": os.path.realpath(disk), "offset": offset, "size": size}
            self._records.append(record)
            self._write_journal()  # the intent first: a kill right after losetup still leaves a trace
            dev = process.run(
                ["losetup", "--find", "--show", "-o", str(offset), "--sizelimit", str(size), disk], what=f"losetup {disk}"
            ).stdout.strip()
            self.loops.append(dev)
            self._attached[key] = dev
            record["device"] = dev
            self._write_journal()
        return self._attached[key]

    def direct_io(self, device: str) -> None:
        """Ask one of our loop devices to use direct I/O from now on (best effort, see the module rules)."""
        if device in self.loops:
            process.run(["losetup", "--direct-io=on", device], check=False)

    def _write_journal(self) -> None:
        if not self.journal:
            return
        tmp = self.root / f".{JOURNAL}.tmp"
        tmp.write_text(json.dumps({"loops": self._records}, indent=1))
        os.replace(tmp, self.root / JOURNAL)

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
        if self.journal:
            self._records.clear()
            self._write_journal()


def mounts_below(root: Path) -> list[Path]:
    """Mount points strictly below root, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        where = _unescape(line.split()[4])
        if where.startswith(prefix):
            found.append(Path(where))
    return sorted(set(found), key=lambda p: (-len(p.parts), str(p)))


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_sources() -> set[str]:
    """Every device that is mounted somewhere."""
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        tail = line.split(" - ", 1)[1].split()
        if len(tail) >= 2:
            out.add(tail[1])
    return out


def loop_devices() -> dict[str, tuple[str, int, int]]:
    """Every attached loop device: /dev/loopN -> (backing file, offset, size limit)."""
    out = {}
    for d in sorted(Path("/sys/block").glob("loop*")):
        try:
            back = (d / "loop" / "backing_file").read_text().strip()
            offset = int((d / "loop" / "offset").read_text())
            size = int((d / "loop" / "sizelimit").read_text())
        except (OSError, ValueError):
            continue  # not attached
        out[f"/dev/{d.name}"] = (back, offset, size)
    return out


@dataclass
class Leftovers:
    """What an interrupted journaled workspace at root left behind: its mounts and its loop devices."""

    root: Path
    mounts: list[Path] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.mounts or self.loops)

    def describe(self) -> str:
        return f"{len(self.loops)} loop device(s) and {len(self.mounts)} mount(s) left by an interrupted run in {self.root}"

    def release(self) -> None:
        """Unmount and detach them. Raise Refused if a mount is still busy (then nothing is detached)."""
        for where in self.mounts:
            if not os.path.ismount(where):
                continue
            res = process.run(["umount", str(where)], check=False)
            if res.returncode != 0:
                raise Refused(
                    f"{where}, left by an interrupted run, is still busy ({res.stderr.strip() or 'umount failed'}); "
                    f"stop what uses it (fuser -vm {where}) and run again"
                )
        for dev in self.loops:
            process.run(["losetup", "-d", dev], check=False)
        (self.root / JOURNAL).unlink(missing_ok=True)


def find_leftovers(root: Path) -> Leftovers:
    """Find what a journaled workspace at root left (call with root's lock held). Reads only.

    A loop device counts only when the journal names it (or an attach it was about to
    make) and it is still attached to that file at that offset and size; an intended
    attach is matched only by a loop device nobody has mounted.
    """
    found = Leftovers(root, mounts_below(root))
    try:
        records = json.loads((root / JOURNAL).read_text()).get("loops", [])
    except (OSError, ValueError, AttributeError):
        return found
    loops = loop_devices()
    named = {r.get("device") for r in records if r.get("device")}
    mounted = mount_sources()
    for r in records:
        want = (r.get("file"), r.get("offset"), r.get("size"))
        dev = r.get("device")
        if dev:
            if loops.get(dev) == want:
                found.loops.append(dev)
            continue
        found.loops += [d for d, got in loops.items() if got == want and d not in named and d not in mounted and d not in found.loops]
    return found


class WorkLock:
    """The lock of a workspace directory: held by the one run that works there."""

    def __init__(self, root: Path, what: str) -> None:
        self.root, self.what = root, what
        self.fd: int | None = None

    def __enter__(self) -> WorkLock:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Refused(f"another {self.what} is running (pid {holder}); wait for it to end") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def remove_workdir(root: Path) -> None:
    """Remove root if nothing is left in it but empty directories, the journal and the lock. Never follows a mount."""
    if not root.is_dir() or mounts_below(root):
        return
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            try:
                child.rmdir()
            except OSError:
                return
    for name in (JOURNAL, LOCK):
        (root / name).unlink(missing_ok=True)
    try:
        root.rmdir()
    except OSError:
        pass
