"""Restore a subvolume from a btrfs target as a writable copy.

Order: receive the chosen entry into DIR (read-only, verified by received_uuid), then
take a writable snapshot of it. `btrfs property set ro false` is never used: it would
destroy received_uuid and with it the chance to continue an incremental chain.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from subvault.btrfs import adapter
from subvault.endpoints.endpoint import Endpoint, open_target
from subvault.endpoints.runner import LocalRunner
from subvault.endpoints.transfer import transfer
from subvault.errors import NotFound, Refused
from subvault.plan.replication import is_verified, parse_entry_time
from subvault.run.context import Context
from subvault.run.replicate import host_name
from subvault.run.results import Item, Outcome
from subvault.timeutil import parse_at


def restore_from_target(ctx: Context, target: str, sub: str, at: str, into: str) -> Outcome:
    """Bring sub back from target as of `at` into DIR `into`: <into>/<entry> (read-only) and <into>/<sub> (writable).

    Raise NotFound if the target has no verified entry at or before `at`, Refused if
    <into>/<sub> exists, NotBtrfs if into is not on btrfs.
    """
    out = Outcome("restore", dry_run=ctx.dry_run)
    tconf = ctx.config.get_target(target)
    when = parse_at(at, ctx.now, ctx.tz)
    dest_dir = Path(into)
    writable = dest_dir / sub
    with open_target(tconf) as ep:
        ep.check()
        container = ep.container(host_name(), sub)
        found = [(parse_entry_time(sub, e.name), e) for e in ep.list(container, sub) if is_verified(e)]
        candidates = sorted((t, e.name, e) for t, e in found if t is not None and t <= when)
        if not candidates:
            raise NotFound(f"target {target} holds no verified snapshot of {sub} at or before {when.isoformat()}")
        t, name, entry = candidates[-1]
        if ctx.dry_run:
            out.items.append(Item(sub, "would-restore", f"{target}:{name} → {writable}", {"at": t.isoformat()}))
            return out
        if not adapter.is_btrfs(dest_dir):
            from subvault.errors import NotBtrfs

            raise NotBtrfs(f"{dest_dir} is not on btrfs; restore into a directory on a btrfs filesystem")
        if writable.exists():
            raise Refused(f"{writable} exists; choose another --into or move it aside")
        here = Endpoint(LocalRunner(), str(dest_dir), "local")
        done = transfer(
            ep, posixpath.join(container, name), uuid=entry.received_uuid or "", parent=None, clones=(),
            dest=here, container=str(dest_dir), final_name=name, compress=tconf.compress == "zstd",
        )
        adapter.snapshot(dest_dir / name, writable, readonly=False)
        ctx.say(f"{sub}: restored {target}:{name} into {writable}")
        out.items.append(Item(sub, "restored", str(writable), {"from": target, "entry": name, "at": t.isoformat(), "bytes": done.bytes}))
    return out
