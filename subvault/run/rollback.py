"""Snapper-style rollback: a writable snapshot of N becomes the default subvolume.

The default subvolume only decides what boots when the root is mounted without
`subvol=`/`subvolid=` and the kernel command line has no `rootflags=subvol=`; and the
new root (a snapshot inside .snapshots) contains an empty .snapshots, so .snapshots
must be mounted from fstab. Any layout that breaks one of these is refused with the
reason, before anything is changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from subvault.btrfs import adapter, local
from subvault.btrfs.snapdir import SNAPSHOTS_DIR
from subvault.context import Context
from subvault.errors import Refused
from subvault.results import Item, Outcome
from subvault.run.local import find_snapshot


@dataclass(frozen=True)
class FstabEntry:
    source: str
    target: str
    fstype: str
    options: tuple[str, ...]


def parse_fstab(text: str) -> list[FstabEntry]:
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        fields = line.split()
        if len(fields) < 3:
            continue
        opts = tuple(fields[3].split(",")) if len(fields) > 3 else ()
        target = fields[1].replace("\\040", " ")
        entries.append(FstabEntry(fields[0], os.path.normpath(target), fields[2], opts))
    return entries


def bootability_problems(mount: str, entries: list[FstabEntry], cmdline: str, subvol_id: int) -> list[str]:
    """Return why rolling back the subvolume mounted at `mount` could not boot (empty: it can). Pure."""
    problems = []
    mount = os.path.normpath(mount)
    by_target = {e.target: e for e in entries}
    entry = by_target.get(mount)
    if subvol_id == adapter.TOP_LEVEL_ID:
        problems.append(f"{mount} is the filesystem's top-level subvolume, which cannot be replaced by a snapshot; snapper's layout puts the root in its own subvolume")
    if entry is None:
        problems.append(f"fstab has no entry for {mount}; the default subvolume only matters for a mount that fstab makes")
    else:
        pinned = [o for o in entry.options if o.startswith(("subvol=", "subvolid="))]
        if pinned:
            problems.append(f"fstab mounts {mount} with {pinned[0]}, which ignores the default subvolume; remove that option (snapper's layout) before rolling back")
    if mount == "/" and "rootflags=subvol" in cmdline:
        problems.append("the kernel command line has rootflags=subvol=…, which ignores the default subvolume; remove it from the bootloader config")
    snaps_target = os.path.normpath(os.path.join(mount, SNAPSHOTS_DIR))
    if snaps_target not in by_target:
        problems.append(f"fstab does not mount {snaps_target}; after a rollback the new root would have an empty .snapshots, so add an fstab entry for it")
    return problems


def rollback(ctx: Context, subvolume: str, number: str, *, fstab: str = "/etc/fstab", cmdline: str = "/proc/cmdline") -> Outcome:
    """Make a writable snapshot of `number` the default subvolume, after a read-only backup of now.

    Raise Refused, changing nothing, when the layout could not boot the result.
    """
    sub = ctx.config.get_subvolume(subvolume)
    snap = find_snapshot(ctx, sub, number, what="NUMBER")
    try:
        entries = parse_fstab(Path(fstab).read_text())
    except OSError as exc:
        raise Refused(f"cannot read {fstab} ({exc.strerror}) to check that a rollback could boot; pass --fstab PATH") from None
    try:
        cmdline_text = Path(cmdline).read_text()
    except OSError:
        cmdline_text = ""
    current = adapter.show(sub.path)
    problems = bootability_problems(sub.path, entries, cmdline_text, current.id)
    if problems:
        raise Refused(f"rollback of {sub.name} refused: " + "; ".join(problems))
    out = Outcome("rollback", dry_run=ctx.dry_run)
    if ctx.dry_run:
        out.items.append(Item(sub.name, "would-backup", f"read-only snapshot of {sub.path} as it is now"))
        out.items.append(Item(sub.name, "would-create", f"writable snapshot of #{snap.number}, set as default subvolume"))
        return out
    backup = local.create(sub.name, sub.path, kind="prechange", description=f"rollback backup before #{snap.number}", now=ctx.now)
    out.items.append(Item(sub.name, "created", f"#{backup.number} read-only backup of the current state"))
    new = local.create(
        sub.name, sub.path, kind="rollback", description=f"writable copy of #{snap.number}", now=ctx.now, source=snap.path, readonly=False
    )
    new_id = adapter.show(new.path).id
    adapter.set_default(new_id, sub.path)
    out.items.append(Item(sub.name, "default", f"#{new.number} (subvolume id {new_id}) is the default subvolume; reboot to use it", {"number": new.number, "id": new_id}))
    return out
