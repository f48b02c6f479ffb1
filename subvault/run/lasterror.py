"""The last failure of each subvolume's replication to each target, for `status` and `check`.

A failed send leaves nothing on the target to show for it (the partial is removed at
once), so the failure is remembered here until a replication of that subvolume to that
target succeeds.

Rules:
- The file `<state_dir>/replication-errors.json` is a cache (invariant 12): deleting
  it loses only the display of an old failure; the next failing run records it again.
- Written only by the main thread, after a target's subvolumes are done, atomically.
- A failure that could not be recorded is a warning, never a second failure.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from subvault.errors import NoSpace

FILE = "replication-errors.json"
SPACE = "space"
FAILED = "failed"


@dataclass(frozen=True)
class LastError:
    kind: str  # SPACE or FAILED
    message: str
    at: datetime


def key(sub: str, target: str) -> str:
    return f"{sub}→{target}"


def kind_of(error: BaseException) -> str:
    return SPACE if isinstance(error, NoSpace) else FAILED


def load(state_dir: Path) -> dict[str, LastError]:
    """Return {key: LastError}; an unreadable or malformed file reads as empty."""
    try:
        data = json.loads((state_dir / FILE).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, LastError] = {}
    for k, v in data.items() if isinstance(data, dict) else ():
        try:
            out[k] = LastError(str(v["kind"]), str(v["message"]), datetime.fromisoformat(v["at"]))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def update(state_dir: Path, failed: dict[str, LastError], succeeded: list[str]) -> str | None:
    """Record failures and clear the keys that succeeded; return a warning if the file could not be written."""
    data = load(state_dir)
    before = dict(data)
    for k in succeeded:
        data.pop(k, None)
    data.update(failed)
    if data == before:
        return None
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".replication-errors.", dir=state_dir)
        with os.fdopen(fd, "w") as fh:
            json.dump({k: {"kind": e.kind, "message": e.message, "at": e.at.isoformat()} for k, e in data.items()}, fh, indent=1, sort_keys=True)
        os.replace(tmp, state_dir / FILE)
    except OSError as exc:
        return f"could not record the replication outcome in {state_dir}: {exc.strerror or exc}"
    return None
