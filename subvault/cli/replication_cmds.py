"""CLI commands of layer 3 on the source host: `replicate`, `pull`."""

from __future__ import annotations

import click

from subvault.cli.common import Env, changing_command
from subvault.cli.render import emit_outcome
from subvault.run.pull import pull as do_pull
from subvault.run.replicate import replicate as do_replicate
from subvault.run.replicate import tty_progress


@click.command()
@click.option("--target", "target", metavar="T", help="Only this target.")
@click.option("--no-meter", is_flag=True, help="Let the kernel connect the pipeline stages (no progress, no stall detection).")
@changing_command
def replicate(env: Env, target: str | None, no_meter: bool, dry_run: bool, as_json: bool) -> int:
    """Send timeline snapshots to btrfs targets (incremental), then prune the targets by their keep."""
    with env.lock():
        ctx = env.context(dry_run=dry_run, quiet=as_json)
        progress = None if as_json else tty_progress()
        outcome = do_replicate(ctx, target=target, progress=progress, meter=not no_meter)
    return emit_outcome(outcome, as_json)


@click.command()
@click.option("--source", "source", metavar="NAME", help="Only this [[source]].")
@changing_command
def pull(env: Env, source: str | None, dry_run: bool, as_json: bool) -> int:
    """Pull snapshots from [[source]] hosts (their key allows only `serve --send-only`)."""
    return env.locked(do_pull, source=source, dry_run=dry_run, as_json=as_json)
