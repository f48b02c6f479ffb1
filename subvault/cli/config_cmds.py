"""CLI: `config check`, `config sample`, `init`."""

from __future__ import annotations

import click

from subvault.cli.common import Env, handle_errors, pass_env
from subvault.config.load import read_config, validate
from subvault.config.location import config_path
from subvault.config.sample import render_sample
from subvault.config.verify import deep_errors, exposure_warnings, host_warnings
from subvault.errors import ConfigError, SubvaultError
from subvault.run.init import scan_host, write_config


@click.group("config")
def config_group() -> None:
    """Validate the config or print a commented sample."""


@config_group.command("check")
@pass_env
@handle_errors
def config_check(env: Env) -> int:
    """Validate the config file; print every problem with its key (and warnings about this host)."""
    text, name = read_config(env.config_file)
    checked = validate(text, name=name)
    cfg, errors = checked.config, checked.errors
    try:
        errors += [f"{name}: {e}" for e in deep_errors(cfg, checked.data)]
    except SubvaultError as exc:  # notify.urls_file unreadable or exposed
        errors.append(f"{name}: notify: urls_file: {exc}")
    for warning in host_warnings(cfg) + exposure_warnings(cfg, name):
        click.echo(f"warning: {name}: {warning}" if not warning.startswith(name) else f"warning: {warning}", err=True)
    if errors:
        raise ConfigError("\n".join(errors))
    click.echo(f"ok: {len(cfg.subvolume)} subvolumes, {len(cfg.exclude)} excludes, {len(cfg.target)} targets")
    return 0


@config_group.command("sample")
@handle_errors
def config_sample() -> int:
    """Print a commented sample config generated from the schema."""
    click.echo(render_sample(), nl=False)
    return 0


@click.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--output", "-o", metavar="PATH", help="Where to write (default: the config path). '-' prints it.")
@click.option("--force", is_flag=True, help="Overwrite an existing config.")
@click.option("--dry-run", is_flag=True, help="Print the starter config; write nothing (as --output -).")
@pass_env
@handle_errors
def init(env: Env, paths: tuple[str, ...], output: str | None, force: bool, dry_run: bool) -> int:
    """Scan the btrfs filesystems (or only those holding PATHs) and write a starter config covering every subvolume."""
    text = scan_host(list(paths) or None)
    if output == "-" or dry_run:
        click.echo(text, nl=False)
        return 0
    dest = write_config(text, output or str(config_path(env.config_path)), force=force)
    click.echo(f"wrote {dest} (mode 0600); review what it protects and excludes, add a [[target]], then `subvault config check`")
    return 0
