"""A command line click refuses (unknown option or command, missing argument, bad choice)
is one line on stderr that names the problem and the `--help` to read, exit 2; with
`--json` anywhere on the line, a JSON error document on stdout too. `--help` is unchanged.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from subvault.cli import render
from subvault.cli.main import cli


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch):
    # one JSON document per process: each invocation here stands for a process of its own
    monkeypatch.setattr(render, "_json_printed", False)


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="subvault")


@pytest.mark.parametrize(("args", "names", "helps"), [
    (["status", "--bogus"], "--bogus", "subvault status --help"),
    (["stauts"], "stauts", "subvault --help"),
    (["list", "a", "b"], "b", "subvault list --help"),
    (["run", "--metrics-file"], "--metrics-file", "subvault run --help"),
    (["snap-all"], "DESCRIPTION", "subvault snap-all --help"),
    (["dr", "nope"], "nope", "subvault dr --help"),
    (["config", "check", "--x"], "--x", "subvault config check --help"),
    (["--wait", "x", "status"], "--wait", "subvault --help"),
    (["--bogus"], "--bogus", "subvault --help"),
])
def test_a_usage_error_is_one_line_naming_the_problem_and_the_help(args, names, helps):
    res = _run(*args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and names in lines[0] and f"`{helps}`" in lines[0], lines[0]
    assert res.stdout == ""


def test_a_bad_choice_names_the_choices():
    res = _run("pre-change", "--flux", "maybe")
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert "maybe" in line and "`subvault pre-change --help`" in line


@pytest.mark.parametrize("args", [
    ["status", "--json", "--bogus"],
    ["--json", "status"],
    ["status", "--bogus", "--json"],
    ["list", "--json", "a", "b"],
    ["stauts", "--json"],
])
def test_a_usage_error_under_json_is_a_json_error_document(args):
    res = _run(*args)
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 2 and doc["error"] == res.stderr.strip().removeprefix("error: ")
    assert "version" in doc and "command" in doc


def test_json_after_double_dash_belongs_to_the_wrapped_command():
    res = _run("pre-change", "--bogus", "--", "tool", "--json")
    assert res.exit_code == 2 and res.stdout == ""


def test_help_is_unchanged():
    res = _run("status", "--help")
    assert res.exit_code == 0 and res.stdout.startswith("Usage: subvault status [OPTIONS]") and res.stderr == ""
    assert _run("--help").stdout.startswith("Usage: subvault [OPTIONS] COMMAND [ARGS]...")


def test_an_empty_config_option_is_refused():
    for args in (["--config", "", "status"], ["--config=", "config", "check", "--json"]):
        res = _run(*args)
        assert res.exit_code == 2, res.output
        (line,) = res.stderr.strip().splitlines()
        assert "--config" in line and "empty" in line, line
        render._json_printed = False
    assert json.loads(_run("--config=", "config", "check", "--json").stdout)["exit_code"] == 2


@pytest.mark.parametrize(("args", "option"), [
    (["replicate", "--target", "pi", "--target", "offsite"], "--target"),  # once replicated only "offsite"
    (["--config", "/a.toml", "--config", "/b.toml", "status"], "--config"),
    (["restore", "root", "--from", "pi", "--from=local"], "--from"),
])
def test_a_single_value_option_given_twice_is_refused(args, option):
    res = _run(*args)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert option in line and "more than once" in line, line


def test_a_flag_given_twice_is_fine():
    res = _run("--config", "/nonexistent.toml", "status", "--json", "--json")
    assert res.exit_code == 2 and "no such config file" in res.stderr


def test_a_command_option_given_before_the_command_says_where_it_goes():
    res = _run("--json", "status")
    (line,) = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and "--version" not in line, line  # click guessed "Did you mean '--version'?"
    assert "`subvault status --json`" in line, line
    assert json.loads(res.stdout)["exit_code"] == 2


def test_a_misplaced_option_after_the_config_option_still_says_where_it_goes():
    (line,) = _run("--config", "/x.toml", "--dry-run", "prune").stderr.strip().splitlines()
    assert "`subvault prune --dry-run`" in line, line


@pytest.mark.parametrize("args", [["list", "x\ny"], ["replicate", "--target", "x\ny"], ["restore", "a", "--at", "1\n2"]])
def test_a_typed_value_with_a_newline_is_one_escaped_line(tmp_path, args):
    config = tmp_path / "subvault.toml"
    config.write_text(f'[defaults]\nstate_dir = "{tmp_path}/st"\n[[subvolume]]\nname = "a"\npath = "{tmp_path}/a"\n')
    res = _run("--config", str(config), *args, "--json") if args[0] == "replicate" else _run("--config", str(config), *args)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert "\\n" in line, line
    if args[0] == "replicate":
        assert "\\n" in json.loads(res.stdout)["error"]


@pytest.mark.parametrize("args", [[], ["dr"], ["config"]])
def test_a_bare_group_still_prints_its_help(args):
    res = _run(*args)
    shown = res.stdout + res.stderr
    assert shown.startswith(f"Usage: {' '.join(['subvault', *args])} [OPTIONS] COMMAND [ARGS]..."), shown
    assert "Commands:" in shown and "error:" not in shown
