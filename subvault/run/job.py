"""`subvault run`: everything that is due, in order: dr capture (if the layout changed), snapshot, replicate, offsite, prune, metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable

from subvault.btrfs.local import ensure_snapshots_dir
from subvault.context import Context
from subvault.errors import SubvaultError
from subvault.results import Outcome
from subvault.run.holds import all_holds
from subvault.run.local import prune, take_timeline
from subvault.run.notified import notified, wants_notify
from subvault.run.offsite import offsite
from subvault.run.replicate import replicate

log = logging.getLogger(__name__)

# What `run` does, in order; `run --help` and the README list these.
STEPS = ("dr capture (when the layout changed)", "snapshot", "replicate", "offsite", "prune", "metrics")


def run_all(ctx: Context, *, metrics_file: str | None = None) -> Outcome:
    """Run each due layer; one layer's failure does not stop the next (exit 3, partial).

    Rule: every step runs whatever an earlier one raised. Each layer already records
    per-subvolume and per-target failures; a step that raises anyway (a bug, the system
    refusing) is recorded here as that step's failure, and prune and metrics still run.
    Prune stays safe after a failed layer: its holds come from the targets themselves.
    """
    outcome = Outcome("run", dry_run=ctx.dry_run)

    def step(name: str, work: Callable[[], Outcome | None]) -> None:
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - one step's failure never stops the others
            log.debug("run: %s failed", name, exc_info=True)
            outcome.fail(name, exc)
            return
        if result is not None:
            outcome.merge(result)

    if ctx.config.flux is not None:
        # First: Flux left suspended by a pre-change that died should reconcile again soon.
        step("flux leftovers", lambda: _flux_leftovers(ctx))
    if ctx.config.dr is not None:
        # Before the snapshots, so that a new capture travels in this run's snapshot; after the
        # .snapshots containers exist, so that it records the layout this run leaves behind.
        # A dry run makes nothing and says whether it would capture.
        if not ctx.dry_run:
            _ensure_containers(ctx)
        step("dr capture", lambda: _dr_capture(ctx))
    step("snapshot", lambda: take_timeline(ctx))
    kinds = {t.type for t in ctx.config.target if any(t.name in ctx.config.targets_of(s) for s in ctx.config.subvolume)}
    if "btrfs" in kinds:
        step("replicate", lambda: replicate(ctx))
    if "object" in kinds:
        step("offsite", lambda: offsite(ctx, only_due=True))
    step("prune", lambda: prune(ctx, holds=all_holds))
    if metrics_file:
        step("metrics", lambda: _metrics(ctx, metrics_file, outcome))
    return outcome


def run_job(ctx: Context, *, metrics_file: str | None = None) -> Outcome:
    """`subvault run`: run_all, reported to [notify] (Apprise, the dead-man ping) when one is configured and this is no dry run."""
    if ctx.dry_run or not wants_notify(ctx.config):
        return run_all(ctx, metrics_file=metrics_file)
    with notified("run", ctx.config, ping=True) as job:
        outcome = run_all(ctx, metrics_file=metrics_file)
        job.report(outcome.exit_code, outcome.errors)
    outcome.warnings.extend(job.warnings)
    return outcome


def _ensure_containers(ctx: Context) -> None:
    """Create each configured subvolume's .snapshots now; a failure is reported by the snapshot step."""
    for sub in ctx.config.subvolume:
        try:
            ensure_snapshots_dir(sub.path)
        except (SubvaultError, OSError):
            continue


# The steps only some configs have ([flux], [dr], --metrics-file) load their layer when they
# run: a run without them imports no Kubernetes client, no dr and no status table. These are
# the job's own boundaries, like the command table in cli/main.py; none of them hides a cycle.
def _flux_leftovers(ctx: Context) -> Outcome:
    from subvault.run.flux_leftovers import resume_leftovers

    return resume_leftovers(ctx)


def _dr_capture(ctx: Context) -> Outcome:
    from subvault.dr.capture import capture_if_changed

    return capture_if_changed(ctx)


def _metrics(ctx: Context, path: str, outcome: Outcome) -> None:
    from subvault.run.watch import gather_rows, write_metrics

    write_metrics(path, gather_rows(ctx), ctx, problems=None, job=outcome)
