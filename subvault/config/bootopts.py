"""The boot options' rules, pure: one set for the [dr] keys (config check) and the drill's options.

Rules (each problem is one line, "NAME: what is wrong; what to do", NAME the key or option):
- the timeout is a positive number of seconds;
- a port is 1..65535 and listed once;
- the milestone is a regex that does not match an empty line (one that does would count
  any console output as booted);
- the command, when given, is not blank; the expected output is a regex, and needs a
  command whose output it matches;
- a boot option given to a drill that does not boot is a mistake, not a no-op.
The drill checks its options before it locks, restores or records anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

CLI_NAMES = {"timeout": "--boot-timeout", "ports": "--boot-port", "milestone": "[dr] boot_milestone",
             "command": "--boot-command", "expect": "--boot-expect"}


def boot_value_problems(timeout: float | None, ports: Iterable[int], milestone: str | None, command: str | None, expect: str | None,
                        *, names: Mapping[str, str] = CLI_NAMES, command_elsewhere: bool = False) -> list[str]:
    """Every problem with these values (None: not given); command_elsewhere: a command comes from the config."""
    problems = []
    if timeout is not None and not timeout > 0:
        problems.append(f"{names['timeout']}: {timeout:g} is not a positive number of seconds; give the seconds the machine has to boot, e.g. 300")
    seen: set[int] = set()
    for port in ports:
        if not 1 <= port <= 65535:
            problems.append(f"{names['ports']}: {port} is not a TCP port; use 1..65535")
        elif port in seen:
            problems.append(f"{names['ports']}: {port} is listed twice; list each port once")
        seen.add(port)
    if milestone:
        bad = _regex_problem(milestone)
        if bad:
            problems.append(f"{names['milestone']}: {bad}")
        elif re.search(milestone, ""):
            problems.append(f"{names['milestone']}: {milestone!r} matches an empty line, so any console output would count as booted; "
                            "match the line that means booted, e.g. \"login:\"")
    if command is not None and not command.strip():
        problems.append(f"{names['command']}: empty; give the command to run over the serial console, or leave it out")
    if expect:
        bad = _regex_problem(expect)
        if bad:
            problems.append(f"{names['expect']}: {bad}")
        elif not (command and command.strip()) and not command_elsewhere:
            problems.append(f"{names['expect']}: there is no command whose output it could match; add {names['command']}")
    return problems


def unused_option_problems(given: Iterable[str]) -> list[str]:
    """The boot options given (their CLI names) to a drill that does not boot."""
    return [f"{name}: the drill does not boot the machine; add --boot (or set [dr] boot = true), or leave {name} out" for name in given]


def _regex_problem(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{pattern!r} is not a regex ({exc}); fix the pattern (and quote it for the shell)"
    return ""
