"""The locks: one subvault per state dir, and one worker per directory."""

from __future__ import annotations

import pytest

from subvault.errors import LockHeld, SubvaultError
from subvault.lock import exclusive, on_directory


def test_a_directory_lock_excludes_a_second_holder_whatever_the_state_dir(tmp_path):
    # Two prune-received on one root with different --state-dir once raced (one failed
    # deleting an entry the other had deleted): the root itself is locked now.
    with on_directory(tmp_path):
        with pytest.raises(LockHeld):
            with on_directory(tmp_path):
                pass
    with on_directory(tmp_path):
        pass


@pytest.mark.parametrize("where", ["state", "file/state"])
def test_a_state_dir_that_is_a_file_is_one_clear_error(tmp_path, where):
    (tmp_path / "state").write_text("")
    (tmp_path / "file").write_text("")
    with pytest.raises(SubvaultError, match="is not a directory; move that file aside, or set defaults.state_dir"):
        with exclusive(tmp_path / where):
            pass
