"""A systemd timer that resumes Flux if pre-change dies without cleaning up.

Signal handlers cover SIGTERM, SIGINT and SIGHUP, but not SIGKILL, an OOM kill, a
power cut, or an SSH session without a pty whose process is never signalled. For
those, pre-change arms a transient systemd timer before it suspends anything:

    systemd-run --unit=subvault-resume-<run id> --on-active=<delay>s \\
        --timer-property=AccuracySec=1s -- subvault pre-change --resume --run-id <run id>

and stops it (`systemctl stop <unit>.timer`) once it has resumed Flux itself. If the
resume failed, the timer stays armed and tries again later.

Rules:
- Arming is best effort: without systemd (a container, a test machine) it returns None
  and the caller warns; it never stops a pre-change. `run` and `check` are the backstop
  where no timer exists (run/flux_leftovers.py).
- Commands go through subvault.process; the unit name is derived from the run id.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from subvault import process
from subvault.errors import CommandFailed

DEFAULT_DELAY = 3600.0
Log = Callable[[str], None]


def unit_name(run_id: str) -> str:
    """Return the transient unit name for a run id (only characters systemd accepts)."""
    return "subvault-resume-" + re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


@dataclass(frozen=True)
class AutoResume:
    """An armed timer; `disarm` stops it."""

    unit: str

    def disarm(self, log: Log) -> bool:
        """Stop the timer; return whether systemctl succeeded. Never raises CommandFailed."""
        try:
            process.run(["systemctl", "stop", f"{self.unit}.timer"], what="disarm auto-resume timer", timeout=30)
        except CommandFailed as e:
            log(f"could not stop the auto-resume timer {self.unit}.timer: {e}")
            return False
        return True


def arm(run_id: str, resume_argv: Sequence[str], log: Log, *, delay: float = DEFAULT_DELAY) -> AutoResume | None:
    """Arm a timer that runs resume_argv after delay seconds; return it, or None without systemd."""
    if shutil.which("systemd-run") is None:
        log("systemd-run not found: no auto-resume timer; if this session dies, run `subvault pre-change --resume`")
        return None
    unit = unit_name(run_id)
    argv = [
        "systemd-run",
        f"--unit={unit}",
        f"--on-active={max(1, int(delay))}s",
        "--timer-property=AccuracySec=1s",
        f"--description=subvault: resume Flux if pre-change {run_id} did not",
        "--",
        *resume_argv,
    ]
    try:
        process.run(argv, what="arm auto-resume timer", timeout=30)
    except CommandFailed as e:
        log(f"could not arm an auto-resume timer ({e}); if this session dies, run `subvault pre-change --resume`")
        return None
    log(f"armed auto-resume timer {unit}.timer (fires in {int(delay)}s unless disarmed)")
    return AutoResume(unit)
