"""A store in any S3-compatible bucket (Backblaze B2, Hetzner, R2, MinIO, rclone serve s3).

Built on boto3 (chosen by measurement; see docs/design.md): path-style addressing by
default, an explicit endpoint and region, credentials passed in (never boto3's own
search of ~/.aws), checksums only where the API requires them (the broadest
compatibility with S3 look-alikes), and bounded retries so an unreachable endpoint
fails in seconds with one line.

Every key is joined under the target's prefix; nothing outside it is read, listed or
deleted (invariant 8).

Streaming (`stream(key)`, what the offsite executor writes parts through) is a multipart
upload fed from a pipe in bounded pieces: see `stores/s3_stream.py` for its rules. This
module gives it the multipart calls (`start_upload`, `send_part`, `complete_upload`,
`abort_upload`: its `MultipartTarget`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

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
from subvault.stores.s3_stream import PiecePool, StreamedObject, ViewBody

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
        self._pieces = PiecePool(self.concurrency, piece_size)

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
        body: Bytes | ViewBody = ViewBody(data) if isinstance(data, memoryview) else data  # sent from the caller's buffer
        self._call("put", key, self._client.put_object, Key=self._full(key), Body=body, **_lock_args(retain_until))

    def stream(self, key: str, *, retain_until: datetime | None = None) -> StreamedObject:
        """Open key for writing as a stream: write to `fd` (a pipe), then `commit()` or `abort()`.

        See stores/s3_stream.py. `commit()` returns (size, SHA-256 hex) of what was stored.
        """
        check_key(key)
        return StreamedObject(self, key, retain_until, self._pieces)

    # The multipart calls a stream makes (s3_stream.MultipartTarget).

    def start_upload(self, key: str, retain_until: datetime | None) -> str:
        resp = self._call("put", key, self._client.create_multipart_upload, Key=self._full(key), **_lock_args(retain_until))
        upload_id: str = resp["UploadId"]
        return upload_id

    def send_part(self, key: str, upload_id: str, number: int, body: Any, *, locked: bool) -> dict[str, Any]:
        extra = {"ChecksumAlgorithm": "CRC32"} if locked else {}
        resp = self._call("put", key, self._client.upload_part, Key=self._full(key),
                          UploadId=upload_id, PartNumber=number, Body=body, **extra)
        done = {"ETag": resp["ETag"], "PartNumber": number}
        if locked and resp.get("ChecksumCRC32"):
            done["ChecksumCRC32"] = resp["ChecksumCRC32"]
        return done

    def complete_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        self._call("put", key, self._client.complete_multipart_upload, Key=self._full(key),
                   UploadId=upload_id, MultipartUpload={"Parts": parts})

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._abort_upload(self._full(key), upload_id)

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


def _lock_args(retain_until: datetime | None) -> dict[str, Any]:
    """The request arguments that lock an object until retain_until (none without it)."""
    if retain_until is None:
        return {}
    return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": retain_until.astimezone(UTC),
            "ChecksumAlgorithm": "CRC32"}


def _one_line(exc: BaseException) -> str:
    text = redact(str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__
