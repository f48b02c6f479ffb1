"""The drill's boot options are checked before any work starts (issue 17).

A value that cannot work (a regex that does not compile, a port that is no port, an empty
command, a probe without a boot) is a usage error, exit 2, one line naming the option or
the [dr] key and what to do; nothing is restored, locked or recorded first.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from subvault.cli.main import cli
from subvault.config.load import validate

BASE = """
[defaults]
state_dir = "{state}"

[[subvolume]]
name = "root"
path = "/"

[[target]]
name = "pi"
type = "btrfs"
url = "{target}"
keep = "all"
"""


def _config(tmp_path, dr: str = "") -> str:
    path = tmp_path / "subvault.toml"
    path.write_text(BASE.format(state=tmp_path / "state", target=tmp_path / "nowhere") + (f"\n[dr]\n{dr}\n" if dr else ""))
    return str(path)


def _drill(tmp_path, *args: str, dr: str = ""):
    return CliRunner().invoke(cli, ["--config", _config(tmp_path, dr), "drill", "--from", "pi", *args])


@pytest.mark.parametrize("args, names", [
    (["--boot", "--boot-command", "cat /etc/hostname", "--boot-expect", "(vps1"], "--boot-expect"),
    (["--boot", "--boot-command", "   "], "--boot-command"),
    (["--boot", "--boot-expect", "vps1"], "--boot-expect"),  # nothing to match: no command anywhere
    (["--no-boot", "--boot-port", "22"], "--boot-port"),
    (["--boot-command", "true"], "--boot-command"),  # [dr] boot is off and --boot was not given
    (["--no-boot", "--boot-timeout", "60"], "--boot-timeout"),
], ids=["expect-not-a-regex", "command-empty", "expect-without-command", "port-without-boot", "command-without-boot", "timeout-without-boot"])
def test_a_boot_option_that_cannot_work_is_refused_before_the_drill_starts(tmp_path, args, names):
    res = _drill(tmp_path, *args)
    err = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(err) == 1 and err[0].startswith(f"error: {names}:"), res.output
    assert "does not exist" not in res.output  # refused before the target was even looked at
    assert not (tmp_path / "state").exists()  # no lock taken, no drill recorded


def test_the_refusal_names_what_to_do(tmp_path):
    assert "add --boot" in _drill(tmp_path, "--boot-port", "22").output
    assert "--boot-command" in _drill(tmp_path, "--boot", "--boot-expect", "x").output.split(":", 2)[2]


def test_a_config_command_makes_a_lone_boot_expect_valid(tmp_path):
    res = _drill(tmp_path, "--boot-expect", "vps1", dr='boot = true\nboot_command = "cat /etc/hostname"')
    assert res.exit_code != 2 or "--boot-expect" not in res.output, res.output  # passes the option check; fails later on the target


def test_the_api_checks_the_same_values_before_any_work(tmp_path):
    from subvault.config.load import parse_config
    from subvault.context import Context
    from subvault.dr.drill import DrillRequest, drill
    from subvault.errors import UsageError

    config = parse_config(open(_config(tmp_path)).read())
    with pytest.raises(UsageError, match=r"^--boot-timeout: "):
        drill(Context(config), DrillRequest("pi", boot=True, boot_timeout=0))
    with pytest.raises(UsageError, match=r"^--boot-port: 70000 "):
        drill(Context(config), DrillRequest("pi", boot=True, boot_ports=(70000,)))
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("dr, key", [
    ("boot_ports = [0]", "boot_ports"),
    ("boot_ports = [70000]", "boot_ports"),
    ("boot_ports = [22, 22]", "boot_ports"),
    ('boot_milestone = "(login"', "boot_milestone"),
    ('boot_milestone = "login:|"', "boot_milestone"),  # matches every line: any output would count as booted
    ('boot_command = "  "', "boot_command"),
    ('boot_expect = "vps1"', "boot_expect"),  # no boot_command to match
    ('boot_expect = "(x"\nboot_command = "true"', "boot_expect"),
    ("boot_timeout = 0", "boot_timeout"),
], ids=["port-0", "port-70000", "port-twice", "milestone-not-a-regex", "milestone-matches-anything", "command-blank",
        "expect-without-command", "expect-not-a-regex", "timeout-zero"])
def test_config_check_refuses_a_dr_boot_value_naming_the_key(tmp_path, dr, key):
    problems = validate(open(_config(tmp_path, dr)).read()).errors
    assert problems and all(f"dr: {key}: " in p for p in problems), problems
    res = CliRunner().invoke(cli, ["--config", _config(tmp_path, dr), "config", "check"])
    assert res.exit_code == 2 and f"dr: {key}: " in res.output, res.output


def test_every_bad_port_is_reported_at_once(tmp_path):
    problems = validate(open(_config(tmp_path, "boot_ports = [0, 70000, 8080]")).read()).errors
    assert len(problems) == 2 and any(" 0 " in p for p in problems) and any(" 70000 " in p for p in problems), problems
