"""CLI: `run`, the one timer job."""

from __future__ import annotations

import click

from subvault.cli.common import Env, dry_run_option, handle_errors, json_option, pass_env
from subvault.run.job import run_job


@click.command()
@dry_run_option
@json_option
@click.option("--metrics-file", metavar="PATH", help="Write Prometheus metrics (textfile collector).")
@pass_env
@handle_errors
def run(env: Env, dry_run: bool, as_json: bool, metrics_file: str | None) -> int:
    """Do what is due, in order; the one timer job.

    \b
    1. dr capture: record the disk layout when it changed (with a [dr] section)
    2. snapshot: a timeline snapshot of each subvolume whose period has none
    3. replicate: send to btrfs targets, then prune them by their keep
    4. offsite: upload to object targets whose keep period is due; delete what no kept chain needs
    5. prune: delete local snapshots no policy keeps (never what a target still needs)
    6. metrics: write --metrics-file
    Notifications and the dead-man ping ([notify]) report the result. A step that
    fails does not stop the next ones (exit 3).
    """
    return env.locked(run_job, metrics_file=metrics_file, dry_run=dry_run, as_json=as_json)
