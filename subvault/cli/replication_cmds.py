"""CLI commands of layer 3: `replicate`, `serve` (the restricted endpoint), `prune-received`, `pull`.

Imported at the bottom of subvault.cli.main so that they join the `cli` group.
"""

from __future__ import annotations

import os

import click

from subvault.cli.main import Env, _handle_errors, cli, dry_run_option, json_option, pass_env


@cli.command()
@click.option("--target", "target", metavar="T", help="Only this target.")
@click.option("--no-meter", is_flag=True, help="Let the kernel connect the pipeline stages (no progress, no stall detection).")
@dry_run_option
@json_option
@pass_env
@_handle_errors
def replicate(env: Env, target: str | None, no_meter: bool, dry_run: bool, as_json: bool) -> int:
    """Send timeline snapshots to btrfs targets (incremental), then prune the targets by their keep."""
    from subvault.cli.render import emit_outcome
    from subvault.run.replicate import replicate as do_replicate
    from subvault.run.replicate import tty_progress

    with env.lock():
        ctx = env.context(dry_run=dry_run, quiet=as_json)
        progress = None if as_json else tty_progress()
        outcome = do_replicate(ctx, target=target, progress=progress, meter=not no_meter)
    return emit_outcome(outcome, as_json)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--root", required=True, metavar="DIR", help="The only directory this key may touch.")
@click.option("--append-only", is_flag=True, help="Refuse deletes (prune then runs on this host).")
@click.option("--send-only", is_flag=True, help="Only list and send (a source for `subvault pull`).")
@click.option("--puller", metavar="NAME", help="Let this key record puller NAME's incremental base, which this host then keeps.")
@click.option("--host", metavar="NAME", help="Bind this key to <root>/NAME/ only, for reads and writes (one key per pushing host).")
@_handle_errors
def serve(root: str, append_only: bool, send_only: bool, puller: str | None, host: str | None) -> int:
    """Restricted endpoint for an authorized_keys forced command; reads SSH_ORIGINAL_COMMAND.

    Example: command="subvault serve --root /mnt/backup --host vps1 --append-only",restrict ssh-ed25519 AAAA…
    Without --host a key may touch every host's directory under --root: safe only when
    one host pushes there. A pull source: command="subvault serve --root / --send-only --puller pi",restrict …
    """
    from subvault.serve import serve_main

    return serve_main(root, append_only=append_only, send_only=send_only, puller=puller, host=host)


@cli.command("prune-received")
@click.option("--root", required=True, metavar="DIR", help="The directory `serve --append-only` receives into.")
@click.option("--keep", required=True, metavar="POLICY", help='Retention, e.g. "24h 8d 5w" (the newest entry is always kept).')
@click.option("--timezone", "tz_name", metavar="ZONE", help="Zone for the keep buckets (default: this host's).")
@click.option("--state-dir", default="/var/lib/subvault", show_default=True, metavar="DIR", help="Where the lock is (shared with `pull` and `run` on this host).")
@click.option("--wait", type=float, default=0.0, metavar="SECONDS", help="Wait this long for another subvault on this host to finish.")
@dry_run_option
@json_option
@_handle_errors
def prune_received_cmd(root: str, keep: str, tz_name: str | None, state_dir: str, wait: float, dry_run: bool, as_json: bool) -> int:
    """Prune what an append-only target received, on the target host itself (no config needed).

    Example timer command: subvault prune-received --root /mnt/backup --keep "24h 8d 5w"
    """
    from contextlib import nullcontext

    from subvault.cli.render import emit_outcome
    from subvault.errors import UsageError
    from subvault.lock import exclusive, on_directory
    from subvault.run.prune_received import prune_received
    from subvault.timeutil import local_zone, utcnow

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


@cli.command()
@click.option("--source", "source", metavar="NAME", help="Only this [[source]].")
@dry_run_option
@json_option
@pass_env
@_handle_errors
def pull(env: Env, source: str | None, dry_run: bool, as_json: bool) -> int:
    """Pull snapshots from [[source]] hosts (their key allows only `serve --send-only`)."""
    from subvault.cli.render import emit_outcome
    from subvault.run.pull import pull as do_pull

    with env.lock():
        return emit_outcome(do_pull(env.context(dry_run=dry_run, quiet=as_json), source=source), as_json)


@cli.command(hidden=True)
@click.argument("path")
@_handle_errors
def snapshots(path: str) -> int:
    """Print PATH's snapper-layout snapshots as JSON (what `pull` reads from a source)."""
    from subvault.serve import snapshots_json

    click.echo(snapshots_json(path), nl=False)
    return 0


@cli.command(hidden=True)
@click.option("--puller", required=True, metavar="NAME")
@click.argument("path")
@click.argument("uuid")
@_handle_errors
def pulled(puller: str, path: str, uuid: str) -> int:
    """Record that puller NAME's incremental base for the subvolume at PATH is UUID (kept by this host's prune)."""
    from subvault import pullholds
    from subvault.errors import UsageError
    from subvault.timeutil import utcnow

    try:
        pullholds.write_record(path, puller, uuid, utcnow())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0


if __name__ == "__main__":
    cli(standalone_mode=True)
