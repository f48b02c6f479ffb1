"""The message `subvault-notify@.service` sends when a subvault unit fails.

systemd starts `subvault notify-failure UNIT` through `OnFailure=`. This catches what
the in-process lifecycle cannot report itself (a crash, an OOM kill, a timeout).

Rule: when the lifecycle already sent a message for this very invocation of the unit
(systemd passes `MONITOR_INVOCATION_ID`, the lifecycle records `INVOCATION_ID`), no
second message is sent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from subvault import process
from subvault.errors import CommandFailed
from subvault.notify.apprise_notify import Message, hostname, send_message
from subvault.notify.lifecycle import load_entry
from subvault.secrets import redact

log = logging.getLogger("subvault.notify")

JOURNAL_LINES = 20


def job_of_unit(unit_name: str) -> str:
    """Given `subvault-run.service`, return the lifecycle job name `run`."""
    stem = unit_name.removesuffix(".service")
    return stem.removeprefix("subvault-")


def journal_tail(unit_name: str, lines: int = JOURNAL_LINES) -> list[str]:
    """Return the last lines the journal holds for unit_name (redacted), or why not."""
    try:
        result = process.run(
            ["journalctl", "-u", unit_name, "-n", str(lines), "--no-pager", "-o", "short-iso"],
            check=False,
            timeout=30,
            what="journalctl",
        )
    except CommandFailed as exc:
        return [f"(journal not available: {exc})"]
    text = result.stdout.strip() or result.stderr.strip()
    return [redact(line) for line in text.splitlines()[-lines:]] or ["(the journal holds no lines for it)"]


def already_notified(unit_name: str, state_dir: Path | None, env: Mapping[str, str]) -> bool:
    """Return True when the lifecycle already notified for this failed invocation."""
    invocation = env.get("MONITOR_INVOCATION_ID", "")
    if not invocation or state_dir is None:
        return False
    entry = load_entry(state_dir, job_of_unit(unit_name))
    return bool(entry.get("notified")) and entry.get("invocation_id") == invocation


def unit_failure_message(unit_name: str, env: Mapping[str, str], tail: Sequence[str]) -> Message:
    """Return the message for a failed unit: how it ended and its journal tail."""
    result = env.get("MONITOR_SERVICE_RESULT", "")
    code = env.get("MONITOR_EXIT_STATUS", "")
    how = ", ".join(x for x in (result, f"exit {code}" if code else "") if x)
    title = f"❌ {unit_name} failed on {hostname()}" + (f" ({how})" if how else "")
    lines = [f"journalctl -u {unit_name} -n {JOURNAL_LINES}:", *tail]
    return Message(title, tuple(lines), "failure")


def notify_unit_failure(
    unit_name: str,
    notify_urls: Sequence[str],
    state_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Notify that a systemd unit failed, with its journal tail; return the warnings.

    Skip (return []) when the lifecycle already notified for this invocation.
    """
    env = os.environ if env is None else env
    if already_notified(unit_name, state_dir, env):
        log.info("%s: already notified by subvault itself", unit_name)
        return []
    message = unit_failure_message(unit_name, env, journal_tail(unit_name))
    return send_message(list(notify_urls), message)
