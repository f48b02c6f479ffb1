"""ssh time limits (issue 12, item 3): a target that accepts TCP and never answers ends, and says so.

Real OpenSSH client against real loopback listeners: one that accepts and never sends a
byte, one that sends a banner and then nothing, and a port that refuses. The timeout
marks are hang guards, not timing asserts: before the limits, these calls never returned.
"""

from __future__ import annotations

import subprocess

import pytest

from subvault.config.load import parse_config
from subvault.demo.testbed_ssh import HungListener, refused_port
from subvault.endpoints.endpoint import open_target
from subvault.endpoints.runner import SshRunner, Unreachable, limit_options, parse_ssh_url
from subvault.errors import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _target(port: int, options: list[str] = ()):
    opts = ", ".join(f'"{o}"' for o in ["StrictHostKeyChecking=yes", "UserKnownHostsFile=/dev/null", *options])
    cfg = parse_config(f'[[target]]\nname = "pi"\ntype = "btrfs"\nurl = "ssh://root@127.0.0.1:{port}/mnt/backup"\nssh_options = [{opts}]\n')
    return cfg.target[0]


def _effective(argv: list[str]) -> dict[str, str]:
    """What ssh itself makes of a command line (`ssh -G`), its options before "--"."""
    cut = argv.index("--")
    out = subprocess.run([*argv[:cut], "-G", *argv[cut:cut + 2]], capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_limits_are_set_when_nobody_set_them():
    runner = SshRunner(parse_ssh_url("ssh://root@pi.example:2222/mnt/backup"), multiplex=False)
    seen = _effective(runner.argv([["true"]]))
    assert (seen["connecttimeout"], seen["serveraliveinterval"], seen["serveralivecountmax"]) == ("10", "15", "4")


def test_the_users_own_limits_win():
    runner = SshRunner(parse_ssh_url("ssh://pi.example/x"), options=["ConnectTimeout=3", "ServerAliveInterval=5"], multiplex=False)
    seen = _effective(runner.argv([["true"]]))
    assert (seen["connecttimeout"], seen["serveraliveinterval"], seen["serveralivecountmax"]) == ("3", "5", "3")


def test_limits_from_ssh_config_win(tmp_path):
    """~/.ssh/config is read by the same rules as -F: a value set there is not overridden on the command line."""
    conf = tmp_path / "ssh_config"
    conf.write_text("Host pi.example\n  ConnectTimeout 7\n  ServerAliveInterval 9\n  ServerAliveCountMax 2\n")
    seen = {"connecttimeout": "7", "serveraliveinterval": "9", "serveralivecountmax": "2"}
    assert limit_options(seen) == []
    runner = SshRunner(parse_ssh_url("ssh://pi.example/x"), options=[], multiplex=False, config_file=str(conf))
    seen = _effective(runner.argv([["true"]]))
    assert (seen["connecttimeout"], seen["serveraliveinterval"], seen["serveralivecountmax"]) == ("7", "9", "2")


def test_limit_options_fill_only_what_is_at_openssh_default():
    default = {"connecttimeout": "none", "serveraliveinterval": "0", "serveralivecountmax": "3"}
    assert limit_options(default) == ["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    assert limit_options({**default, "serveralivecountmax": "6"}) == ["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15"]


def test_the_host_always_follows_double_dash():
    runner = SshRunner(parse_ssh_url("ssh://root@pi.example/x"))
    for argv in (runner.argv([["true"]]), runner.stages([["true"]])[0], runner.stages([["true"]], bulk=True)[0], runner.exit_argv(bulk=False)):
        assert argv[argv.index("pi.example") - 1] == "--", argv
    with pytest.raises(ConfigError, match='must not start with "-"'):
        parse_ssh_url("ssh://-oProxyCommand=touch%20x/mnt")


def test_a_listener_that_never_answers_times_out_and_says_so():
    with HungListener() as hung:
        with open_target(_target(hung.port)) as ep:
            with pytest.raises(Unreachable) as info:
                ep.check()
    msg = str(info.value)
    assert "timed out" in msg and "root@127.0.0.1" in msg, msg
    assert "does not exist" not in msg and "mounted" not in msg


def test_a_listener_stuck_after_its_banner_ends_by_the_keepalive_limit():
    """ConnectTimeout covers the TCP connect and the banner; ServerAlive* bound key exchange and authentication."""
    with HungListener(banner=True) as hung:
        with open_target(_target(hung.port, ["ServerAliveInterval=1", "ServerAliveCountMax=2"])) as ep:
            with pytest.raises(Unreachable, match="timed out"):
                ep.check()


def test_a_refused_port_says_refused():
    with open_target(_target(refused_port())) as ep:
        with pytest.raises(Unreachable) as info:
            ep.check()
    assert "Connection refused" in str(info.value) and "does not exist" not in str(info.value)


def test_a_host_that_did_not_answer_is_not_asked_again_in_the_same_command():
    seen: dict = {}
    with HungListener() as hung:
        for _ in range(3):
            with open_target(_target(hung.port), unreachable=seen) as ep:
                with pytest.raises(Unreachable, match="timed out"):
                    ep.check()
        assert len(hung.accepted) == 1
