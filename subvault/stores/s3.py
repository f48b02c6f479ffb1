"""A store in any S3-compatible bucket (Backblaze B2, Hetzner, R2, MinIO, rclone serve s3).

Built on boto3 (chosen by measurement; see docs/design.md): path-style addressing by
default, an explicit endpoint and region, credentials passed in (never boto3's own
search of ~/.aws), checksums only where the API requires them (the broadest
compatibility with S3 look-alikes), and bounded retries so an unreachable endpoint
fails in seconds with one line.

Every key is joined under the target's prefix; nothing outside it is read, listed or
deleted (invariant 8).
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

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_AUTH = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
         "ExpiredToken", "AuthorizationHeaderMalformed", "Forbidden", "Unauthorized", "401"}
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
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.endpoint = endpoint
        config = Config(
            s3={"addressing_style": "path" if path_style else "virtual"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
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
        if isinstance(data, memoryview):
            data = _ViewBody(data)  # a part is sent from the caller's buffer, never copied whole
        extra: dict[str, Any] = {}
        if retain_until is not None:
            extra = {
                "ObjectLockMode": "COMPLIANCE",
                "ObjectLockRetainUntilDate": retain_until.astimezone(UTC),
                "ChecksumAlgorithm": "CRC32",
            }
        self._call("put", key, self._client.put_object, Key=self._full(key), Body=data, **extra)

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        resp = self._call("get", key, self._client.get_object, Key=self._full(key))
        return io.BufferedReader(_BodyReader(resp["Body"], self, key), buffer_size=1 << 20)  # type: ignore[return-value]  # a BufferedReader is a binary file; typeshed does not call it a BinaryIO

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
