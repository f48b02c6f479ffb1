"""A store in any S3-compatible bucket (Backblaze B2, Hetzner, R2, MinIO, rclone serve s3).

Built on boto3 (chosen by measurement; see docs/design.md): path-style addressing by
default, an explicit endpoint and region, credentials passed in (never boto3's own
search of ~/.aws), checksums only where the API requires them (the broadest
compatibility with S3 look-alikes), and bounded retries so an unreachable endpoint
fails in seconds with one line.

Every key is joined under the target's prefix; nothing outside it is read, listed or
deleted (invariant 8).

Streaming (`stream(key)`, what the offsite executor writes parts through): the object's
bytes arrive on a pipe and are cut into pieces of PIECE_SIZE, each sent as one part of
an S3 multipart upload while the next is read; at most `concurrency` pieces are sent
at once, from at most `concurrency + 1` reused buffers shared by every object of the
store, so memory is bounded by that, not by the object's or the stream's size. An
object that fits in one piece is sent with one PutObject instead. The object appears
only when the upload is completed (atomic, like `put`); a failed or abandoned one is
aborted, and `abort_unfinished(prefix)` clears any that a killed process left.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from subvault.process.splice import PIPE_BYTES, big_pipe, read_full
from subvault.secrets import redact
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
from subvault.stores.credentials import Credentials

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_AUTH = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
         "ExpiredToken", "AuthorizationHeaderMalformed", "Forbidden", "Unauthorized", "401"}
PIECE_SIZE = 5 << 20  # S3's smallest piece but the last (as rclone's chunks); x 10,000 pieces >> the largest part
DEFAULT_CONCURRENCY = 4
_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "502", "503", "504"}


class S3Store:
    """Objects under `prefix` in `bucket` at `endpoint`."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        credentials: Credentials,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        path_style: bool = True,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        max_attempts: int = 3,
        concurrency: int = DEFAULT_CONCURRENCY,
        piece_size: int = PIECE_SIZE,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.endpoint = endpoint
        # Over TLS the payload is not hashed again to sign it (TLS guards it in transit; the
        # manifest's SHA-256 guards it at rest): a whole CPU pass saved. Over plain http it is.
        tls = (endpoint or "https://").lower().startswith("https://")
        config = Config(
            s3={"addressing_style": "path" if path_style else "virtual", "payload_signing_enabled": not tls},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=concurrency + 4,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=region or "us-east-1",
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
            config=config,
        )
        self.concurrency = max(1, concurrency)
        self._pieces = _PiecePool(self.concurrency + 1, piece_size)
        self._senders: ThreadPoolExecutor | None = None
        self._senders_lock = threading.Lock()

    def _sender_pool(self) -> ThreadPoolExecutor:
        with self._senders_lock:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-piece")
            return self._senders

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, what: str, key: str, fn: Any, **kw: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kw)
        except ClientError as exc:
            raise self._client_error(what, key, exc) from None
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, BotoConnectionError) as exc:
            raise StoreUnreachable(f"{self.url}: cannot reach {self.endpoint or 'the S3 endpoint'}: {_one_line(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(f"{self.url}: {what} {key!r}: {_one_line(exc)}") from None

    def _client_error(self, what: str, key: str, exc: ClientError) -> Exception:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND or (status == "404" and code != "NoSuchBucket"):
            return ObjectNotFound(f"{self.url}: no object {key!r}")
        if code == "NoSuchBucket":
            return StoreError(f"{self.url}: bucket {self.bucket!r} does not exist at {self.endpoint or 'the endpoint'}")
        if code in _AUTH or status in ("401", "403"):
            return StoreAuthError(f"{self.url}: the endpoint refused the credentials ({code or status}); check the access key and secret")
        if code in _BUSY or status.startswith("5"):
            return StoreUnreachable(f"{self.url}: the endpoint is failing ({code or status}); try again later")
        return StoreError(f"{self.url}: {what} {key!r} failed: {code or status} {redact(str(err.get('Message', '')))}".rstrip())

    def put(self, key: str, data: Bytes, *, retain_until: datetime | None = None) -> None:
        body: Bytes | _ViewBody = _ViewBody(data) if isinstance(data, memoryview) else data  # sent from the caller's buffer
        extra: dict[str, Any] = {}
        if retain_until is not None:
            extra = {
                "ObjectLockMode": "COMPLIANCE",
                "ObjectLockRetainUntilDate": retain_until.astimezone(UTC),
                "ChecksumAlgorithm": "CRC32",
            }
        self._call("put", key, self._client.put_object, Key=self._full(key), Body=body, **extra)

    def stream(self, key: str, *, retain_until: datetime | None = None) -> StreamedObject:
        """Open key for writing as a stream: write to `fd` (a pipe), then `commit()` or `abort()`.

        See the module docstring. `commit()` returns (size, SHA-256 hex) of what was stored.
        """
        check_key(key)
        return StreamedObject(self, key, retain_until)

    def abort_unfinished(self, prefix: str) -> None:
        """Abort the multipart uploads under prefix that a killed process left unfinished."""
        check_prefix(prefix)
        kw: dict[str, Any] = {"Prefix": self.prefix + prefix}
        while True:
            try:
                page = self._call("list uploads", prefix, self._client.list_multipart_uploads, **kw)
            except StoreError:
                return  # nothing under prefix yet (404), or an endpoint without the call: nothing to clear
            for up in page.get("Uploads", []):
                key = up["Key"]
                if key.startswith(self.prefix + prefix):
                    self._abort_upload(key, up["UploadId"])
            if not page.get("IsTruncated"):
                return
            kw.update(KeyMarker=page.get("NextKeyMarker", ""), UploadIdMarker=page.get("NextUploadIdMarker", ""))

    def _abort_upload(self, full_key: str, upload_id: str) -> None:
        try:
            self._call("abort upload", full_key, self._client.abort_multipart_upload, Key=full_key, UploadId=upload_id)
        except (StoreError, StoreUnreachable):
            pass  # best effort: a lifecycle rule or the next run clears it

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        resp = self._call("get", key, self._client.get_object, Key=self._full(key))
        return io.BufferedReader(_BodyReader(resp["Body"], self, key), buffer_size=1 << 20)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Prefix": self.prefix + prefix}
            if token:
                kw["ContinuationToken"] = token
            page = self._call("list", prefix, self._client.list_objects_v2, **kw)
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"][len(self.prefix):], int(obj["Size"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def stat(self, key: str) -> ObjectInfo:
        resp = self._call("stat", key, self._client.head_object, Key=self._full(key))
        return ObjectInfo(key, int(resp["ContentLength"]))

    def delete(self, key: str) -> None:
        try:
            self._call("delete", key, self._client.delete_object, Key=self._full(key))
        except ObjectNotFound:
            return


class _PiecePool:
    """At most `count` buffers of `size` bytes, made on first use and reused (no fresh
    pages to fault in per piece). `take()` blocks while every buffer is in use."""

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self._free: list[bytearray] = []
        self._slots = threading.Semaphore(count)
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        self._slots.acquire()
        with self._lock:
            return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        with self._lock:
            self._free.append(buf)
        self._slots.release()


class StreamedObject:
    """One object being streamed to S3 (see S3Store.stream and the module docstring).

    A reader thread fills pooled pieces from the pipe, hashing as it reads, and hands
    each full piece to the store's senders (an object that fits in one piece goes as one
    PutObject, so it exists, whole, from the end of its input; `abort()` deletes it
    again). `end_input()` once the writer has exited sends the last piece at once;
    `commit()` closes the write end if that was not done, waits for
    every piece, completes the upload and returns (size, SHA-256 hex). After a failed
    piece the reader keeps draining the pipe (the writer never blocks on a dead upload)
    and `commit()` raises that failure; `abort()` discards everything.
    """

    def __init__(self, store: S3Store, key: str, retain_until: datetime | None) -> None:
        self._store, self._key, self._full = store, key, store._full(key)
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

    def _lock_args(self) -> dict[str, Any]:
        if self._retain is None:
            return {}
        return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": self._retain.astimezone(UTC),
                "ChecksumAlgorithm": "CRC32"}

    def _read(self) -> None:
        pool = self._store._pieces
        held: bytearray | None = None  # a piece this thread owns: back to the pool on any way out
        try:
            while True:
                held = buf = pool.take()
                n = self._fill(buf)
                if self._error is not None or (n == 0 and self._upload_id is not None):
                    break
                if n < pool.size and self._upload_id is None:  # the whole object fits in one piece
                    self._sent.append(self._store._sender_pool().submit(self._send_whole, buf, n))
                    held = None
                    return
                if self._upload_id is None:
                    resp = self._store._call("put", self._key, self._store._client.create_multipart_upload,
                                             Key=self._full, **self._lock_args())
                    self._upload_id = resp["UploadId"]
                number = len(self._sent) + 1
                self._sent.append(self._store._sender_pool().submit(self._send, number, buf, n))
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

    def _send(self, number: int, buf: bytearray, n: int) -> dict[str, Any]:
        try:
            if self._error is not None:
                raise self._error
            body: Any = buf if n == len(buf) else _ViewBody(memoryview(buf)[:n])
            extra = {"ChecksumAlgorithm": "CRC32"} if self._retain is not None else {}
            resp = self._store._call("put", self._key, self._store._client.upload_part, Key=self._full,
                                     UploadId=self._upload_id, PartNumber=number, Body=body, **extra)
            done = {"ETag": resp["ETag"], "PartNumber": number}
            if self._retain is not None and resp.get("ChecksumCRC32"):
                done["ChecksumCRC32"] = resp["ChecksumCRC32"]
            return done
        except BaseException as exc:
            self._error = self._error or exc  # the reader drains from here on
            raise
        finally:
            self._store._pieces.give(buf)

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
            self._store._pieces.give(buf)

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
                self._store._call("put", self._key, self._store._client.complete_multipart_upload, Key=self._full,
                                  UploadId=self._upload_id, MultipartUpload={"Parts": parts})
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
            self._store._abort_upload(self._full, self._upload_id)
            self._upload_id = None
        if self._whole:
            self._whole = False
            try:
                self._store.delete(self._key)
            except (StoreError, StoreUnreachable):
                pass  # best effort: an unjournaled part is replaced or deleted by the next run


class _ViewBody(io.RawIOBase):
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


class _BodyReader(io.RawIOBase):
    """A raw stream over a botocore StreamingBody that maps network errors to store errors."""

    def __init__(self, body: Any, store: S3Store, key: str) -> None:
        self._body = body
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        try:
            chunk = self._body.read(len(buf))
        except (BotoCoreError, OSError) as exc:
            raise StoreUnreachable(f"{self._store.url}: reading {self._key!r} failed: {_one_line(exc)}") from None
        buf[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        self._body.close()
        super().close()


def _one_line(exc: BaseException) -> str:
    text = redact(str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__
