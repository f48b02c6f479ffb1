"""One lifecycle for every monitored job (`run`, `check`): ping, notify, remember.

    with monitored("check", cfg.notify.urls, cfg.notify.ping, state_dir) as job:
        result = do_check()
        job.report(result.exit_code, [p.message for p in result.problems])

Rules:
- On entry: ping `/start`.
- On exit: ping success, or `/<exit code>` when the job failed; an exception that
  escapes the block counts as a failure with its exit code, and is re-raised untouched.
- A failure sends a notification naming the problems (or the error); a success right
  after a failure sends a recovery notification.
- The last outcome per job lives in `state_dir/notify-state.json`. It is a cache
  (invariant 12): if it is missing or unreadable, no recovery message is sent, and
  nothing else changes.
- Nothing here raises because a ping, a notification or the state file failed: those
  are warnings, collected on the handle and logged.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from subvault.errors import exit_code as exit_code_for
from subvault.notify.apprise_notify import Message, hostname, send_message
from subvault.notify.ping import Pinger
from subvault.secrets import redact

log = logging.getLogger("subvault.notify")

STATE_FILE = "notify-state.json"
EXIT_NAMES = {1: "failed", 2: "usage or config error", 3: "partly failed"}


@dataclass
class Job:
    """The handle `monitored` yields: the job reports its outcome through it."""

    name: str
    exit_code: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def report(self, exit_code: int, problems: Sequence[str] = ()) -> None:
        """Record the job's exit code and the one-line problems a notification names."""
        self.exit_code = int(exit_code)
        self.problems = [str(p) for p in problems]


@contextmanager
def monitored(
    job: str,
    notify_urls: Sequence[str] | None,
    ping_url: str | None,
    state_dir: Path | None,
) -> Iterator[Job]:
    """Run the with-block as a monitored job; see the module docstring for the rules.

    Yield a Job; the block calls `job.report(code, problems)`. An exception leaving
    the block is a failure (exit code from `subvault.errors.exit_code`) and propagates
    unchanged after the pings and notifications were attempted.
    """
    handle = Job(job)
    pinger = Pinger(ping_url) if ping_url else None
    if pinger:
        _collect(handle, pinger.start())
    try:
        yield handle
    except BaseException as exc:
        code = exit_code_of(exc)
        if code != 0:
            handle.exit_code = code
            if not isinstance(exc, SystemExit):  # its message is only the code
                handle.problems = [*handle.problems, _describe_error(exc)]
        _finish(handle, list(notify_urls or ()), pinger, state_dir)
        raise
    _finish(handle, list(notify_urls or ()), pinger, state_dir)


def exit_code_of(exc: BaseException) -> int:
    """Return the exit code an exception leaving a job means (0 for a clean exit)."""
    if isinstance(exc, SystemExit):
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    if isinstance(exc, KeyboardInterrupt):
        return 130
    code = getattr(exc, "exit_code", None)  # SubvaultError, click.exceptions.Exit
    if isinstance(code, int):
        return code
    return exit_code_for(exc) if isinstance(exc, Exception) else 1


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return redact(text.splitlines()[0])


def _finish(handle: Job, urls: list[str], pinger: Pinger | None, state_dir: Path | None) -> None:
    """Ping, notify and remember the outcome; never raise."""
    failed = handle.exit_code != 0
    body = "\n".join(handle.problems)
    if pinger:
        _collect(handle, pinger.exit_code(handle.exit_code, body) if failed else pinger.success(body))
    previous = load_outcome(state_dir, handle.name) if state_dir else None
    message = None
    if failed:
        message = failure_message(handle)
    elif previous == "failed":
        message = recovery_message(handle)
    if message and urls:
        handle.warnings.extend(send_message(urls, message))
    if state_dir:
        _collect(handle, save_outcome(state_dir, handle.name, "failed" if failed else "ok", bool(message and urls)))


def _collect(handle: Job, warning: str | None) -> None:
    if warning:
        handle.warnings.append(warning)


def failure_message(handle: Job) -> Message:
    """Return the notification for a failed job, naming its problems."""
    what = EXIT_NAMES.get(handle.exit_code, f"failed (exit {handle.exit_code})")
    lines = handle.problems or [f"subvault {handle.name} exited {handle.exit_code}; see its log"]
    title = f"❌ subvault {handle.name} {what} on {hostname()}"
    return Message(title, tuple(lines), "failure")


def recovery_message(handle: Job) -> Message:
    """Return the notification for a job that succeeded after a failure."""
    title = f"✅ subvault {handle.name} recovered on {hostname()}"
    lines = handle.problems or ["it succeeded after the last failure; nothing to do"]
    return Message(title, tuple(lines), "success")


def load_outcome(state_dir: Path, job: str) -> str | None:
    """Return the last recorded outcome ("ok" or "failed") of job, or None if unknown."""
    entry = _load(state_dir).get(job)
    return entry.get("outcome") if isinstance(entry, dict) else None


def load_entry(state_dir: Path, job: str) -> dict[str, Any]:
    """Return the whole last recorded entry of job ({} if unknown)."""
    entry = _load(state_dir).get(job)
    return entry if isinstance(entry, dict) else {}


def _load(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_outcome(state_dir: Path, job: str, outcome: str, notified: bool) -> str | None:
    """Record job's outcome atomically; return a warning if it could not be written."""
    data = _load(state_dir)
    data[job] = {
        "outcome": outcome,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "notified": notified,
        # Set by systemd for a service; lets the OnFailure unit skip a duplicate message.
        "invocation_id": os.environ.get("INVOCATION_ID", ""),
    }
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".notify-state.", dir=state_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, state_dir / STATE_FILE)
    except OSError as exc:
        warning = f"could not remember the outcome of {job} in {state_dir}: {exc.strerror or exc}"
        log.warning("%s", warning)
        return warning
    return None
