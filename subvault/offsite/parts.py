"""The parts of one offsite upload: each slice encrypted by its own age, stored in order,
and the journal that records every stored part (see upload.py's docstring for the rules)."""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Protocol

from subvault.errors import SubvaultError
from subvault.offsite import layout
from subvault.offsite.manifest import MacKey, Point
from subvault.process.filters import FdFilter, Filter
from subvault.process.splice import CHUNK
from subvault.stores.base import Store

log = logging.getLogger("subvault.offsite")


@dataclass(frozen=True)
class UploadRequest(Point):
    """One snapshot to upload: its point, `source` (an argv writing its send stream to
    stdout) and the recipients it is encrypted to."""

    source: Sequence[str]
    recipients: tuple[str, ...]
    number: int | None = None  # the snapper number, recorded in the manifest


JOURNAL_FORMAT = 2


@dataclass
class JournalPart:
    key: str
    size: int
    sha256: str
    plain_size: int
    plain_crc32: str


@dataclass
class Journal:
    subvolume: str
    uuid: str
    parent_uuid: str | None
    part_size: int
    recipients: list[str]
    compress: list[str]
    parts: list[JournalPart] = field(default_factory=list)

    def payload(self) -> bytes:
        data = asdict(self)
        data["format"] = JOURNAL_FORMAT
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class Staged(Protocol):
    """An object being written in place, as an optional `store.stage(key, retain_until=)` returns it.

    `fd` is a readable and writable regular file, empty; `commit()` makes what was
    written the object at key, durably and atomically; `abort()` discards it. A store
    offering `stage` lets age write each part straight into it: the ciphertext never
    passes through Python (a store without it gets `put(key, bytes)` from a buffer).
    """

    fd: int

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class Streamed(Protocol):
    """An object being sent as it is written, as an optional `store.stream(key, retain_until=)` returns it.

    `fd` is the write end of a pipe the store reads from; `end_input()`, called as soon
    as the writer has exited, closes it (the store sends what remains); `commit()` makes
    what was written the object at key, atomically, and returns (size, SHA-256 hex) of
    it; `abort()` discards it. The store bounds its own memory and concurrency (S3:
    pieces of a multipart upload).
    """

    fd: int

    def end_input(self) -> None: ...

    def commit(self) -> tuple[int, str]: ...

    def abort(self) -> None: ...


Job = Filter | FdFilter


class PartWriter:
    """Encrypt each slice with its own age process and store the parts, in order.

    The caller feeds slice i to age while the store thread finishes part i-1: it puts
    it, then the journal (the journal never names a part before it is stored). Where
    age's output goes depends on the store: with `stage`, straight into the staged
    object, hashed afterwards through a read-only mapping; with `stream`, into the
    store's pipe, sent and hashed by the store as it arrives; otherwise into one of two
    reused buffers, hashed by a collecting thread as it arrives. Slice i+1 begins only
    once part i-1 is stored, so at most two parts are in flight (memory about
    2 x part_size in the buffered case), and a slow store holds the stream back.
    """

    def __init__(self, store: Store, journal: Journal, jkey: str, mac_key: MacKey, request: UploadRequest,
                 age: list[str], what: str, retain_until: datetime | None, part_size: int) -> None:
        self._args = (store, journal, jkey, mac_key, request, retain_until)
        self._age, self._what = age, what
        self._stage: Callable[..., Staged] | None = getattr(store, "stage", None)
        self._stream: Callable[..., Streamed] | None = getattr(store, "stream", None)
        self._streamed: dict[int, Streamed] = {}
        self._cipher_size = age_size_bound(part_size)
        self._ciphers: list[bytearray | None] = [None, None]
        self._staged: dict[int, Staged] = {}
        self._store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offsite-put")
        self._ending = ThreadPoolExecutor(max_workers=2, thread_name_prefix="offsite-age")
        self._jobs: dict[int, Job] = {}
        self._stored: dict[int, Future[None]] = {}
        self._first = True

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for job in list(self._jobs.values()):
            job.kill()
        self._ending.shutdown(wait=True)
        self._store.shutdown(wait=True, cancel_futures=True)
        for index in list(self._jobs):
            self._jobs.pop(index).__exit__(None, None, None)
        for index in list(self._staged):
            self._staged.pop(index).abort()
        for index in list(self._streamed):
            self._streamed.pop(index).abort()

    def _done(self, index: int) -> None:
        job = self._stored.pop(index, None)
        if job is not None:
            job.result()  # raises the store job's error here, in the caller's thread

    def begin(self, index: int) -> Job:
        """Start age for part `index`, once part index-2 (and its buffer) is done with.

        The first call cuts the journal at `index`: nothing after it can be reused.
        """
        if self._first:
            del self._args[1].parts[index:]  # nothing is in flight before the first part
            self._first = False
        self._done(index - 2)
        what = f"{self._what}: age"
        job: Job
        if self._stream is not None:
            request, retain_until = self._args[4], self._args[5]
            streamed = self._streamed[index] = self._stream(layout.part_key(request.subvolume, request.uuid, index),
                                                            retain_until=retain_until)
            job = FdFilter(self._age, streamed.fd, what=what)
        elif self._stage is not None:
            request, retain_until = self._args[4], self._args[5]
            staged = self._staged[index] = self._stage(layout.part_key(request.subvolume, request.uuid, index),
                                                       retain_until=retain_until)
            job = FdFilter(self._age, staged.fd, what=what)
        else:
            cipher = self._ciphers[index % 2]
            if cipher is None:
                cipher = self._ciphers[index % 2] = bytearray(self._cipher_size)
            job = Filter(self._age, cipher, what=what)
        self._jobs[index] = job.__enter__()
        return job

    @staticmethod
    def feed(job: Job, data: memoryview) -> None:
        """Write data to age; raise age's error if it stopped reading."""
        if not job.write(data):
            job.result()  # raises why

    def commit(self, index: int, plain_size: int, plain_crc32: str) -> None:
        """End part `index`'s input and queue it for storing."""
        self._jobs[index].end_input()
        ended = self._ending.submit(self._end, index) if index in self._streamed else None
        self._stored[index] = self._store.submit(self._put, index, ended, plain_size, plain_crc32)

    def _end(self, index: int) -> None:
        """Wait for age of streamed part `index`, then end the stream's input: its last
        piece is sent now, not when the part's turn to be committed comes."""
        try:
            self._jobs[index].result()
        finally:
            self._streamed[index].end_input()

    def _put(self, index: int, ended: Future[None] | None, plain_size: int, plain_crc32: str) -> None:
        store, journal, jkey, mac_key, request, retain_until = self._args
        job = self._jobs[index]
        try:
            done = ended.result() if ended is not None else job.result()
        finally:
            self._jobs.pop(index).__exit__(None, None, None)
        if len(journal.parts) != index:  # an earlier part failed (its error is raised first):
            raise SubvaultError(f"{self._what}: part {index} not stored: an earlier part failed")  # no gap
        key = layout.part_key(request.subvolume, request.uuid, index)
        if index in self._streamed:
            n, cipher_sha = self._streamed.pop(index).commit()  # aborts itself if it fails
        elif isinstance(done, tuple):
            n, cipher_sha = done
            cipher = self._ciphers[index % 2]
            assert cipher is not None
            with memoryview(cipher) as view:
                store.put(key, view[:n], retain_until=retain_until)
        else:
            staged = self._staged.pop(index)
            try:
                n, cipher_sha = file_sha256(staged.fd)
                staged.commit()
            except BaseException:
                staged.abort()
                raise
        journal.parts.append(JournalPart(key, n, cipher_sha, plain_size, plain_crc32))
        store.put(jkey, signed_journal(journal, mac_key))

    def wait(self) -> None:
        """Wait for every part to be stored; raise the first error."""
        for index in sorted(self._stored):
            self._done(index)


def file_sha256(fd: int) -> tuple[int, str]:
    """Return the size and SHA-256 (hex) of the regular file fd, read through one mapping."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, hashlib.sha256().hexdigest()
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # one fault-in, not one per page
    with mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ) as mapped:
        return size, hashlib.sha256(mapped).hexdigest()


def age_size_bound(plain_size: int) -> int:
    """Return a buffer size that holds age's output for plain_size bytes without growing.

    age adds a header (under a few KiB for a handful of recipients), a 16-byte nonce
    and a 16-byte tag per 64 KiB chunk; the collector wants a read's worth of room.
    """
    return plain_size + (plain_size // 65536 + 1) * 16 + (64 << 10) + CHUNK


def signed_journal(journal: Journal, mac_key: MacKey) -> bytes:
    payload = journal.payload()
    return json.dumps({"journal": json.loads(payload), "mac": mac_key.mac_bytes(payload)}, indent=1).encode()
