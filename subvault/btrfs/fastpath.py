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
