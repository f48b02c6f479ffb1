"""CLI commands of layer 3 on the target host: `serve` (the restricted endpoint), `prune-received`,
and the two hidden commands a pull source answers with (`snapshots`, `pulled`). None reads a config."""

from __future__ import annotations

import os
from contextlib import nullcontext

import click

from subvault import pullholds
from subvault.cli.common import dry_run_option, handle_errors, json_option
from subvault.cli.render import emit_outcome
from subvault.errors import UsageError
from subvault.lock import exclusive, on_directory
from subvault.run.prune_received import prune_received
from subvault.serve import serve_main, snapshots_json
from subvault.timeutil import local_zone, utcnow


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--root", required=True, metavar="DIR", help="The only directory this key may touch.")
@click.option("--append-only", is_flag=True, help="Refuse deletes (prune then runs on this host).")
@click.option("--send-only", is_flag=True, help="Only list and send (a source for `subvault pull`).")
@click.option("--puller", metavar="NAME", help="Let this key record puller NAME's incremental base, which this host then keeps.")
@click.option("--host", metavar="NAME", help="Bind this key to <root>/NAME/ only, for reads and writes (one key per pushing host).")
@handle_errors
def serve(root: str, append_only: bool, send_only: bool, puller: str | None, host: str | None) -> int:
    """Restricted endpoint for an authorized_keys forced command; reads SSH_ORIGINAL_COMMAND.

    Example: command="subvault serve --root /mnt/backup --host vps1 --append-only",restrict ssh-ed25519 AAAA…
    Without --host a key may touch every host's directory under --root: safe only when
    one host pushes there. A pull source: command="subvault serve --root / --send-only --puller pi",restrict …
    """
    return serve_main(root, append_only=append_only, send_only=send_only, puller=puller, host=host)


@click.command("prune-received")
@click.option("--root", required=True, metavar="DIR", help="The directory `serve --append-only` receives into.")
@click.option("--keep", required=True, metavar="POLICY", help='Retention, e.g. "24h 8d 5w" (the newest entry is always kept).')
@click.option("--timezone", "tz_name", metavar="ZONE", help="Zone for the keep buckets (default: this host's).")
@click.option("--state-dir", default="/var/lib/subvault", show_default=True, metavar="DIR", help="Where the lock is (shared with `pull` and `run` on this host).")
@click.option("--wait", type=float, default=0.0, metavar="SECONDS", help="Wait this long for another subvault on this host to finish.")
@dry_run_option
@json_option
@handle_errors
def prune_received_cmd(root: str, keep: str, tz_name: str | None, state_dir: str, wait: float, dry_run: bool, as_json: bool) -> int:
    """Prune what an append-only target received, on the target host itself (no config needed).

    Example timer command: subvault prune-received --root /mnt/backup --keep "24h 8d 5w"
    """
    try:
        tz = local_zone(tz_name)
    except ValueError as exc:
        raise UsageError(f"--timezone: {exc}") from None
    try:
        # Two locks: this host's (shared with pull and run), and one on the root itself, so
        # that two prune-received with different --state-dir never race on one root.
        with (nullcontext() if dry_run else exclusive(state_dir, wait=wait),
              on_directory(root, wait=wait) if os.path.isdir(root) else nullcontext()):
            outcome = prune_received(root, keep, now=utcnow(), tz=tz, dry_run=dry_run)
    except ValueError as exc:
        raise UsageError(f"--keep: {exc}") from None
    return emit_outcome(outcome, as_json)


@click.command(hidden=True)
@click.argument("path")
@handle_errors
def snapshots(path: str) -> int:
    """Print PATH's snapper-layout snapshots as JSON (what `pull` reads from a source)."""
    click.echo(snapshots_json(path), nl=False)
    return 0


@click.command(hidden=True)
@click.option("--puller", required=True, metavar="NAME")
@click.argument("path")
@click.argument("uuid")
@handle_errors
def pulled(puller: str, path: str, uuid: str) -> int:
    """Record that puller NAME's incremental base for the subvolume at PATH is UUID (kept by this host's prune)."""
    try:
        pullholds.write_record(path, puller, uuid, utcnow())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0
