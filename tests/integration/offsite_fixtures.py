"""Helpers shared by the offsite integration tests: age keys, deterministic sources, sinks."""

from __future__ import annotations

import os
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from subvault import process
from subvault.offsite.manifest import MacKey
from subvault.offsite.upload import UploadRequest
from subvault.stores.file import FileStore

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class AgeKey:
    identity: Path
    recipient: str


def make_age_key(path: Path) -> AgeKey:
    process.run(["age-keygen", "-o", str(path)])
    recipient = process.run(["age-keygen", "-y", str(path)]).stdout.strip()
    return AgeKey(path, recipient)


def make_stream(path: Path, size: int, seed: int) -> Path:
    """Write a deterministic mix of incompressible and compressible bytes."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 18)
            f.write(rng.randbytes(n) if rng.random() < 0.6 else bytes([rng.randrange(256)]) * n)
            left -= n
    return path


def appending_sink(out: Path) -> list[str]:
    """An argv that appends its stdin to out (stands in for `btrfs receive DIR`)."""
    return ["dd", f"of={out}", "oflag=append", "conv=notrunc", "status=none"]


def mac_key(tmp: Path) -> MacKey:
    return MacKey.load_or_create(tmp / "offsite.mac")


def request(subvol: str, uuid: str, parent: str | None, chain: tuple[str, ...], source: Path,
            recipients: tuple[str, ...], hours: int = 0) -> UploadRequest:
    return UploadRequest(subvol, uuid, parent, chain, T0 + timedelta(hours=hours), ["cat", str(source)], recipients)


class _StagedFile:
    """A part being written in place under the store root (see StagingFileStore)."""

    def __init__(self, store: "StagingFileStore", key: str, fd: int, tmp: Path, path: Path) -> None:
        self.store, self.key, self.fd, self.tmp, self.path = store, key, fd, tmp, path

    def commit(self) -> None:
        from subvault.stores import file as fs

        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise fs._os_error(self.store.url, self.key, exc) from None
        fs._fsync_dir(self.path.parent)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


class StagingFileStore(FileStore):
    """FileStore with the optional `stage` method the upload executor uses when present.

    This is the code proposed for subvault/stores/file.py (FileStore.stage and its
    staged object): the same temporary name, fsync, rename and directory fsync as
    `put`, but the caller writes the file itself, so age's output lands in it directly.
    """

    def stage(self, key: str, *, retain_until: datetime | None = None) -> _StagedFile:
        from subvault.stores import file as fs

        if retain_until is not None:
            raise fs.StoreError(f"{self.url}: object lock is not supported by the file store")
        self._require_root()
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}{fs._TMP_MARK}{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise fs._os_error(self.url, key, exc) from None
        return _StagedFile(self, key, fd, tmp, path)
