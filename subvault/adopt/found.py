"""What discovery saw, as the adoption planner takes it. Plain values, no I/O.

`discover.py` builds these from the installation; the planners read them.

Rules:
- Times are aware datetimes.
- A btrbk target directory that could not be listed stands as an error string in place
  of its entries: the planner reports it and plans no move for that target.
- Messages about btrbk.conf name it as `file:line` (`Inputs.btrbk_where`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from subvault.adopt.btrbk_conf import BtrbkConfig, BtrbkSubvolume
from subvault.adopt.snapper_conf import SnapperConfig
from subvault.model import LocalSnapshot


@dataclass(frozen=True)
class FoundSnapper:
    conf: SnapperConfig
    path: str  # SUBVOLUME as reachable here (under --root)
    ident: str | None
    snapshots: tuple[LocalSnapshot, ...] = ()
    unreadable: tuple[str, ...] = ()  # .snapshots/N holding a snapshot whose info.xml is missing or unreadable


@dataclass(frozen=True)
class BtrbkSnapshot:
    """One of btrbk's local snapshots, or an entry in one of its target directories."""

    name: str
    time: datetime  # aware
    suffix: int = 0
    uuid: str | None = None
    received_uuid: str | None = None
    readonly: bool = True


@dataclass(frozen=True)
class FoundBtrbk:
    sub: BtrbkSubvolume
    ident: str | None
    snapshots: tuple[BtrbkSnapshot, ...] = ()
    # per sub.targets index: the entries found, or an error string (unreachable, not btrfs)
    entries: tuple[tuple[BtrbkSnapshot, ...] | str, ...] = ()


@dataclass(frozen=True)
class Scheduler:
    """Something that runs btrbk or snapper on a schedule: a systemd timer or cron lines."""

    kind: str  # "systemd" or "cron"
    path: str
    unit: str = ""  # systemd: the timer's name
    enabled: bool = True
    lines: tuple[int, ...] = ()  # cron: the lines that run btrbk


@dataclass
class Inputs:
    host: str
    state_dir: str = "/var/lib/subvault"
    snapper: Sequence[FoundSnapper] = ()
    btrbk: BtrbkConfig | None = None
    btrbk_found: Sequence[FoundBtrbk] = ()
    schedulers: Sequence[Scheduler] = ()
    snapper_root: str = "/"  # snapper --root for the printed commands
    ssh_options: Sequence[str] = ()  # adopt --ssh-option: what ~/.ssh/config would otherwise have to say
    config_path: str = "/etc/subvault/subvault.toml"

    @property
    def btrbk_file(self) -> str:
        """The btrbk.conf read, as messages name it."""
        return self.btrbk.file if self.btrbk else "btrbk.conf"

    def btrbk_where(self, line: int | None) -> str:
        """`btrbk.conf:LINE`, or the file alone when there is no line."""
        return f"{self.btrbk_file}:{line}" if line else self.btrbk_file
