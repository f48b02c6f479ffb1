"""How long adopted snapshots are kept: the local timeline and each target's keep. Pure.

Rules:
- The local timeline keeps at least what snapper's TIMELINE_LIMIT_* kept and what btrbk's
  snapshot_preserve(_min) kept (btrbk's snapshots become subvault timeline snapshots):
  per unit the larger count (`wider`).
- Where that cannot be expressed it keeps more and says so: btrbk kept every snapshot
  younger than a span and some of them share an hour, while subvault keeps one per hour,
  so the timeline is "all" (nothing pruned) and the user is told to shorten it by hand.
- A subvolume btrbk kept only the newest snapshot of (the parent), and snapper did not
  know, keeps two periods of its targets' finest unit.
- A target's keep is btrbk's target_preserve(_min). Subvolumes btrbk kept differently on
  the same directory share one keep that keeps at least each (a comment names them);
  `latest` gives way to any other keep.
"""

from __future__ import annotations

from collections import Counter

from subvault.adopt.btrbk_conf import BtrbkTarget, btrbk_retention, preserve_to_keep
from subvault.adopt.found import FoundBtrbk, Inputs
from subvault.adopt.planned import AdoptPlan, TargetPlan
from subvault.plan.retention import KEEP_ALL, KEEP_LATEST, UNITS, Policy, parse_policy


def local_timeline(plan: AdoptPlan, inp: Inputs, fb: FoundBtrbk, name: str, snapper: str | None,
                   comments: list[str], tps: list[TargetPlan]) -> str:
    """The timeline of a subvolume btrbk snapshotted (`snapper`: snapper's, if it had one too)."""
    pres, pmin = fb.sub.get("snapshot_preserve"), fb.sub.get("snapshot_preserve_min")
    where = inp.btrbk_where(fb.sub.line_of("snapshot_preserve_min") or fb.sub.line_of("snapshot_preserve"))
    keep, notes = btrbk_retention(pres, pmin)
    comments += [f"{where}: snapshot{n}" for n in notes]
    if keep is None:
        if snapper is not None:
            return snapper
        timeline = f"2{_finest_target_unit(tps)}"
        comments.append(f"btrbk kept only its newest snapshot as the parent (snapshot_preserve_min {pmin}, snapshot_preserve {pres}); "
                        f"subvault keeps {timeline} locally plus whatever a target still needs")
        return timeline
    hours = Counter(s.time.replace(minute=0, second=0, microsecond=0) for s in fb.snapshots)
    if keep != KEEP_ALL and pmin not in ("latest", "no") and any(n > 1 for n in hours.values()):
        msg = (f"{name}: btrbk kept every snapshot younger than {pmin} ({where}) and some of its {len(fb.snapshots)} snapshots "
               'share an hour; subvault keeps one per hour, so the adopted timeline is "all" (nothing pruned) — '
               "shorten it by hand once those snapshots have aged out")
        plan.manual.append(msg)
        comments.append(msg)
        keep = KEEP_ALL
    if snapper is None:
        return keep
    widened = wider(snapper, keep)
    if widened != snapper:
        comments.append(f"timeline {widened}: snapper's {snapper} widened to keep what btrbk kept ({keep})")
    return widened


def target_keep(inp: Inputs, t: BtrbkTarget) -> tuple[str, list[str]]:
    """The keep btrbk gave this subvolume on target t, and comments on what it could not say."""
    keep, notes = preserve_to_keep(t.get("target_preserve"), t.get("target_preserve_min"))
    line = t.line_of("target_preserve") or t.line_of("target_preserve_min")
    return keep, [f"{inp.btrbk_where(line)}: target{n}" for n in notes]


def share_target_keep(inp: Inputs, tp: TargetPlan, sub_name: str, keep: str, line: int) -> None:
    """Record that btrbk kept sub_name `keep` on tp (btrbk.conf:line); widen tp's keep to hold it."""
    tp.keeps.setdefault(sub_name, (keep, line))
    if keep == tp.keep:
        return
    widened = wider(tp.keep, keep) if KEEP_LATEST not in (tp.keep, keep) else (keep if tp.keep == KEEP_LATEST else tp.keep)
    tp.keep = widened
    tp.comments = [c for c in tp.comments if not c.startswith("btrbk kept ")]
    each = ", ".join(f"{s} {k} ({inp.btrbk_where(ln)})" for s, (k, ln) in tp.keeps.items())
    tp.comments.append(f"btrbk kept {each} here; subvault has one keep per target: {widened}, which keeps at least each")


def wider(a: str, b: str) -> str:
    """A policy keeping at least the periods of both (per unit the larger count)."""
    pa, pb = parse_policy(a), parse_policy(b)
    if pa.keep_all or pb.keep_all:
        return KEEP_ALL
    counts: dict[str, int | None] = {}
    for unit in UNITS:
        if unit in pa.counts or unit in pb.counts:
            ca, cb = pa.counts.get(unit, 0), pb.counts.get(unit, 0)
            counts[unit] = None if ca is None or cb is None else max(ca, cb)
    return Policy(counts=counts).describe() if counts else b


def _finest_target_unit(tps: list[TargetPlan]) -> str:
    for unit in ("h", "d", "w", "m", "y"):
        for tp in tps:
            policy = parse_policy(tp.keep)
            if policy.counts.get(unit) not in (None, 0) or (unit in policy.counts and policy.counts[unit] is None):
                return unit
    return "d"
