"""Output a person reads, and JSON a program reads: rendering rules, the README and --help against the code."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import CliRunner

from subvault.cli.main import cli
from subvault.cli.render import emit_outcome, table
from subvault.plan.cadence import due
from subvault.plan.retention import parse_policy
from subvault.results import Item, Outcome, envelope
from subvault.run.job import STEPS
from subvault.units import human_size

README = Path(__file__).resolve().parents[2] / "README.md"


def test_sizes_are_human_in_text():
    assert human_size(8398071) == "8.0 MiB"
    assert human_size(512) == "512 B"
    assert human_size(3 << 30) == "3.0 GiB"


def test_json_keeps_exact_numbers_and_durations_are_seconds():
    doc = envelope("status", {"bytes": 8398071, "cadence": timedelta(hours=1), "at": datetime(2026, 11, 20, tzinfo=UTC)}, 0)
    assert json.loads(json.dumps(doc))["result"] == {"bytes": 8398071, "cadence": 3600, "at": "2026-11-20T00:00:00+00:00"}


def test_columns_stay_aligned_with_long_names(capsys):
    out = Outcome("offsite", dry_run=True)
    out.items += [Item("root→pi", "up-to-date"), Item("var_lib_microshift→offsite", "would-upload", "#3 (full)"), Item("home→pi", "sent", "x")]
    emit_outcome(out, as_json=False)
    lines = [line.removeprefix("[dry-run] ") for line in capsys.readouterr().out.splitlines()]
    assert len({re.match(r"\S+ +", line).end() for line in lines}) == 1, lines


def test_a_line_break_in_a_cell_does_not_break_the_table():
    text = table([["1", "before\nupgrade\x1b[31m"], ["2", "plain"]], ["#", "description"])
    assert text.splitlines() == ["#  description", "1  before\\nupgrade\\x1b[31m", "2  plain"]


@pytest.mark.parametrize("policy,newest,expected", [
    ("24h 7d", datetime(2026, 11, 20, 10, 59), datetime(2026, 11, 20, 11, 0)),
    ("7d 4w", datetime(2026, 11, 20, 23, 30), datetime(2026, 11, 21, 0, 0)),
    ("4w", datetime(2026, 11, 20, 12, 0), datetime(2026, 11, 22, 0, 0)),  # weeks start on Sunday
    ("6m", datetime(2026, 12, 31, 12, 0), datetime(2027, 1, 1, 0, 0)),
])
def test_status_due_follows_the_calendar_period_not_newest_plus_cadence(policy, newest, expected):
    tz = ZoneInfo("Europe/Berlin")
    newest, expected = newest.replace(tzinfo=tz), expected.replace(tzinfo=tz)
    got = due(newest, parse_policy(policy), newest, tz).next_at
    assert got == expected
    assert due(newest, parse_policy(policy), got, tz).is_due and not due(newest, parse_policy(policy), got - timedelta(seconds=1), tz).is_due


def test_due_now_without_a_snapshot():
    now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert due(None, parse_policy("24h"), now, UTC).next_at == now


def _commands(group: click.Group, prefix: str = ""):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the root loads each command's module when asked for it
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def _readme_rows() -> list[tuple[str, str]]:
    rows = []
    for line in README.read_text().splitlines():
        m = re.match(r"^\| (`.+`) \| (.+) \|$", line)
        if m:
            rows.append((m.group(1), m.group(2)))
    return rows


def test_readme_command_table_matches_the_code():
    commands = dict(_commands(cli))
    documented = set()
    for usage_cell, _ in _readme_rows():
        for usage in re.findall(r"`([^`]+)`", usage_cell):
            words = usage.replace("\\|", "|").split()
            name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
            assert name in commands, f"README documents `{usage}`, but there is no command {name!r}"
            documented.add(name)
            options = {o for p in commands[name].params for o in getattr(p, "opts", [])}
            for opt in re.findall(r"--[a-z][a-z-]*", usage):
                assert opt in options, f"README: `{usage}`: {name} has no {opt}"
    assert set(commands) - documented == set(), "commands missing from the README table"


def test_run_help_and_readme_list_everything_run_does():
    help_text = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    readme_run = next(what for usage, what in _readme_rows() if usage == "`run`")
    for step in STEPS:
        word = step.split()[0] if not step.startswith("dr ") else "dr capture"
        assert word in help_text, f"run --help does not say it does {step}"
        assert word in readme_run or (word == "snapshot" and "snapshots" in readme_run), f"README's run row does not say {step}"


def test_hook_timeout_default_is_one_number_everywhere():
    from subvault.config.sample import render_sample
    from subvault.config.schema import HookConf
    from subvault.k8s.velero import DEFAULT_TIMEOUT as POD_DEFAULT

    DEFAULT_TIMEOUT = HookConf(when="pre-snapshot", run=["true"]).timeout
    assert DEFAULT_TIMEOUT == POD_DEFAULT
    docs = (README.parent / "docs" / "prechange.md").read_text()
    assert f"default {DEFAULT_TIMEOUT:g})" in docs
    sample = render_sample()
    hook_lines = [line for line in sample.splitlines() if "timeout" in line and "hook" in sample]
    assert not any(re.search(r"timeout = 60\b", line) for line in hook_lines), hook_lines
