"""Usage errors (what click refuses on the command line) as one line, exit 2.

`error: <what> (see `subvault <cmd> --help`)` on stderr, and with `--json` anywhere
before `--` the JSON error document on stdout too. `--help` is click's own. An option
that takes one value given twice is refused here too (click keeps the last).
Imports only click until an error is shown: `subvault --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


class OneLineUsage(click.UsageError):
    """A usage error shown as one line: `error: <what> (see `subvault <cmd> --help`)`."""

    def __init__(self, exc: click.UsageError, argv: list[str], root: click.Context | None,
                 load_command: Callable[[str], click.Command]) -> None:
        super().__init__(exc.format_message(), exc.ctx)
        words = _command_words(exc.ctx) or ([root.invoked_subcommand] if root is not None and root.invoked_subcommand else [])
        self.command = " ".join(words)
        what = "; ".join(line.strip() for line in self.message.splitlines() if line.strip()).rstrip(".")
        what = (_misplaced(exc, argv, load_command) if not words else None) or what
        self.line = f"{what[:1].lower()}{what[1:]} (see `{' '.join(['subvault', *words, '--help'])}`)"
        options = argv[: argv.index("--")] if "--" in argv else argv
        self.as_json = "--json" in options

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.line}", err=True)
        if self.as_json:
            from subvault.cli.render import emit_json_error

            emit_json_error(self.command or "subvault", self.line, self.exit_code)


def _misplaced(exc: click.UsageError, argv: list[str], load_command: Callable[[str], click.Command]) -> str | None:
    """Where an unknown root option belongs (`subvault --json status`), or None."""
    if not isinstance(exc, click.NoSuchOption):
        return None
    for name in argv:
        try:
            command = load_command(name)
        except KeyError:  # an option's value, or not a command
            continue
        if not any(exc.option_name in p.opts for p in command.params):
            return None
        return f"option '{exc.option_name}' goes after the command: `subvault {name} {exc.option_name}`"
    return None


def _command_words(ctx: click.Context | None) -> list[str]:
    """The command's words as typed, without the program's name: ["dr", "restore"]."""
    words = []
    while ctx is not None and ctx.parent is not None:
        words.append(ctx.info_name or "")
        ctx = ctx.parent
    return words[::-1]


def refuse_repeats(command: click.Command, name: str | None, args: list[str], parent: click.Context | None) -> None:
    """Refuse an option that takes one value given twice: click keeps the last, so
    `--target pi --target offsite` would quietly do only "offsite". Then the subcommand's."""
    ctx = click.Context(command, info_name=name, parent=parent, resilient_parsing=True)
    try:
        _, rest, order = command.make_parser(ctx).parse_args(list(args))
    except click.UsageError:
        return  # the real parse reports it
    single = [p for p in order if isinstance(p, click.Option) and not (p.multiple or p.count or p.is_flag)]
    for param in single:
        if single.count(param) > 1:
            raise click.UsageError(f"option '{'/'.join(param.opts)}' is given more than once (it takes one value: give it once)", ctx=ctx)
    if isinstance(command, click.Group) and rest and rest[0] != "--":
        sub = command.get_command(ctx, rest[0])
        if sub is not None:
            refuse_repeats(sub, rest[0], rest[1:], ctx)


def path_given(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("the path is empty (expected the config file, e.g. /etc/subvault/subvault.toml)")
    return value
