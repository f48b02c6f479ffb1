"""The `subvault` command line: parse arguments, call one executor, render its result.

Imports of heavy modules (executors, their libraries) happen inside each command, so that
`subvault --help` and a `run` with nothing due stay fast.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from subvault.errors import EXIT_FAILED, SubvaultError, describe


def _handle_errors(fn: Callable[..., int | None]) -> Callable[..., None]:
    """The CLI boundary: no traceback is ever a command's output.

    A SubvaultError prints its one-line message and exits with its code; any other
    exception (a bug, or the system refusing: a read-only disk, a file where a
    directory was expected) prints one line naming the command and what failed, and
    exits 1 (`-v` adds the traceback to the log). Under `--json` the same error is
    also a versioned JSON document on stdout, so `--json` always prints JSON.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from subvault.secrets import redact

        as_json = bool(kwargs.get("as_json"))
        try:
            code = fn(*args, **kwargs)
        except SubvaultError as exc:
            _fail(str(exc), exc.exit_code, as_json, redact)
        except KeyboardInterrupt:
            _fail("interrupted", 130, as_json, redact)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary: anything else is one line, exit 1
            logging.getLogger("subvault").debug("unexpected error", exc_info=True)
            _fail(f"{_command_name()}: {describe(exc)}", EXIT_FAILED, as_json, redact)
        sys.exit(code or 0)

    return wrapper


def _command_name() -> str:
    ctx = click.get_current_context(silent=True)
    names = []
    while ctx is not None and ctx.parent is not None:  # the root's name is however subvault was started
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names)) or "subvault"


def _fail(message: str, code: int, as_json: bool, redact: Callable[[str], str]) -> None:
    lines = [redact(line) for line in message.splitlines() if line.strip()] or ["failed"]
    for line in lines:
        click.echo(f"error: {line}", err=True)
    if as_json:
        from subvault.cli.render import emit_json_error

        emit_json_error(_command_name(), "; ".join(lines), code)
    sys.exit(code)


class Env:
    """Lazily loaded config and context shared by the commands."""

    def __init__(self, config_path: str | None, wait: float) -> None:
        self.config_path = config_path
        self.wait = wait
        self._config = None

    @property
    def config_file(self) -> str:
        """The config's real path, as errors and warnings name it."""
        import os

        from subvault.config.load import config_path

        return os.path.realpath(config_path(self.config_path))

    @property
    def config(self):
        if self._config is None:
            from subvault.config.load import config_path, load_config

            self._config = load_config(config_path(self.config_path))
        return self._config

    def context(self, *, dry_run: bool = False, quiet: bool = False):
        from subvault.run.context import Context

        # Progress lines go to a terminal only; under systemd or in a pipe the result says it all.
        say = (lambda line: None) if quiet or not sys.stderr.isatty() else (lambda line: click.echo(line, err=True))
        return Context(self.config, dry_run=dry_run, say=say)

    def lock(self):
        """The one-subvault-at-a-time lock; a dry run takes none (it writes nothing, not even the lock file)."""
        from contextlib import nullcontext

        from subvault.lock import exclusive

        current = click.get_current_context(silent=True)
        if current is not None and current.params.get("dry_run"):
            return nullcontext()
        return exclusive(self.config.defaults.state_dir, wait=self.wait)


pass_env = click.make_pass_decorator(Env)
json_option = click.option("--json", "as_json", is_flag=True, help="Print versioned JSON.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="Config file (default $SUBVAULT_CONFIG or /etc/subvault/subvault.toml).")
@click.option("--wait", type=float, default=0.0, metavar="SECONDS", help="Wait this long for another subvault run to finish.")
@click.option("-v", "--verbose", is_flag=True, help="Log every command subvault runs.")
@click.version_option(package_name="subvault")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, wait: float, verbose: bool) -> None:
    """subvault: layered backup for Btrfs servers.

    Exit codes: 0 ok, 1 failed, 2 usage or config error, 3 partial (some subvolume or
    target failed, the rest done).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")
    from subvault.secrets import RedactingFormatter

    for handler in logging.getLogger().handlers:  # every line logged, ours or a library's (-v), is redacted
        handler.setFormatter(RedactingFormatter("%(name)s: %(message)s"))
    if verbose:
        # Libraries' debug logs carry request headers and URLs (credentials, tokens): only
        # their warnings reach the log, and those are redacted like ours.
        for name in ("botocore", "boto3", "urllib3", "s3transfer", "apprise", "httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    ctx.obj = Env(config_path, wait)


# ---------------------------------------------------------------- config / init


@cli.group("config")
def config_group() -> None:
    """Validate the config or print a commented sample."""


@config_group.command("check")
@pass_env
@_handle_errors
def config_check(env: Env) -> int:
    """Validate the config file; print every problem with its key (and warnings about this host)."""
    from subvault.config.load import read_config, validate
    from subvault.config.verify import deep_errors, exposure_warnings, host_warnings
    from subvault.errors import ConfigError

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
@_handle_errors
def config_sample() -> int:
    """Print a commented sample config generated from the schema."""
    from subvault.config.sample import render_sample

    click.echo(render_sample(), nl=False)
    return 0


@cli.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--output", "-o", metavar="PATH", help="Where to write (default: the config path). '-' prints it.")
@click.option("--force", is_flag=True, help="Overwrite an existing config.")
@click.option("--dry-run", is_flag=True, help="Print the starter config; write nothing (as --output -).")
@pass_env
@_handle_errors
def init(env: Env, paths: tuple[str, ...], output: str | None, force: bool, dry_run: bool) -> int:
    """Scan the btrfs filesystems (or only those holding PATHs) and write a starter config covering every subvolume."""
    from subvault.config.load import config_path
    from subvault.run.init import scan_host, write_config

    text = scan_host(list(paths) or None)
    if output == "-" or dry_run:
        click.echo(text, nl=False)
        return 0
    dest = write_config(text, output or str(config_path(env.config_path)), force=force)
    click.echo(f"wrote {dest} (mode 0600); review what it protects and excludes, add a [[target]], then `subvault config check`")
    return 0


# ---------------------------------------------------------------- layers 1 and 2


@cli.command()
@click.argument("subvolumes", nargs=-1)
@click.option("--force", is_flag=True, help="Snapshot even if not due.")
@dry_run_option
@json_option
@pass_env
@_handle_errors
def snapshot(env: Env, subvolumes: tuple[str, ...], force: bool, dry_run: bool, as_json: bool) -> int:
    """Take a timeline snapshot of each subvolume that is due."""
    from subvault.cli.render import emit_outcome
    from subvault.run.local import take_timeline

    with env.lock():
        return emit_outcome(take_timeline(env.context(dry_run=dry_run, quiet=as_json), force=force, names=list(subvolumes)), as_json)


@cli.command("snap-all")
@click.argument("description")
@dry_run_option
@json_option
@pass_env
@_handle_errors
def snap_all_cmd(env: Env, description: str, dry_run: bool, as_json: bool) -> int:
    """Snapshot every subvolume now with DESCRIPTION (kept by count, prechange_keep)."""
    from subvault.cli.render import emit_outcome
    from subvault.run.local import snap_all

    with env.lock():
        return emit_outcome(snap_all(env.context(dry_run=dry_run, quiet=as_json), description), as_json)


@cli.command()
@dry_run_option
@json_option
@click.option("--show-kept", is_flag=True, help="Also list every kept snapshot with why it is kept.")
@pass_env
@_handle_errors
def prune(env: Env, dry_run: bool, as_json: bool, show_kept: bool) -> int:
    """Delete snapshots the retention policies no longer keep."""
    from subvault.cli.render import emit_outcome
    from subvault.run.holds import all_holds
    from subvault.run.local import prune as do_prune

    with env.lock():
        return emit_outcome(do_prune(env.context(dry_run=dry_run, quiet=as_json), holds=all_holds), as_json, verbose=show_kept)


@cli.command("list")
@click.argument("subvolume", required=False)
@click.option("--local", "local_only", is_flag=True, help="Do not ask the targets which snapshots they hold.")
@json_option
@pass_env
@_handle_errors
def list_cmd(env: Env, subvolume: str | None, local_only: bool, as_json: bool) -> int:
    """List snapshots per subvolume (subvault's and snapper's) and the targets holding each."""
    from subvault.cli.listing import render_listing
    from subvault.run.local import list_snapshots

    ctx = env.context(quiet=True)
    listings = list_snapshots(ctx, [subvolume] if subvolume else None, targets=not local_only)
    return render_listing(listings, ctx, as_json)


@cli.command()
@dry_run_option
@json_option
@click.option("--metrics-file", metavar="PATH", help="Write Prometheus metrics (textfile collector).")
@pass_env
@_handle_errors
def run(env: Env, dry_run: bool, as_json: bool, metrics_file: str | None) -> int:
    """Do what is due, in order; the one timer job.

    \b
    1. dr capture: record the disk layout when it changed (with a [dr] section)
    2. snapshot: a timeline snapshot of each subvolume whose period has none
    3. replicate: send to btrfs targets, then prune them by their keep
    4. offsite: upload to object targets whose keep period is due; delete what no kept chain needs
    5. prune: delete local snapshots no policy keeps (never what a target still needs)
    6. metrics: write --metrics-file
    Notifications and the dead-man ping ([notify]) report the result. A step that
    fails does not stop the next ones (exit 3).
    """
    from subvault.cli.render import emit_outcome
    from subvault.run.job import run_all

    cfg = env.config
    with env.lock():
        ctx = env.context(dry_run=dry_run, quiet=as_json)
        if dry_run or not (cfg.notify.urls or cfg.notify.urls_file or cfg.notify.ping):
            outcome = run_all(ctx, metrics_file=metrics_file)
        else:
            from pathlib import Path

            from subvault.cli.watch_cmds import notify_urls
            from subvault.notify.lifecycle import monitored

            with monitored("run", notify_urls(cfg), cfg.notify.ping, Path(cfg.defaults.state_dir)) as job:
                outcome = run_all(ctx, metrics_file=metrics_file)
                job.report(outcome.exit_code, outcome.errors)
            outcome.warnings.extend(job.warnings)
    return emit_outcome(outcome, as_json)


# ---------------------------------------------------------------- recovery from local snapshots


@cli.command()
@click.argument("subvolume")
@click.argument("paths", nargs=-1)
@click.option("--at", "at", default="latest", show_default=True, help="Snapshot number, uuid (or its first 8+ digits), ISO time, 'latest' or an age like 2d.")
@click.option("--from", "source", default="local", show_default=True, help="Where to restore from: 'local' or a target.")
@click.option("--into", metavar="DIR", help="Restore into DIR instead of the original place.")
@click.option("--overwrite", is_flag=True, help="Replace files that exist at the destination.")
@click.option("--identity", metavar="KEYFILE", help="age identity, for --from an object (offsite) target.")
@click.option("--no-verify-mac", is_flag=True, help="Offsite: restore without the manifest MAC key (the key is lost). Warns.")
@dry_run_option
@json_option
@pass_env
@_handle_errors
def restore(env: Env, subvolume: str, paths: tuple[str, ...], at: str, source: str, into: str | None, overwrite: bool,
            identity: str | None, no_verify_mac: bool, dry_run: bool, as_json: bool) -> int:
    """Copy files back from a snapshot, keeping owner, mode, times, xattrs and ACLs.

    PATHS are relative to the subvolume (default: everything). Nothing is overwritten
    without --overwrite.
    """
    from subvault.cli.render import emit_outcome
    from subvault.errors import UsageError
    from subvault.run.restore import restore_files

    ctx = env.context(dry_run=dry_run, quiet=as_json)
    if source == "local":
        return emit_outcome(restore_files(ctx, subvolume, list(paths), at=at, into=into, overwrite=overwrite), as_json)
    if paths or not into:
        raise UsageError(f"--from {source} restores a whole subvolume as a writable copy: give --into DIR and no PATHS")
    if env.config.get_target(source).type == "object":
        from subvault.run.offsite import restore_from_offsite

        if not identity:
            raise UsageError(f"--from {source} is an offsite target: give --identity KEYFILE (the age identity)")
        if no_verify_mac:
            click.echo("warning: --no-verify-mac: a forged or swapped manifest would not be detected", err=True)
        return emit_outcome(restore_from_offsite(ctx, source, subvolume, at, into, identity, verify_mac=not no_verify_mac), as_json)
    from subvault.run.restore_target import restore_from_target

    return emit_outcome(restore_from_target(ctx, source, subvolume, at, into), as_json)


@cli.command()
@click.argument("subvolume")
@click.argument("old")
@click.argument("new", default="current")
@json_option
@pass_env
@_handle_errors
def diff(env: Env, subvolume: str, old: str, new: str, as_json: bool) -> int:
    """List the paths changed between snapshots OLD and NEW (numbers, or 'current')."""
    from subvault.cli.render import emit_json, printable
    from subvault.run.diff import diff_snapshots

    changes = diff_snapshots(env.context(quiet=True), subvolume, old, new)
    if as_json:
        return emit_json("diff", changes, 0)
    else:
        for change in changes:
            detail = f" ({printable(change.detail)})" if change.detail else ""
            click.echo(f"{change.kind:<8} {printable(change.path)}{detail}")
    return 0


@cli.command()
@click.argument("subvolume")
@click.argument("number")
@click.option("--fstab", default="/etc/fstab", show_default=True, help="fstab used to judge whether the result can boot.")
@dry_run_option
@json_option
@pass_env
@_handle_errors
def rollback(env: Env, subvolume: str, number: str, fstab: str, dry_run: bool, as_json: bool) -> int:
    """Snapper-style rollback: a writable snapshot of NUMBER becomes the default subvolume."""
    from subvault.cli.render import emit_outcome
    from subvault.run.rollback import rollback as do_rollback

    with env.lock():
        return emit_outcome(do_rollback(env.context(dry_run=dry_run, quiet=as_json), subvolume, number, fstab=fstab), as_json)


# ---------------------------------------------------------------- demo


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the loop filesystems mounted for inspection.")
@click.option("--workdir", metavar="DIR", help="Where to put the sparse files (default: a temp dir).")
@_handle_errors
def demo(keep: bool, workdir: str | None) -> int:
    """Build throwaway loop filesystems in the homelab layout and run every layer on them."""
    from subvault.demo import run_demo

    return run_demo(keep=keep, workdir=workdir, say=click.echo)


# Command groups of the other layers join `cli` when imported (after it exists).
from subvault.cli import adopt_cmds, dr_cmds, offsite_cmds, prechange_cmds, replication_cmds, watch_cmds  # noqa: E402,F401


def main() -> None:
    cli(standalone_mode=True)


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: the layers' commands register
    # themselves on subvault.cli.main.cli.
    from subvault.cli.main import main as _main

    _main()
