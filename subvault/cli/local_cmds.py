"""CLI of layers 1 and 2, taking local snapshots: `snapshot`, `snap-all` (kept small: snap-all's start-up is measured)."""

from __future__ import annotations

import click

from subvault.cli.common import Env, changing_command
from subvault.run.local import snap_all as do_snap_all
from subvault.run.local import take_timeline


@click.command()
@click.argument("subvolumes", nargs=-1)
@click.option("--force", is_flag=True, help="Snapshot even if not due.")
@changing_command
def snapshot(env: Env, subvolumes: tuple[str, ...], force: bool, dry_run: bool, as_json: bool) -> int:
    """Take a timeline snapshot of each subvolume that is due."""
    return env.locked(take_timeline, force=force, names=list(subvolumes), dry_run=dry_run, as_json=as_json)


@click.command("snap-all")
@click.argument("description")
@changing_command
def snap_all(env: Env, description: str, dry_run: bool, as_json: bool) -> int:
    """Snapshot every subvolume now with DESCRIPTION (kept by count, prechange_keep)."""
    return env.locked(do_snap_all, description, dry_run=dry_run, as_json=as_json)
