"""Flux objects a pre-change left suspended: `check` names them, `run` resumes them.

Signal handlers and the systemd timer do not cover every death: SIGKILL, an OOM kill
or a power cut leave Flux suspended, and where systemd-run is missing no timer exists.
So the timer's work is also done by the two commands that run anyway:

- A live pre-change holds an flock on `<state_dir>/prechange/<run id>.lock` from before
  it suspends anything until after it resumed. The kernel drops the flock when the
  process dies, however it dies; the file alone is left behind.
- `run` resumes the objects of a run whose lock file is there and not held (that
  pre-change is dead), and the objects suspended longer than `auto_resume_seconds`
  whose run left no lock file here (another host, or a deleted state dir): exactly what
  the auto-resume timer would have done. It never resumes under a live pre-change.
- `check` fails for every object of a dead pre-change and every object suspended
  longer than `auto_resume_seconds`, live or not, naming the command that resumes it.
- Only objects carrying subvault's annotation are ever touched: a suspension the user
  made stays (invariant 6).
- `judge` is pure; the rest reads the lock files and calls the Kubernetes client.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from subvault.context import Context
from subvault.k8s import flux as fluxops
from subvault.k8s.client import FluxObject, KubeAuthError, KubeClient, KubeError, ObjRef
from subvault.k8s.lightkube_client import LightkubeClient
from subvault.results import Item, Outcome
from subvault.timeutil import format_age

HOLD_DIR = "prechange"


class Owner(StrEnum):
    """Whether the pre-change that suspended an object is still running on this host."""

    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # no lock file here: another host, an older subvault, or a deleted state dir


@dataclass(frozen=True)
class Leftover:
    ref: ObjRef
    run_id: str
    since: datetime | None
    owner: Owner

    def resume_command(self) -> str:
        return f"subvault pre-change --resume --run-id {self.run_id}"

    def describe(self, now: datetime, delay: timedelta) -> str:
        age = f"for {format_age(now - self.since)}" if self.since else "since an unknown time"
        why = {
            Owner.DEAD: "that pre-change is no longer running",
            Owner.ALIVE: f"longer than the auto-resume delay ({format_age(delay)}), by a pre-change still running",
            Owner.UNKNOWN: f"longer than the auto-resume delay ({format_age(delay)})",
        }[self.owner]
        return f"{self.ref} suspended by subvault ({self.run_id}) {age}; {why}; resume it: {self.resume_command()}"


@dataclass(frozen=True)
class Verdict:
    resume: tuple[Leftover, ...]  # what `run` resumes
    overdue: tuple[Leftover, ...]  # what `check` fails on


def judge(leftovers: Sequence[Leftover], now: datetime, delay: timedelta) -> Verdict:
    """Given subvault's suspensions, return what `run` may resume and what `check` reports."""
    resume: list[Leftover] = []
    overdue: list[Leftover] = []
    for left in sorted(leftovers, key=lambda lo: lo.ref):
        old = left.since is None or now - left.since > delay
        if left.owner == Owner.DEAD or old:
            overdue.append(left)
        if left.owner == Owner.DEAD or (left.owner == Owner.UNKNOWN and left.since is not None and old):
            resume.append(left)
    return Verdict(tuple(resume), tuple(overdue))


def _lock_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / HOLD_DIR / (re.sub(r"[^A-Za-z0-9_.-]", "_", run_id) + ".lock")


@contextmanager
def holding(state_dir: Path, run_id: str) -> Iterator[None]:
    """Hold this pre-change's liveness lock for the block; the file goes when the block ends."""
    path = _lock_path(state_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a run id is unique: never contended
        yield
    finally:
        try:
            path.unlink()
        except OSError:
            pass
        os.close(fd)


def owner_of(state_dir: Path, run_id: str) -> Owner:
    """Return whether run_id's pre-change is alive here, dead here, or unknown here."""
    path = _lock_path(state_dir, run_id)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return Owner.UNKNOWN
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return Owner.ALIVE
    finally:
        os.close(fd)
    return Owner.DEAD


def forget(state_dir: Path, run_id: str) -> None:
    """Remove a dead run's lock file once its objects are resumed."""
    try:
        _lock_path(state_dir, run_id).unlink()
    except OSError:
        pass


def find(client: KubeClient, state_dir: Path) -> list[Leftover]:
    """Return every Flux object carrying subvault's suspension mark, with its owner's state."""
    objects: list[FluxObject] = [o for o in fluxops.list_flux(client) if fluxops.is_ours(o)]
    owners: dict[str, Owner] = {}
    out = []
    for obj in objects:
        run_id = obj.annotations[fluxops.ANNOTATION]
        if run_id not in owners:
            owners[run_id] = owner_of(state_dir, run_id)
        out.append(Leftover(obj.ref, run_id, fluxops.suspended_since(obj), owners[run_id]))
    return out


def resume(client: KubeClient, state_dir: Path, leftovers: Sequence[Leftover], log: Callable[[str], None]) -> fluxops.ResumeReport:
    """Resume leftovers, each still marked by the same run just before (a new pre-change may have adopted it since)."""
    now_marked = {lo.ref: lo.run_id for lo in find(client, state_dir) if lo.owner != Owner.ALIVE}
    todo = [lo for lo in leftovers if now_marked.get(lo.ref) == lo.run_id]
    report = fluxops.resume(client, [lo.ref for lo in todo], log)
    failed = {ref for ref, _ in report.failed}
    for run_id in {lo.run_id for lo in todo if lo.owner == Owner.DEAD}:
        if not any(lo.ref in failed for lo in todo if lo.run_id == run_id):
            forget(state_dir, run_id)
    return report


def kube_client(kubeconfig: str) -> KubeClient:
    return LightkubeClient(Path(kubeconfig))



def resume_leftovers(ctx: Context) -> Outcome:
    """`run`'s part: resume what dead pre-changes (or an overdue foreign one) left suspended."""
    out = Outcome("run", dry_run=ctx.dry_run)
    flux = ctx.config.flux
    if flux is None:
        return out
    delay = timedelta(seconds=flux.auto_resume_seconds)
    try:
        client = kube_client(flux.kubeconfig)
        verdict = judge(find(client, ctx.state_dir), ctx.now, delay)
        if ctx.dry_run:
            out.items += [Item(str(lo.ref), "would-resume", lo.describe(ctx.now, delay)) for lo in verdict.resume]
            return out
        report = resume(client, ctx.state_dir, verdict.resume, ctx.say) if verdict.resume else None
    except (KubeError, KubeAuthError) as exc:
        out.warnings.append(f"could not look for Flux objects a pre-change left suspended: {exc}")
        return out
    if report is not None:
        by_ref = {lo.ref: lo for lo in verdict.resume}
        out.items += [Item(str(ref), "resumed", f"left suspended by {by_ref[ref].run_id}") for ref in report.resumed]
        for ref, why in report.failed:
            out.errors.append(f"{ref}: could not resume it ({why}); run `{by_ref[ref].resume_command()}`")
            out.items.append(Item(str(ref), "failed", why))
    for lo in verdict.overdue:
        if lo.owner == Owner.ALIVE:
            out.warnings.append(lo.describe(ctx.now, delay) + " (left alone while it runs)")
    return out


def overdue(ctx: Context) -> tuple[list[str], list[str]]:
    """`check`'s part: return (problems, warnings) as one-line messages."""
    flux = ctx.config.flux
    if flux is None:
        return [], []
    delay = timedelta(seconds=flux.auto_resume_seconds)
    try:
        found = find(kube_client(flux.kubeconfig), ctx.state_dir)
    except (KubeError, KubeAuthError) as exc:
        return [], [f"could not look for Flux objects left suspended: {exc}"]
    return [lo.describe(ctx.now, delay) for lo in judge(found, ctx.now, delay).overdue], []
