"""CLI of layers 1 and 2: `prune`, local retention (holds from every layer that sends snapshots)."""

from __future__ import annotations

import click

from subvault.cli.common import Env, dry_run_option, handle_errors, json_option, pass_env
from subvault.run.holds import all_holds
from subvault.run.local import prune as do_prune


@click.command()
@dry_run_option
@json_option
@click.option("--show-kept", is_flag=True, help="Also list every kept snapshot with why it is kept.")
@pass_env
@handle_errors
def prune(env: Env, dry_run: bool, as_json: bool, show_kept: bool) -> int:
    """Delete snapshots the retention policies no longer keep."""
    return env.locked(do_prune, holds=all_holds, dry_run=dry_run, as_json=as_json, verbose=show_kept)
