"""The locks: one subvault per state dir, and one worker per directory."""

from __future__ import annotations


def test_a_directory_lock_excludes_a_second_holder_whatever_the_state_dir(tmp_path):
    # Two prune-received on one root with different --state-dir once raced (one failed
    # deleting an entry the other had deleted): the root itself is locked now.
    import pytest

    from subvault.errors import LockHeld
    from subvault.lock import on_directory

    with on_directory(tmp_path):
        with pytest.raises(LockHeld):
            with on_directory(tmp_path):
                pass
    with on_directory(tmp_path):
        pass
