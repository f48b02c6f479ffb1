"""Suspending and resuming Flux Kustomizations and HelmReleases (invariant 6).

Rules:
- subvault marks every object it suspends with ANNOTATION = its run id, and
  SUSPENDED_AT = when (UTC, ISO 8601), in the same merge patch that sets spec.suspend,
  so after a crash `resume_recorded` finds exactly the objects subvault suspended, and
  `check` knows how long they have been suspended.
- An object already suspended without that annotation was suspended by someone else:
  it is never patched, neither suspended nor resumed.
- An object already suspended *with* that annotation is a leftover of an earlier run
  that did not finish: a new run adopts it and resumes it at its end (the caller
  leaves out the objects of a run that is still alive).
- Resume patches spec.suspend=false and deletes both annotations; one failure does not
  stop the resume of the others.
- `plan_suspend` and `in_flight` are pure; the other functions call the client only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from subvault.k8s.client import FLUX_KINDS, FluxKind, FluxObject, KubeAuthError, KubeClient, KubeError, ObjRef

ANNOTATION = "subvault.io/suspended-by"
SUSPENDED_AT = "subvault.io/suspended-at"
RUN_PREFIX = "pre-change-"
POLL_SECONDS = 2.0
RESUME_ATTEMPTS = 3

Log = Callable[[str], None]


@dataclass(frozen=True)
class FluxSelection:
    """Which Flux objects pre-change suspends. Empty namespaces/labels mean all."""

    kinds: tuple[FluxKind, ...] = FLUX_KINDS
    namespaces: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, obj: FluxObject) -> bool:
        """Given an object, return whether the selection includes it."""
        if obj.ref.kind not in self.kinds:
            return False
        if self.namespaces and obj.ref.namespace not in self.namespaces:
            return False
        return all(obj.labels.get(k) == v for k, v in self.labels.items())


@dataclass(frozen=True)
class SuspendPlan:
    """What a run will suspend, adopt from an earlier run, and leave alone."""

    suspend: tuple[ObjRef, ...]
    adopt: tuple[ObjRef, ...]
    user_suspended: tuple[ObjRef, ...]

    @property
    def ours(self) -> tuple[ObjRef, ...]:
        return self.suspend + self.adopt


def is_ours(obj: FluxObject, run_id: str | None = None) -> bool:
    """Return whether subvault's annotation is on obj (for run_id, or for any run if None)."""
    value = obj.annotations.get(ANNOTATION)
    if value is None:
        return False
    return value == run_id if run_id is not None else value.startswith(RUN_PREFIX)


def plan_suspend(objects: Iterable[FluxObject], selection: FluxSelection) -> SuspendPlan:
    """Given the Flux objects and a selection, return what to suspend, adopt and leave alone."""
    suspend: list[ObjRef] = []
    adopt: list[ObjRef] = []
    user: list[ObjRef] = []
    for obj in sorted(objects, key=lambda o: o.ref):
        if not selection.matches(obj):
            continue
        if is_ours(obj):
            adopt.append(obj.ref)
        elif obj.suspended:
            user.append(obj.ref)
        else:
            suspend.append(obj.ref)
    return SuspendPlan(tuple(suspend), tuple(adopt), tuple(user))


def suspended_since(obj: FluxObject) -> datetime | None:
    """Return when subvault suspended obj: SUSPENDED_AT, else the time in its run id (local time); None if neither reads."""
    text = obj.annotations.get(SUSPENDED_AT)
    if text:
        try:
            at = datetime.fromisoformat(text)
            return at if at.tzinfo else at.replace(tzinfo=UTC)
        except ValueError:
            pass
    run_id = obj.annotations.get(ANNOTATION, "")
    try:
        return datetime.strptime(run_id[len(RUN_PREFIX):].split("-", 1)[0], "%Y%m%dT%H%M%S").astimezone(UTC)
    except ValueError:
        return None


def in_flight(obj: FluxObject) -> bool:
    """Return whether a reconcile of obj is running: Reconciling=True or Ready=Unknown."""
    for cond in obj.conditions:
        if cond.type == "Reconciling" and cond.status == "True":
            return True
        if cond.type == "Ready" and cond.status == "Unknown":
            return True
    return False


def list_flux(client: KubeClient, kinds: Sequence[FluxKind] = FLUX_KINDS) -> list[FluxObject]:
    """Return the objects of the given kinds in all namespaces."""
    objects: list[FluxObject] = []
    for kind in kinds:
        objects.extend(client.list_flux(kind))
    return objects


def suspend(client: KubeClient, refs: Sequence[ObjRef], run_id: str, done: list[ObjRef], log: Log) -> None:
    """Suspend each ref with the run's annotation, appending it to `done` once patched.

    `done` is the caller's record for resume: it holds every object patched so far
    even when this raises part-way.
    """
    for ref in refs:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        client.patch_flux(ref, suspend=True, annotations={ANNOTATION: run_id, SUSPENDED_AT: at})
        done.append(ref)
        log(f"suspended {ref}")


@dataclass(frozen=True)
class ResumeReport:
    resumed: tuple[ObjRef, ...]
    failed: tuple[tuple[ObjRef, str], ...]


def resume(
    client: KubeClient, refs: Sequence[ObjRef], log: Log, *, sleep: Callable[[float], None] = time.sleep
) -> ResumeReport:
    """Resume each ref and drop the annotation; try each up to RESUME_ATTEMPTS times.

    An object that no longer exists counts as resumed. Never raises SubvaultError:
    failures are returned so that every other object is still resumed.
    """
    resumed: list[ObjRef] = []
    failed: list[tuple[ObjRef, str]] = []
    for ref in refs:
        error = _resume_one(client, ref, sleep)
        if error is None:
            resumed.append(ref)
            log(f"resumed {ref}")
        else:
            failed.append((ref, error))
            log(f"could not resume {ref}: {error}")
    return ResumeReport(tuple(resumed), tuple(failed))


def _resume_one(client: KubeClient, ref: ObjRef, sleep: Callable[[float], None]) -> str | None:
    error = ""
    for attempt in range(RESUME_ATTEMPTS):
        try:
            client.patch_flux(ref, suspend=False, annotations={ANNOTATION: None, SUSPENDED_AT: None})
            return None
        except (KubeError, KubeAuthError) as e:
            if getattr(e, "code", 0) == 404:
                return None
            error = str(e)
            if attempt + 1 < RESUME_ATTEMPTS:
                sleep(1.0 + attempt)
    return error


def wait_idle(
    client: KubeClient,
    refs: Sequence[ObjRef],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[ObjRef, ...]:
    """Wait up to timeout seconds until no ref has a reconcile in flight.

    Return the refs still in flight when the time is up (empty when all are idle).
    """
    wanted = set(refs)
    kinds = tuple(sorted({r.kind for r in wanted}))
    deadline = clock() + timeout
    while True:
        busy = tuple(sorted(o.ref for o in list_flux(client, kinds) if o.ref in wanted and in_flight(o)))
        if not busy or clock() >= deadline:
            return busy
        sleep(min(POLL_SECONDS, max(0.0, deadline - clock())))


def resume_recorded(client: KubeClient, log: Log, run_id: str | None = None) -> ResumeReport:
    """Resume every object carrying subvault's annotation (of run_id, or of any run).

    Objects suspended by someone else carry no annotation and are left alone.
    """
    refs = [o.ref for o in list_flux(client) if is_ours(o, run_id)]
    return resume(client, sorted(refs), log)
