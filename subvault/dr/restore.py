"""`dr restore`: plan a restore onto real disks (or images), show it, and carry it out once confirmed, resumably.

Rules:
- Nothing is written before the plan was shown and confirmed (see `restore_disks`); every
  refusal plan.py lists is raised before that.
- Running the same command again after an interruption resumes it: each step skips what
  is already done (executor.py), and it works in the same directory every time
  (`restore_workdir`), whose leftovers (mounts, journaled loop devices) are released
  before the first step and never counted as the disk being in use.
- SIGTERM and SIGHUP stop it like SIGINT: what it attached and mounted is undone on the way out.
"""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from subvault.context import Context, host_name
from subvault.dr.disks import disk_facts
from subvault.dr.executor import Executor
from subvault.dr.parse import parse_fstab
from subvault.dr.plan import plan_restore, render_plan, require_confirmation
from subvault.dr.settings import DrSettings
from subvault.dr.source import TargetSource, find_capture
from subvault.dr.workspace import Leftovers, WorkLock, Workspace, find_leftovers, remove_workdir
from subvault.errors import SubvaultError
from subvault.results import Item, Outcome
from subvault.timeutil import parse_at

RUN_DIR = "/run/subvault"  # loop devices and mounts last until reboot, and so does /run


def restore_workdir(disks: list[str]) -> Path:
    """The one directory a `dr restore` of these disks works in: the same on every run, so a rerun finds what an interrupted one left."""
    key = hashlib.sha256("\0".join(os.path.realpath(d) for d in disks).encode()).hexdigest()[:16]
    base = Path(RUN_DIR) if os.path.isdir(os.path.dirname(RUN_DIR)) else Path(tempfile.gettempdir()) / "subvault"
    return base / f"restore-{key}"


Confirm = Callable[[list[str], bool], bool]  # (plan lines, ask?) -> go on? Shows the plan either way.


@dataclass
class RestoreRequest:
    source: str  # target name
    at: str
    disks: list[str]
    capture: str | None = None  # --capture DIR; default: the one on the target
    host: str | None = None  # the name the machine had on the target; default: this host's
    yes: bool = False
    interactive: bool = False


def restore_disks(ctx: Context, req: RestoreRequest, confirm: Confirm) -> Outcome:
    """Plan the restore, show it through confirm(lines), and carry it out if confirmed.

    Raise on every refusal before anything is written (plan.py lists them). With
    ctx.dry_run the plan is returned as items and nothing else happens. A failed step
    is returned as an error next to the steps done before it (the same command resumes).

    All of it works in restore_workdir(disks), under its lock: what an interrupted
    restore of the same disks left there (mounts, loop devices it journaled) is released
    before the first step, and is never counted as the disk being in use.
    """
    workdir = restore_workdir(req.disks)
    if ctx.dry_run:  # reads only: no lock, no directory (design.md, "Dry runs")
        return _restore_locked(ctx, req, confirm, workdir, find_leftovers(workdir))
    with WorkLock(workdir, f"dr restore of {', '.join(req.disks)}"):
        try:
            return _restore_locked(ctx, req, confirm, workdir, find_leftovers(workdir))
        finally:
            remove_workdir(workdir)  # only while holding the lock: never another run's directory


def _restore_locked(ctx: Context, req: RestoreRequest, confirm: Confirm, workdir: Path, leftovers: Leftovers) -> Outcome:
    out = Outcome("dr restore", dry_run=ctx.dry_run)
    when = parse_at(req.at, ctx.now, ctx.tz)
    settings = DrSettings.from_config(ctx.config)
    with TargetSource(ctx.config.get_target(req.source), req.host or host_name()) as src:
        manifest, here = find_capture(src, ctx.config, settings.capture_dir, when, req.capture)
        choices = src.choose_all([p.name for p in manifest.protected], when)
        facts = [disk_facts(d, frozenset(leftovers.loops)) for d in req.disks]
        fstab = parse_fstab((here / "fstab").read_text())
        plan = plan_restore(manifest, facts, choices, fstab, source=src.name)
        if leftovers:
            plan.warnings.append(f"releasing {leftovers.describe()}")
        lines = render_plan(plan)
        if ctx.dry_run:
            out.items += [Item(s.subject, f"would-{s.kind}", s.detail, {"reason": s.reason}) for s in plan.steps]
            out.warnings += plan.warnings
            return out
        go = confirm(lines, not req.yes and req.interactive)
        require_confirmation(req.yes, req.interactive)
        if not go:
            out.warnings.append("not confirmed; nothing was written")
            return out
        leftovers.release()
        out.warnings += plan.warnings
        executor = None
        try:
            with _signals_raise(), Workspace(workdir, journal=True) as ws:
                executor = Executor(plan, manifest, here, src, ws, ctx.say)
                executor.run()
        except SubvaultError as exc:
            out.fail("restore", exc)
        finally:
            if executor is not None:
                out.items[:0] = [Item("restore", "done", line) for line in executor.out.done]
    return out


class RestoreInterrupted(SubvaultError):
    """SIGTERM or SIGHUP stopped the restore; what it attached and mounted was undone on the way out."""


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into RestoreInterrupted, so the workspace is undone on the way out (SIGINT already raises)."""
    def stop(signum: int, frame: object) -> None:  # noqa: ARG001
        raise RestoreInterrupted(f"stopped by {signal.Signals(signum).name}; run the same command again to resume")

    saved = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
