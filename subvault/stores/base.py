"""The object-store protocol every backend (memory, file, S3) implements.

Rules:
- Keys are relative to the target's prefix, '/'-separated, never absolute, never
  containing '..' or empty segments. A store never reads or writes anything outside
  its prefix (invariant 8); `check_key` enforces the key shape in every adapter.
- `put` is atomic: a reader sees the old object, the new object, or nothing; never a
  partial one.
- `delete` of a missing key succeeds (idempotent).
- `list(prefix)` yields every key that starts with `prefix` as a plain string prefix,
  in lexicographic order.
- Errors: `ObjectNotFound` (permanent) for a missing key, `StoreUnreachable`
  (transient) when the endpoint cannot be reached, `StoreAuthError` (permanent) when
  the credentials are refused. Messages are one line and never contain secrets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

from subvault.errors import SubvaultError

Bytes = bytes | bytearray | memoryview


class StoreError(SubvaultError):
    """A store refused an operation for a reason that retrying will not fix."""


class ObjectNotFound(StoreError):
    """The key does not exist in the store."""


class StoreAuthError(StoreError):
    """The store refused the credentials (wrong key, no permission, unreadable file)."""


class StoreUnreachable(SubvaultError):
    """The store's endpoint could not be reached (DNS, refused, timeout)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key relative to the store's prefix and its size in bytes."""

    key: str
    size: int


@runtime_checkable
class Store(Protocol):
    """An object store rooted at one prefix. See the module docstring for the rules."""

    url: str

    def put(self, key: str, data: Bytes, *, retain_until: datetime | None = None) -> None:
        """Store data (any bytes-like; not referenced after return) at key, replacing any object there.

        retain_until asks for S3 Object Lock (compliance mode) until that time;
        backends that cannot lock raise StoreError rather than silently ignore it.
        """
        ...

    def get(self, key: str) -> bytes:
        """Return the whole object at key. Raise ObjectNotFound if absent."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Return a readable binary stream of the object. Raise ObjectNotFound if absent."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with prefix, in key order."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Return the object's info. Raise ObjectNotFound if absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object at key; a missing key is not an error."""
        ...


def check_key(key: str) -> str:
    """Given a key, return it unchanged if it is a safe relative key; raise StoreError if not."""
    if not key or key.startswith("/") or key.endswith("/") or "\\" in key or "\0" in key:
        raise StoreError(f"invalid object key {key!r}: keys are relative paths like 'root/UUID/manifest.json'")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid object key {key!r}: no empty, '.' or '..' segments")
    return key


def check_prefix(prefix: str) -> str:
    """Given a list prefix, return it if it cannot escape the store's root; raise StoreError if it can."""
    if prefix.startswith("/") or "\\" in prefix or "\0" in prefix:
        raise StoreError(f"invalid list prefix {prefix!r}")
    if any(part in (".", "..") for part in prefix.split("/")):
        raise StoreError(f"invalid list prefix {prefix!r}: no '.' or '..' segments")
    return prefix
