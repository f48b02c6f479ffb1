"""The record of the last `subvault verify` of a target, in the state dir (a cache).

`verify` reads every part and checks its SHA-256: the only way to find a flipped
byte, which a listing (sizes) cannot see. It records when it ran and which points it
found corrupt, with each one's manifest MAC: `offsite` then treats those points as
damaged (and sends the newest again) until their manifest is written anew, and `check`
warns when the last verify is older than `check.verify_max_age`. Losing the record
only loses the reminder; the next verify finds the same damage (invariant 12).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path


def record_path(state_dir: Path, target: str) -> Path:
    return state_dir / f"offsite-verify-{target}.json"


def record(state_dir: Path, target: str, at: datetime, suspect: dict[str, dict[str, str]]) -> None:
    path = record_path(state_dir, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"at": at.isoformat(), "suspect": suspect}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def last(state_dir: Path, target: str) -> tuple[datetime | None, dict[str, dict[str, str]]]:
    """Return (when the last verify ran or None, {subvolume: {uuid: manifest mac}} it found corrupt)."""
    try:
        data = json.loads(record_path(state_dir, target).read_text())
        at = datetime.fromisoformat(data["at"])
        suspect = {str(s): {str(u): str(m) for u, m in v.items()} for s, v in data.get("suspect", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, {}
    return (at if at.tzinfo else None), suspect
