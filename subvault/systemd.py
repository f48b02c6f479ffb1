"""systemd units and timers for subvault: `run` hourly, `check` daily, notify on failure.

Rules:
- Every service has `OnFailure=subvault-notify@%n.service`; that template runs
  `subvault notify-failure %i`, which sends the unit's journal tail.
- The config path reaches the commands through `SUBVAULT_CONFIG` (the public
  contract), so the units do not depend on where the CLI puts `--config`.
- subvault removes only unit files that carry its marker line (invariant 8).
- Every service has `TimeoutStartSec=` (a oneshot has no start timeout by default, and
  a hung run would hold back every later timer): `run` a day by default (a first full
  send of a big subvolume may take hours; transfers are also stopped when they stall),
  `check` an hour, the notification five minutes. systemd then stops the unit and
  OnFailure= reports it.
- Enabling and starting are separate (`activate_commands`), so `install` can be
  tested without a running systemd.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from subvault import process
from subvault.errors import Refused
from subvault.secrets import redact

DEFAULT_DEST = Path("/etc/systemd/system")
MARKER = "# Written by subvault install-systemd, which also removes it on uninstall."
TIMERS = ("subvault-run.timer", "subvault-check.timer")
NOTIFY_TEMPLATE = "subvault-notify@.service"
UNIT_NAMES = ("subvault-run.service", "subvault-run.timer", "subvault-check.service", "subvault-check.timer", NOTIFY_TEMPLATE)


RUN_TIMEOUT = timedelta(days=1)
CHECK_TIMEOUT = timedelta(hours=1)
NOTIFY_TIMEOUT = timedelta(minutes=5)


def time_span(length: timedelta) -> str:
    """Return length in systemd's time span syntax, in its largest exact unit ("1d", "90min")."""
    seconds = int(length.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class NotOwned(Refused):
    """A unit file of the same name exists and subvault did not write it."""


_SAFE_ARG = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


@dataclass(frozen=True)
class UnitOptions:
    """What the rendered units need to know."""

    exe_path: str
    config_path: str
    metrics_dir: str | None = None
    run_timeout: timedelta = RUN_TIMEOUT


def quote_exec_arg(arg: str) -> str:
    """Return arg quoted for ExecStart= (systemd's own quoting, `%` doubled)."""
    arg = str(arg).replace("%", "%%")
    if _SAFE_ARG.match(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec(opts: UnitOptions, *args: str) -> str:
    return " ".join(quote_exec_arg(a) for a in (opts.exe_path, *args))


def _env_line(opts: UnitOptions) -> str:
    return f"Environment={quote_exec_arg('SUBVAULT_CONFIG=' + opts.config_path)}"


def _service(opts: UnitOptions, command: str, description: str, timeout: timedelta) -> str:
    args = [command]
    if opts.metrics_dir:
        args += ["--metrics-file", str(Path(opts.metrics_dir) / f"subvault-{command}.prom")]
    return f"""{MARKER}
[Unit]
Description={description}
After=local-fs.target network-online.target
Wants=network-online.target
OnFailure=subvault-notify@%n.service

[Service]
Type=oneshot
{_env_line(opts)}
ExecStart={_exec(opts, *args)}
TimeoutStartSec={time_span(timeout)}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
"""


def _timer(command: str, calendar: str, delay: str) -> str:
    return f"""{MARKER}
[Unit]
Description=subvault {command}, {calendar}

[Timer]
OnCalendar={calendar}
Persistent=true
RandomizedDelaySec={delay}
AccuracySec=1min

[Install]
WantedBy=timers.target
"""


def _notify_template(opts: UnitOptions) -> str:
    return f"""{MARKER}
[Unit]
Description=subvault: notify that %i failed

[Service]
Type=oneshot
{_env_line(opts)}
ExecStart={_exec(opts, "notify-failure")} %i
TimeoutStartSec={time_span(NOTIFY_TIMEOUT)}
"""


def render(opts: UnitOptions) -> dict[str, str]:
    """Return the unit files by name: run hourly, check daily, and the notify template."""
    return {
        "subvault-run.service": _service(opts, "run", "subvault: snapshot, replicate, offsite and prune what is due", opts.run_timeout),
        "subvault-run.timer": _timer("run", "hourly", "0"),
        "subvault-check.service": _service(opts, "check", "subvault: check coverage, freshness and chains", CHECK_TIMEOUT),
        "subvault-check.timer": _timer("check", "daily", "30min"),
        NOTIFY_TEMPLATE: _notify_template(opts),
    }


def install(
    dest_dir: Path,
    exe_path: str,
    config_path: str,
    dry_run: bool,
    metrics_dir: str | None = None,
    run_timeout: timedelta = RUN_TIMEOUT,
) -> list[tuple[Path, str]]:
    """Write the units into dest_dir (unless dry_run); return (path, content) for each.

    Refuse (NotOwned) to overwrite a file of the same name that subvault did not write.
    """
    opts = UnitOptions(str(exe_path), str(config_path), metrics_dir, run_timeout)
    units = [(Path(dest_dir) / name, text) for name, text in render(opts).items()]
    for path, _ in units:
        _refuse_foreign(path)
    if not dry_run:
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
        for path, text in units:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(path)
    return units


def uninstall(dest_dir: Path, dry_run: bool = False) -> list[Path]:
    """Remove the unit files subvault wrote in dest_dir; return the paths removed.

    Files without subvault's marker are left alone.
    """
    removed: list[Path] = []
    for name in UNIT_NAMES:
        path = Path(dest_dir) / name
        if path.is_file() and _is_ours(path):
            if not dry_run:
                path.unlink()
            removed.append(path)
    return removed


def _is_ours(path: Path) -> bool:
    try:
        return path.read_text().startswith(MARKER)
    except OSError:
        return False


def _refuse_foreign(path: Path) -> None:
    if path.exists() and not _is_ours(path):
        raise NotOwned(f"{path} exists and was not written by subvault; move it away, then run install-systemd again")


def activate_commands() -> list[list[str]]:
    """Return the systemctl calls that make installed units take effect."""
    return [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", *TIMERS]]


def deactivate_commands() -> list[list[str]]:
    """Return the systemctl calls to run before the unit files are removed."""
    return [["systemctl", "disable", "--now", *TIMERS]]


def run_commands(commands: list[list[str]], check: bool = True) -> list[str]:
    """Run systemctl calls in order; return the stderr of those that failed.

    Raise CommandFailed on the first failure when check is true (install); with
    check false (uninstall, where the timers may already be gone) go on.
    """
    failures: list[str] = []
    for argv in commands:
        result = process.run(argv, what=" ".join(argv[:2]), timeout=120, check=check)
        if result.returncode != 0:
            failures.append(redact(result.stderr.strip()))
    return failures


def verify(paths: list[Path]) -> process.Result:
    """Run `systemd-analyze verify` on unit files; return its result (not raising)."""
    return process.run(["systemd-analyze", "verify", *[str(p) for p in paths]], check=False, timeout=120)
