"""CLI: `demo`, every layer on throwaway loop filesystems (subvault.demo)."""

from __future__ import annotations

import click

from subvault.cli.common import handle_errors
from subvault.demo.run import run_demo


@click.command()
@click.option("--keep", is_flag=True, help="Leave the loop filesystems mounted for inspection.")
@click.option("--workdir", metavar="DIR", help="Where to put the sparse files (default: a temp dir).")
@handle_errors
def demo(keep: bool, workdir: str | None) -> int:
    """Build throwaway loop filesystems in the homelab layout and run every layer on them."""
    return run_demo(keep=keep, workdir=workdir, say=click.echo)
