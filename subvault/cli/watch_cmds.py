"""CLI commands of layer 5: `check`, `status`, `install-systemd`, `notify-failure`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from subvault import systemd
from subvault.cli.common import Env, dry_run_option, handle_errors, json_option, pass_env
from subvault.cli.render import emit_json, table
from subvault.config.schema import Config
from subvault.config.verify import exposure_warnings, notify_errors, notify_urls
from subvault.errors import ConfigError, UsageError
from subvault.notify.unit_failure import notify_unit_failure
from subvault.run.notified import notified
from subvault.run.watch import check as do_check
from subvault.run.watch import gather_rows, problem_counts, write_metrics
from subvault.timeutil import format_age, parse_duration
from subvault.units import human_size


@click.command()
@json_option
@click.option("--metrics-file", metavar="PATH", help="Write Prometheus metrics (node_exporter textfile collector).")
@pass_env
@handle_errors
def check(env: Env, as_json: bool, metrics_file: str | None) -> int:
    """Coverage, freshness, chains and space: exit 0 when all is well, 1 with one line per problem."""
    cfg = env.config
    warnings = _validate_notify(cfg, env.config_file)
    with notified("check", cfg, ping=False) as job:
        report = do_check(env.context(quiet=True))
        job.report(report.exit_code, [p.message for p in report.problems])
    if metrics_file:
        write_metrics(metrics_file, report.rows, env.context(quiet=True), problems=problem_counts(report))
    warnings += report.warnings + job.warnings
    if as_json:
        return emit_json("check", {"problems": report.problems, "warnings": warnings, "drill": report.drill or None}, report.exit_code)
    else:
        for p in report.problems:
            click.echo(f"{p.kind}: {p.message}")
        for w in warnings:
            click.echo(f"warning: {w}", err=True)
        if not report.problems:
            click.echo(f"ok: {len(cfg.subvolume)} subvolumes covered, every layer fresh")
        if report.drill:
            click.echo(report.drill)
    return report.exit_code


@click.command()
@json_option
@pass_env
@handle_errors
def status(env: Env, as_json: bool) -> int:
    """One table, subvolume x layer: age of the newest copy, count, size, next due, last error.

    "due" is when the next copy is due by the calendar period of the layer's policy
    (hourly: the next full hour after the newest), "now" when it is due already.
    """
    ctx = env.context(quiet=True)
    rows = gather_rows(ctx)
    if as_json:
        return emit_json("status", rows, 0)
    lines = []
    for r in rows:
        age = format_age(ctx.now - r.newest) if r.newest else "never"
        due = "now" if r.next_due and r.next_due <= ctx.now else (f"in {format_age(r.next_due - ctx.now)}" if r.next_due else "-")
        size = human_size(r.size) if r.size is not None else "-"
        lines.append([r.subvolume, r.layer, age, str(r.count), size, due, "yes, below" if r.error else ""])
    click.echo(table(lines, ["subvolume", "layer", "newest", "count", "size", "due", "error"]))
    for r in rows:  # whole, never cut: a cut error showed only a uuid fragment
        if r.error:
            click.echo(f"error: {r.subvolume} {r.layer}: {r.error}")
    return 0


@click.command("install-systemd")
@click.option("--uninstall", is_flag=True, help="Stop and remove the units subvault installed.")
@click.option("--dest", default="/etc/systemd/system", show_default=True, help="Unit directory.")
@click.option("--metrics-dir", metavar="DIR", help="node_exporter textfile directory for --metrics-file.")
@click.option("--run-timeout", default="1d", show_default=True, metavar="DURATION", help="Stop a `run` still going after this long (TimeoutStartSec=).")
@dry_run_option
@pass_env
@handle_errors
def install_systemd(env: Env, uninstall: bool, dest: str, metrics_dir: str | None, run_timeout: str, dry_run: bool) -> int:
    """Install the hourly `run` and daily `check` timers, each with OnFailure= notification."""
    if uninstall:
        if not dry_run:
            systemd.run_commands(systemd.deactivate_commands(), check=False)
        for path in systemd.uninstall(Path(dest), dry_run=dry_run):
            click.echo(f"{'would remove' if dry_run else 'removed'} {path}")
        if not dry_run:
            systemd.run_commands([["systemctl", "daemon-reload"]], check=False)
        return 0
    try:
        limit = parse_duration(run_timeout)
    except ValueError as exc:
        raise UsageError(f"--run-timeout: {exc}") from None
    if not limit:
        raise UsageError('--run-timeout: must be longer than zero (expected e.g. "1d")')
    _ = env.config  # timers for a config every run would refuse are refused now (exit 2), before anything is written
    exe = os.path.abspath(shutil.which("subvault") or sys.argv[0])
    written = systemd.install(Path(dest), exe, env.config_file, dry_run, metrics_dir, limit)
    for path, text in written:
        if dry_run:
            click.echo(f"# {path}\n{text}")
        else:
            click.echo(f"wrote {path}")
    if not dry_run:
        if not Path("/run/systemd/system").is_dir():
            click.echo("warning: systemd is not running here: the units are written but not enabled", err=True)
            return 0
        for warning in systemd.run_commands(systemd.activate_commands()):
            click.echo(f"warning: {warning}", err=True)
    return 0


@click.command("notify-failure", hidden=True)
@click.argument("unit")
@pass_env
@handle_errors
def notify_failure(env: Env, unit: str) -> int:
    """Send the failure of UNIT (used by subvault-notify@.service)."""
    cfg = env.config
    for warning in notify_unit_failure(unit, notify_urls(cfg), Path(cfg.defaults.state_dir)):
        click.echo(f"warning: {warning}", err=True)
    return 0


def _validate_notify(cfg: Config, name: str) -> list[str]:
    """Apprise checks each URL (a malformed one is a config error naming its key); return warnings about the file."""
    errors = notify_errors(cfg)
    if errors:
        raise ConfigError("\n".join(f"{name}: {e}" for e in errors))
    return exposure_warnings(cfg, name)
