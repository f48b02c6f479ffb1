"""libbtrfsutil through ctypes: the fast path for listing subvolumes.

Listing a filesystem is one tree walk instead of three CLI calls (measured in
bench/bench_local.py). The binding itself, and snapshot creation, are
`btrfs/libbtrfsutil.py`; when the library is missing the adapter uses the `btrfs` CLI
and behaves the same (a test compares both).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from datetime import UTC, datetime

from subvault.btrfs.libbtrfsutil import ERROR_STOP_ITERATION, LIB, SUBVOL_RDONLY_FLAG, TOP_LEVEL, LibError, SubvolumeInfo, Timespec, fail
from subvault.model import SubvolInfo

_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
_LIBC.free.argtypes = [ctypes.c_void_p]


_NO_UUID = bytes(16)


def _uuid(raw: bytes | ctypes.Array[ctypes.c_uint8]) -> str | None:
    raw = bytes(raw)
    if raw == _NO_UUID:
        return None
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"  # uuid.UUID would cost 3x


def _take_path(ptr: ctypes.c_void_p, what: str) -> str:
    """Return the path the library malloc'd into ptr, and free it. Raise LibError if it left ptr NULL."""
    if ptr.value is None:  # never read address 0: that would kill the process
        raise LibError(errno.EIO, f"{what}: libbtrfsutil returned no path")
    path = ctypes.string_at(ptr.value).decode(errors="surrogateescape")
    _LIBC.free(ptr)
    return path


def _time(ts: Timespec) -> datetime | None:
    return datetime.fromtimestamp(ts.tv_sec, UTC) if ts.tv_sec else None


# The fields of SubvolumeInfo that SubvolInfo needs, read from one copy of its bytes
# (each ctypes field access costs more than the whole unpack; 10,000 per `list`).
_RAW = struct.Struct("@QQQQ16s16s16sQ")
_OTIME = struct.Struct("@q")
_OTIME_AT = SubvolumeInfo.otime.offset


def _fast_info(info: SubvolumeInfo, rel: str) -> SubvolInfo:
    raw = bytes(info)
    id_, parent_id, _dir, flags, uuid, parent_uuid, received_uuid, generation = _RAW.unpack_from(raw)
    otime = _OTIME.unpack_from(raw, _OTIME_AT)[0]
    return SubvolInfo(
        id=id_,
        path=rel,
        uuid=_uuid(uuid) or "",
        parent_uuid=_uuid(parent_uuid),
        received_uuid=_uuid(received_uuid),
        readonly=bool(flags & SUBVOL_RDONLY_FLAG),
        generation=generation,
        top_level=parent_id,
        otime=datetime.fromtimestamp(otime, UTC) if otime else None,
    )


def _info(info: SubvolumeInfo, rel: str) -> SubvolInfo:
    return SubvolInfo(
        id=info.id,
        path=rel,
        uuid=_uuid(info.uuid) or "",
        parent_uuid=_uuid(info.parent_uuid),
        received_uuid=_uuid(info.received_uuid),
        readonly=bool(info.flags & SUBVOL_RDONLY_FLAG),
        generation=info.generation,
        top_level=info.parent_id,
        otime=_time(info.otime),
    )


def subvolume_info(path: str, *, with_path: bool = False) -> SubvolInfo:
    """Return the subvolume containing path; with_path, also its path from the top level.

    Raise LibError on failure.
    """
    assert LIB is not None
    info = SubvolumeInfo()
    ctypes.set_errno(0)
    code = LIB.btrfs_util_subvolume_info(os.fsencode(path), 0, ctypes.byref(info))
    if code:
        raise fail(code, f"subvolume info of {path}")
    rel = ""
    if with_path and info.id != TOP_LEVEL:
        ptr = ctypes.c_void_p()
        code = LIB.btrfs_util_subvolume_path(os.fsencode(path), 0, ctypes.byref(ptr))
        if code:
            raise fail(code, f"subvolume path of {path}")
        rel = _take_path(ptr, f"subvolume path of {path}")
    return _info(info, rel)


def list_subvolumes(path: str, *, below: bool = False) -> list[SubvolInfo]:
    """Return every subvolume of the filesystem holding path (needs root). Raise LibError.

    With below, only the subvolumes beneath the subvolume at path, with paths relative to it.
    """
    assert LIB is not None
    it = ctypes.c_void_p()
    ctypes.set_errno(0)
    code = LIB.btrfs_util_create_subvolume_iterator(os.fsencode(path), 0 if below else TOP_LEVEL, 0, ctypes.byref(it))
    if code:
        raise fail(code, f"list subvolumes of {path}")
    out: list[SubvolInfo] = []
    what = f"list subvolumes of {path}"
    try:
        info = SubvolumeInfo()
        while True:
            path_ptr = ctypes.c_void_p()
            code = LIB.btrfs_util_subvolume_iterator_next_info(it, ctypes.byref(path_ptr), ctypes.byref(info))
            if code == ERROR_STOP_ITERATION:
                break
            if code:
                raise fail(code, what)
            rel = _take_path(path_ptr, what)
            out.append(_fast_info(info, rel))
    finally:
        LIB.btrfs_util_destroy_subvolume_iterator(it)
    return out


# The root tree, read directly (BTRFS_IOC_TREE_SEARCH_V2, needs root like the
# iterator above): a few ioctls for the whole filesystem instead of three per
# subvolume. `scan` needs, for each .snapshots/N/snapshot, only its uuid and
# received uuid, and finds it by where it sits: the subvolume whose ROOT_BACKREF names
# (parent subvolume, directory inode of N, "snapshot").
BTRFS_IOC_TREE_SEARCH_V2 = (3 << 30) | (112 << 16) | (0x94 << 8) | 17  # _IOWR(0x94, 17, btrfs_ioctl_search_args_v2)
BTRFS_IOC_INO_LOOKUP = (3 << 30) | (4096 << 16) | (0x94 << 8) | 18  # _IOWR(0x94, 18, btrfs_ioctl_ino_lookup_args)
ROOT_TREE_OBJECTID = 1
ROOT_ITEM_KEY = 132
ROOT_BACKREF_KEY = 144
FIRST_FREE_OBJECTID = 256
LAST_FREE_OBJECTID = (1 << 64) - 256
_U64_MAX = (1 << 64) - 1
_SEARCH_KEY = struct.Struct("=7Q4I4Q")  # struct btrfs_ioctl_search_key (104 bytes) + buf_size follows
_SEARCH_HEADER = struct.Struct("=3Q2I")  # transid, objectid, offset, type, len
_ROOT_REF = struct.Struct("<QQH")  # dirid, sequence, name_len; the name follows
_NR_ITEMS_AT = 64  # offset of nr_items in btrfs_ioctl_search_key
_UUID_AT, _RECEIVED_UUID_AT = 247, 279  # in struct btrfs_root_item (packed)
_SEARCH_BUF = 1 << 20


def subvolume_id(path: str) -> int:
    """Return the id of the subvolume holding path (a directory). Raise OSError."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = bytearray(4096)
        struct.pack_into("=QQ", buf, 0, 0, FIRST_FREE_OBJECTID)  # treeid 0: the tree holding fd
        fcntl.ioctl(fd, BTRFS_IOC_INO_LOOKUP, buf)
    finally:
        os.close(fd)
    ident: int = struct.unpack_from("=Q", buf)[0]
    return ident


class Placement:
    """Where every subvolume of one filesystem sits, and its uuids, from one walk of the root tree."""

    def __init__(self, path: str) -> None:
        # (parent subvolume id, directory inode, name) -> subvolume id
        self.placed: dict[tuple[int, int, bytes], int] = {}
        # subvolume id -> raw uuid + received uuid (32 bytes), for items that carry them
        self.raw_uuids: dict[int, bytes] = {}
        self._walk(path)

    def uuids(self, parent: int, dirid: int, name: bytes) -> tuple[str, str | None] | None:
        """(uuid, received uuid) of the subvolume at that place, or None if there is none."""
        sub = self.placed.get((parent, dirid, name))
        if sub is None:
            return None
        raw = self.raw_uuids.get(sub)
        if raw is None:
            return "", None
        return _uuid(raw[:16]) or "", _uuid(raw[16:])

    def _walk(self, path: str) -> None:
        import fcntl

        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            args = bytearray(112 + _SEARCH_BUF)
            min_obj, min_type, min_off = FIRST_FREE_OBJECTID, ROOT_ITEM_KEY, 0
            while True:
                _SEARCH_KEY.pack_into(args, 0, ROOT_TREE_OBJECTID, min_obj, LAST_FREE_OBJECTID, min_off, _U64_MAX,
                                      0, _U64_MAX, min_type, ROOT_BACKREF_KEY, 0xFFFFFFFF, 0, 0, 0, 0, 0)
                struct.pack_into("=Q", args, 104, _SEARCH_BUF)
                fcntl.ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, args)
                count = struct.unpack_from("=I", args, _NR_ITEMS_AT)[0]
                if count == 0:
                    return
                at = 112
                for _ in range(count):
                    _transid, obj, off, typ, length = _SEARCH_HEADER.unpack_from(args, at)
                    at += 32
                    if typ == ROOT_ITEM_KEY:
                        if length >= _RECEIVED_UUID_AT + 16:
                            self.raw_uuids[obj] = bytes(args[at + _UUID_AT:at + _UUID_AT + 16]) + bytes(
                                args[at + _RECEIVED_UUID_AT:at + _RECEIVED_UUID_AT + 16])
                    elif typ == ROOT_BACKREF_KEY:  # key (child, ROOT_BACKREF, parent)
                        dirid, _seq, name_len = _ROOT_REF.unpack_from(args, at)
                        self.placed[(off, dirid, bytes(args[at + 18:at + 18 + name_len]))] = obj
                    at += length
                # continue after the last key seen
                if off < _U64_MAX:
                    min_obj, min_type, min_off = obj, typ, off + 1
                elif typ < 255:
                    min_obj, min_type, min_off = obj, typ + 1, 0
                elif obj < LAST_FREE_OBJECTID:
                    min_obj, min_type, min_off = obj + 1, 0, 0
                else:
                    return
        finally:
            os.close(fd)
