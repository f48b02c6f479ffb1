"""Layer 5 executors: gather what every layer holds, then `check` and `status`.

Gathering is I/O (filesystems, targets); judging is the pure planners in
plan/coverage.py and plan/freshness.py. Each layer contributes rows through a
registered source, so layers that land later (offsite, drill age) feed check and status
without changing this module.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from subvault import pullholds
from subvault.btrfs import local_scan
from subvault.config.schema import SubvolumeConf
from subvault.context import Context, host_name
from subvault.dr.captureopts import boot_dir_warnings
from subvault.dr.state import drill_record
from subvault.endpoints.endpoint import open_target
from subvault.errors import SubvaultError, about, describe
from subvault.model import Entry
from subvault.notify.metrics import LayerStatus, build_registry, previous_successes, write_textfile
from subvault.offsite import verified
from subvault.offsite.target import scan
from subvault.plan.cadence import due
from subvault.plan.coverage import (
    Problem,
    ProblemKind,
)
from subvault.plan.freshness import LayerFreshness, plan_drill_record, plan_freshness
from subvault.plan.replication import is_verified, parse_entry_time, plan_replication
from subvault.plan.retention import parse_policy
from subvault.results import Outcome
from subvault.run import lasterror
from subvault.run.coverage_scan import coverage_problems
from subvault.run.flux_leftovers import overdue
from subvault.run.neighbours import snapper_cleanup_problems
from subvault.run.offsite import mac_key, open_target_store, scan_target
from subvault.run.replicate import refuse_renamed, sources_of
from subvault.timeutil import format_age, parse_duration

UNIT_CADENCE = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1), "m": timedelta(days=31), "y": timedelta(days=366)}


@dataclass
class LayerRow:
    """One cell of `status`: what one layer holds for one subvolume."""

    subvolume: str
    layer: str  # local, replica:<target>, offsite:<target>
    newest: datetime | None
    count: int
    cadence: timedelta
    size: int | None = None
    error: str | None = None
    next_due: datetime | None = None
    error_kind: str | None = None  # "space" when the error is a full disk


@dataclass
class WatchReport:
    rows: list[LayerRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    drill: str = ""  # one line about the last successful drill (and whether it booted the machine)

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0


LayerSource = Callable[[Context, SubvolumeConf], list[LayerRow]]
_LAYER_SOURCES: list[LayerSource] = []


def register_layer(source: LayerSource) -> LayerSource:
    _LAYER_SOURCES.append(source)
    return source


def cadence_of(policy_text: str) -> timedelta:
    unit = parse_policy(policy_text).cadence() or "h"
    return UNIT_CADENCE[unit]


@register_layer
def local_rows(ctx: Context, sub: SubvolumeConf) -> list[LayerRow]:
    cadence = cadence_of(ctx.config.timeline_of(sub))
    try:
        snaps = [s for s in local_scan.scan(sub.name, sub.path, with_uuids=False) if s.kind == "timeline"]
    except (SubvaultError, OSError) as exc:
        return [LayerRow(sub.name, "local", None, 0, cadence, error=describe(exc))]
    newest = max((s.date for s in snaps if s.date <= ctx.now), default=None)
    next_at = due(newest, parse_policy(ctx.config.timeline_of(sub)), ctx.now, ctx.tz).next_at
    return [LayerRow(sub.name, "local", max((s.date for s in snaps), default=None), len(snaps), cadence, next_due=next_at)]


@register_layer
def replica_rows(ctx: Context, sub: SubvolumeConf) -> list[LayerRow]:
    rows = []
    sources = None
    failures = lasterror.load(ctx.state_dir)
    for tconf in ctx.config.target:
        if tconf.type != "btrfs" or tconf.name not in ctx.config.targets_of(sub):
            continue
        layer, cadence = f"replica:{tconf.name}", cadence_of(tconf.keep)
        try:
            sources = sources if sources is not None else sources_of(sub)
            with open_target(tconf, unreachable=ctx.unreachable) as ep:
                ep.check()
                listed = ep.entries(ep.container(host_name(), sub.name), sub.name)
                entries: list[Entry] = listed or []
                # invariant 7: its receives under an old name are a problem to fix, not "never replicated"
                refuse_renamed(ctx, ep, sub, tconf, sources, listed, plan_replication(sub.name, sources, entries, tconf.keep, ctx.now, ctx.tz))
        except (SubvaultError, OSError) as exc:
            rows.append(LayerRow(sub.name, layer, None, 0, cadence, error=describe(exc)))
            continue
        verified = [e for e in entries if is_verified(e)]
        times = [t for t in (parse_entry_time(sub.name, e.name) for e in verified) if t]
        # A snapshot received twice (an append-only key can) is one backup: counted once; prune-received names it.
        row = LayerRow(sub.name, layer, max(times, default=None), len({e.received_uuid for e in verified}), cadence)
        if verified and plan_replication(sub.name, sources, entries, tconf.keep, ctx.now, ctx.tz).base_before is None:
            row.error = "no snapshot in common with the target: the chain is broken and the next send will be full"
        last = failures.get(lasterror.key(sub.name, tconf.name))
        if last is not None:
            what = "no space" if last.kind == lasterror.SPACE else "failed"
            row.error = f"{what} ({format_age(ctx.now - last.at)} ago): {last.message}"
            row.error_kind = last.kind
        rows.append(row)
    return rows


@register_layer
def offsite_rows(ctx: Context, sub: SubvolumeConf) -> list[LayerRow]:
    rows = []
    for tconf in ctx.config.target:
        if tconf.type != "object" or tconf.name not in ctx.config.targets_of(sub):
            continue
        layer, cadence = f"offsite:{tconf.name}", cadence_of(tconf.keep)
        try:
            store = open_target_store(tconf)
            state = scan_target(ctx, store, mac_key(tconf, store), tconf, sub.name)
        except (SubvaultError, OSError) as exc:
            rows.append(LayerRow(sub.name, layer, None, 0, cadence, error=describe(exc)))
            continue
        newest = max((p.created for p in state.points), default=None)
        row = LayerRow(sub.name, layer, newest, len(state.points), cadence, size=sum(m.total_size for m in state.manifests),
                       next_due=due(newest, parse_policy(tconf.keep), ctx.now, ctx.tz).next_at)
        if state.problems:  # damaged or gone points, failed authentication, a rolled-back ledger
            # Bounded by whole problems, never cut inside one (a cut showed only a uuid fragment).
            shown = "; ".join(map(str, state.problems[:3]))
            row.error = f"{len(state.problems)} problems: {shown}" + (f"; and {len(state.problems) - 3} more" if len(state.problems) > 3 else "")
        rows.append(row)
    return rows


def gather_rows(ctx: Context) -> list[LayerRow]:
    rows: list[LayerRow] = []
    for sub in ctx.config.subvolume:
        for source in _LAYER_SOURCES:
            rows.extend(source(ctx, sub))
    return rows


def space_problems(ctx: Context) -> list[Problem]:
    problems = []
    floor = ctx.config.check.min_free_percent
    paths = {s.path for s in ctx.config.subvolume if os.path.exists(s.path)}
    paths |= {t.url for t in ctx.config.target if t.type == "btrfs" and t.url.startswith("/") and os.path.exists(t.url)}
    seen: set[int] = set()
    for path in sorted(paths):
        st = os.statvfs(path)
        dev = os.stat(path).st_dev
        if dev in seen or st.f_blocks == 0:
            continue
        seen.add(dev)
        free = 100.0 * st.f_bavail / st.f_blocks
        if free < floor:
            problems.append(Problem(ProblemKind.SPACE, path, f"{path}: only {free:.1f}% free (below {floor:g}%); prune, shorten retention or add space"))
    return problems


def check(ctx: Context) -> WatchReport:
    """Run every check; return the rows and the problems (exit 1 when there are any)."""
    report = WatchReport(rows=gather_rows(ctx))
    report.problems += coverage_problems(ctx)
    slack = parse_duration(ctx.config.check.slack)
    report.problems += plan_freshness(
        [LayerFreshness(r.subvolume, r.layer, r.newest, r.cadence, slack) for r in report.rows if not r.error], ctx.now
    )
    report.problems += [Problem(_error_kind(r), r.layer, f"{r.subvolume} {r.layer}: {r.error}") for r in report.rows if r.error]
    report.problems += space_problems(ctx)
    report.problems += snapper_cleanup_problems([s.path for s in ctx.config.subvolume])
    drill_age(ctx, report)
    report.warnings += verify_age(ctx)
    _flux_left_suspended(ctx, report)
    report.warnings += stale_pull_records(ctx)
    report.warnings += boot_dir_warnings(ctx.config)  # what the next capture would skip
    return report


def verify_age(ctx: Context) -> list[str]:
    """Warn per object target whose last `subvault verify` (every part's SHA-256) is older than check.verify_max_age.

    A listing sees a missing or resized part; only a verify sees a flipped byte.
    """
    limit = parse_duration(ctx.config.check.verify_max_age)
    out = []
    for tconf in ctx.config.target:
        if tconf.type != "object":
            continue
        at, _ = verified.last(ctx.state_dir, tconf.name)
        if at is None or ctx.now - at > limit:
            when = "has never been verified here" if at is None else f"was last verified {format_age(ctx.now - at)} ago"
            out.append(f"offsite target {tconf.name} {when}; run `subvault verify --target {tconf.name}` at least every "
                       f"{ctx.config.check.verify_max_age} (it reads every part: a flipped byte is found only so)")
    return out


def _error_kind(row: LayerRow) -> ProblemKind:
    if row.error_kind == "space":
        return ProblemKind.SPACE
    return ProblemKind.CHAIN if row.layer != "local" else ProblemKind.STALE


def _flux_left_suspended(ctx: Context, report: WatchReport) -> None:
    """Invariant 6 after a death no handler saw: objects subvault suspended and nobody resumed."""
    if ctx.config.flux is None:
        return
    problems, warnings = overdue(ctx)
    report.problems += [Problem(ProblemKind.FLUX, "flux", message) for message in problems]
    report.warnings += warnings


def stale_pull_records(ctx: Context) -> list[str]:
    """Warn about pullers that recorded a base here but have not pulled for pullholds.STALE: they pin a snapshot."""
    out = []
    for sub in ctx.config.subvolume:
        for puller, _uuid, when in pullholds.read_records(sub.path):
            if when is not None and ctx.now - when > pullholds.STALE:
                out.append(
                    f"{sub.name}: puller {puller} last pulled {format_age(ctx.now - when)} ago and still holds its base here; "
                    f"if it is gone, delete {pullholds.record_path(sub.path, puller)}"
                )
    return out


def drill_age(ctx: Context, report: WatchReport) -> None:
    """The drill line, and a stale or missing drill (freshness.plan_drill_record says when each is a problem).

    The drill record lives in the state dir, a cache (invariant 12): losing it turns
    the check back into a reminder, never into a failure.
    """
    if not ctx.config.target:
        return
    boot = bool(getattr(ctx.config.dr, "boot", False))  # [dr] boot = true: only a drill that booted counts
    line, problems, warnings = plan_drill_record(drill_record(ctx.state_dir), ctx.now, parse_duration(ctx.config.check.drill_max_age), boot)
    report.drill = line
    report.problems += problems
    report.warnings += warnings


def problem_counts(report: WatchReport) -> dict[str, int]:
    return dict(Counter(str(p.kind) for p in report.problems))


def write_metrics(path: str, rows: list[LayerRow], ctx: Context, problems: dict[str, int] | None, job: Outcome | None = None) -> None:
    """Write the node_exporter textfile: `run`'s layer series (rows, and what job did), or `check`'s problem counts."""
    if problems is not None:
        write_textfile(Path(path), build_registry(problems=problems, generated_at=ctx.now, command="check"))
        return
    finished = datetime.now(UTC)
    done = job_layers(ctx, job) if job is not None else {}
    before = previous_successes(Path(path))
    layers = []
    for r in rows:
        ok, sent = done.get((r.subvolume, r.layer), (False, 0))
        last = finished if ok else (datetime.fromtimestamp(before[(r.subvolume, r.layer)], UTC) if (r.subvolume, r.layer) in before else None)
        age = (ctx.now - r.newest).total_seconds() if r.newest else None
        layers.append(LayerStatus(r.subvolume, r.layer, last, age, sent, r.count))
    write_textfile(Path(path), build_registry(layers, None, generated_at=finished, command="run"))


def job_layers(ctx: Context, job: Outcome) -> dict[tuple[str, str], tuple[bool, int]]:
    """Given a run's outcome, return {(subvolume, layer): (completed without failure, bytes sent)}."""
    kind = {t.name: ("replica" if t.type == "btrfs" else "offsite") for t in ctx.config.target}
    names = {s.name for s in ctx.config.subvolume}
    out: dict[tuple[str, str], tuple[bool, int]] = {}
    for item in job.items:
        sub, _, target = item.subject.partition("→")
        if sub not in names or (target and target not in kind):
            continue
        key = (sub, f"{kind[target]}:{target}" if target else "local")
        ok, sent = out.get(key, (True, 0))
        out[key] = (ok and item.action != "failed", sent + int(item.data.get("bytes", 0) or 0))
    return out


def holders(ctx: Context, sub: SubvolumeConf) -> tuple[dict[str, list[str]], list[str]]:
    """Return {local snapshot uuid: [targets holding a verified copy]} and per-target errors."""
    held: dict[str, list[str]] = {}
    errors: list[str] = []
    for tconf in ctx.config.target:
        if tconf.name not in ctx.config.targets_of(sub):
            continue
        try:
            if tconf.type == "btrfs":
                with open_target(tconf, unreachable=ctx.unreachable) as ep:
                    uuids = [e.received_uuid for e in ep.list(ep.container(host_name(), sub.name), sub.name) if is_verified(e)]
            else:
                store = open_target_store(tconf)
                uuids = [p.uuid for p in scan(store, mac_key(tconf, store), sub.name).points]
        except (SubvaultError, OSError) as exc:
            errors.append(about(tconf.name, describe(exc)))
            continue
        for uuid in uuids:
            if uuid:
                held.setdefault(uuid, []).append(tconf.name)
    return held, errors
