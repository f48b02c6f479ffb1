"""Where a restore reads from: a btrfs target's replicas (and the capture that travelled with them).

Restore points are chosen per protected subvolume: the newest verified entry at or
before --at (invariant 3: only verified entries count). The capture is read from the
entry of the subvolume that holds the capture dir, chosen the same way, so that layout
and data are of the same moment. Over ssh the capture cannot be read in place; pass
--capture DIR (a copy of `<capture_dir>/latest`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from subvault.config.schema import Config, TargetConf
from subvault.dr.manifest import Manifest, read_capture
from subvault.dr.plan import Choice
from subvault.dr.settings import capture_owner
from subvault.endpoints.endpoint import Endpoint, open_target
from subvault.endpoints.runner import LocalRunner
from subvault.endpoints.transfer import transfer
from subvault.errors import NotFound, UsageError
from subvault.plan.replication import is_verified, parse_entry_time


class TargetSource:
    """A btrfs target opened for restoring one host's subvolumes."""

    def __init__(self, tconf: TargetConf, host: str) -> None:
        self.tconf = tconf
        self.host = host
        self.ep: Endpoint = open_target(tconf)

    def __enter__(self) -> TargetSource:
        self.ep.check()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ep.close()

    @property
    def name(self) -> str:
        return self.tconf.name

    def container(self, sub: str) -> str:
        return self.ep.container(self.host, sub)

    def choose(self, sub: str, when: datetime) -> Choice | None:
        """Return the newest verified entry of sub at or before when, or None."""
        found = []
        for e in self.ep.list(self.container(sub), sub):
            t = parse_entry_time(sub, e.name)
            if t is not None and t <= when and is_verified(e):
                found.append((t, e.name, e.received_uuid or ""))
        if not found:
            return None
        t, name, received = max(found)
        return Choice(sub, name, t, received)

    def choose_all(self, names: list[str], when: datetime) -> dict[str, Choice]:
        return {n: c for n in names if (c := self.choose(n, when)) is not None}

    def entry_path(self, choice: Choice) -> str:
        return posixpath.join(self.container(choice.name), choice.entry)

    def local_entry_path(self, choice: Choice) -> Path | None:
        """The entry as a local directory, when the target is on this machine."""
        return Path(self.entry_path(choice)) if self.ep.is_local else None

    def receive(self, choice: Choice, into: Path, progress: Callable[[int], None] | None = None) -> int:
        """Receive choice (a full stream) into the directory into, verified; return bytes moved.

        The stream is counted from the kernel's I/O accounting (no byte passes through
        us); progress, if given, is told the count so far at most twice a second.
        """
        here = Endpoint(LocalRunner(), str(into), "restore")
        done = transfer(
            self.ep, self.entry_path(choice), uuid=choice.received_uuid, parent=None, clones=(),
            dest=here, container=str(into), final_name=choice.entry, compress=self.tconf.compress == "zstd",
            meter=True, progress=progress,
        )
        return done.bytes


def find_capture(source: TargetSource, config: Config, capture_dir: str, when: datetime, explicit: str | None) -> tuple[Manifest, Path]:
    """Return the capture to restore from: --capture DIR if given, else the one inside the target's replica.

    Raise CaptureInvalid if it is missing or damaged, UsageError when it cannot be read in place.
    """
    if explicit:
        return read_capture(explicit)
    owner, rel = capture_owner(config, capture_dir)
    if owner is None or rel is None:
        raise UsageError(f"the capture dir {capture_dir} is in no configured subvolume, so no target holds it; pass --capture DIR")
    choice = source.choose(owner, when)
    if choice is None:
        raise NotFound(f"target {source.name} holds no verified copy of {owner} (which holds the capture) at or before {when.isoformat()}")
    entry = source.local_entry_path(choice)
    if entry is None:
        raise UsageError(
            f"target {source.name} is reached over ssh, where the capture cannot be read in place; copy "
            f"{source.entry_path(choice)}/{rel}/latest from it and pass --capture DIR"
        )
    return read_capture(entry / rel)
