"""Secrets files (invariant 11): read only when private to root or the running user."""

from __future__ import annotations

import pytest

from subvault.secrets import SecretsFileExposed, read_private


def test_invariant_11_private_file_is_read(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    assert read_private(path, "notify.urls_file") == "s3cret\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660])
def test_invariant_11_group_or_world_accessible_file_is_refused(tmp_path, mode):
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    path.chmod(mode)
    with pytest.raises(SecretsFileExposed, match="chmod 600"):
        read_private(path, "notify.urls_file")
