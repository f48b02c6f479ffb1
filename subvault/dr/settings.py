"""The [dr] settings, read from the config when it has them, else these defaults.

Proposed schema keys (config/schema.py, table [dr]): capture_dir, disks, fstab,
boot_dirs, drill_dir. Until the schema has the table, the defaults apply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from subvault.config.schema import Config
from subvault.dr.boot import DEFAULT_MILESTONE, BootSettings

DEFAULT_CAPTURE_DIR = "/var/lib/subvault/dr"
DEFAULT_DRILL_DIR = "/var/tmp/subvault-drill"


@dataclass(frozen=True)
class DrSettings:
    capture_dir: str = DEFAULT_CAPTURE_DIR  # inside a replicated subvolume (here: var)
    disks: tuple[str, ...] = ()  # empty: the disks under the configured subvolumes
    fstab: str = "/etc/fstab"
    boot_dirs: tuple[str, ...] = ("/boot", "/boot/efi")
    drill_dir: str = DEFAULT_DRILL_DIR  # where drill puts its sparse image and mounts
    boot: BootSettings = BootSettings()  # [dr] boot*: boot the restored machine after verifying it

    @classmethod
    def from_config(cls, config: Config) -> DrSettings:
        dr = getattr(config, "dr", None)
        if dr is None:
            return cls()
        return cls(
            capture_dir=getattr(dr, "capture_dir", DEFAULT_CAPTURE_DIR),
            disks=tuple(getattr(dr, "disks", ()) or ()),
            fstab=getattr(dr, "fstab", "/etc/fstab"),
            boot_dirs=tuple(getattr(dr, "boot_dirs", ("/boot", "/boot/efi"))),
            drill_dir=getattr(dr, "drill_dir", DEFAULT_DRILL_DIR),
            boot=BootSettings(
                enabled=bool(getattr(dr, "boot", False)), method=getattr(dr, "boot_method", "auto"),
                timeout=float(getattr(dr, "boot_timeout", 300)), milestone=getattr(dr, "boot_milestone", "") or DEFAULT_MILESTONE,
                ports=tuple(getattr(dr, "boot_ports", ()) or ()), command=getattr(dr, "boot_command", ""), expect=getattr(dr, "boot_expect", ""),
            ),
        )


def capture_owner(config: Config, capture_dir: str) -> tuple[str | None, str | None]:
    """Return the configured subvolume holding capture_dir (longest path prefix) and the dir inside it."""
    best = None
    for sub in config.subvolume:
        base = sub.path.rstrip("/") + "/"
        if capture_dir.startswith(base) or sub.path == "/":
            if best is None or len(sub.path) > len(best.path):
                best = sub
    if best is None:
        return None, None
    return best.name, os.path.relpath(capture_dir, best.path)
