"""Object stores: one protocol (`Store`), adapters for memory, a directory and S3.

`open_store(url)` picks the adapter from the URL scheme:
- `memory://NAME`       an in-memory store (tests, dry runs)
- `file:///path`        a directory (`FileStore`)
- `s3://bucket/prefix`  any S3-compatible endpoint (`S3Store`)
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from subvault.errors import ConfigError
from subvault.stores.base import (
    ObjectInfo,
    ObjectNotFound,
    Store,
    StoreAuthError,
    StoreError,
    StoreUnreachable,
)

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "Store",
    "StoreAuthError",
    "StoreError",
    "StoreUnreachable",
    "open_store",
]


def open_store(
    url: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    credentials: str | Path | None = None,
    path_style: bool = True,
    concurrency: int | None = None,
) -> Store:
    """Given a target URL and its S3 settings, return the Store for it.

    `credentials` is the path of an env-style credentials file (S3 only); without it the
    environment's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are used. `concurrency` bounds
    the S3 pieces sent at once by `stream` (None: the store's default).
    Raise ConfigError for an unknown scheme or a malformed URL, StoreAuthError for
    unusable credentials.
    """
    # The adapter registry: an adapter's module is imported here, when its scheme is used
    # (the S3 one loads boto3, about 150 ms), like a command's module in cli/main.py.
    parts = urlsplit(url)
    if parts.scheme == "memory":
        from subvault.stores.memory import MemoryStore

        return MemoryStore(parts.netloc or "default")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"object target url {url!r}: expected file:///absolute/path")
        from subvault.stores.file import FileStore

        return FileStore(unquote(parts.path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"object target url {url!r}: expected s3://bucket/prefix")
        from subvault.stores.credentials import resolve_credentials
        from subvault.stores.s3 import DEFAULT_CONCURRENCY, S3Store

        return S3Store(
            parts.netloc,
            unquote(parts.path),
            resolve_credentials(credentials),
            endpoint=endpoint,
            region=region,
            path_style=path_style,
            concurrency=concurrency or DEFAULT_CONCURRENCY,
        )
    raise ConfigError(f"object target url {url!r}: scheme must be s3:// or file://")
