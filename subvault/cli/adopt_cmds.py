"""CLI: `subvault adopt` — take over an existing snapper + btrbk installation."""

from __future__ import annotations

import click

from subvault.adopt.discover import under
from subvault.adopt.run import AdoptRequest, default_root
from subvault.adopt.run import adopt as do_adopt
from subvault.cli.common import Env, changing_command
from subvault.cli.render import emit_json
from subvault.config.location import config_path


@click.command()
@click.option("--snapper", "use_snapper", is_flag=True, help="Adopt the snapper configs (default: both tools when neither is named).")
@click.option("--btrbk", "btrbk_file", metavar="FILE", help="Adopt this btrbk.conf (default: /etc/btrbk/btrbk.conf if present).")
@click.option("--write", "write_path", metavar="PATH", help="Write the config here (default with --apply: the config path).")
@click.option("--apply", "do_apply", is_flag=True, help="Hand over: stop snapper's timeline/cleanup and btrbk's schedule, move btrbk's snapshots into subvault's layout, take over snapper's, install the timers.")
@click.option("--root", metavar="DIR", help="The installation's root, as `snapper --root` (default $SUBVAULT_SYSROOT or /).")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="OPT", help='Extra ssh "-o" option for btrbk\'s ssh targets (written into the config).')
@click.option("--force", is_flag=True, help="Replace an existing, different config file.")
@changing_command
def adopt(env: Env, use_snapper: bool, btrbk_file: str | None, write_path: str | None, do_apply: bool, root: str | None,
          ssh_options: tuple[str, ...], force: bool, dry_run: bool, as_json: bool) -> int:
    """Read snapper and btrbk, write the equivalent subvault.toml, and (with --apply) take over their history.

    Nothing is deleted: snapper's snapshots keep their numbers, btrbk's snapshots and
    target entries are renamed into subvault's layout (same uuids), so the first run
    sends incrementally.
    """
    root = root or default_root()
    both = not use_snapper and not btrbk_file
    cfg_path = str(config_path(env.config_path)) if env.config_path else under(root, "/etc/subvault/subvault.toml")
    req = AdoptRequest(
        root=root, snapper=use_snapper or both, btrbk_file=btrbk_file, write_path=write_path, config_path=cfg_path,
        apply=do_apply, dry_run=dry_run, force=force, ssh_options=list(ssh_options), use_btrbk=both or bool(btrbk_file),
    )
    plan, out = do_adopt(req)
    if as_json:
        return emit_json("adopt", {"plan": plan, "outcome": out}, out.exit_code)
    pre = "[dry-run] " if dry_run else ""
    click.echo("found:")
    for line in plan.found:
        click.echo(f"  {line}")
    click.echo("did:" if do_apply and not dry_run else "will do (with --apply):")
    for a in plan.actions:
        click.echo(f"  {pre}{a.kind:<15} {a.subject}: {a.detail}")
    if not do_apply or dry_run:
        cmds = [a.command for a in plan.actions if a.command]
        if cmds:
            click.echo("hand-over commands (run by --apply; or run them yourself):")
            for c in cmds:
                click.echo(f"  {c}")
    for item in out.items:
        if item.action != "failed":
            click.echo(f"  {pre}{item.action:<15} {item.subject}: {item.detail}")
    click.echo("stays manual:")
    for line in plan.manual:
        click.echo(f"  {line}")
    if not (write_path or do_apply) or dry_run:
        click.echo("\n# ---- subvault.toml ----")
        click.echo(plan.toml, nl=False)
    for error in out.errors:
        click.echo(f"error: {error}", err=True)
    return out.exit_code
