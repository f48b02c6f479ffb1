"""Layer 3 executor: replicate timeline snapshots to btrfs targets, prune them there, hold locally.

For each btrfs target (one ssh connection each) and each subvolume sent there:
  1. list the target's container; plan (subvault.plan.replication);
  2. delete partials (invariant 3), adopt complete receives whose rename was cut off;
  3. send, oldest first, each verified before it gets its final name;
  4. only when every send succeeded, prune the target by its keep (never the base).
Where the target is remote, each rename rides with the next receive command, the last
one with the prune: a subvolume costs three round trips (list, receive, rename+prune).
A failure stops that subvolume on that target only; the rest go on (exit 3, partial).
"""

from __future__ import annotations

import posixpath
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime
from typing import TextIO

from subvault.btrfs import local_scan
from subvault.config.schema import SubvolumeConf, TargetConf
from subvault.context import Context, host_name
from subvault.endpoints.endpoint import Endpoint, open_target
from subvault.endpoints.runner import LocalRunner, Step, Unreachable
from subvault.endpoints.transfer import LinkLost, Progress, Transferred, prune_steps, settle_steps, transfer
from subvault.errors import RenamedSubvolume, StalledTransfer, SubvaultError
from subvault.model import Entry
from subvault.plan.replication import (
    Removal,
    ReplicationPlan,
    Send,
    Source,
    entry_name,
    holds_when_unreachable,
    plan_replication,
    renamed_entry,
)
from subvault.results import Item, Outcome
from subvault.run import lasterror, renamed
from subvault.units import human_size

ProgressFactory = Callable[[str], Callable[[int], None] | None]


def subvolumes_for(ctx: Context, target: TargetConf) -> list[SubvolumeConf]:
    return [s for s in ctx.config.subvolume if target.name in ctx.config.targets_of(s)]


def sources_of(sub: SubvolumeConf) -> list[Source]:
    """Return the subvolume's timeline snapshots as replication sources (they must have a uuid)."""
    snaps = local_scan.scan(sub.name, sub.path, with_uuids=True)
    return [
        Source(uuid=s.uuid, time=s.date, path=str(s.path), received_uuid=s.received_uuid, number=s.number)
        for s in snaps
        if s.replicable and s.uuid
    ]


def plan_for(ctx: Context, ep: Endpoint, sub: SubvolumeConf, target: TargetConf, sources: list[Source]) -> tuple[str, ReplicationPlan]:
    """Plan sub on one target. Raise RenamedSubvolume when its receives are under an old name (see refuse_renamed)."""
    container = ep.container(host_name(), sub.name)
    entries = ep.entries(container, sub.name)
    plan = plan_replication(sub.name, sources, entries or [], target.keep, ctx.now, ctx.tz)
    refuse_renamed(ctx, ep, sub, target, sources, entries, plan)
    return container, plan


def refuse_renamed(
    ctx: Context, ep: Endpoint, sub: SubvolumeConf, target: TargetConf, sources: list[Source], entries: list[Entry] | None,
    plan: ReplicationPlan,
) -> None:
    """Invariant 7: a full send (nothing in common with the container) first looks for this subvolume under another name.

    Raise RenamedSubvolume (nothing sent, nothing touched) when a sibling container holds
    receives of these very snapshots (subvault.run.renamed).
    """
    if plan.base_before is not None or not any(s.full for s in plan.sends):
        return
    # by the target's name and by its url: a target renamed in the config keeps what this host sent there
    names = renamed.known_names(ctx.state_dir, target.name) + renamed.known_names(ctx.state_dir, target.url)
    found = renamed.find_renamed(ep, host_name(), sub.name, sources, names)
    if found is not None:
        raise renamed.refusal(f"{sub.name}→{target.name}", sub.name, sub.path, found, entries)
    # the reverse: this name's container holds receives of another configured subvolume (renamed away from
    # this name, its base among them): a full send here would make them points of this one's keep, and prune them
    others = [o for o in subvolumes_for(ctx, target) if o.name != sub.name]
    owner = renamed.owner_of(entries, ((o.name, sources_of(o)) for o in others)) if others and entries else None
    if owner is not None:
        raise renamed.occupied(f"{sub.name}→{target.name}", ep.container(host_name(), sub.name), sub.name, *owner)


def replicate(ctx: Context, *, target: str | None = None, progress: ProgressFactory | None = None, meter: bool = True) -> Outcome:
    """Replicate every subvolume to each of its btrfs targets (or only `target`)."""
    out = Outcome("replicate", dry_run=ctx.dry_run)
    for tconf in ctx.config.targets_by_type("btrfs", target):
        subs = subvolumes_for(ctx, tconf)
        if not subs:
            continue
        try:
            ep = open_target(tconf, unreachable=ctx.unreachable)
        except (SubvaultError, OSError) as exc:
            out.fail(tconf.name, exc)
            continue
        with ep:
            try:
                ep.check()
            except (SubvaultError, OSError) as exc:
                for sub in subs:
                    out.fail(f"{sub.name}→{tconf.name}", exc)
                continue
            out.merge(_replicate_target(ctx, ep, subs, tconf, progress, meter))
    return out


def _replicate_target(
    ctx: Context, ep: Endpoint, subs: list[SubvolumeConf], tconf: TargetConf, progress: ProgressFactory | None, meter: bool
) -> Outcome:
    """Replicate subs to one target, `tconf.parallel` subvolumes at a time over its one connection.

    Each subvolume's round trips (list, verify, rename) wait on the network; running a
    few at once hides that latency. Results keep the configured order. Once the link is
    stalled or lost, the subvolumes not yet started fail at once instead of each
    waiting on a dead connection.
    """

    link_down: list[BaseException] = []
    errors: dict[str, SubvaultError | OSError] = {}

    def one(sub: SubvolumeConf) -> Outcome:
        part = Outcome("replicate", dry_run=ctx.dry_run)
        subject = f"{sub.name}→{tconf.name}"
        if link_down:
            part.fail(subject, SubvaultError(f"skipped: the link to {tconf.name} failed ({link_down[0]}); run again"))
            return part
        try:
            _replicate_one(ctx, ep, sub, tconf, part, progress, meter)
        except (StalledTransfer, LinkLost, Unreachable) as exc:
            link_down.append(exc)
            errors[sub.name] = exc
            part.fail(subject, exc)
        except (SubvaultError, OSError) as exc:
            errors[sub.name] = exc
            part.fail(subject, exc)
        return part

    out = Outcome("replicate", dry_run=ctx.dry_run)
    with ThreadPoolExecutor(max_workers=max(1, tconf.parallel)) as pool:
        for part in pool.map(one, subs):
            out.merge(part)
    if not ctx.dry_run:
        failed = {lasterror.key(n, tconf.name): lasterror.LastError(lasterror.kind_of(e), str(e), ctx.now) for n, e in errors.items()}
        done = [lasterror.key(s.name, tconf.name) for s in subs if s.name not in errors and not link_down]
        warning = lasterror.update(ctx.state_dir, failed, done)
        if warning:
            out.warnings.append(warning)
        # the names this host's receives sit under on this target: where a later rename is looked for (run.renamed)
        sent_names = [] if link_down else [s.name for s in subs if s.name not in errors]
        warning = renamed.remember_names(ctx.state_dir, tconf.name, sent_names) or renamed.remember_names(ctx.state_dir, tconf.url, sent_names)
        if warning:
            out.warnings.append(warning)
    return out


full_sends = threading.BoundedSemaphore(1)


def _set_aside(sub_name: str, entries: list[Entry], plan: ReplicationPlan, now: datetime) -> dict[str, str]:
    """Complete receives among the partials get a new final name: an append-only key may not delete them.

    (Someone with the key can leave one under the next stream's name; renamed, it no
    longer blocks the receive, and the target host's prune-received dates it by its own clock.)
    """
    complete = {e.name for e in entries if e.readonly and e.received_uuid}
    taken = {e.name for e in entries}
    out: dict[str, str] = {}
    for i, r in enumerate(p for p in plan.partials if p.name in complete):
        name = entry_name(sub_name, now, taken, 900000 + i)
        name = name if name not in taken else f"{entry_name(sub_name, now)}_{900000 + i}"
        taken.add(name)
        out[r.name] = name
    return out


def _partial_items(subject: str, partials: Sequence[Removal], aside: dict[str, str], prefix: str = "") -> list[Item]:
    """Report each partial as what is done to it: deleted, or (a complete receive an append-only key may not delete) renamed aside."""
    return [
        Item(subject, f"{prefix}set-aside", f"{r.name} → {aside[r.name]} (a complete receive under a non-final name; "
             "this key may not delete it: the target host's prune-received dates it by its own clock)", {"renamed_to": aside[r.name]})
        if r.name in aside else Item(subject, f"{prefix}delete-partial", f"{r.name} ({r.reason})")
        for r in partials
    ]


def _replicate_one(
    ctx: Context, ep: Endpoint, sub: SubvolumeConf, tconf: TargetConf, out: Outcome, progress: ProgressFactory | None, meter: bool
) -> None:
    subject = f"{sub.name}→{tconf.name}"
    sources = sources_of(sub)
    container = ep.container(host_name(), sub.name)
    entries = ep.entries(container, sub.name)
    plan = plan_replication(sub.name, sources, entries or [], tconf.keep, ctx.now, ctx.tz)
    try:
        refuse_renamed(ctx, ep, sub, tconf, sources, entries, plan)
    except RenamedSubvolume:
        ctx.cache.setdefault(HOLDS_CACHE, {})[(sub.name, tconf.name)] = renamed.holds_while_renamed(sources, tconf.name)
        raise
    ctx.cache.setdefault(HOLDS_CACHE, {})[(sub.name, tconf.name)] = plan.local_holds
    by_uuid = {s.uuid: s for s in sources}
    aside = _set_aside(sub.name, entries or [], plan, ctx.now) if tconf.append_only else {}
    out.warnings += [_stranded_warning(subject, container, r, sub.name) for r in plan.stranded]
    if ctx.dry_run:
        out.items += _dry_run_items(subject, plan, aside, by_uuid, tconf.append_only)
        return
    if entries is None and plan.sends:
        ep.ensure_container(container, known_missing=True)
    # Partials and adoptions (rare: only after a failure) go alone: waiting for the
    # cleaner must not count against the next stream's stall timer.
    ep.apply(settle_steps(container, plan, aside or None), "delete partials")
    out.items += _partial_items(subject, plan.partials, aside)
    out.items += [Item(subject, "adopt", f"{a.name} → {a.final} (complete and verified)") for a in plan.adopt]
    # A verified receive's rename is owed to the target and travels with the next
    # command sent there: ahead of the next receive, or with the prune. Should that
    # command never arrive, the next run adopts the receive (plan.replication).
    owed: list[Step] = []
    sent: list[Entry] = []
    for send in plan.sends:
        src = by_uuid[send.uuid]
        kind = "full" if send.full else "incremental"
        ctx.say(f"{subject}: sending #{src.number} ({kind})")
        done = _send(send, by_uuid, ep, container, tconf, owed, progress(subject) if progress else None, meter)
        owed = list(done.owed)
        data = {"full": send.full, "bytes": done.bytes, "seconds": round(done.seconds, 3), "parent": send.parent}
        out.items.append(Item(subject, "sent", f"#{src.number} → {send.name} ({kind}, {human_size(done.bytes)})", data))
        sent.append(Entry(name=done.name, uuid="", received_uuid=src.uuid, readonly=True))
    if sent:
        # What the target holds now is known without listing it again: re-plan (pure)
        # so the prune of this same command releases what is no longer owed.
        after = plan_replication(sub.name, sources, [*(entries or []), *sent], tconf.keep, ctx.now, ctx.tz)
        ctx.cache[HOLDS_CACHE][(sub.name, tconf.name)] = after.local_holds
    # An append-only target prunes itself (`subvault prune-received` there): never asked to delete.
    prune = [] if tconf.append_only else plan.prune
    ep.apply([*owed, *prune_steps(container, prune)], "rename and prune")
    out.items += [Item(subject, "prune", f"{r.name} ({r.reason})") for r in prune]
    if not plan.sends and not prune and not plan.partials and not plan.adopt:
        out.items.append(Item(subject, "up-to-date", plan.base_before or ""))


def _send(send: Send, by_uuid: dict[str, Source], ep: Endpoint, container: str, tconf: TargetConf, owed: list[Step],
          progress: Progress | None, meter: bool) -> Transferred:
    # Full sends are bulk: one at a time, so parallel subvolumes never make
    # several big streams fight over the disks and the CPU.
    src = by_uuid[send.uuid]
    return transfer(
        LocalEndpoint,
        src.path,
        uuid=src.uuid,
        parent=by_uuid[send.parent].path if send.parent else None,
        clones=[by_uuid[c].path for c in send.clones],
        dest=ep,
        container=container,
        final_name=send.name,
        compress=tconf.compress == "zstd",
        meter=meter,
        progress=progress,
        stall_seconds=tconf.stall_minutes * 60,
        gate=full_sends if send.full else nullcontext(),
        before=owed,
        rename=False,
    )


def _stranded_warning(subject: str, container: str, r: Removal, sub_name: str) -> str:
    """A received entry made writable, or a complete one under another name, is never deleted: someone must look at it."""
    path = f"{container}/{r.name}"
    if r.incoming:  # read-only and complete, under another subvolume's name (a rename cut off between its mvs)
        new = shlex.quote(posixpath.join(container, renamed_entry(sub_name, r.name) or r.name))
        return (
            f"{subject}: {path} is a complete receive under another subvolume's name (a rename of this directory "
            f"whose entries were not all renamed?): left in place, never pruned, never a parent; if it is this "
            f"subvolume's, run on the target `mv -T -- {shlex.quote(path)} {new}`, else move it back where it belongs"
        )
    return (
        f"{subject}: {path} is writable but was received (it has a received_uuid): left in place, never a parent; "
        f"if it is a complete copy, make it read-only (`btrfs property set -f -ts {path} ro true`, or re-run "
        "`subvault adopt --apply` if adopt was moving it), else delete it by hand"
    )


def _dry_run_items(subject: str, plan: ReplicationPlan, aside: dict[str, str], by_uuid: dict[str, Source], append_only: bool) -> list[Item]:
    items = _partial_items(subject, plan.partials, aside, "would-")
    items += [Item(subject, "would-adopt", f"{a.name} → {a.final} (complete and verified)") for a in plan.adopt]
    for send in plan.sends:
        kind = "full" if send.full else "incremental"
        items.append(Item(subject, "would-send", f"#{by_uuid[send.uuid].number} → {send.name} ({kind})", {"full": send.full}))
    if not append_only:  # an append-only target prunes itself
        items += [Item(subject, "would-prune", f"{r.name} ({r.reason})") for r in plan.prune]
    if not items:  # as the real run says it: a failure elsewhere is then partial (3) here too, not failed (1)
        items.append(Item(subject, "up-to-date", plan.base_before or ""))
    return items


LocalEndpoint = Endpoint(LocalRunner(), "/", "local")
# Holds computed by this command's replicate (before its sends, so they cover the old
# base, the new one and everything still owed) and reused by the prune that follows.
HOLDS_CACHE = "replication-holds"


def replication_holds(ctx: Context, sub: SubvolumeConf) -> dict[str, str]:
    """Return uuid -> reason for sub's local snapshots each btrfs target still needs (invariants 1, 2).

    A target that cannot be listed holds every timeline snapshot.
    """
    held: dict[str, str] = {}
    sources = None
    for tconf in ctx.config.target:
        if tconf.type != "btrfs" or tconf.name not in ctx.config.targets_of(sub):
            continue
        cached = ctx.cache.get(HOLDS_CACHE, {}).get((sub.name, tconf.name))
        if cached is not None:
            found = {u: f"{tconf.name}: {why}" for u, why in cached.items()}
            for u, why in found.items():
                held[u] = f"{held[u]}; {why}" if u in held else why
            continue
        sources = sources if sources is not None else sources_of(sub)
        try:
            with open_target(tconf, unreachable=ctx.unreachable) as ep:
                ep.check()
                _, plan = plan_for(ctx, ep, sub, tconf, sources)
                found = {u: f"{tconf.name}: {why}" for u, why in plan.local_holds.items()}
        except RenamedSubvolume:
            found = renamed.holds_while_renamed(sources, tconf.name)
        except SubvaultError:
            found = holds_when_unreachable(sources, tconf.name)
        for u, why in found.items():
            held[u] = f"{held[u]}; {why}" if u in held else why
    return held


def tty_progress(stream: TextIO = sys.stderr) -> ProgressFactory | None:
    """Return a progress factory that draws bytes, rate and ETA on a terminal, or None when not a TTY."""
    if not stream.isatty():
        return None

    def factory(subject: str) -> TtyProgress:
        return TtyProgress(subject, stream)

    return factory


class TtyProgress:
    """One transfer's progress line: called with the bytes moved; `expect` gives the expected total (for the ETA)."""

    def __init__(self, subject: str, stream: TextIO) -> None:

        self.subject = subject
        self.stream = stream
        self.clock = time.monotonic
        self.started = self.clock()
        self.expected: int | None = None

    def expect(self, total: int) -> None:
        self.expected = total

    def __call__(self, n: int) -> None:
        self.stream.write(f"\r{progress_line(self.subject, n, self.clock() - self.started, self.expected)}   ")
        self.stream.flush()


def progress_line(subject: str, moved: int, seconds: float, expected: int | None) -> str:
    """Return "subject: 12.0 of ~40.0 MiB  6.0 MiB/s  ETA 0:05" (no total or ETA while the size is unknown)."""
    mib = moved / 2**20
    rate = mib / max(seconds, 1e-6)
    if not expected:
        return f"{subject}: {mib:,.1f} MiB  {rate:,.1f} MiB/s"
    left = max(expected / 2**20 - mib, 0.0)
    eta = "--"
    if moved:
        secs = int(left / rate)
        eta = f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
    return f"{subject}: {mib:,.1f} of ~{expected / 2**20:,.1f} MiB  {rate:,.1f} MiB/s  ETA {eta}"
