"""Frozen values shared by planners and executors. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

SnapshotKind = Literal["timeline", "prechange", "foreign"]


@dataclass(frozen=True)
class SubvolInfo:
    """A btrfs subvolume as the filesystem reports it. Identity is `uuid` (invariant 7)."""

    id: int
    path: str  # relative to the filesystem's top level, no leading slash ("" for the top level)
    uuid: str
    parent_uuid: str | None
    received_uuid: str | None
    readonly: bool
    generation: int
    top_level: int
    otime: datetime | None = None


@dataclass(frozen=True)
class LocalSnapshot:
    """A snapshot in snapper's layout: <subvolume>/.snapshots/<number>/snapshot.

    `owned` is true only for snapshots subvault created (userdata subvault=…); only
    those are ever deleted by subvault (invariant 8).
    """

    subvolume: str
    number: int
    path: Path
    date: datetime  # aware, UTC
    description: str
    cleanup: str
    kind: SnapshotKind
    owned: bool
    uuid: str | None = None
    received_uuid: str | None = None
    userdata: dict[str, str] = field(default_factory=dict)

    @property
    def replicable(self) -> bool:
        """A timeline snapshot that targets may receive. Snapper's history taken over by
        `adopt` (userdata adopted=snapper) stays local: it was never on a target, and
        sending it would be the resend adopt exists to avoid."""
        return self.kind == "timeline" and self.userdata.get("adopted") != "snapper"

    @property
    def key(self) -> str:
        return self.uuid or f"{self.subvolume}#{self.number}"


@dataclass(frozen=True)
class Entry:
    """A subvolume found in a btrfs target's directory for one source subvolume."""

    name: str
    uuid: str
    received_uuid: str | None
    readonly: bool
    incoming: bool = False  # lives in the receive area, not under a final name
