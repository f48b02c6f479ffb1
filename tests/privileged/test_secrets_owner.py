"""Secrets files (invariant 11): a file owned by another user is refused, whatever its mode (needs root to chown)."""

from __future__ import annotations

import os

import pytest

from subvault.secrets import SecretsFileExposed, read_private


def test_invariant_11_file_owned_by_another_user_is_refused(tmp_path):
    """Mode 0600 is not enough: whoever owns the file can read it, and rewrite it."""
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(SecretsFileExposed, match="owned by uid 65534") as info:
        read_private(path, "credentials")
    assert "s3cret" not in str(info.value) and "chown" in str(info.value)
