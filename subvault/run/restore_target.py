"""Restore a subvolume from a btrfs target as a writable copy.

Order: receive the chosen entry into a work directory <into>/.subvault-restore/
(read-only, verified by received_uuid), take a writable snapshot of it as
<into>/<sub>, then delete the received copy and the work directory, on success and on
failure, as the offsite restore does. What is left is the one writable subvolume the
output names. The received copy is not kept: subvault takes its incremental parents
only from `.snapshots`, so it would never be used, and it would pin the old data.
`btrfs property set ro false` is never used: it would leave a writable subvolume that
still claims to be a received copy (received_uuid).
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from subvault.btrfs import adapter, local_scan
from subvault.context import Context, host_name
from subvault.endpoints.endpoint import Endpoint, open_target
from subvault.endpoints.runner import LocalRunner
from subvault.endpoints.transfer import transfer
from subvault.errors import NotBtrfs, Refused, SubvaultError, UsageError
from subvault.plan import restore_point
from subvault.plan.replication import is_verified, parse_entry_time
from subvault.results import Item, Outcome

WORK_DIR = ".subvault-restore"


def _local_numbers(ctx: Context, sub: str) -> dict[str, int]:
    """Return {uuid: snapper number} of the local snapshots, or {} if they cannot be read (a new machine)."""
    try:
        conf = ctx.config.get_subvolume(sub)
        return {s.uuid: s.number for s in local_scan.scan(conf.name, conf.path, with_uuids=True) if s.uuid}
    except (SubvaultError, OSError):
        return {}


def restore_from_target(ctx: Context, target: str, sub: str, at: str, into: str) -> Outcome:
    """Bring sub back from target as `at` names it (number, uuid or time) into DIR `into` as <into>/<sub>, writable.

    Raise NotFound if the target has no verified entry `at` names, Refused if
    <into>/<sub> exists, NotBtrfs if into is not on btrfs, UsageError if `at` is malformed.
    """
    out = Outcome("restore", dry_run=ctx.dry_run)
    tconf = ctx.config.get_target(target)
    dest_dir = Path(into)
    writable = dest_dir / sub
    if not dest_dir.is_dir():
        raise UsageError(f"--into {dest_dir}: must be an existing directory on btrfs")
    if not adapter.is_btrfs(dest_dir):
        raise NotBtrfs(f"{dest_dir} is not on btrfs; restore into a directory on a btrfs filesystem")
    if writable.exists() or writable.is_symlink():
        raise Refused(f"{writable} exists; choose another --into or move it aside")
    numbers = _local_numbers(ctx, sub)
    with open_target(tconf) as ep:
        ep.check()
        container = ep.container(host_name(), sub)
        entries = {}
        for e in ep.list(container, sub):
            t = parse_entry_time(sub, e.name)
            if is_verified(e) and t is not None and e.received_uuid:
                entries[e.received_uuid] = (e, restore_point.Point(e.received_uuid, t, 0, numbers.get(e.received_uuid)))
        pick = restore_point.choose([p for _, p in entries.values()], at, ctx.now, ctx.tz, where=f"target {target} ({sub})")
        entry = entries[pick.uuid][0]
        name = entry.name
        data = {"from": target, "entry": name, "at": pick.created.isoformat(), "uuid": pick.uuid, "number": pick.number}
        if ctx.dry_run:
            out.items.append(Item(sub, "would-restore", f"{target}:{name} → {writable} (writable)", data))
            return out
        work = dest_dir / WORK_DIR
        work.mkdir(exist_ok=True)
        here = Endpoint(LocalRunner(), str(work), "local")
        received = work / name
        try:
            done = transfer(
                ep, posixpath.join(container, name), uuid=entry.received_uuid or "", parent=None, clones=(),
                dest=here, container=str(work), final_name=name, compress=tconf.compress == "zstd",
            )
            adapter.snapshot(received, writable, readonly=False)
        finally:
            if adapter.is_subvolume(received):
                adapter.delete(received)
            if not any(work.iterdir()):
                work.rmdir()
        ctx.say(f"{sub}: restored {target}:{name} into {writable}")
        out.items.append(Item(sub, "restored", f"{target}:{name} → {writable} (writable; the received read-only copy was removed)",
                              {**data, "bytes": done.bytes}))
    return out
