"""snap-all's fast start: `subvault [--config PATH] snap-all DESCRIPTION` without click or msgspec.

snap-all runs before every GitOps change, and its start-up is measured against the
tool it replaces (8 `snapper create`, bench/bench_local.py); importing click and the
schema alone costs more than snapper does. So `cli/entry.py` hands this one command
line here, and this module serves it only when every condition below holds. In every
other case it declines (returns None) before changing anything, and the full CLI runs
the command.
- run as root, libbtrfsutil present, DESCRIPTION one info.xml can hold;
- the compiled config matches the config file (config/compiled.py says when);
- under the lock, every subvolume is ready: it and its `.snapshots` subvolume (or
  mount) exist, and no snapshot under it is half-done.
Then it takes the lock the full CLI takes, writes in the order `btrfs/numbered.py`
states, and prints what the full CLI prints, with the same exit code (a test runs both
on the same machine and compares).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

from subvault.btrfs import libbtrfsutil
from subvault.btrfs.numbered import Request, create_in
from subvault.btrfs.snapdir import PENDING, description_problem, numbered_dirs, snapshots_dir
from subvault.btrfs.syscalls import is_subvolume
from subvault.cli.textout import outcome_rows, printable, settle_stdout, write_line
from subvault.config import compiled
from subvault.config.location import config_path
from subvault.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, LockHeld, SubvaultError, about, describe
from subvault.lock import exclusive


def snap_all(config_arg: str | None, description: str) -> int | None:
    """Run snap-all and return its exit code, or None to let the full CLI run it."""
    if os.geteuid() != 0 or description_problem(description) or not libbtrfsutil.available():
        return None
    saved = compiled.load(os.path.realpath(config_path(config_arg)))
    if saved is None or not saved.subvolumes:
        return None
    started = False
    try:
        with exclusive(saved.state_dir):
            if not all(_ready(path) for _, path in saved.subvolumes):
                return None
            started = True
            requests = [Request(name, path, "prechange", description) for name, path in saved.subvolumes]
            made = create_in(requests, datetime.now(UTC).replace(microsecond=0), libbtrfsutil.snapshot_many)
    except LockHeld as exc:
        return _error(printable(str(exc)), exc.exit_code)
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the full CLI's boundary, as cli/common.handle_errors words it
        if not started:
            return None  # nothing changed: the full CLI runs the command and reports what it meets
        if isinstance(exc, SubvaultError):
            return _error(printable(str(exc)), exc.exit_code)
        return _error(f"snap-all: {describe(exc)}", EXIT_FAILED)
    return _report(saved.subvolumes, made, description)


def _ready(sub_path: str) -> bool:
    """The subvolume and its `.snapshots` exist, and nothing under it is half-done (the full
    CLI creates the one and finishes the other)."""
    sdir = snapshots_dir(sub_path)
    if not is_subvolume(sub_path) or os.path.islink(sdir) or not (is_subvolume(sdir) or os.path.ismount(sdir)):
        return False
    return not any(os.path.lexists(os.path.join(sdir, str(num), PENDING)) for num in numbered_dirs(sdir))


def _report(subvolumes: list[tuple[str, str]], made: list[str | SubvaultError], description: str) -> int:
    """Print as `cli/render.emit_outcome` prints snap-all's outcome; return its exit code."""
    rows: list[tuple[str, str, str]] = []
    errors: list[str] = []
    try:
        progress = sys.stderr is not None and sys.stderr.isatty()
        for (name, _), got in zip(subvolumes, made, strict=True):
            if isinstance(got, SubvaultError):
                errors.append(about(name, describe(got)))
                continue
            if progress:
                write_line(f"{name}: created #{int(os.path.basename(got))} {description!r}", err=True)
            rows.append((name, "created", os.path.join(got, "snapshot")))
        if rows:
            write_line(outcome_rows(rows))
        for error in errors:
            write_line(f"error: {printable(error)}", err=True)
    except (OSError, UnicodeError) as exc:  # stdout or stderr cannot take it: what the full CLI's boundary says
        settle_stdout()
        return _error(f"snap-all: {describe(exc)}", EXIT_FAILED)
    if not errors:
        return EXIT_OK
    return EXIT_PARTIAL if rows else EXIT_FAILED


def _error(message: str, code: int) -> int:
    try:
        write_line(f"error: {message}", err=True)
    except (OSError, UnicodeError):
        pass  # nowhere left to say it: the exit code does
    return code
