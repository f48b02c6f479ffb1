"""Which command lines the program hands to snap-all's fast start (cli/entry.py); all others are the full CLI's."""

from __future__ import annotations

import pytest

from subvault.cli.entry import fast_snap_all


@pytest.mark.parametrize("argv, expected", [
    (["snap-all", "before upgrade"], (None, "before upgrade")),
    (["--config", "/etc/x.toml", "snap-all", "d"], ("/etc/x.toml", "d")),
    (["--config=/etc/x.toml", "snap-all", "d"], ("/etc/x.toml", "d")),
])
def test_the_one_command_line_it_serves(argv, expected):
    assert fast_snap_all(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["snap-all"], ["snapshot", "d"], ["snap-all", "d", "e"], ["snap-all", "--json", "d"], ["snap-all", "d", "--json"],
    ["snap-all", "--dry-run", "d"], ["snap-all", "--help"], ["snap-all", "--", "-d"], ["snap-all", "-d"],
    ["--config"], ["--config", "snap-all", "d"], ["--config", "", "snap-all", "d"], ["--config=", "snap-all", "d"],
    ["--config", "--json", "snap-all", "d"], ["-v", "snap-all", "d"], ["--wait", "5", "snap-all", "d"],
    ["--config", "a", "--config", "b", "snap-all", "d"], ["--json", "snap-all", "d"], ["--config", " ", "snap-all", "d"],
    ["--config=  ", "snap-all", "d"],
])
def test_everything_else_is_the_full_clis(argv):
    assert fast_snap_all(argv) is None
