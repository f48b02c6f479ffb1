"""Streaming one object into S3 as a multipart upload (what `S3Store.stream` returns).

Rules:
- The object's bytes arrive on a pipe and are cut into pieces of the pool's piece size,
  each sent as one part of an S3 multipart upload while the next is read.
- Memory is bounded by the store, not by the object or the stream: at most
  `concurrency` pieces are sent at once, from at most `concurrency + 1` reused buffers
  (`PiecePool`) shared by every object of the store.
- An object that fits in one piece is sent with one PutObject instead.
- The object appears only when the upload is completed (atomic, like `put`); a failed
  or abandoned one is aborted (`S3Store.abort_unfinished` clears any that a killed
  process left).
- A piece is never copied into one more bytes object: it is sent through `ViewBody`.
- This module knows the store only through `MultipartTarget`, the calls a stream makes;
  it never imports the store (the store imports it).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

from subvault.process.splice import PIPE_BYTES, big_pipe, read_full
from subvault.stores.base import Bytes, StoreError, StoreUnreachable


class MultipartTarget(Protocol):
    """What a stream needs from its store: keys are relative to the store's prefix."""

    url: str

    def put(self, key: str, data: Bytes, *, retain_until: datetime | None = None) -> None: ...

    def delete(self, key: str) -> None: ...

    def start_upload(self, key: str, retain_until: datetime | None) -> str:
        """Create a multipart upload of key (locked until retain_until if given); return its id."""
        ...

    def send_part(self, key: str, upload_id: str, number: int, body: Any, *, locked: bool) -> dict[str, Any]:
        """Upload part `number`; return its entry for `complete_upload`."""
        ...

    def complete_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None: ...

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort the upload, best effort (never raises a store error)."""
        ...


class PiecePool:
    """The pieces and the threads that send them, shared by every stream of one store.

    At most `concurrency + 1` buffers of `size` bytes, made on first use and reused (no
    fresh pages to fault in per piece); `take()` blocks while every buffer is in use.
    `submit` runs a send on one of `concurrency` threads, started on first use.
    """

    def __init__(self, concurrency: int, size: int) -> None:
        self.size = size
        self._concurrency = concurrency
        self._free: list[bytearray] = []
        self._slots = threading.Semaphore(concurrency + 1)
        self._lock = threading.Lock()
        self._senders: ThreadPoolExecutor | None = None
        self._senders_lock = threading.Lock()

    def take(self) -> bytearray:
        self._slots.acquire()
        with self._lock:
            return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        with self._lock:
            self._free.append(buf)
        self._slots.release()

    def submit(self, send: Callable[..., Any], *args: Any) -> Future[Any]:
        with self._senders_lock:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(self._concurrency, thread_name_prefix="s3-piece")
            senders = self._senders
        return senders.submit(send, *args)


class StreamedObject:
    """One object being streamed to S3 (see S3Store.stream and the module docstring).

    A reader thread fills pooled pieces from the pipe, hashing as it reads, and hands
    each full piece to the pool's senders (an object that fits in one piece goes as one
    PutObject, so it exists, whole, from the end of its input; `abort()` deletes it
    again). `end_input()` once the writer has exited sends the last piece at once;
    `commit()` closes the write end if that was not done, waits for
    every piece, completes the upload and returns (size, SHA-256 hex). After a failed
    piece the reader keeps draining the pipe (the writer never blocks on a dead upload)
    and `commit()` raises that failure; `abort()` discards everything.
    """

    def __init__(self, store: MultipartTarget, key: str, retain_until: datetime | None, pieces: PiecePool) -> None:
        self._store, self._key, self._pieces = store, key, pieces
        self._retain = retain_until
        self._rfd, self.fd = big_pipe()
        self._sha = hashlib.sha256()
        self._size = 0
        self._upload_id: str | None = None
        self._sent: list[Future[Any]] = []
        self._error: BaseException | None = None
        self._whole = False  # the object went as one PutObject (it exists from then on)
        self._reader = threading.Thread(target=self._read, daemon=True, name="s3-stream")
        self._reader.start()

    def _read(self) -> None:
        pool = self._pieces
        held: bytearray | None = None  # a piece this thread owns: back to the pool on any way out
        try:
            while True:
                held = buf = pool.take()
                n = self._fill(buf)
                if self._error is not None or (n == 0 and self._upload_id is not None):
                    break
                if n < pool.size and self._upload_id is None:  # the whole object fits in one piece
                    self._sent.append(pool.submit(self._send_whole, buf, n))
                    held = None
                    return
                if self._upload_id is None:
                    self._upload_id = self._store.start_upload(self._key, self._retain)
                number = len(self._sent) + 1
                self._sent.append(pool.submit(self._send, self._upload_id, number, buf, n))
                held = None
                if n < pool.size:
                    return
        except BaseException as exc:  # handed to commit() in the caller's thread
            self._error = self._error or exc
        finally:
            if held is not None:
                pool.give(held)
        if self._error is not None:
            self._drain()

    def _fill(self, buf: bytearray) -> int:
        got = read_full(self._rfd, buf, self._sha.update)
        self._size += got
        return got

    def _drain(self) -> None:
        while os.read(self._rfd, PIPE_BYTES):
            pass

    def _send(self, upload_id: str, number: int, buf: bytearray, n: int) -> dict[str, Any]:
        try:
            if self._error is not None:
                raise self._error
            body: Any = buf if n == len(buf) else ViewBody(memoryview(buf)[:n])
            return self._store.send_part(self._key, upload_id, number, body, locked=self._retain is not None)
        except BaseException as exc:
            self._error = self._error or exc  # the reader drains from here on
            raise
        finally:
            self._pieces.give(buf)

    def _send_whole(self, buf: bytearray, n: int) -> None:
        try:
            if self._error is not None:
                raise self._error
            with memoryview(buf) as view:
                self._store.put(self._key, view[:n], retain_until=self._retain)
            self._whole = True
        except BaseException as exc:
            self._error = self._error or exc
            raise
        finally:
            self._pieces.give(buf)

    def end_input(self) -> None:
        """The writer has exited: close the write end, so the last piece goes now."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _finish_reading(self) -> None:
        self.end_input()
        self._reader.join()
        os.close(self._rfd)
        self._rfd = -1

    def commit(self) -> tuple[int, str]:
        """Store what was written (atomically); return (size, SHA-256 hex). Raise the store's error."""
        self._finish_reading()
        try:
            parts = [f.result() for f in self._sent]
            if self._error is not None:
                raise self._error
            if self._upload_id is not None:
                self._store.complete_upload(self._key, self._upload_id, parts)
                self._upload_id = None
        except BaseException:
            self.abort()
            raise
        return self._size, self._sha.hexdigest()

    def abort(self) -> None:
        """Discard the object: stop reading, wait for the pieces in flight, abort the upload."""
        if self._rfd >= 0:
            self._error = self._error or StoreError(f"{self._store.url}: upload of {self._key!r} abandoned")
            self._finish_reading()
        for f in self._sent:
            f.exception()  # waits; a failed piece is already recorded
        self._sent = []
        if self._upload_id is not None:
            self._store.abort_upload(self._key, self._upload_id)
            self._upload_id = None
        if self._whole:
            self._whole = False
            try:
                self._store.delete(self._key)
            except (StoreError, StoreUnreachable):
                pass  # best effort: an unjournaled part is replaced or deleted by the next run


class ViewBody(io.RawIOBase):
    """A seekable file over a memoryview: botocore reads it in pieces to sign and send,
    and seeks back to retry, so the part is never copied into one more bytes object."""

    def __init__(self, view: memoryview) -> None:
        self._view = view.cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf: Any) -> int:
        piece = self._view[self._pos:self._pos + len(buf)]
        n = len(piece)
        memoryview(buf).cast("B")[:n] = piece
        self._pos += n
        return n

    def __len__(self) -> int:
        return len(self._view)
