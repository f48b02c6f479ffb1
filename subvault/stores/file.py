"""A store in a plain directory (`file:///mnt/nas/offsite`): a NAS, a USB disk, the demo.

Each key is a file under the root; '/' in a key is a directory. Writes go to a
temporary file in the same directory, are fsynced, renamed over the key and the
directory is fsynced, so a crash leaves the old object or the new one. Temporary
files are named `.KEY.tmp-RANDOM` and never listed.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from subvault.stores.base import (
    Bytes,
    ObjectInfo,
    ObjectNotFound,
    StoreAuthError,
    StoreError,
    StoreUnreachable,
    check_key,
    check_prefix,
)

_TMP_MARK = ".tmp-"


class FileStore:
    """Objects as files under `root`. The root must exist (a missing mount is unreachable)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise StoreUnreachable(f"{self.url}: directory does not exist (is the disk mounted?)")

    def put(self, key: str, data: Bytes, *, retain_until: datetime | None = None) -> None:
        staged = self._staged(key, retain_until)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(staged.fd, view):]
        except OSError as exc:
            staged.abort()
            raise _os_error(self.url, key, exc) from None
        staged.commit()

    def stage(self, key: str, *, retain_until: datetime | None = None) -> StagedFile:
        """Open key's temp file for the caller to write (age writes a part straight into it).

        It becomes the object on `commit()` (fsync, rename, directory fsync, as `put`);
        `abort()` removes it. The upload executor uses this when a store offers it.
        """
        return self._staged(key, retain_until)

    def _staged(self, key: str, retain_until: datetime | None) -> StagedFile:
        if retain_until is not None:
            raise StoreError(f"{self.url}: object lock is not supported by the file store")
        self._require_root()
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}{_TMP_MARK}{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _os_error(self.url, key, exc) from None
        return StagedFile(self, key, fd, tmp, path)

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        self._require_root()
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{self.url}: no object {key!r}") from None
        except OSError as exc:
            raise _os_error(self.url, key, exc) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        self._require_root()
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = [d for d in dirnames if _may_contain(rel_dir + d + "/", prefix)]
            for name in filenames:
                key = rel_dir + name
                if _TMP_MARK in name or not key.startswith(prefix):
                    continue
                try:
                    found.append(ObjectInfo(key, os.stat(os.path.join(dirpath, name)).st_size))
                except FileNotFoundError:
                    continue  # deleted while listing
        yield from sorted(found, key=lambda o: o.key)

    def stat(self, key: str) -> ObjectInfo:
        self._require_root()
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"{self.url}: no object {key!r}") from None
        if not self._path(key).is_file():
            raise ObjectNotFound(f"{self.url}: no object {key!r}")
        return ObjectInfo(key, st.st_size)

    def delete(self, key: str) -> None:
        self._require_root()
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)
        # Remove now-empty directories up to the root; never the root itself.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def _may_contain(dir_prefix: str, prefix: str) -> bool:
    """Return True if keys under dir_prefix can start with prefix."""
    return dir_prefix.startswith(prefix) or prefix.startswith(dir_prefix)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(url: str, key: str, exc: OSError) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(f"{url}: no space left writing {key!r}; free space or prune")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StoreAuthError(f"{url}: permission denied for {key!r}")
    return StoreError(f"{url}: {key!r}: {exc.strerror}")


class StagedFile:
    """A part being written in place under the store root; becomes visible on commit()."""

    def __init__(self, store: FileStore, key: str, fd: int, tmp: Path, path: Path) -> None:
        self.store, self.key, self.fd, self.tmp, self.path = store, key, fd, tmp, path

    def commit(self) -> None:
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise _os_error(self.store.url, self.key, exc) from None
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)
