"""What a capture is made with: which boot dirs can be captured, and which options `run` repeats.

Rules:
- A boot dir is captured only when its files can be read: a directory that is not an
  empty stand-in for an unmounted filesystem, or an unmounted vfat device given as
  `PATH=DEVICE`. A boot dir fstab mounts that has nothing mounted now (an ESP left
  unmounted, an automount not set up) would be captured as an empty directory of the
  filesystem below it: it is skipped with a warning instead. A boot dir that does not
  exist is skipped with a warning too, except a default one fstab does not know (no
  /boot/efi on a BIOS machine). `dr capture` and `check` say the same.
- Every capture stores the options it was made with and those the config gave at the
  time (`options.json`). `run` repeats the options of a capture made by hand
  (`dr capture --boot-dir /boot/efi=/dev/vda1`) as long as the config's are still those
  of that time; once [dr] changes, the config wins. So `run` never silently replaces a
  capture made by hand with a poorer one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subvault.config.schema import Config
from subvault.dr import manifest as M
from subvault.dr.parse import parse_fstab
from subvault.dr.settings import DrSettings

OPTIONS_FILE = "options.json"
DEFAULT_BOOT_DIRS = ("/boot", "/boot/efi")


@dataclass
class CaptureSpec:
    """What to capture. Empty disks: the disks under the configured subvolumes and boot dirs."""

    dest: Path
    disks: list[str] = field(default_factory=list)
    fstab: str = "/etc/fstab"
    boot_dirs: dict[str, str] = field(default_factory=dict)  # logical path -> where it is now
    firmware: str | None = None  # "uefi"/"bios"; None detects
    selinux: bool | None = None  # None detects
    host: str = ""

    @classmethod
    def from_settings(cls, settings: DrSettings) -> CaptureSpec:
        # Every configured boot dir: capture() skips, with a warning, those it cannot read (the rules above).
        return cls(dest=Path(settings.capture_dir), disks=list(settings.disks), fstab=settings.fstab,
                   boot_dirs=parse_boot_dirs(settings.boot_dirs))


def options_of(spec: CaptureSpec) -> dict[str, Any]:
    """The options that decide what a capture holds (not where it goes)."""
    return {"disks": list(spec.disks), "fstab": spec.fstab, "boot_dirs": dict(sorted(spec.boot_dirs.items())),
            "firmware": spec.firmware, "selinux": spec.selinux}


def options_file(spec: CaptureSpec, config_spec: CaptureSpec) -> bytes:
    return json.dumps({"made_with": options_of(spec), "config": options_of(config_spec)}, indent=2, sort_keys=True).encode()


def stored_options(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((dest / M.LATEST / OPTIONS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def spec_for_run(config_spec: CaptureSpec) -> tuple[CaptureSpec, str | None]:
    """The spec `run` captures with: the last capture's own options when it was made by hand and [dr] has not changed since.

    Return it and a note saying so (None when the config's options apply).
    """
    last = stored_options(config_spec.dest)
    if not last or not isinstance(last.get("made_with"), dict):
        return config_spec, None
    made, config = last["made_with"], last.get("config")
    if made == config or config != options_of(config_spec):
        return config_spec, None
    spec = dataclasses.replace(
        config_spec, disks=list(made.get("disks") or []), fstab=made.get("fstab") or config_spec.fstab,
        boot_dirs=dict(made.get("boot_dirs") or {}), firmware=made.get("firmware"), selinux=made.get("selinux"),
    )
    return spec, "with the options of the last capture, made by hand ([dr] in the config is unchanged since)"


def parse_boot_dirs(entries: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`PATH` or `PATH=WHERE` entries (config and --boot-dir alike) -> {path: where}."""
    out = {}
    for entry in entries:
        logical, _, where = entry.partition("=")
        out[logical] = where or logical
    return out


def usable_boot_dirs(boot_dirs: dict[str, str], fstab_path: str) -> tuple[dict[str, str], list[str]]:
    """Split boot dirs into those that can be captured and a warning for each that cannot (see the rules above)."""
    try:
        fstab = {e.file: e for e in parse_fstab(Path(fstab_path).read_text())}
    except (OSError, ValueError):
        fstab = {}
    usable, warnings = {}, []
    for logical, where in sorted(boot_dirs.items()):
        entry = fstab.get(logical.rstrip("/") or "/")
        if is_block_device(where):
            usable[logical] = where
        elif not os.path.isdir(where):
            if logical in DEFAULT_BOOT_DIRS and entry is None and where == logical:
                continue
            warnings.append(f"boot dir {logical}: {where} does not exist, so it is not captured; "
                            f"mount it, or remove it from [dr] boot_dirs")
        elif entry is not None and where == logical and not os.path.ismount(where):
            warnings.append(
                f"boot dir {logical}: fstab mounts {entry.spec} ({entry.vfstype}) there but nothing is mounted now, "
                f"so it is not captured (it would be an empty directory); mount it, or name its device: "
                f'[dr] boot_dirs = ["{logical}=/dev/…"] (or dr capture --boot-dir {logical}=/dev/…)'
            )
        else:
            usable[logical] = where
    return usable, warnings


def boot_dir_warnings(config: Config) -> list[str]:
    """For `check`: the warnings `run`'s next capture would give about its boot dirs ([] without [dr])."""
    if getattr(config, "dr", None) is None:
        return []
    spec, _ = spec_for_run(CaptureSpec.from_settings(DrSettings.from_config(config)))
    return usable_boot_dirs(spec.boot_dirs, spec.fstab)[1]


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
