"""`subvault run`: everything that is due, in order: dr capture (if the layout changed), snapshot, replicate, offsite, prune, metrics."""

from __future__ import annotations

from subvault.run.context import Context
from subvault.run.holds import all_holds
from subvault.run.local import prune, take_timeline
from subvault.run.results import Outcome


def run_all(ctx: Context, *, metrics_file: str | None = None) -> Outcome:
    """Run each due layer; one layer's failure does not stop the next (exit 3, partial)."""
    outcome = Outcome("run", dry_run=ctx.dry_run)
    if ctx.config.flux is not None:
        # First: Flux left suspended by a pre-change that died should reconcile again soon.
        from subvault.run.flux_leftovers import resume_leftovers

        outcome.merge(resume_leftovers(ctx))
    if ctx.config.dr is not None:
        # Before the snapshots, so that a new capture travels in this run's snapshot; after the
        # .snapshots containers exist, so that it records the layout this run leaves behind.
        # A dry run makes nothing and says whether it would capture.
        from subvault.dr.capture import capture_if_changed

        if not ctx.dry_run:
            _ensure_containers(ctx)
        outcome.merge(capture_if_changed(ctx))
    outcome.merge(take_timeline(ctx))
    kinds = {t.type for t in ctx.config.target if any(t.name in ctx.config.targets_of(s) for s in ctx.config.subvolume)}
    if "btrfs" in kinds:
        from subvault.run.replicate import replicate

        outcome.merge(replicate(ctx))
    if "object" in kinds:
        from subvault.run.offsite import offsite

        outcome.merge(offsite(ctx, only_due=True))
    outcome.merge(prune(ctx, holds=all_holds))
    if metrics_file:
        from subvault.run.watch import gather_rows, write_metrics

        write_metrics(metrics_file, gather_rows(ctx), ctx, problems=None, job=outcome)
    return outcome


def _ensure_containers(ctx: Context) -> None:
    """Create each configured subvolume's .snapshots now; a failure is reported by the snapshot step."""
    from subvault.btrfs.local import ensure_snapshots_dir
    from subvault.errors import SubvaultError

    for sub in ctx.config.subvolume:
        try:
            ensure_snapshots_dir(sub.path)
        except SubvaultError:
            continue
