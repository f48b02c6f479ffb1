"""Flip a subvolume's read-only flag by ioctl, keeping its received_uuid.

Why: moving a directory to another parent needs write permission on it (its ".."
changes), and a read-only subvolume refuses that (EROFS). `btrfs property set -f ro
false` would clear received_uuid (btrfs-progs does that on purpose), and with it the
entry's identity as a copy (invariant 7). BTRFS_IOC_SUBVOL_SETFLAGS changes only the
flag: the subvolume is writable for the moment of one rename and read-only again
right after, its content untouched (tested: an incremental receive onto it works).
On a remote target the same few lines run as `python3 -c`.
"""

from __future__ import annotations

import fcntl
import os
import struct

SETFLAGS = 0x4008941A  # _IOW(0x94, 26, __u64)
GETFLAGS = 0x80089419  # _IOR(0x94, 25, __u64)
RDONLY = 1 << 1

CODE = (
    "import fcntl,os,struct,sys\n"
    "fd=os.open(sys.argv[1],os.O_RDONLY|os.O_DIRECTORY)\n"
    f"f=struct.unpack('Q',fcntl.ioctl(fd,{GETFLAGS},bytes(8)))[0]\n"
    f"f=f|{RDONLY} if sys.argv[2]=='ro' else f&~{RDONLY}\n"
    f"fcntl.ioctl(fd,{SETFLAGS},struct.pack('Q',f))\n"
)


def set_readonly(path: str | os.PathLike[str], readonly: bool) -> None:
    """Set or clear the read-only flag of the subvolume at path. Raise OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = struct.unpack("Q", fcntl.ioctl(fd, GETFLAGS, bytes(8)))[0]
        flags = flags | RDONLY if readonly else flags & ~RDONLY
        fcntl.ioctl(fd, SETFLAGS, struct.pack("Q", flags))
    finally:
        os.close(fd)


def flip_argv(path: str, readonly: bool) -> list[str]:
    """The same flip as a command for a remote host (needs python3 there)."""
    return ["python3", "-c", CODE, path, "ro" if readonly else "rw"]
