"""An in-memory store, for tests and dry runs. Same contract as every store."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from subvault.stores.base import Bytes, ObjectInfo, ObjectNotFound, StoreError, check_key, check_prefix


class MemoryStore:
    """Objects in a dict, guarded by a lock. `url` is memory://NAME."""

    def __init__(self, name: str = "test") -> None:
        self.url = f"memory://{name}"
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: Bytes, *, retain_until: datetime | None = None) -> None:
        if retain_until is not None:
            raise StoreError(f"{self.url}: object lock is not supported by the memory store")
        with self._lock:
            self._objects[check_key(key)] = bytes(data)

    def get(self, key: str) -> bytes:
        with self._lock:
            try:
                return self._objects[check_key(key)]
            except KeyError:
                raise ObjectNotFound(f"{self.url}: no object {key!r}") from None

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        with self._lock:
            items = sorted((k, len(v)) for k, v in self._objects.items() if k.startswith(prefix))
        for key, size in items:
            yield ObjectInfo(key, size)

    def stat(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, len(self.get(key)))

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(check_key(key), None)
