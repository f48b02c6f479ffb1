"""`subvault prune-received`: prune an append-only target on the target host itself.

A key bound to `subvault serve --append-only` cannot delete kept backups, so the host
that holds them prunes them, from a timer, with its own keep policy. It knows only
what it holds: each container <root>/<host>/<subvolume> is planned on its own by
plan.replication.plan_received_prune (the newest entry is always kept).
"""

from __future__ import annotations

import os
import posixpath
from datetime import datetime, tzinfo

from subvault.btrfs import adapter
from subvault.endpoints.endpoint import Endpoint
from subvault.endpoints.runner import LocalRunner
from subvault.endpoints.transfer import prune_steps
from subvault.errors import NotFound, SubvaultError
from subvault.plan.replication import plan_received_prune
from subvault.plan.retention import parse_policy
from subvault.run.results import Item, Outcome


def containers(root: str) -> list[tuple[str, str]]:
    """Return (host, subvolume name) of each container subvolume under root, sorted."""
    found = []
    for host in sorted(os.scandir(root), key=lambda d: d.name):
        if not host.is_dir(follow_symlinks=False):
            continue
        for sub in sorted(os.scandir(host.path), key=lambda d: d.name):
            if sub.is_dir(follow_symlinks=False) and adapter.is_subvolume(sub.path):
                found.append((host.name, sub.name))
    return found


def prune_received(root: str, keep: str, *, now: datetime, tz: tzinfo, dry_run: bool) -> Outcome:
    """Prune every container under root by keep. Raise NotFound if root is missing, ValueError for a bad keep."""
    parse_policy(keep)
    if not os.path.isdir(root):
        raise NotFound(f"{root} does not exist; is the backup disk mounted?")
    out = Outcome("prune-received", dry_run=dry_run)
    ep = Endpoint(LocalRunner(), root, "local")
    for host, name in containers(root):
        subject = f"{host}/{name}"
        container = posixpath.join(root, host, name)
        try:
            plan = plan_received_prune(name, ep.list(container, name), keep, now, tz)
            if not dry_run:
                ep.apply(prune_steps(container, plan.prune), "prune")
        except (SubvaultError, OSError) as exc:
            out.fail(subject, exc)
            continue
        verb = "would-prune" if dry_run else "prune"
        out.items += [Item(subject, verb, f"{r.name} ({r.reason})") for r in plan.prune]
        if not plan.prune:
            out.items.append(Item(subject, "keep", f"{len(plan.kept)} entries"))
    return out
