"""The `subvault` command line: the root group and the one table of its commands.

Each command lives in a `*_cmds.py` module that imports what it needs at its top and
shares `Env`, the error boundary and the options from `cli.common`. This module
imports only click: it registers every command by name, module and one-line summary,
and loads a command's module only when that command runs (or its own --help is
asked for). So `subvault --help` lists the commands without importing any of them,
and `subvault snap-all` imports what snap-all needs and nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import click

from subvault.cli.usage import OneLineUsage, path_given, refuse_repeats


class Entry(NamedTuple):
    module: str  # under subvault.cli
    attribute: str
    summary: str | None  # the command's --help summary line; None: hidden


# Every command, by the name typed. A test checks each summary against its command's help.
COMMANDS: dict[str, Entry] = {
    "adopt": Entry("adopt_cmds", "adopt", "Read snapper and btrbk, write the equivalent subvault.toml, and (with --apply) take over their history."),
    "check": Entry("watch_cmds", "check", "Coverage, freshness, chains and space: exit 0 when all is well, 1 with one line per problem."),
    "config": Entry("config_cmds", "config_group", "Validate the config or print a commented sample."),
    "demo": Entry("demo_cmds", "demo", "Build throwaway loop filesystems in the homelab layout and run every layer on them."),
    "diff": Entry("recovery_cmds", "diff", "List the paths changed between snapshots OLD and NEW (numbers, or 'current')."),
    "dr": Entry("dr_cmds", "dr_group", "Disaster recovery: capture the machine's layout, restore it onto a blank disk."),
    "drill": Entry("dr_cmds", "drill_cmd", "Restore everything into a scratch disk image, verify it, report RTO and RPO."),
    "init": Entry("config_cmds", "init", "Scan the btrfs filesystems (or only those holding PATHs) and write a starter config covering every subvolume."),
    "install-systemd": Entry("watch_cmds", "install_systemd", "Install the hourly `run` and daily `check` timers, each with OnFailure= notification."),
    "list": Entry("list_cmds", "list_cmd", "List snapshots per subvolume (subvault's and snapper's) and the targets holding each."),
    "notify-failure": Entry("watch_cmds", "notify_failure", None),
    "offsite": Entry("offsite_cmds", "offsite", "Upload age-encrypted, compressed send streams to object targets; delete what no kept chain needs."),
    "pre-change": Entry("prechange_cmds", "pre_change", "Suspend Flux, run quiesce hooks, snapshot everything, run post hooks, run COMMAND, resume Flux."),
    "prune": Entry("prune_cmds", "prune", "Delete snapshots the retention policies no longer keep."),
    "prune-received": Entry("serve_cmds", "prune_received_cmd", "Prune what an append-only target received, on the target host itself (no config needed)."),
    "pull": Entry("replication_cmds", "pull", "Pull snapshots from [[source]] hosts (their key allows only `serve --send-only`)."),
    "pulled": Entry("serve_cmds", "pulled", None),
    "replicate": Entry("replication_cmds", "replicate", "Send timeline snapshots to btrfs targets (incremental), then prune the targets by their keep."),
    "restore": Entry("recovery_cmds", "restore", "Copy files back from a snapshot, keeping owner, mode, times, xattrs and ACLs."),
    "rollback": Entry("recovery_cmds", "rollback", "Snapper-style rollback: a writable snapshot of NUMBER becomes the default subvolume."),
    "run": Entry("run_cmds", "run", "Do what is due, in order; the one timer job."),
    "serve": Entry("serve_cmds", "serve", "Restricted endpoint for an authorized_keys forced command; reads SSH_ORIGINAL_COMMAND."),
    "snap-all": Entry("local_cmds", "snap_all", "Snapshot every subvolume now with DESCRIPTION (kept by count, prechange_keep)."),
    "snapshot": Entry("local_cmds", "snapshot", "Take a timeline snapshot of each subvolume that is due."),
    "snapshots": Entry("serve_cmds", "snapshots", None),
    "status": Entry("watch_cmds", "status", "One table, subvolume x layer: age of the newest copy, count, size, next due, last error."),
    "verify": Entry("offsite_cmds", "verify", "Check that every offsite object is present with its hash and every chain is whole."),
}


def load_command(name: str) -> click.Command:
    """Import the module of command `name` and return its click command."""
    entry = COMMANDS[name]
    command = getattr(importlib.import_module(f"subvault.cli.{entry.module}"), entry.attribute)
    assert isinstance(command, click.Command), f"{entry} is not a click command"
    return command


class Registry(click.Group):
    """The root group: commands come from COMMANDS, each module imported when its command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    # A command line click refuses is one line naming the problem and the --help to read
    # (exit 2), and under --json also the JSON error document; --help itself is click's.
    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:
        argv = list(args)
        try:
            refuse_repeats(self, info_name, argv, parent)
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except (OneLineUsage, click.exceptions.NoArgsIsHelpError):  # a bare group prints its help, as click does
            raise
        except click.UsageError as exc:
            raise OneLineUsage(exc, argv, None, load_command) from None
        ctx.meta["subvault.argv"] = argv
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (OneLineUsage, click.exceptions.NoArgsIsHelpError):  # a bare group prints its help, as click does
            raise
        except click.UsageError as exc:
            raise OneLineUsage(exc, ctx.meta.get("subvault.argv", []), ctx, load_command) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands from their registered summaries (no command module is imported)."""
        shown = [(name, e.summary) for name, e in sorted(COMMANDS.items()) if e.summary is not None]
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        with formatter.section("Commands"):
            # A bare command carrying the summary shortens it exactly as click shortens a loaded one.
            formatter.write_dl([(name, click.Command(name, help=summary).get_short_help_str(limit)) for name, summary in shown])


def _finite(seconds: float) -> float:
    if seconds != seconds:  # NaN passes every range check
        raise click.BadParameter("not a number of seconds (expected e.g. 60)")
    return seconds


@click.group(cls=Registry, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", callback=path_given, help="Config file (default $SUBVAULT_CONFIG or /etc/subvault/subvault.toml).")
@click.option("--wait", type=click.FloatRange(0, 7 * 86400), default=0.0, callback=lambda _c, _p, v: _finite(v), metavar="SECONDS", help="Wait this long for another subvault run to finish.")
@click.option("-v", "--verbose", is_flag=True, help="Log every command subvault runs.")
@click.version_option(package_name="subvault")
def cli(config_path: str | None, wait: float, verbose: bool) -> None:
    """subvault: layered backup for Btrfs servers.

    Exit codes: 0 ok, 1 failed, 2 usage or config error, 3 partial (some subvolume or
    target failed, the rest done).
    """
    # The command's own boundary (cli.common.handle_errors) reads these options: it sets
    # up logging and builds the Env, so that nothing is imported here.


def main() -> None:
    cli(standalone_mode=True)


if __name__ == "__main__":
    main()
