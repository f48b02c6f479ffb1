"""Run one command with the host's block devices hidden from libblkid: `python -m subvault.dr.isolate ARGV…`.

mkfs.btrfs refuses a UUID that a device on the host already has. A drill on the live
machine recreates the machine's own UUIDs on purpose, into an image, so the check is
run where /proc/partitions is empty: in a private mount namespace (the caller runs us
under `unshare --mount --propagation private`), /dev/null is bound over it, then the
command is exec'd. Nothing else changes and the host's mount table is untouched.
"""

from __future__ import annotations

import ctypes
import os
import sys

MS_BIND = 4096


def main(argv: list[str]) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.mount(b"/dev/null", b"/proc/partitions", None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        sys.exit(f"subvault.dr.isolate: cannot hide /proc/partitions: {os.strerror(err)}")
    os.environ["BLKID_FILE"] = "/dev/null"
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
