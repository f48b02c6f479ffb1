"""`subvault run`: everything that is due, in order: snapshot, then prune."""

from __future__ import annotations

from subvault.run.context import Context
from subvault.run.holds import all_holds
from subvault.run.local import prune, take_timeline
from subvault.run.results import Outcome


def run_all(ctx: Context, *, metrics_file: str | None = None) -> Outcome:
    """Run each due layer; one layer's failure does not stop the next (exit 3, partial)."""
    outcome = Outcome("run", dry_run=ctx.dry_run)
    outcome.merge(take_timeline(ctx))
    outcome.merge(prune(ctx, holds=all_holds))
    return outcome
