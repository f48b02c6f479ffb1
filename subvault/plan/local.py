"""Pure planning for the local layers (timeline and pre-change snapshots).

Inputs are snapshots and policy; outputs are plans with reasons. No I/O.
Rules:
- Only snapshots subvault owns are ever candidates for deletion (invariant 8).
- Timeline snapshots follow the timeline policy; pre-change ones are kept by count.
- `held` (uuid -> reason) comes from the replication and offsite layers: incremental
  bases and snapshots still owed to a target are kept whatever the policy says
  (invariants 1 and 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from subvault.model import LocalSnapshot
from subvault.plan.cadence import due
from subvault.plan.retention import Point, parse_policy, plan_keep_newest, plan_retention


@dataclass(frozen=True)
class PruneStep:
    snapshot: LocalSnapshot
    keep: bool
    reasons: tuple[str, ...]


def timeline_due(snapshots: Sequence[LocalSnapshot], timeline: str, now: datetime, tz: tzinfo) -> bool:
    """Return True when a new timeline snapshot is due under the timeline policy."""
    ours = [s.date for s in snapshots if s.kind == "timeline" and s.date <= now]
    return due(max(ours) if ours else None, parse_policy(timeline), now, tz).is_due


def plan_prune(
    snapshots: Sequence[LocalSnapshot],
    *,
    timeline: str,
    prechange_keep: int,
    now: datetime,
    tz: tzinfo,
    held: Mapping[str, str] | None = None,
) -> list[PruneStep]:
    """Given one subvolume's snapshots, return a keep/delete step for each owned one.

    Foreign snapshots (snapper's, the user's) get no step: they are never touched.
    """
    held = held or {}
    steps: list[PruneStep] = []
    for kind in ("timeline", "prechange"):
        group = [s for s in snapshots if s.kind == kind]
        if not group:
            continue
        # Keys sort like snapshot numbers, so snapshots made in the same second keep
        # their creation order when the planner breaks ties by key.
        by_key = {f"{s.number:012d}": s for s in group}
        points = [Point(k, s.date) for k, s in by_key.items()]
        group_held = {k: held[s.uuid] for k, s in by_key.items() if s.uuid and s.uuid in held}
        if kind == "timeline":
            decisions = plan_retention(points, parse_policy(timeline), now, tz, held=group_held)
        else:
            decisions = plan_keep_newest(points, prechange_keep, held=group_held, now=now)
        steps.extend(PruneStep(by_key[d.key], d.keep, tuple(d.reasons)) for d in decisions)
    steps.sort(key=lambda st: st.snapshot.number)
    return steps
