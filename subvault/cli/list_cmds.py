"""CLI: `list`, each subvolume's snapshots and the targets holding each."""

from __future__ import annotations

import click

from subvault.cli.common import Env, handle_errors, json_option, pass_env
from subvault.cli.render import emit_json, table
from subvault.cli.textout import printable
from subvault.context import Context
from subvault.run.listing import Listing, list_snapshots


def render_listing(listings: list[Listing], ctx: Context, as_json: bool) -> int:
    """Print listings; return 1 if any subvolume could not be read, else 0."""
    if as_json:
        return emit_json("list", listings, 1 if any(l.error for l in listings) else 0)
    failed = 0
    for listing in listings:
        click.echo(printable(f"{listing.subvolume} ({listing.path})"))
        if listing.error:
            click.echo(f"  error: {printable(listing.error)}")
            failed = 1
            continue
        rows = [
            [
                str(s.number),
                s.date.astimezone(ctx.tz).strftime("%Y-%m-%d %H:%M"),
                s.kind if s.owned else "snapper",
                s.description[:40],
                ", ".join(listing.held_by.get(s.uuid or "", [])),
            ]
            for s in listing.snapshots
        ]
        for err in listing.target_errors:
            click.echo(f"  warning: {printable(err)}")
        if rows:
            click.echo("  " + table(rows, ["#", "date", "kind", "description", "targets"]).replace("\n", "\n  "))
        else:
            click.echo("  (no snapshots)")
    return failed


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
