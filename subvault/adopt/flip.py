"""Flip a subvolume's read-only flag by ioctl, keeping its received_uuid; move entries with it.

Why: moving a directory to another parent needs write permission on it (its ".."
changes), and a read-only subvolume refuses that (EROFS). `btrfs property set -f ro
false` would clear received_uuid (btrfs-progs does that on purpose), and with it the
entry's identity as a copy (invariant 7). BTRFS_IOC_SUBVOL_SETFLAGS changes only the
flag: the subvolume is writable for the moment of one rename and read-only again
right after, its content untouched (tested: an incremental receive onto it works).

`move_into` moves a group of entries into a staging container and gives the container
its final name. Locally it runs in-process; on an ssh target the same functions run
as one `python3 -c` per container (the target needs python3: `adopt --apply` checks
that before it changes anything).
"""

from __future__ import annotations

import fcntl
import inspect
import os
import struct
from collections.abc import Sequence

SETFLAGS = 0x4008941A  # _IOW(0x94, 26, __u64)
GETFLAGS = 0x80089419  # _IOR(0x94, 25, __u64)
RDONLY = 1 << 1
SUBVOL_INO = 256  # the inode number of every subvolume's root directory


def set_readonly(path: str | os.PathLike[str], readonly: bool) -> None:
    """Set or clear the read-only flag of the subvolume at path. Raise OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = struct.unpack("Q", fcntl.ioctl(fd, GETFLAGS, bytes(8)))[0]
        flags = flags | RDONLY if readonly else flags & ~RDONLY
        fcntl.ioctl(fd, SETFLAGS, struct.pack("Q", flags))
    finally:
        os.close(fd)


def move_into(staging: str, container: str, moves: Sequence[tuple[str, str]]) -> None:
    """Move each (src, name) into the staging subvolume as name, then rename staging to container.

    Resumable: every subvolume already in staging is made read-only first (a crash
    can leave the last one moved still writable; only verified entries ever go in),
    and a src already gone was moved by an earlier run.
    """
    for name in sorted(os.listdir(staging)):
        p = staging + "/" + name
        if os.path.isdir(p) and not os.path.islink(p) and os.stat(p).st_ino == SUBVOL_INO:
            set_readonly(p, True)
    for src, name in moves:
        if not os.path.lexists(src):
            continue
        dst = staging + "/" + name
        set_readonly(src, False)
        try:
            os.rename(src, dst)
        except OSError:
            set_readonly(src, True)
            raise
        set_readonly(dst, True)
    os.rename(staging, container)


# The remote program: these functions' own source (annotations never evaluated there).
_REMOTE = (
    "from __future__ import annotations\nimport fcntl,os,struct,sys\n"
    f"GETFLAGS={GETFLAGS}\nSETFLAGS={SETFLAGS}\nRDONLY={RDONLY}\nSUBVOL_INO={SUBVOL_INO}\n"
    + inspect.getsource(set_readonly) + inspect.getsource(move_into)
    + "a=sys.argv[3:]\nmove_into(sys.argv[1],sys.argv[2],list(zip(a[0::2],a[1::2])))\n"
)


def move_argv(staging: str, container: str, moves: Sequence[tuple[str, str]]) -> list[str]:
    """`move_into` as one command for a remote host (needs python3 there)."""
    return ["python3", "-c", _REMOTE, staging, container, *[x for pair in moves for x in pair]]


PYTHON3_PROBE = ["python3", "-c", "import fcntl,os,struct"]
