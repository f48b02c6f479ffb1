"""Helpers shared by the offsite integration tests: age keys, deterministic sources, sinks."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from subvault import process
from subvault.offsite.manifest import MacKey
from subvault.offsite.upload import UploadRequest
from subvault.stores.file import FileStore

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


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


class BufferedFileStore(FileStore):
    """A file store without `stage`: exercises the upload executor's buffered path."""

    stage = None  # type: ignore[assignment]  # a store without stage(), as the upload executor checks for
