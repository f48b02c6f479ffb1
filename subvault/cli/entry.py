"""The `subvault` program: snap-all's fast start when it serves the command line, else the full CLI.

This module imports nothing: reading argv decides which of the two is loaded.
"""

from __future__ import annotations

import sys


def fast_snap_all(argv: list[str]) -> tuple[str | None, str] | None:
    """(--config value or None, DESCRIPTION) when argv is exactly `[--config PATH] snap-all DESCRIPTION`.

    Anything else (another option, `--`, a value that looks like an option) is the full CLI's.
    """
    config: str | None = None
    if argv[:1] == ["--config"] and len(argv) >= 2:
        config, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--config="):
        config, argv = argv[0].removeprefix("--config="), argv[1:]
    if config is not None and (not config.strip() or config.startswith("-")):  # refused by click (cli/usage.path_given)
        return None
    if len(argv) != 2 or argv[0] != "snap-all" or argv[1].startswith("-"):
        return None
    return config, argv[1]


def main() -> None:
    fast = fast_snap_all(sys.argv[1:])
    if fast is not None:
        from subvault.cli import fast as fast_start  # the command boundary: this command line's lean path

        code = fast_start.snap_all(*fast)
        if code is not None:
            sys.exit(code)
    from subvault.cli.main import main as full_cli  # the command boundary: click, the schema, the commands

    full_cli()
