"""Shared test configuration: tiers, and the rule that the privileged tier must run.

Tiers: tests/unit (pure), tests/integration (real servers and CLIs, no root),
tests/privileged (root, loop devices, real btrfs). With SUBVAULT_REQUIRE_PRIVILEGED=1
(set by ./dev test, so by CI) the session fails when zero privileged tests ran, so a
machine without loop devices can never turn the suite green by skipping them; and any
skip whose reason is not on ALLOWED_SKIPS below fails the session too, so a missing
tool (jq, openssl, journalctl, …) is an install bug in ./dev, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

import pytest

_privileged_ran = 0

# Compiled configs (config/compiled.py) that tests' commands save go here, never to /run/subvault.
_RUNTIME_DIR = os.environ.setdefault("SUBVAULT_RUNTIME_DIR", tempfile.mkdtemp(prefix="subvault-test-run-"))
_unexpected_skips: list[str] = []

# The only skips this machine (or CI) cannot avoid, each with why. A reason must start
# with one of these prefixes.
ALLOWED_SKIPS = {
    "would arm a real timer on a systemd host": "runs only where systemd is not PID 1; CI here has no systemd",
    "tmp is on btrfs": "the case needs a non-btrfs temp directory; CI's is ext4/overlay",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/privileged/" in str(item.fspath):
            item.add_marker(pytest.mark.privileged)
        elif "/tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def pytest_runtest_logreport(report):
    global _privileged_ran
    if report.when == "call" and "privileged" in report.keywords and not report.skipped:
        _privileged_ran += 1
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not any(reason.startswith(prefix) for prefix in ALLOWED_SKIPS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_sessionfinish(session, exitstatus):
    if _RUNTIME_DIR.startswith(tempfile.gettempdir() + "/subvault-test-run-"):
        shutil.rmtree(_RUNTIME_DIR, ignore_errors=True)
    if os.environ.get("SUBVAULT_REQUIRE_PRIVILEGED") == "1" and _privileged_ran == 0:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "FAILED: the privileged tier executed zero tests (root, loop devices and btrfs are required)", red=True
        )
        session.exitstatus = 1
    if os.environ.get("SUBVAULT_REQUIRE_PRIVILEGED") == "1" and _unexpected_skips:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line("FAILED: skips not on tests/conftest.py ALLOWED_SKIPS (install what they need in ./dev):", red=True)
        for line in _unexpected_skips:
            reporter.write_line(f"  {line}", red=True)
        session.exitstatus = 1


# The unit tier is pure: no process, no socket. Every unit test runs with process
# creation and network connects replaced by a call that fails the test, so a unit test
# that starts `btrfs`, `cat` or an HTTP server fails loudly instead of quietly being an
# integration test. (Here, not in tests/unit/conftest.py: the privileged tier imports
# helpers `from conftest`, and a second conftest module would shadow its own.)

class ImpureUnitTest(AssertionError):
    """A unit test tried to leave the process."""


def _refuse(what: str):
    def refuse(*_args, **_kwargs):
        raise ImpureUnitTest(f"unit tests are pure: {what} is not allowed here (move the test to tests/integration)")

    return refuse


@pytest.fixture(autouse=True)
def _unit_tests_are_pure(request, monkeypatch):
    if "/tests/unit/" not in str(request.node.fspath):
        return
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("starting a process"))
    monkeypatch.setattr(os, "posix_spawn", _refuse("starting a process"))
    monkeypatch.setattr(os, "posix_spawnp", _refuse("starting a process"))
    monkeypatch.setattr(os, "fork", _refuse("forking"))
    monkeypatch.setattr(os, "system", _refuse("starting a shell"))
    monkeypatch.setattr(socket.socket, "connect", _refuse("a network connection"))
    monkeypatch.setattr(socket.socket, "bind", _refuse("listening on a socket"))
