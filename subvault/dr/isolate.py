"""Run one command with the host's block devices hidden from libblkid: `python -m subvault.dr.isolate ARGV…`.

mkfs.btrfs refuses a UUID that a device on the host already has. A drill on the live
machine recreates the machine's own UUIDs on purpose, into an image, so the check is
run where libblkid sees only the devices named in ARGV: in a private mount namespace
(the caller runs us under `unshare --mount --propagation private`), /dev/null is bound
over /proc/partitions and a tmpfs holding only those devices' links over /sys/block
(libblkid scans /sys/block first), then the command is exec'd. Nothing else changes
and the host's mount table is untouched.
"""

from __future__ import annotations

import ctypes
import os
import sys

MS_BIND = 4096


def _mount(libc: ctypes.CDLL, source: bytes, target: bytes, fstype: bytes | None, flags: int) -> None:
    if libc.mount(source, target, fstype, flags, None) != 0:
        err = ctypes.get_errno()
        sys.exit(f"subvault.dr.isolate: cannot mount over {target.decode()}: {os.strerror(err)}")


def main(argv: list[str]) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    named = [a for a in argv if a.startswith("/dev/")]
    links = {os.path.basename(os.path.realpath(d)): os.path.realpath(f"/sys/class/block/{os.path.basename(os.path.realpath(d))}") for d in named}
    _mount(libc, b"/dev/null", b"/proc/partitions", None, MS_BIND)
    _mount(libc, b"tmpfs", b"/sys/block", b"tmpfs", 0)
    for name, target in links.items():
        if os.path.exists(target):
            os.symlink(target, f"/sys/block/{name}")
    os.environ["BLKID_FILE"] = "/dev/null"
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
