"""Write-behind: started and stopped around a receive, it leaves no thread and no descriptor behind."""

from __future__ import annotations

import os
import threading

from subvault.dr.writebehind import WriteBehind


def test_write_behind_stops_with_its_block_and_closes_its_descriptor(tmp_path):
    fds = set(os.listdir("/proc/self/fd"))
    with WriteBehind(tmp_path):
        (tmp_path / "data").write_bytes(b"x" * 4096)
        assert any(t.name == "write-behind" for t in threading.enumerate())
    assert not any(t.name == "write-behind" for t in threading.enumerate())
    assert set(os.listdir("/proc/self/fd")) == fds
