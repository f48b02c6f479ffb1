"""Fixtures for a real sshd on 127.0.0.1 (the class lives in subvault/demo/testbed_ssh.py, shared with the demo)."""

from __future__ import annotations

import pytest

from subvault.demo.testbed_ssh import REPO, SSHD, Sshd, free_port, serve_command  # noqa: F401


@pytest.fixture
def sshd(tmp_path):
    """A started sshd with no forced command; stopped after the test."""
    server = Sshd(tmp_path / "sshd").start()
    yield server
    server.stop()


@pytest.fixture
def make_sshd(tmp_path):
    """Factory: make_sshd(forced_command=None) -> started Sshd; all stopped after the test."""
    made: list[Sshd] = []

    def factory(forced_command: str | None = None, name: str = "sshd") -> Sshd:
        server = Sshd(tmp_path / f"{name}-{len(made)}", forced_command=forced_command).start()
        made.append(server)
        return server

    yield factory
    for s in made:
        s.stop()
