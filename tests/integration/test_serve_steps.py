"""`serve` runs a command line's steps as real processes, each checked just before it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from subvault import serve
from subvault.endpoints import commands as C
from subvault.endpoints.runner import steps_line
from subvault.serve import Rejected


def test_steps_run_in_order_each_checked_just_before_it_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    """The first step runs; the second, outside the root, is refused when its turn comes."""
    root = tmp_path / "root"
    root.mkdir()
    line = steps_line([[C.mkdirs(str(root / "made"))], [C.mkdirs(str(tmp_path / "escaped"))]])
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", line)
    with pytest.raises(Rejected, match="outside"):
        serve.serve_main(str(root))
    assert (root / "made").is_dir() and not (tmp_path / "escaped").exists()


def test_a_failing_step_ends_the_command_with_its_status(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "file").write_text("")
    line = steps_line([[C.mkdirs(str(root / "file"))], [C.mkdirs(str(root / "after"))]])
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", line)
    assert serve.serve_main(str(root)) != 0
    assert not (root / "after").exists()
