"""CLI commands of layer 4: `offsite`, `verify`."""

from __future__ import annotations

import click

from subvault.cli.common import Env, changing_command, handle_errors, json_option, pass_env
from subvault.cli.render import emit_outcome
from subvault.run.offsite import offsite as do_offsite
from subvault.run.offsite import verify as do_verify


@click.command()
@click.option("--target", "target", metavar="T", help="Only this object target.")
@changing_command
def offsite(env: Env, target: str | None, dry_run: bool, as_json: bool) -> int:
    """Upload age-encrypted, compressed send streams to object targets; delete what no kept chain needs."""
    return env.locked(do_offsite, target=target, dry_run=dry_run, as_json=as_json)


@click.command()
@click.option("--target", "target", required=True, metavar="T", help="The object target to verify.")
@click.option("--deep", is_flag=True, help="Also decrypt the newest chain of each subvolume and parse it (needs --identity).")
@click.option("--identity", metavar="KEYFILE", help="age identity for --deep.")
@json_option
@pass_env
@handle_errors
def verify(env: Env, target: str, deep: bool, identity: str | None, as_json: bool) -> int:
    """Check that every offsite object is present with its hash and every chain is whole."""
    return emit_outcome(do_verify(env.context(quiet=True), target, deep=deep, identity=identity), as_json)
