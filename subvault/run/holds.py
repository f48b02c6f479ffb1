"""Holds: local snapshots other layers still need, so local pruning keeps them.

Each layer that sends snapshots somewhere contributes `uuid -> reason` for its
incremental bases and for snapshots still owed (invariants 1 and 2). A layer whose
target cannot be reached holds everything it might still need rather than nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from subvault.config.schema import SubvolumeConf
from subvault.context import Context

HoldSource = Callable[[Context, SubvolumeConf], Mapping[str, str]]

# Layers register their hold sources here when they are imported; `all_holds` imports
# every layer that sends snapshots somewhere, so a hold can never be missed because a
# command did not happen to import that layer.
_SOURCES: list[HoldSource] = []
LAYER_MODULES = ("subvault.run.replicate", "subvault.run.offsite")


def register(source: HoldSource) -> HoldSource:
    _SOURCES.append(source)
    return source


@register
def pull_holds(ctx: Context, sub: SubvolumeConf) -> dict[str, str]:
    """Snapshots a puller recorded as its base (subvault.pullholds); read from the subvolume itself."""
    from subvault import pullholds

    return pullholds.holds(sub.path)


def all_holds(ctx: Context, sub: SubvolumeConf) -> dict[str, str]:
    """Return every hold on sub's local snapshots, from every layer that has targets."""
    import importlib

    for module in LAYER_MODULES:
        importlib.import_module(module)
    held: dict[str, str] = {}
    for source in _SOURCES:
        for uuid, reason in source(ctx, sub).items():
            held[uuid] = f"{held[uuid]}; {reason}" if uuid in held else reason
    return held
