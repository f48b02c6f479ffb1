"""Store a gathered capture in the capture dir, and read back the fingerprint of the one stored.

Rules:
- A capture is written whole into captures/<UTC stamp>: raw files, boot archives (with
  xattrs and ACLs; a FAT device's files through mtools), then the manifest with every
  file's digest, fsync'd, last; only then does the `latest` link move to it (atomically).
- The newest KEEP_CAPTURES captures are kept; older ones are removed.
- The capture dir is mode 0700.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from subvault import process
from subvault.dr import fat
from subvault.dr import manifest as M
from subvault.dr.captureopts import is_block_device
from subvault.dr.gather import Gathered

KEEP_CAPTURES = 2


def store(gathered: Gathered, dest: Path) -> Path:
    """Write the capture under dest (raw files, boot archives, manifest last, then `latest`); return its dir."""
    stamp = gathered.manifest.captured_at.strftime("%Y%m%dT%H%M%SZ")
    here = dest / "captures" / stamp
    if here.exists():
        shutil.rmtree(here)
    here.mkdir(parents=True)
    os.chmod(dest, 0o700)
    for rel, data in gathered.files.items():
        (here / rel).parent.mkdir(parents=True, exist_ok=True)
        (here / rel).write_bytes(data)
    for archive, source in gathered.boot_sources.items():
        (here / archive).parent.mkdir(parents=True, exist_ok=True)
        _archive(source, here / archive)
    digests = {rel: M.sha256_file(here / rel) for rel in [*gathered.files, *gathered.boot_sources]}
    final = M.Manifest(**{**_fields(gathered.manifest), "files": digests})
    _write_synced(here / M.MANIFEST, M.encode(final))
    link_tmp = dest / f".{M.LATEST}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(f"captures/{stamp}", link_tmp)
    os.replace(link_tmp, dest / M.LATEST)
    _prune(dest / "captures", keep_name=stamp)
    return here


def _archive(source: str, archive: Path) -> None:
    """Tar the directory source (or the files of the FAT device source) into archive."""
    if not is_block_device(source):
        process.run(
            ["tar", "--xattrs", "--xattrs-include=*", "--acls", "--one-file-system", "-C", source, "-cf", str(archive), "."],
            what=f"tar {source}",
        )
        return
    with tempfile.TemporaryDirectory(prefix="subvault-esp-") as tmp:
        fat.copy_out(source, Path(tmp))
        process.run(["tar", "--numeric-owner", "-C", tmp, "-cf", str(archive), "."], what=f"tar {source}")


def _fields(m: M.Manifest) -> dict[str, Any]:
    return {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _prune(captures: Path, keep_name: str) -> None:
    names = sorted(p.name for p in captures.iterdir() if p.is_dir())
    for name in names[:-KEEP_CAPTURES]:
        if name != keep_name:
            shutil.rmtree(captures / name, ignore_errors=True)


def stored_fingerprint(dest: Path) -> str | None:
    """Return the fingerprint of the latest stored capture, or None when there is none readable."""
    try:
        return M.decode((dest / M.LATEST / M.MANIFEST).read_bytes()).fingerprint
    except (OSError, M.CaptureInvalid):
        return None
