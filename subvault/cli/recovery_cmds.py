"""CLI: recovery from snapshots and targets: `restore`, `diff`, `rollback`."""

from __future__ import annotations

import click

from subvault.cli.common import Env, changing_command, handle_errors, json_option, pass_env
from subvault.cli.render import emit_json, emit_outcome
from subvault.cli.textout import printable
from subvault.errors import UsageError
from subvault.run.diff import diff_snapshots
from subvault.run.offsite import restore_from_offsite
from subvault.run.restore import restore_files
from subvault.run.restore_target import restore_from_target
from subvault.run.rollback import rollback as do_rollback


@click.command()
@click.argument("subvolume")
@click.argument("paths", nargs=-1)
@click.option("--at", "at", default="latest", show_default=True, help="Snapshot number, uuid (or its first 8+ digits), ISO time, 'latest' or an age like 2d.")
@click.option("--from", "source", default="local", show_default=True, help="Where to restore from: 'local' or a target.")
@click.option("--into", metavar="DIR", help="Restore into DIR instead of the original place.")
@click.option("--overwrite", is_flag=True, help="Replace files that exist at the destination.")
@click.option("--identity", metavar="KEYFILE", help="age identity, for --from an object (offsite) target.")
@click.option("--no-verify-mac", is_flag=True, help="Offsite: restore without the manifest MAC key (the key is lost). Warns.")
@changing_command
def restore(env: Env, subvolume: str, paths: tuple[str, ...], at: str, source: str, into: str | None, overwrite: bool,
            identity: str | None, no_verify_mac: bool, dry_run: bool, as_json: bool) -> int:
    """Copy files back from a snapshot, keeping owner, mode, times, xattrs and ACLs.

    PATHS are relative to the subvolume (default: everything). Nothing is overwritten
    without --overwrite.
    """
    ctx = env.context(dry_run=dry_run, quiet=as_json)
    if source == "local":
        return emit_outcome(restore_files(ctx, subvolume, list(paths), at=at, into=into, overwrite=overwrite), as_json)
    if paths or not into:
        raise UsageError(f"--from {source} restores a whole subvolume as a writable copy: give --into DIR and no PATHS")
    if env.config.get_target(source).type == "object":
        if not identity:
            raise UsageError(f"--from {source} is an offsite target: give --identity KEYFILE (the age identity)")
        if no_verify_mac:
            click.echo("warning: --no-verify-mac: a forged or swapped manifest would not be detected", err=True)
        return emit_outcome(restore_from_offsite(ctx, source, subvolume, at, into, identity, verify_mac=not no_verify_mac), as_json)
    return emit_outcome(restore_from_target(ctx, source, subvolume, at, into), as_json)


@click.command()
@click.argument("subvolume")
@click.argument("old")
@click.argument("new", default="current")
@json_option
@pass_env
@handle_errors
def diff(env: Env, subvolume: str, old: str, new: str, as_json: bool) -> int:
    """List the paths changed between snapshots OLD and NEW (numbers, or 'current')."""
    changes = diff_snapshots(env.context(quiet=True), subvolume, old, new)
    if as_json:
        return emit_json("diff", changes, 0)
    for change in changes:
        detail = f" ({printable(change.detail)})" if change.detail else ""
        click.echo(f"{change.kind:<8} {printable(change.path)}{detail}")
    return 0


@click.command()
@click.argument("subvolume")
@click.argument("number")
@click.option("--fstab", default="/etc/fstab", show_default=True, help="fstab used to judge whether the result can boot.")
@changing_command
def rollback(env: Env, subvolume: str, number: str, fstab: str, dry_run: bool, as_json: bool) -> int:
    """Snapper-style rollback: a writable snapshot of NUMBER becomes the default subvolume."""
    return env.locked(do_rollback, subvolume, number, fstab=fstab, dry_run=dry_run, as_json=as_json)
