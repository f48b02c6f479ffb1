"""Shared test configuration: tiers, and the rule that the privileged tier must run.

Tiers: tests/unit (pure), tests/integration (real servers and CLIs, no root),
tests/privileged (root, loop devices, real btrfs). With SUBVAULT_REQUIRE_PRIVILEGED=1
(set by .ci/run) the session fails when zero privileged tests ran, so a machine
without loop devices can never turn the suite green by skipping them.
"""

from __future__ import annotations

import os

import pytest

_privileged_ran = 0


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


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("SUBVAULT_REQUIRE_PRIVILEGED") == "1" and _privileged_ran == 0:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "FAILED: the privileged tier executed zero tests (root, loop devices and btrfs are required)", red=True
        )
        session.exitstatus = 1
