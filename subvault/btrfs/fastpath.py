"""libbtrfsutil through ctypes: the fast path for snapshot creation and listing.

Measured (bench/bench_local.py): creating a snapshot through the library costs the
kernel's time alone instead of a fork/exec of `btrfs` each, and snapshots created from
several threads at once can share one transaction commit; listing a filesystem is one
tree walk instead of three CLI calls. libbtrfsutil is the C library btrfs-progs is built
on (Debian: libbtrfsutil1). When it is missing, or SUBVAULT_NO_LIBBTRFSUTIL=1, the
adapter uses the `btrfs` CLI and behaves the same (a test compares both).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
import struct
from datetime import UTC, datetime

from subvault.model import SubvolInfo

READ_ONLY = 1 << 1
SUBVOL_RDONLY_FLAG = 1 << 0  # BTRFS_ROOT_SUBVOL_RDONLY in btrfs_util_subvolume_info.flags
ERROR_STOP_ITERATION = 1
TOP_LEVEL = 5


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _SubvolumeInfo(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("parent_id", ctypes.c_uint64),
        ("dir_id", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("uuid", ctypes.c_uint8 * 16),
        ("parent_uuid", ctypes.c_uint8 * 16),
        ("received_uuid", ctypes.c_uint8 * 16),
        ("generation", ctypes.c_uint64),
        ("ctransid", ctypes.c_uint64),
        ("otransid", ctypes.c_uint64),
        ("stransid", ctypes.c_uint64),
        ("rtransid", ctypes.c_uint64),
        ("ctime", _Timespec),
        ("otime", _Timespec),
        ("stime", _Timespec),
        ("rtime", _Timespec),
    ]


class LibError(OSError):
    """A libbtrfsutil call failed; errno is set when the library reported one."""


def _load() -> ctypes.CDLL | None:
    if os.environ.get("SUBVAULT_NO_LIBBTRFSUTIL") == "1":
        return None
    # The soname first: find_library runs ldconfig, which costs ~20 ms at start-up.
    try:
        lib = ctypes.CDLL("libbtrfsutil.so.1", use_errno=True)
    except OSError:
        found = ctypes.util.find_library("btrfsutil")
        if not found:
            return None
        try:
            lib = ctypes.CDLL(found, use_errno=True)
        except OSError:
            return None
    lib.btrfs_util_create_snapshot.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.btrfs_util_create_snapshot.restype = ctypes.c_int
    lib.btrfs_util_strerror.argtypes = [ctypes.c_int]
    lib.btrfs_util_strerror.restype = ctypes.c_char_p
    lib.btrfs_util_create_subvolume_iterator.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
    lib.btrfs_util_create_subvolume_iterator.restype = ctypes.c_int
    lib.btrfs_util_subvolume_iterator_next_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_SubvolumeInfo)]
    lib.btrfs_util_subvolume_iterator_next_info.restype = ctypes.c_int
    lib.btrfs_util_subvolume_info.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.POINTER(_SubvolumeInfo)]
    lib.btrfs_util_subvolume_info.restype = ctypes.c_int
    lib.btrfs_util_subvolume_path.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_void_p)]
    lib.btrfs_util_subvolume_path.restype = ctypes.c_int
    lib.btrfs_util_destroy_subvolume_iterator.argtypes = [ctypes.c_void_p]
    lib.btrfs_util_destroy_subvolume_iterator.restype = None
    return lib


_LIB = _load()
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
_LIBC.free.argtypes = [ctypes.c_void_p]


def available() -> bool:
    return _LIB is not None


def _fail(code: int, what: str) -> LibError:
    err = ctypes.get_errno()
    text = (_LIB.btrfs_util_strerror(code) or b"error").decode()
    if err:
        return LibError(err, f"{what}: {text}: {os.strerror(err)}")
    return LibError(errno_mod.EIO, f"{what}: {text}")


def create_snapshot(source: str, dest: str, *, readonly: bool) -> None:
    """Create a snapshot of source at dest. Raise LibError (errno set, e.g. ENOSPC) on failure.

    The call releases the GIL, so snapshots started from several threads run together.
    """
    assert _LIB is not None
    ctypes.set_errno(0)
    code = _LIB.btrfs_util_create_snapshot(os.fsencode(source), os.fsencode(dest), READ_ONLY if readonly else 0, None, None)
    if code:
        raise _fail(code, f"snapshot {source}")


_NO_UUID = bytes(16)


def _uuid(raw) -> str | None:
    raw = bytes(raw)
    if raw == _NO_UUID:
        return None
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"  # uuid.UUID would cost 3x


def _time(ts: _Timespec) -> datetime | None:
    return datetime.fromtimestamp(ts.tv_sec, UTC) if ts.tv_sec else None


# The fields of _SubvolumeInfo that SubvolInfo needs, read from one copy of its bytes
# (each ctypes field access costs more than the whole unpack; 10,000 per `list`).
_RAW = struct.Struct("@QQQQ16s16s16sQ")
_OTIME = struct.Struct("@q")
_OTIME_AT = _SubvolumeInfo.otime.offset


def _fast_info(info: _SubvolumeInfo, rel: str) -> SubvolInfo:
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


def _info(info: _SubvolumeInfo, rel: str) -> SubvolInfo:
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
    assert _LIB is not None
    info = _SubvolumeInfo()
    ctypes.set_errno(0)
    code = _LIB.btrfs_util_subvolume_info(os.fsencode(path), 0, ctypes.byref(info))
    if code:
        raise _fail(code, f"subvolume info of {path}")
    rel = ""
    if with_path and info.id != TOP_LEVEL:
        ptr = ctypes.c_void_p()
        code = _LIB.btrfs_util_subvolume_path(os.fsencode(path), 0, ctypes.byref(ptr))
        if code:
            raise _fail(code, f"subvolume path of {path}")
        rel = ctypes.string_at(ptr.value).decode(errors="surrogateescape")
        _LIBC.free(ptr)
    return _info(info, rel)


def list_subvolumes(path: str, *, below: bool = False) -> list[SubvolInfo]:
    """Return every subvolume of the filesystem holding path (needs root). Raise LibError.

    With below, only the subvolumes beneath the subvolume at path, with paths relative to it.
    """
    assert _LIB is not None
    it = ctypes.c_void_p()
    ctypes.set_errno(0)
    code = _LIB.btrfs_util_create_subvolume_iterator(os.fsencode(path), 0 if below else TOP_LEVEL, 0, ctypes.byref(it))
    if code:
        raise _fail(code, f"list subvolumes of {path}")
    out: list[SubvolInfo] = []
    try:
        info = _SubvolumeInfo()
        while True:
            path_ptr = ctypes.c_void_p()
            code = _LIB.btrfs_util_subvolume_iterator_next_info(it, ctypes.byref(path_ptr), ctypes.byref(info))
            if code == ERROR_STOP_ITERATION:
                break
            if code:
                raise _fail(code, f"list subvolumes of {path}")
            rel = ctypes.string_at(path_ptr.value).decode(errors="surrogateescape")
            _LIBC.free(path_ptr)
            out.append(_fast_info(info, rel))
    finally:
        _LIB.btrfs_util_destroy_subvolume_iterator(it)
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
    return struct.unpack_from("=Q", buf)[0]


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
