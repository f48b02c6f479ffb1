"""`subvault run`: everything that is due, in order: snapshot, replicate, prune, metrics."""

from __future__ import annotations

from subvault.run.context import Context
from subvault.run.holds import all_holds
from subvault.run.local import prune, take_timeline
from subvault.run.results import Outcome


def run_all(ctx: Context, *, metrics_file: str | None = None) -> Outcome:
    """Run each due layer; one layer's failure does not stop the next (exit 3, partial)."""
    outcome = Outcome("run", dry_run=ctx.dry_run)
    outcome.merge(take_timeline(ctx))
    if any(ctx.config.targets_of(s) for s in ctx.config.subvolume):
        from subvault.run.replicate import replicate

        outcome.merge(replicate(ctx))
    outcome.merge(prune(ctx, holds=all_holds))
    if metrics_file:
        from subvault.run.watch import gather_rows, write_metrics

        write_metrics(metrics_file, gather_rows(ctx), ctx, problems=None)
    return outcome
