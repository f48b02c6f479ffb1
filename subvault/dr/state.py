"""The drill record in the state dir: `<state_dir>/drill.json`, a cache (invariant 12).

It holds the last drill's result, when the last successful one finished, whether that
one booted the machine, and when the last successful booted one finished; `check` reads
`last_drill_success` (booted=True when [dr] boot = true). Deleting the file only makes `check` ask for a new drill.

Serial logs: each boot's whole console goes to `<state_dir>/drill-logs/<drill id>-boot.log`
(the id is the drill's start time), named from the report's boot.log. A log is kept while
this record names it: the last drill's, the last successful drill's and the last booted
success's; recording a drill removes every other log (so at most three are kept).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from subvault.plan.freshness import DrillRecord

DRILL_FILE = "drill.json"
LOG_DIR = "drill-logs"
STATE_VERSION = 1


def new_boot_log(state_dir: str | Path, drill_id: str) -> Path:
    """A path for this drill's serial log that no other drill's log has (its directory made)."""
    logs = Path(state_dir) / LOG_DIR
    logs.mkdir(parents=True, exist_ok=True)
    path, n = logs / f"{drill_id}-boot.log", 1
    while path.exists():
        n += 1
        path = logs / f"{drill_id}-{n}-boot.log"
    return path


def boot_logs(state_dir: str | Path) -> list[Path]:
    """The serial logs kept in the state dir."""
    return sorted((Path(state_dir) / LOG_DIR).glob("*.log"))


def record_drill(state_dir: str | Path, result: dict[str, Any], *, ok: bool, finished: datetime) -> Path:
    """Store result as the last drill (and, when ok, as the last success); return the file. Atomic."""
    path = Path(state_dir) / DRILL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = _read(path)
    booted = ok and bool((result.get("boot") or {}).get("ok"))
    boot = result.get("boot") or {}
    log = boot.get("log") or None
    data = {
        "version": STATE_VERSION,
        "last": {**result, "ok": ok, "finished": finished.isoformat()},
        "last_success": finished.isoformat() if ok else previous.get("last_success"),
        "last_success_booted": (f"{boot.get('method')} on {boot.get('accelerator')}" if booted else "") if ok else previous.get("last_success_booted", ""),
        "last_success_log": log if ok else previous.get("last_success_log"),
        "last_booted_success": finished.isoformat() if booted else previous.get("last_booted_success"),
        "last_booted_log": log if booted else previous.get("last_booted_log"),
    }
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _prune_logs(Path(state_dir), {log, str(data["last_success_log"] or ""), str(data["last_booted_log"] or "")})
    return path


def _prune_logs(state_dir: Path, named: set[str | None]) -> None:
    keep = {Path(n).name for n in named if n}  # by name: the record may hold the state dir spelled otherwise
    for old in boot_logs(state_dir):
        if old.name not in keep:
            old.unlink(missing_ok=True)


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
    return _when(_read(Path(state_dir) / DRILL_FILE).get("last_booted_success" if booted else "last_success"))


def drill_record(state_dir: str | Path) -> DrillRecord:
    """The record as `check` reads it (a freshness.DrillRecord); empty when there is none or it is unreadable."""
    data = _read(Path(state_dir) / DRILL_FILE)
    last: dict[str, Any] = data["last"] if isinstance(data.get("last"), dict) else {}
    boot: dict[str, Any] = last["boot"] if isinstance(last.get("boot"), dict) else {}
    failed = bool(last) and not last.get("ok")
    return DrillRecord(
        last_success=_when(data.get("last_success")), success_booted=last_success_booted(state_dir),
        last_booted=_when(data.get("last_booted_success")), last_failed=_when(last.get("finished")) if failed else None,
        last_failure=_failure(last) if failed else "", last_log=str(boot.get("log") or "") if failed else "",
    )


def _when(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _failure(last: dict[str, Any]) -> str:
    """Why a recorded drill failed: its error, its boot's reason, or its first failed check."""
    if last.get("error"):
        return str(last["error"])
    boot: dict[str, Any] = last["boot"] if isinstance(last.get("boot"), dict) else {}
    if boot and not boot.get("ok"):
        return f"boot: {boot.get('reason') or 'failed'}"
    bad = next((c for c in last.get("checks") or [] if isinstance(c, dict) and not c.get("ok")), None)
    return f"{bad.get('name')}: {bad.get('detail')}" if bad else ""
