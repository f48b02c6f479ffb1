"""What is mounted now: every mount from /proc/self/mountinfo, btrfs ones with their filesystem UUID."""

from __future__ import annotations

from pathlib import Path

from subvault.btrfs import adapter
from subvault.errors import SubvaultError
from subvault.plan.coverage import MountPoint, btrfs_mount_sources, parse_mountinfo


def mounts_now() -> tuple[list[MountPoint], dict[str, str]]:
    """Return this process's btrfs mounts and {device: filesystem UUID}; a filesystem that
    cannot be asked its UUID is left out of both."""
    text = Path("/proc/self/mountinfo").read_text()
    uuid_of: dict[str, str] = {}
    for source, mount in btrfs_mount_sources(text).items():
        try:
            uuid_of[source] = adapter.filesystem_uuid(mount)
        except SubvaultError:
            continue
    return parse_mountinfo(text, uuid_of), uuid_of
