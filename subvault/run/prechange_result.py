"""What one pre-change did, as `pre-change --json` prints it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from subvault.hooks import HookOutcome


@dataclass
class PrechangeResult:
    """What one pre-change did; `ok` is false if anything after planning went wrong."""

    run_id: str
    description: str
    flux: str = "off"  # suspended | off | not-configured | unavailable
    suspended: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    user_suspended: list[str] = field(default_factory=list)
    still_reconciling: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    resume_failed: list[str] = field(default_factory=list)
    hooks: list[HookOutcome] = field(default_factory=list)
    snapshot: object | None = None
    snapshot_taken: bool = False
    command_exit: int | None = None
    command_output: str = ""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    signals: list[str] = field(default_factory=list)
    auto_resume_unit: str | None = None
    dry_run: bool = False
    planned: list[str] = field(default_factory=list)  # with dry_run: each step it would take

    @property
    def ok(self) -> bool:
        if self.dry_run:
            return self.error is None
        return self.snapshot_taken and self.error is None and not self.resume_failed

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the snapshot value is rendered with str unless it has to_dict)."""
        data = asdict(self)
        snap = self.snapshot
        data["snapshot"] = snap.to_dict() if hasattr(snap, "to_dict") else (None if snap is None else str(snap))
        data["ok"] = self.ok
        return data
