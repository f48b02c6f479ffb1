"""Object keys of the offsite layout, relative to the target's prefix.

    SUBVOL/SNAPSHOT_UUID/part-000000.zst.age   the stream's parts, in order
    SUBVOL/SNAPSHOT_UUID/upload.json           the journal of an unfinished upload
    SUBVOL/SNAPSHOT_UUID/manifest.json         written last: the snapshot exists offsite
    SUBVOL/ledger.json                         the restore points that should exist (offsite/ledger.py)
    _subvault/writers/STAMP-RANDOM.json        a running writer's claim (offsite/lease.py)

`_subvault/` cannot collide with a subvolume: those start with a letter or digit.

Each part is a complete age file whose plaintext is the next slice of the zstd stream;
decrypting the parts in order and concatenating gives `btrfs send | zstd`.
"""

from __future__ import annotations

import re

PART_SUFFIX = ".zst.age"
MANIFEST = "manifest.json"
JOURNAL = "upload.json"
LEDGER = "ledger.json"
WRITERS = "_subvault/writers/"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")


def check_name(kind: str, value: str) -> str:
    """Return value if it is a safe single path segment; raise ValueError if not."""
    if not _NAME.match(value) or value in (".", ".."):
        raise ValueError(f"{kind} {value!r} cannot be used in an object key")
    return value


def snapshot_dir(subvolume: str, uuid: str) -> str:
    return f"{check_name('subvolume', subvolume)}/{check_name('uuid', uuid)}"


def part_key(subvolume: str, uuid: str, index: int) -> str:
    return f"{snapshot_dir(subvolume, uuid)}/part-{index:06d}{PART_SUFFIX}"


def manifest_key(subvolume: str, uuid: str) -> str:
    return f"{snapshot_dir(subvolume, uuid)}/{MANIFEST}"


def journal_key(subvolume: str, uuid: str) -> str:
    return f"{snapshot_dir(subvolume, uuid)}/{JOURNAL}"


def ledger_key(subvolume: str) -> str:
    return f"{check_name('subvolume', subvolume)}/{LEDGER}"
