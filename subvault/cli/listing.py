"""Render `subvault list`."""

from __future__ import annotations

import click

from subvault.cli.render import emit_json, printable, table


def render_listing(listings, ctx, as_json: bool) -> int:
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
