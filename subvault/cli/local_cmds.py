"""CLI of layers 1 and 2, the local snapshots: `snapshot`, `snap-all`, `prune`, `list`."""

from __future__ import annotations

import click

from subvault.cli.common import Env, dry_run_option, handle_errors, json_option, pass_env
from subvault.cli.listing import render_listing
from subvault.cli.render import emit_outcome
from subvault.run.holds import all_holds
from subvault.run.local import list_snapshots, take_timeline
from subvault.run.local import prune as do_prune
from subvault.run.local import snap_all as do_snap_all


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


@click.command()
@dry_run_option
@json_option
@click.option("--show-kept", is_flag=True, help="Also list every kept snapshot with why it is kept.")
@pass_env
@handle_errors
def prune(env: Env, dry_run: bool, as_json: bool, show_kept: bool) -> int:
    """Delete snapshots the retention policies no longer keep."""
    with env.lock():
        return emit_outcome(do_prune(env.context(dry_run=dry_run, quiet=as_json), holds=all_holds), as_json, verbose=show_kept)


@click.command("list")
@click.argument("subvolume", required=False)
@click.option("--local", "local_only", is_flag=True, help="Do not ask the targets which snapshots they hold.")
@json_option
@pass_env
@handle_errors
def list_cmd(env: Env, subvolume: str | None, local_only: bool, as_json: bool) -> int:
    """List snapshots per subvolume (subvault's and snapper's) and the targets holding each."""
    ctx = env.context(quiet=True)
    listings = list_snapshots(ctx, [subvolume] if subvolume else None, targets=not local_only)
    return render_listing(listings, ctx, as_json)
