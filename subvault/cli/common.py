"""What every command module shares: `Env` (config and context), the error boundary, the shared options.

Command modules import from here, never from `subvault.cli.main` (which loads them by name).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import click

from subvault.cli.render import emit_json_error, emit_outcome
from subvault.cli.textout import printable, settle_stdout
from subvault.config import compiled
from subvault.config.load import parse_config, read_config
from subvault.config.location import config_path
from subvault.config.schema import Config
from subvault.context import Context
from subvault.errors import EXIT_FAILED, ConfigError, SubvaultError, describe
from subvault.lock import exclusive
from subvault.results import Outcome
from subvault.secrets import RedactingFormatter, redact


def handle_errors(fn: Callable[..., int | None]) -> Callable[..., None]:
    """The CLI boundary: no traceback is ever a command's output.

    A SubvaultError prints its one-line message and exits with its code; any other
    exception (a bug, or the system refusing: a read-only disk, a file where a
    directory was expected) prints one line naming the command and what failed, and
    exits 1 (`-v` adds the traceback to the log). Under `--json` the same error is
    also a versioned JSON document on stdout, so `--json` always prints JSON.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        as_json = bool(kwargs.get("as_json"))
        setup_logging(bool(_root_params().get("verbose")))
        try:
            code = fn(*args, **kwargs)
            if sys.stdout is not None:
                sys.stdout.flush()  # output that cannot be written is this command's error, not Python's exit 120
        except SubvaultError as exc:
            # One error is one line: a value typed with a newline in it is shown escaped.
            # A ConfigError lists every problem of the file, one a line.
            fail(str(exc) if isinstance(exc, ConfigError) else printable(str(exc)), exc.exit_code, as_json)
        except KeyboardInterrupt:
            fail("interrupted", 130, as_json)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary: anything else is one line, exit 1
            logging.getLogger("subvault").debug("unexpected error", exc_info=True)
            fail(f"{command_name()}: {describe(exc)}", EXIT_FAILED, as_json)
        sys.exit(code or 0)

    return wrapper


def _root_params() -> dict[str, Any]:
    """The root group's options (--config, --wait, -v); empty when a command is invoked alone (tests)."""
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().params if ctx is not None else {}


def setup_logging(verbose: bool) -> None:
    """Log warnings (with -v, every command run); every line logged, ours or a library's, is redacted."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter("%(name)s: %(message)s"))
    if verbose:
        # Libraries' debug logs carry request headers and URLs (credentials, tokens): only
        # their warnings reach the log, and those are redacted like ours.
        for name in ("botocore", "boto3", "urllib3", "s3transfer", "apprise", "httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


def command_name() -> str:
    """The command as typed, without the program name: `dr restore`."""
    ctx = click.get_current_context(silent=True)
    names = []
    while ctx is not None and ctx.parent is not None:  # the root's name is however subvault was started
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names)) or "subvault"


def fail(message: str, code: int, as_json: bool) -> None:
    """Print message as `error:` lines (secrets redacted), the JSON error document under --json, and exit with code."""
    lines = [redact(line) for line in message.splitlines() if line.strip()] or ["failed"]
    for line in lines:
        click.echo(f"error: {line}", err=True)
    if as_json:
        emit_json_error(command_name(), "; ".join(lines), code)
    settle_stdout()
    sys.exit(code)


class Env:
    """Lazily loaded config and context shared by the commands."""

    def __init__(self, config_path: str | None, wait: float) -> None:
        self.config_path = config_path
        self.wait = wait
        self._config: Config | None = None
        self._text = ""

    @property
    def config_file(self) -> str:
        """The config's real path, as errors and warnings name it."""
        return os.path.realpath(config_path(self.config_path))

    @property
    def config(self) -> Config:
        if self._config is None:
            self._text, name = read_config(config_path(self.config_path))
            self._config = parse_config(self._text, name=name)
        return self._config

    def context(self, *, dry_run: bool = False, quiet: bool = False) -> Context:
        # Progress lines go to a terminal only; under systemd or in a pipe the result says it all.
        tty = sys.stderr is not None and sys.stderr.isatty()  # stderr closed (2>&-): None
        say = (lambda line: None) if quiet or not tty else (lambda line: click.echo(line, err=True))
        return Context(self.config, dry_run=dry_run, say=say)

    def save_compiled(self) -> None:
        """Save the compiled config snap-all's fast start reads (config/compiled.py); as root only.

        It is a cache: when it cannot be written, the next snap-all takes the full path.
        """
        if os.geteuid() != 0:
            return
        config = self.config
        subvolumes = [(sub.name, sub.path) for sub in config.subvolume]
        if any(str(Path(path)) != path for _, path in subvolumes):
            return  # the fast start prints a path as typed; the full CLI, as pathlib spells it
        try:
            compiled.save(self.config_file, self._text, compiled.Compiled(str(config.defaults.state_dir), subvolumes))
        except OSError as exc:
            logging.getLogger("subvault").debug("compiled config not saved: %s", describe(exc))

    def lock(self) -> AbstractContextManager[object]:
        """The one-subvault-at-a-time lock; a dry run takes none (it writes nothing, not even the lock file)."""
        current = click.get_current_context(silent=True)
        if current is not None and current.params.get("dry_run"):
            return nullcontext()
        return exclusive(self.config.defaults.state_dir, wait=self.wait)

    def locked(self, action: Callable[..., Outcome], *args: Any, dry_run: bool, as_json: bool, verbose: bool = False,
               **kwargs: Any) -> int:
        """Run `action(context, *args, **kwargs)` under the lock, print its outcome; return the exit code."""
        with self.lock():
            if not dry_run:
                self.save_compiled()
            outcome = action(self.context(dry_run=dry_run, quiet=as_json), *args, **kwargs)
        return emit_outcome(outcome, as_json, verbose=verbose)


def pass_env(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the command's Env (made once per invocation from the root options) as its first argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        root = click.get_current_context().find_root()
        if not isinstance(root.obj, Env):
            root.obj = Env(root.params.get("config_path"), root.params.get("wait") or 0.0)
        return fn(root.obj, *args, **kwargs)

    return wrapper


json_option = click.option("--json", "as_json", is_flag=True, help="Print versioned JSON.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")


def changing_command(fn: Callable[..., int | None]) -> Callable[..., None]:
    """The options and boundary of a command that changes things: --dry-run, --json, the Env, handle_errors."""
    return dry_run_option(json_option(pass_env(handle_errors(fn))))
