"""The root group's table of commands (subvault.cli.main.COMMANDS) against the commands themselves."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

import subvault
from subvault.cli.main import COMMANDS, load_command
from subvault.demo.testbed_ssh import serve_command


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_registered_summary_is_its_commands_help_summary(name):
    command = load_command(name)
    assert command.name == name
    assert command.hidden == (COMMANDS[name].summary is None)
    if COMMANDS[name].summary is not None:
        assert COMMANDS[name].summary == command.get_short_help_str(limit=10_000)


def test_the_tests_forced_command_is_the_installed_subvault_serve():
    argv = shlex.split(serve_command(Path("/srv/backup"), "--append-only"))
    assert argv[:4] == [str(Path(sys.executable).parent / "subvault"), "serve", "--root", "/srv/backup"]


def test_no_command_module_is_an_entry_point_of_its_own():
    """Users run the console script; only cli/main.py (`python -m subvault.cli.main`) and
    dr/isolate.py (which restore runs under unshare) are started as modules."""
    package = Path(subvault.__file__).parent
    entry_points = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if '__name__ == "__main__"' in p.read_text())
    assert entry_points == ["cli/main.py", "dr/isolate.py"]
