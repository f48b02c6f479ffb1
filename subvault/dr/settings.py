"""The [dr] settings, read from the config when it has them, else these defaults.

Proposed schema keys (config/schema.py, table [dr]): capture_dir, disks, fstab,
boot_dirs, drill_dir. Until the schema has the table, the defaults apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from subvault.config.schema import Config

DEFAULT_CAPTURE_DIR = "/var/lib/subvault/dr"
DEFAULT_DRILL_DIR = "/var/tmp/subvault-drill"


@dataclass(frozen=True)
class DrSettings:
    capture_dir: str = DEFAULT_CAPTURE_DIR  # inside a replicated subvolume (here: var)
    disks: tuple[str, ...] = ()  # empty: the disks under the configured subvolumes
    fstab: str = "/etc/fstab"
    boot_dirs: tuple[str, ...] = ("/boot", "/boot/efi")
    drill_dir: str = DEFAULT_DRILL_DIR  # where drill puts its sparse image and mounts

    @classmethod
    def from_config(cls, config: Config) -> "DrSettings":
        dr = getattr(config, "dr", None)
        if dr is None:
            return cls()
        return cls(
            capture_dir=getattr(dr, "capture_dir", DEFAULT_CAPTURE_DIR),
            disks=tuple(getattr(dr, "disks", ()) or ()),
            fstab=getattr(dr, "fstab", "/etc/fstab"),
            boot_dirs=tuple(getattr(dr, "boot_dirs", ("/boot", "/boot/efi"))),
            drill_dir=getattr(dr, "drill_dir", DEFAULT_DRILL_DIR),
        )
