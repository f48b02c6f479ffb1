"""Holds: local snapshots other layers still need, so local pruning keeps them.

Each layer that sends snapshots somewhere contributes `uuid -> reason` for its
incremental bases and for snapshots still owed (invariants 1 and 2). A layer whose
target cannot be reached holds everything it might still need rather than nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from subvault import pullholds
from subvault.config.schema import SubvolumeConf
from subvault.context import Context
from subvault.run.offsite import offsite_holds
from subvault.run.replicate import replication_holds

HoldSource = Callable[[Context, SubvolumeConf], Mapping[str, str]]


def pull_holds(ctx: Context, sub: SubvolumeConf) -> dict[str, str]:
    """Snapshots a puller recorded as its base (subvault.pullholds); read from the subvolume itself."""
    return pullholds.holds(sub.path)


# Every layer that sends snapshots somewhere holds what it still needs; listed here, so a
# hold can never be missed because a command did not happen to import that layer.
SOURCES: tuple[HoldSource, ...] = (pull_holds, replication_holds, offsite_holds)


def all_holds(ctx: Context, sub: SubvolumeConf) -> dict[str, str]:
    """Return every hold on sub's local snapshots, from every layer that has targets."""
    held: dict[str, str] = {}
    for source in SOURCES:
        for uuid, reason in source(ctx, sub).items():
            held[uuid] = f"{held[uuid]}; {reason}" if uuid in held else reason
    return held
