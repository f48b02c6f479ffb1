"""`subvault prune-received`: prune an append-only target on the target host itself.

A key bound to `subvault serve --append-only` cannot delete kept backups, so the host
that holds them prunes them, from a timer, with its own keep policy. It knows only
what it holds, and trusts nothing a client chose: each container <root>/<host>/<subvolume>
is planned on its own by plan.replication.plan_received_prune over what this host's
filesystem says of each entry (subvolume id, creation time, read-only, received),
never over names, reported times or stream uuids.

What a client may still do is add entries. An addition releases no hold while it is
inside the policy's finest window (plan_received_prune), so it never causes an existing
entry to be pruned before that. Past the window an entry that is not the first of a
period (by this host's clock) is pruned, so a flood leaves one entry per period plus
two. It is also reported: every entry that is not a complete receive, one snapshot
received twice, and a filesystem fuller than FULL_WARN, is a warning.
"""

from __future__ import annotations

import os
import posixpath
from datetime import UTC, datetime, tzinfo

from subvault.btrfs import adapter
from subvault.endpoints.endpoint import Endpoint
from subvault.endpoints.runner import LocalRunner
from subvault.endpoints.transfer import prune_steps
from subvault.errors import NotFound, SubvaultError
from subvault.plan.replication import Received, plan_received_prune
from subvault.plan.retention import parse_policy
from subvault.results import Item, Outcome

FULL_WARN = 0.90  # fraction of the backup filesystem in use that is reported


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


def received(container: str) -> list[Received]:
    """Return what this host's filesystem says of each subvolume directly in container.

    Symlinks and plain directories are skipped (a receive makes neither at this depth).
    """
    own = adapter.show(container).id
    out = []
    for child in os.scandir(container):
        if not child.is_dir(follow_symlinks=False) or not adapter.is_subvolume(child.path):
            continue
        info = adapter.show(child.path)
        if info.top_level != own:
            continue
        otime = info.otime or datetime.fromtimestamp(child.stat(follow_symlinks=False).st_ctime, UTC)
        out.append(Received(child.name, info.id, otime, info.readonly and bool(info.received_uuid), info.received_uuid))
    return out


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
            found = received(container)
            plan = plan_received_prune(found, keep, now, tz)
            if not dry_run:
                ep.apply(prune_steps(container, plan.prune), "prune")
        except (SubvaultError, OSError) as exc:
            out.fail(subject, exc)
            continue
        out.warnings += [
            f"{subject}: {r.name} is not a complete receive ({r.reason}); the sender clears it on its next run, "
            "if it stays, no sender is running or a key is misused: look at it, `btrfs subvolume delete` it" for r in plan.partials
        ]
        out.warnings += duplicate_warnings(subject, found)
        verb = "would-prune" if dry_run else "prune"
        out.items += [Item(subject, verb, f"{r.name} ({r.reason})") for r in plan.prune]
        # One item per entry kept, as every command reports what stays: text counts them, JSON lists them.
        out.items += [Item(subject, "keep", f"{name} ({why})") for name, why in plan.kept.items()]
    if parse_policy(keep).latest_only:
        out.warnings.append("--keep latest keeps the newest receive alone: a client's next receive replaces it; "
                            'give a period policy (e.g. "24h 8d 5w")')
    out.warnings += _space_warning(root)
    return out


def duplicate_warnings(subject: str, found: list[Received]) -> list[str]:
    """One warning per received_uuid that two or more complete receives carry: the same snapshot
    received twice is no second backup (a retried send, or a client replaying a stream)."""
    by_uuid: dict[str, list[str]] = {}
    for r in sorted(found, key=lambda r: r.id):
        if r.verified and r.received_uuid:
            by_uuid.setdefault(r.received_uuid, []).append(r.name)
    return [
        f"{subject}: {', '.join(names)} are the same snapshot (received_uuid {uuid}), received {len(names)} times; "
        "only one is a backup: if no sender retried, a key is misused"
        for uuid, names in by_uuid.items() if len(names) > 1
    ]


def _space_warning(root: str) -> list[str]:
    st = os.statvfs(root)
    if not st.f_blocks:
        return []
    used = 1 - st.f_bavail / st.f_blocks
    if used < FULL_WARN:
        return []
    return [f"{root} is {used:.0%} full: a sender may be adding more than the keep policy holds; see which host grows"]
