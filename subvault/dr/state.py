"""The drill record in the state dir: `<state_dir>/drill.json`, a cache (invariant 12).

It holds the last drill's result, when the last successful one finished, whether that
one booted the machine, and when the last successful booted one finished; `check` reads
`last_drill_success` (booted=True when [dr] boot = true). Deleting the file only makes `check` ask for a new drill.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

DRILL_FILE = "drill.json"
STATE_VERSION = 1


def record_drill(state_dir: str | Path, result: dict[str, Any], *, ok: bool, finished: datetime) -> Path:
    """Store result as the last drill (and, when ok, as the last success); return the file. Atomic."""
    path = Path(state_dir) / DRILL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = _read(path)
    booted = ok and bool((result.get("boot") or {}).get("ok"))
    boot = result.get("boot") or {}
    data = {
        "version": STATE_VERSION,
        "last": {**result, "ok": ok, "finished": finished.isoformat()},
        "last_success": finished.isoformat() if ok else previous.get("last_success"),
        "last_success_booted": (f"{boot.get('method')} on {boot.get('accelerator')}" if booted else "") if ok else previous.get("last_success_booted", ""),
        "last_booted_success": finished.isoformat() if booted else previous.get("last_booted_success"),
    }
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def last_drill(state_dir: str | Path) -> dict[str, Any] | None:
    """Return the last drill's recorded result, or None."""
    last = _read(Path(state_dir) / DRILL_FILE).get("last")
    return last if isinstance(last, dict) else None


def last_success_booted(state_dir: str | Path) -> str:
    """How the last successful drill booted the machine ("direct on tcg"), or "" when it did not boot it."""
    got = _read(Path(state_dir) / DRILL_FILE).get("last_success_booted")
    return got if isinstance(got, str) else ""


def last_drill_success(state_dir: str | Path, *, booted: bool = False) -> datetime | None:
    """Return when the last successful drill (that booted the machine, if booted) finished (aware), or None if none is recorded or the file is unreadable."""
    text = _read(Path(state_dir) / DRILL_FILE).get("last_booted_success" if booted else "last_success")
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
