"""Executors for layers 1 and 2: timeline snapshots, snap-all, prune, list.

Each loops over subvolumes with a narrow catch, so one failing subvolume is reported
and the rest are still done (exit 3, partial).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, tzinfo
from functools import partial

from subvault.btrfs import adapter, local, local_scan, numbered
from subvault.btrfs.snapdir import description_problem
from subvault.config.schema import SubvolumeConf
from subvault.context import Context
from subvault.errors import SubvaultError, UsageError
from subvault.model import LocalSnapshot
from subvault.plan import restore_point
from subvault.plan.local import plan_prune, timeline_due
from subvault.results import Item, Outcome

HoldsProvider = Callable[[Context, SubvolumeConf], Mapping[str, str]]


def selected(ctx: Context, names: list[str] | None) -> list[SubvolumeConf]:
    if not names:
        return list(ctx.config.subvolume)
    return [ctx.config.get_subvolume(n) for n in names]


def take_timeline(ctx: Context, *, force: bool = False, names: list[str] | None = None) -> Outcome:
    """Snapshot each subvolume whose timeline snapshot is due (all of them with force)."""
    out = Outcome("snapshot", dry_run=ctx.dry_run)
    due: list[SubvolumeConf] = []
    for sub in selected(ctx, names):
        try:
            _prepare(ctx, sub)
            snaps = local_scan.scan(sub.name, sub.path, with_uuids=False)
            if not force and not timeline_due(snaps, ctx.config.timeline_of(sub), ctx.now, ctx.tz):
                out.items.append(Item(sub.name, "not-due", "a timeline snapshot exists for this period"))
                continue
            due.append(sub)
        except (SubvaultError, OSError) as exc:
            out.fail(sub.name, exc)
    _create_all(ctx, out, due, kind="timeline", description="timeline")
    return out


def snap_all(ctx: Context, description: str, *, names: list[str] | None = None) -> Outcome:
    """Create a pre-change snapshot (snapper cleanup "number") of every subvolume at once."""
    problem = description_problem(description)
    if problem:
        raise UsageError("snap-all needs a non-empty DESCRIPTION" if not description.strip() else f"DESCRIPTION {problem}")
    out = Outcome("snap-all", dry_run=ctx.dry_run)
    ready: list[SubvolumeConf] = []
    for sub in selected(ctx, names):
        try:
            _prepare(ctx, sub)
            ready.append(sub)
        except (SubvaultError, OSError) as exc:
            out.fail(sub.name, exc)
    _create_all(ctx, out, ready, kind="prechange", description=description)
    return out


def _prepare(ctx: Context, sub: SubvolumeConf) -> None:
    """Before snapshotting: the subvolume exists, .snapshots is ready, half-done work is settled."""
    if ctx.dry_run:
        adapter.require_subvolume(sub.path, sub.name)
    else:
        local.ensure_snapshots_dir(sub.path)
        local.finish_pending(sub.path)


def _create_all(ctx: Context, out: Outcome, subs: list[SubvolumeConf], *, kind: str, description: str) -> None:
    if ctx.dry_run:
        for sub in subs:
            out.items.append(Item(sub.name, "would-create", kind if description == kind else f"{kind}: {description}"))
        return
    requests = [numbered.Request(sub.name, sub.path, kind, description) for sub in subs]
    for sub, result in zip(subs, local.create_many(requests, now=ctx.now), strict=True):
        if isinstance(result, SubvaultError):
            out.fail(sub.name, result)
        else:
            ctx.say(f"{sub.name}: created #{result.number} {description!r}")
            out.items.append(Item(sub.name, "created", str(result.path), {"number": result.number}))


def no_holds(ctx: Context, sub: SubvolumeConf) -> Mapping[str, str]:
    return {}


def prune(ctx: Context, *, holds: HoldsProvider = no_holds, names: list[str] | None = None) -> Outcome:
    """Delete owned snapshots the policies no longer keep, except those held by other layers."""
    out = Outcome("prune", dry_run=ctx.dry_run)
    index = local_scan.FsIndex()
    for sub in selected(ctx, names):
        try:
            if not ctx.dry_run:
                local.finish_pending(sub.path)
            snaps = local_scan.scan(sub.name, sub.path, with_uuids=True, fs_subvols=index)
            plan = partial(plan_prune, snaps, timeline=ctx.config.timeline_of(sub), prechange_keep=ctx.config.prechange_keep_of(sub),
                           now=ctx.now, tz=ctx.tz)
            steps = plan()
            if any(not st.keep for st in steps):
                # Holds only ever turn a delete into a keep, so they are asked for (which
                # may mean reaching every target) only when something would be deleted,
                # and the plan is made again only when there are some.
                held = holds(ctx, sub)
                if held:
                    steps = plan(held=held)
            for step in steps:
                label = f"#{step.snapshot.number} {_minute(step.snapshot.date, ctx.tz)} {step.snapshot.kind}"
                why = "; ".join(step.reasons)
                if step.keep:
                    out.items.append(Item(sub.name, "keep", f"{label} ({why})"))
                elif ctx.dry_run:
                    out.items.append(Item(sub.name, "would-delete", f"{label} ({why})"))
                else:
                    local.delete_snapshot(step.snapshot)
                    out.items.append(Item(sub.name, "deleted", f"{label} ({why})"))
        except (SubvaultError, OSError) as exc:
            out.fail(sub.name, exc)
    return out


def _minute(when: datetime, tz: tzinfo) -> str:
    """"YYYY-MM-DD HH:MM" on tz's wall clock (strftime costs 3x; this runs once per snapshot in prune)."""
    t = when.astimezone(tz)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}"


def find_snapshot(ctx: Context, sub: SubvolumeConf, ref: str, *, what: str = "--at") -> LocalSnapshot:
    """Resolve a snapshot reference: its number, its uuid (or a prefix), or --at syntax (ISO time, latest, age).

    A reference that is none of those is a usage error naming `what` (the option or argument it came from).
    """
    digits = ref.strip().isascii() and ref.strip().isdigit()
    snaps = local_scan.scan(sub.name, sub.path, with_uuids=not digits and bool(restore_point.looks_like_uuid(ref)))
    by_key = {s.uuid or f"#{s.number}": s for s in snaps}
    points = [restore_point.Point(k, s.date, s.number, s.number) for k, s in by_key.items()]
    return by_key[restore_point.choose(points, ref, ctx.now, ctx.tz, where=f"{sub.name} (local)", what=what).uuid]
