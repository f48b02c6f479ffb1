"""`subvault list`: each subvolume's snapshots, and which targets hold a verified copy of each."""

from __future__ import annotations

from dataclasses import dataclass, field

from subvault.btrfs import local_scan
from subvault.context import Context
from subvault.errors import SubvaultError, describe
from subvault.model import LocalSnapshot
from subvault.run.local import selected
from subvault.run.watch import holders


@dataclass
class Listing:
    subvolume: str
    path: str
    snapshots: list[LocalSnapshot]
    error: str | None = None
    held_by: dict[str, list[str]] = field(default_factory=dict)  # snapshot uuid -> targets holding it
    target_errors: list[str] = field(default_factory=list)


def list_snapshots(ctx: Context, names: list[str] | None = None, *, targets: bool = True) -> list[Listing]:
    """Return each subvolume's snapshots (subvault's and foreign ones), oldest first.

    With targets, each listing also says which targets hold a verified copy of each.
    """
    listings = []
    index = local_scan.FsIndex()
    for sub in selected(ctx, names):
        try:
            listing = Listing(sub.name, sub.path, local_scan.scan(sub.name, sub.path, with_uuids=True, fs_subvols=index))
        except (SubvaultError, OSError) as exc:
            listings.append(Listing(sub.name, sub.path, [], describe(exc)))
            continue
        if targets and ctx.config.targets_of(sub):
            listing.held_by, listing.target_errors = holders(ctx, sub)
        listings.append(listing)
    return listings
