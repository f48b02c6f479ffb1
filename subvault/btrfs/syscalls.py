"""The few system calls the snapshot path needs: statfs (is it btrfs, a subvolume?), the
filesystem's uuid (by ioctl) and syncfs.

Kept apart from the adapter so that `snap-all`'s fast start (`cli/fast.py`) can check
its subvolumes without importing the adapter's parsers and process gateway.
"""

from __future__ import annotations

import ctypes
import fcntl
import os

from subvault.errors import NotBtrfs, SubvaultError

BTRFS_SUPER_MAGIC = 0x9123683E
FIRST_FREE_INODE = 256  # the root inode of every btrfs subvolume


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


_libc = ctypes.CDLL("libc.so.6", use_errno=True)  # glibc's soname; find_library would run ldconfig


def fs_type(path: str | os.PathLike[str]) -> int:
    """Return the statfs magic of the filesystem holding path. Raise NotBtrfs if it is missing."""
    buf = _Statfs()
    if _libc.statfs(os.fsencode(str(path)), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise NotBtrfs(f"{path}: {os.strerror(err)}; fix the path in the config")
    return int(buf.f_type) & 0xFFFFFFFF


def is_btrfs(path: str | os.PathLike[str]) -> bool:
    return fs_type(path) == BTRFS_SUPER_MAGIC


def is_subvolume(path: str | os.PathLike[str]) -> bool:
    """True when path is the root of a btrfs subvolume (inode 256 on btrfs)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return st.st_ino == FIRST_FREE_INODE and is_btrfs(path)


def require_subvolume(path: str | os.PathLike[str], what: str = "") -> None:
    """Raise NotBtrfs with advice unless path exists and is a btrfs subvolume."""
    p = os.fspath(path)
    label = f"{what}: " if what else ""
    if not os.path.exists(p):
        raise NotBtrfs(f"{label}{p} does not exist; fix the path in the config or create the subvolume")
    if not is_btrfs(p):
        raise NotBtrfs(f"{label}{p} is not on btrfs; subvault protects btrfs subvolumes only")
    if not is_subvolume(p):
        raise NotBtrfs(f"{label}{p} is a directory, not a btrfs subvolume; point the config at the subvolume's mount")


def syncfs(fd: int) -> None:
    """Commit the filesystem holding fd (one transaction for everything written so far)."""
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise SubvaultError(f"syncfs failed: {os.strerror(err)}")


_FS_INFO_SIZE = 1024
BTRFS_IOC_FS_INFO = (2 << 30) | (_FS_INFO_SIZE << 16) | (0x94 << 8) | 31  # _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)


def fs_id(path: str | os.PathLike[str]) -> str:
    """Return the uuid of the btrfs filesystem holding path, by ioctl (no process).

    Every subvolume of one filesystem answers the same, unlike st_dev. Raise NotBtrfs.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(_FS_INFO_SIZE)
        fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buf)
    except OSError as exc:
        raise NotBtrfs(f"{path}: not on btrfs ({exc.strerror})") from None
    finally:
        os.close(fd)
    h = bytes(buf[16:32]).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
