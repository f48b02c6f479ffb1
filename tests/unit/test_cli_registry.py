"""The root group's table of commands (subvault.cli.main.COMMANDS) against the commands themselves."""

from __future__ import annotations

import pytest

from subvault.cli.main import COMMANDS, load_command


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_registered_summary_is_its_commands_help_summary(name):
    command = load_command(name)
    assert command.name == name
    assert command.hidden == (COMMANDS[name].summary is None)
    if COMMANDS[name].summary is not None:
        assert COMMANDS[name].summary == command.get_short_help_str(limit=10_000)
