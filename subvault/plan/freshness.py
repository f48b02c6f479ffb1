"""Freshness planner (RPO): is the newest copy in every layer recent enough?

Pure: the caller passes, for each (subvolume, layer), the time of the newest copy,
the layer's cadence and slack; and `now`. No I/O, no clock.

Rules:
- A layer is stale when it has no copy, or when its newest copy is older than
  cadence + slack. Exactly at the limit is still fresh.
- The default slack is one cadence (one missed run is tolerated, two are not), and
  at least 15 minutes for timer jitter and the run's own duration.
- A newest copy dated more than the slack in the future means the clock is wrong.
- The last successful drill must be younger than drill_max_age (default 30 days).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from subvault.plan.coverage import Problem, ProblemKind
from subvault.timeutil import format_age

DEFAULT_DRILL_MAX_AGE = timedelta(days=30)
MIN_SLACK = timedelta(minutes=15)


@dataclass(frozen=True)
class LayerFreshness:
    """The newest copy of one subvolume in one layer, and how often it should come.

    layer: `local`, `replica:<target>`, `offsite:<target>` (shown as is).
    newest: creation time of the newest copy (timezone-aware), None if there is none.
    """

    subvolume: str
    layer: str
    newest: datetime | None
    cadence: timedelta
    slack: timedelta | None = None


def default_slack(cadence: timedelta) -> timedelta:
    """Return the slack used when none is configured: one cadence, at least 15 minutes."""
    return max(cadence, MIN_SLACK)


def allowed_age(item: LayerFreshness) -> timedelta:
    """Return the oldest the newest copy may be: cadence + slack."""
    slack = item.slack if item.slack is not None else default_slack(item.cadence)
    return item.cadence + slack


def human_age(age: timedelta) -> str:
    """Return a short age: 45s, 12m, 5h, 3d (rounded down)."""
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def plan_freshness(items: Iterable[LayerFreshness], now: datetime) -> list[Problem]:
    """Given the newest copy per (subvolume, layer) and now, return a problem per stale layer."""
    problems: list[Problem] = []
    for item in items:
        problem = _check_one(item, now)
        if problem is not None:
            problems.append(problem)
    return problems


def _check_one(item: LayerFreshness, now: datetime) -> Problem | None:
    subject = f"{item.subvolume} {item.layer}"
    limit = allowed_age(item)
    if item.newest is None:
        return Problem(
            ProblemKind.STALE, subject,
            f"{subject}: no copy yet (expected one every {human_age(item.cadence)}); "
            "run `subvault run` and read its errors",
        )
    age = now - item.newest
    if -age > limit - item.cadence:
        return Problem(
            ProblemKind.STALE, subject,
            f"{subject}: newest copy is dated {human_age(-age)} in the future; fix the system clock",
        )
    if age <= limit:
        return None
    return Problem(
        ProblemKind.STALE, subject,
        f"{subject}: newest copy is {human_age(age)} old, limit {human_age(limit)} "
        f"(every {human_age(item.cadence)} + {human_age(limit - item.cadence)} slack); "
        "check that the timer runs (systemctl status subvault-run.timer) and read `subvault run` errors",
    )


def plan_drill(
    last_success: datetime | None,
    now: datetime,
    max_age: timedelta = DEFAULT_DRILL_MAX_AGE,
    booted: bool = False,
) -> list[Problem]:
    """Given when the last drill succeeded (booted: the last that booted the machine), return a problem when it is too old or missing."""
    what, cmd = ("booted recovery drill", "subvault drill --boot") if booted else ("recovery drill", "subvault drill")
    if last_success is None:
        return [Problem(
            ProblemKind.DRILL, "drill",
            f"no successful {what} recorded; run `{cmd}` to prove the backups restore",
        )]
    age = now - last_success
    if age <= max_age:
        return []
    return [Problem(
        ProblemKind.DRILL, "drill",
        f"last successful {what} was {human_age(age)} ago (limit {human_age(max_age)}); "
        f"run `{cmd}`",
    )]


@dataclass(frozen=True)
class DrillRecord:
    """What the drill record (dr/state.py) says, as `check` needs it. Times are aware."""

    last_success: datetime | None = None
    success_booted: str = ""  # how the last successful drill booted the machine ("direct on tcg"); "" when it did not
    last_booted: datetime | None = None  # when the last successful drill that booted the machine finished
    last_failed: datetime | None = None  # when the last drill finished, if it failed
    last_failure: str = ""  # why it failed
    last_log: str = ""  # its serial log, when it booted


def plan_drill_record(r: DrillRecord, now: datetime, max_age: timedelta = DEFAULT_DRILL_MAX_AGE,
                      boot_required: bool = False) -> tuple[str, list[Problem], list[str]]:
    """Return check's drill line, its problems and its warnings.

    Rules: the drill that counts is the last successful one, or with boot_required ([dr]
    boot = true) the last successful one that booted the machine. A missing one is a
    reminder (warning) until a drill has succeeded here; with boot_required and only
    unbooted successes, it becomes a problem once the newest of them is older than
    max_age (enabling boot gives one drill_max_age to boot). The line always says whether
    the last success booted, and a last drill that failed after it is named with its reason.
    """
    counted = r.last_booted if boot_required else r.last_success
    found = plan_drill(counted, now, max_age, booted=boot_required)
    problems: list[Problem] = []
    warnings: list[str] = []
    if counted is not None or (r.last_success is not None and now - r.last_success > max_age):
        problems = found
    else:
        warnings = [p.message for p in found]
    cmd = "subvault drill --boot" if boot_required else "subvault drill"
    if r.last_success is None:
        line = f"no successful drill recorded: recovery {'and boot ' if boot_required else ''}not proven; run `{cmd}`"
    else:
        line = f"last successful drill {format_age(now - r.last_success)} ago, "
        if r.success_booted:
            line += f"booted the machine ({r.success_booted})"
        else:
            line += "did not boot the machine"
            if r.last_booted is not None:
                line += f" (last booted {format_age(now - r.last_booted)} ago)"
            elif boot_required:
                line += "; no booted drill recorded"
    if r.last_failed is not None and (r.last_success is None or r.last_failed > r.last_success):
        failed = f"the last drill, {format_age(now - r.last_failed)} ago, FAILED: {r.last_failure or 'see its report'}"
        line += f"; {failed}" + (f" (serial log: {r.last_log})" if r.last_log else "")
        warnings.append(failed + f"; run `{cmd}` to see it again")
    return line, problems, warnings
