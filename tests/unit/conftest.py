"""The unit tier is pure: no process, no socket, no mount.

Every test here runs with process creation and network connects replaced by a call
that fails the test, so a unit test that starts `btrfs`, `cat` or an HTTP server
fails loudly instead of quietly being an integration test. Tests that need a real
process belong in tests/integration (no root) or tests/privileged (root, loop devices).
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest


class ImpureUnitTest(AssertionError):
    """A unit test tried to leave the process."""


def _refuse(what: str):
    def refuse(*_args, **_kwargs):
        raise ImpureUnitTest(f"unit tests are pure: {what} is not allowed here (move the test to tests/integration)")

    return refuse


@pytest.fixture(autouse=True)
def _unit_tests_are_pure(monkeypatch):
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("starting a process"))
    monkeypatch.setattr(os, "posix_spawn", _refuse("starting a process"))
    monkeypatch.setattr(os, "posix_spawnp", _refuse("starting a process"))
    monkeypatch.setattr(os, "fork", _refuse("forking"))
    monkeypatch.setattr(os, "system", _refuse("starting a shell"))
    monkeypatch.setattr(socket.socket, "connect", _refuse("a network connection"))
    monkeypatch.setattr(socket.socket, "bind", _refuse("listening on a socket"))
