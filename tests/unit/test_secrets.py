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


def test_a_secrets_file_that_is_not_utf8_is_refused_naming_the_byte_not_showing_it(tmp_path):
    path = tmp_path / "offsite.env"
    path.write_bytes(b"AWS_SECRET_ACCESS_KEY=ab\xe9cd\n")  # decoded as U+FFFD, the key silently changed
    path.chmod(0o600)
    with pytest.raises(SecretsFileExposed) as info:
        read_private(path, "credentials")
    message = str(info.value)
    assert str(path) in message and "byte 24" in message and "UTF-8" in message
    assert "ab" not in message.replace(str(path), "") and "xe9" not in message


def test_a_secrets_file_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    import os

    path = tmp_path / "offsite.env"
    os.mkfifo(path, 0o600)  # nobody writes to it: reading would wait forever
    with pytest.raises(SecretsFileExposed, match="not a regular file"):
        read_private(path, "credentials")
