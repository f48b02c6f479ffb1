"""mkfs argv: the original UUIDs, in each tool's own spelling."""

from __future__ import annotations

import pytest

from subvault.dr.executor import mkfs_argv
from subvault.errors import SubvaultError


def test_each_filesystem_gets_its_uuid():
    assert mkfs_argv("btrfs", "U", "fedora", "", "/dev/loop9") == ["mkfs.btrfs", "-q", "-f", "-U", "U", "-L", "fedora", "/dev/loop9"]
    assert mkfs_argv("vfat", "1a2b-3c4d", "", "FAT32", "/d") == ["mkfs.vfat", "-F", "32", "-i", "1A2B3C4D", "/d"]
    assert mkfs_argv("ext4", "U", "", "", "/d") == ["mkfs.ext4", "-q", "-F", "-U", "U", "/d"]
    assert mkfs_argv("xfs", "U", "data", "", "/d") == ["mkfs.xfs", "-q", "-f", "-m", "uuid=U", "-L", "data", "/d"]
    assert mkfs_argv("swap", "U", "", "", "/d") == ["mkswap", "-U", "U", "/d"]


def test_unknown_type_is_an_error():
    with pytest.raises(SubvaultError):
        mkfs_argv("zfs_member", "U", "", "", "/d")
