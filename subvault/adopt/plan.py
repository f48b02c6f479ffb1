"""Plan an adoption: the subvault.toml, the hand-over actions, what stays manual. Pure.

Inputs are the parsed configs and what discovery saw (`found.py`); the output is an
AdoptPlan (`planned.py`) with reasons. No I/O, no clock. This module matches and names
the subvolumes; the rest is planned by `handover` (stopping snapper and btrbk, taking
over snapper's snapshots), `targets` (btrbk targets as [[target]]s), `moves` (renaming
btrbk's history into subvault's layout), `keeps` (retention) and `render` (the TOML).

Rules:
- A subvolume is matched across snapper and btrbk by its btrfs identity (filesystem
  uuid + subvolume id), never by name (invariant 7). Its subvault name is btrbk's
  snapshot_name (what the target entries are called), else the snapper config's name,
  made a valid config name (`names.py`).
- The local timeline policy is snapper's TIMELINE_LIMIT_* (widened to keep what btrbk
  kept, `keeps.py`); pre-change keep is NUMBER_LIMIT (10 without snapper). A subvolume
  only snapper knew, with all its TIMELINE_LIMIT_* 0, gets 24h 7d 4w, and a comment says so.
- btrbk options and snapper settings with no equivalent become comments in the config.
- adopt deletes nothing.
"""

from __future__ import annotations

from subvault.adopt.found import FoundBtrbk, FoundSnapper, Inputs
from subvault.adopt.handover import install_timers, stop_schedulers, take_over_snapper
from subvault.adopt.keeps import local_timeline
from subvault.adopt.moves import local_moves
from subvault.adopt.names import unique_name
from subvault.adopt.planned import AdoptPlan, SubPlan
from subvault.adopt.render import render_toml
from subvault.adopt.targets import Targets, plan_targets

DEFAULT_TIMELINE = "24h 7d 4w"
DEFAULT_PRECHANGE_KEEP = 10


def plan_adoption(inp: Inputs) -> AdoptPlan:
    """Given what discovery found, return the config, the actions and the manual steps."""
    plan = AdoptPlan()
    targets: Targets = {}
    by_ident_btrbk = {f.ident: f for f in inp.btrbk_found if f.ident}
    used_btrbk: set[int] = set()
    names: set[str] = set()

    for fs in inp.snapper:
        fb = by_ident_btrbk.get(fs.ident) if fs.ident else None
        if fb is not None:
            used_btrbk.add(id(fb))
        plan.subvolumes.append(_subvolume(plan, inp, fs, fb, targets, names))
    for fb in inp.btrbk_found:
        if id(fb) not in used_btrbk:
            plan.subvolumes.append(_subvolume(plan, inp, None, fb, targets, names))
    plan.targets = list(targets.values())
    stop_schedulers(plan, inp)
    if plan.subvolumes:
        install_timers(plan, inp)
    if inp.btrbk is not None:
        for text, line, why in inp.btrbk.unmapped:
            plan.comments.append(f"{inp.btrbk.file}:{line}: {text}: no equivalent ({why})")
        for group, members in sorted(inp.btrbk.groups.items()):
            plan.comments.append(
                f"btrbk group {group} ({', '.join(members) or 'no subvolume'}): no equivalent; "
                f"`btrbk run {group}` becomes `subvault snapshot {' '.join(members)}` / `subvault replicate --target T`"
            )
    plan.manual.append("subvolumes neither tool covered: run `subvault check` and add each as [[subvolume]] or [[exclude]] with a reason")
    plan.manual.append("the snap-all script: call `subvault snap-all DESC` (or `subvault pre-change --desc DESC`, which also suspends Flux)")
    plan.manual.append("the coverage script and its OnFailure notify unit: `subvault check` (daily timer) with [notify] urls")
    plan.toml = render_toml(plan, inp)
    return plan


def _subvolume(plan: AdoptPlan, inp: Inputs, fs: FoundSnapper | None, fb: FoundBtrbk | None,
               targets: Targets, names: set[str]) -> SubPlan:
    """The [[subvolume]] for one subvolume snapper (fs), btrbk (fb) or both knew, with its actions."""
    wanted = fb.sub.snapshot_name if fb else fs.conf.name  # type: ignore[union-attr]  # callers pass fs or fb, never neither
    name = unique_name(wanted, names)
    path = fs.path if fs else fb.sub.full_path  # type: ignore[union-attr]  # callers pass fs or fb, never neither
    comments: list[str] = []
    if name != wanted:
        comments.append(f'{"btrbk snapshot_name" if fb else "snapper config"} "{wanted}" is named "{name}" here: subvault names are '
                        "ASCII letters, digits and _ . - (the moved target entries take this name)")
    timeline, keep_n = None, DEFAULT_PRECHANGE_KEEP
    if fs is not None:
        timeline, keep_n = _from_snapper(plan, inp, fs, name, path, comments)
    sub_targets: list[str] = []
    if fb is not None:
        timeline, sub_targets = _from_btrbk(plan, inp, fb, name, path, timeline, targets, comments)
    if timeline is None:
        timeline = DEFAULT_TIMELINE
        comments.append(f"snapper's TIMELINE_LIMIT_* are all 0: subvault needs a timeline; using the default {DEFAULT_TIMELINE}")
    return SubPlan(name, path, timeline, keep_n, sub_targets, fs.conf.name if fs else None,
                   fb.sub.full_path if fb else None, comments)


def _from_snapper(plan: AdoptPlan, inp: Inputs, fs: FoundSnapper, name: str, path: str,
                  comments: list[str]) -> tuple[str | None, int]:
    """Report snapper config fs and plan its take-over; return its timeline (None: all limits 0) and pre-change keep."""
    conf = fs.conf
    timeline, keep_n = conf.timeline_policy(), conf.number_limit()
    for text, line, why in conf.unmapped():
        comments.append(f"{conf.file}:{line}: {text}: no equivalent ({why})")
    if not conf.timeline_create:
        comments.append(f"{conf.file}: TIMELINE_CREATE was no; subvault takes timeline snapshots by this policy")
    plan.found.append(
        f"snapper config {conf.name}: {conf.subvolume} → {path}; timeline {timeline or 'none'}"
        f"{' (created)' if conf.timeline_create else ' (not created)'}, NUMBER_LIMIT {keep_n}, "
        f"{len(fs.snapshots)} snapshots"
    )
    take_over_snapper(plan, inp, fs, name)
    return timeline, keep_n


def _from_btrbk(plan: AdoptPlan, inp: Inputs, fb: FoundBtrbk, name: str, path: str, snapper_timeline: str | None,
                targets: Targets, comments: list[str]) -> tuple[str, list[str]]:
    """Report btrbk subvolume fb and plan its targets and moves; return its timeline and its targets' names."""
    plan.found.append(
        f"btrbk subvolume {fb.sub.full_path} ({inp.btrbk_file}:{fb.sub.line}): "
        f"snapshot_name {fb.sub.snapshot_name}, {len(fb.snapshots)} local snapshots in {fb.sub.snapshot_dir}, "
        f"{len(fb.sub.targets)} targets"
    )
    sub_targets = plan_targets(plan, inp, fb, name, targets, comments)
    local_moves(plan, fb, name, path)
    timeline = local_timeline(plan, inp, fb, name, snapper_timeline, comments,
                              [tp for tp in targets.values() if tp.name in sub_targets])
    if fb.sub.get("snapshot_create") not in ("always", ""):
        comments.append(f"{inp.btrbk_where(fb.sub.line_of('snapshot_create'))}: snapshot_create {fb.sub.get('snapshot_create')}: "
                        "no equivalent (subvault snapshots on its timeline's cadence)")
    return timeline, sub_targets
