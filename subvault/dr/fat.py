"""Files on a FAT filesystem (the ESP) without mounting it, through mtools.

A kernel without vfat (containers, minimal CI kernels) cannot mount an ESP, and an ESP
that is not mounted (systemd's /efi automount, a disk image) has no directory to tar.
mtools reads and writes FAT from user space, on a device or an image file, so capture
and restore treat the ESP the same everywhere.

Rules:
- `copy_out` and `copy_in` keep names, contents and modification times; FAT has no
  owners or modes to keep.
- `copy_in` overwrites what is there: running it twice gives the same ESP (idempotent).
- Every call runs with MTOOLS_SKIP_CHECK=1 so geometry oddities of images never stop it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from subvault import process
from subvault.errors import SubvaultError

ENV = {"MTOOLS_SKIP_CHECK": "1"}


class MtoolsMissing(SubvaultError):
    """The FAT filesystem cannot be mounted and mtools is not installed."""


def available() -> bool:
    return shutil.which("mcopy") is not None and shutil.which("mdir") is not None


def _require() -> None:
    if not available():
        raise MtoolsMissing("this kernel cannot mount vfat and mtools is not installed; install mtools (apt/dnf install mtools)")


def listing(dev: str) -> list[str]:
    """Return every path on the FAT filesystem dev ("::/EFI/", "::/EFI/x.efi", ...), sorted."""
    _require()
    res = process.run(["mdir", "-/", "-b", "-a", "-i", dev, "::/"], env=ENV, check=False, what=f"mdir {dev}")
    if res.returncode != 0:
        if "No files" in res.stdout + res.stderr or not (res.stdout + res.stderr).strip():
            return []
        raise SubvaultError(f"mdir {dev} failed: {res.stderr.strip()[-300:]}")
    return sorted(line.strip() for line in res.stdout.splitlines() if line.strip().startswith("::/"))


def stamp(dev: str) -> str:
    """Return a fingerprint of names, sizes and dates on dev: changes whenever a file changes."""
    _require()
    res = process.run(["mdir", "-/", "-a", "-i", dev, "::/"], env=ENV, check=False, what=f"mdir {dev}")
    return hashlib.sha256(res.stdout.encode()).hexdigest()


def copy_out(dev: str, dest: Path) -> None:
    """Copy everything on the FAT filesystem dev into the directory dest (made if missing)."""
    _require()
    dest.mkdir(parents=True, exist_ok=True)
    if not listing(dev):
        return
    process.run(["mcopy", "-s", "-n", "-m", "-p", "-Q", "-i", dev, "::*", f"{dest}/"], env=ENV, what=f"mcopy from {dev}")


def copy_in(src: Path, dev: str) -> None:
    """Copy the contents of the directory src onto the FAT filesystem dev, overwriting what is there."""
    _require()
    entries = sorted(str(p) for p in src.iterdir())
    if entries:
        process.run(["mcopy", "-s", "-o", "-m", "-p", "-Q", "-i", dev, *entries, "::/"], env=ENV, what=f"mcopy onto {dev}")


def read_bytes(dev: str, path: str) -> bytes:
    """Return the contents of the file path (e.g. "EFI/fedora/grubx64.efi") on dev."""
    _require()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="subvault-fat-") as tmp:
        out = Path(tmp) / "f"
        process.run(["mcopy", "-n", "-i", dev, f"::/{path.lstrip('/')}", str(out)], env=ENV, what=f"mcopy {path}")
        return out.read_bytes()
