"""CLI of layers 1 and 2, taking local snapshots: `snapshot`, `snap-all` (kept small: snap-all's start-up is measured)."""

from __future__ import annotations

import click

from subvault.cli.common import Env, dry_run_option, handle_errors, json_option, pass_env
from subvault.cli.render import emit_outcome
from subvault.run.local import snap_all as do_snap_all
from subvault.run.local import take_timeline


@click.command()
@click.argument("subvolumes", nargs=-1)
@click.option("--force", is_flag=True, help="Snapshot even if not due.")
@dry_run_option
@json_option
@pass_env
@handle_errors
def snapshot(env: Env, subvolumes: tuple[str, ...], force: bool, dry_run: bool, as_json: bool) -> int:
    """Take a timeline snapshot of each subvolume that is due."""
    with env.lock():
        return emit_outcome(take_timeline(env.context(dry_run=dry_run, quiet=as_json), force=force, names=list(subvolumes)), as_json)


@click.command("snap-all")
@click.argument("description")
@dry_run_option
@json_option
@pass_env
@handle_errors
def snap_all(env: Env, description: str, dry_run: bool, as_json: bool) -> int:
    """Snapshot every subvolume now with DESCRIPTION (kept by count, prechange_keep)."""
    with env.lock():
        return emit_outcome(do_snap_all(env.context(dry_run=dry_run, quiet=as_json), description), as_json)
