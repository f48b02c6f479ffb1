"""`subvault pre-change`: suspend Flux, quiesce, snapshot everything, always resume.

Order (issue 5, docs/prechange.md):
  1. read: list the Flux objects and the pods of this node, plan (nothing changed yet;
     a malformed hook annotation or `--flux required` without an API stops here);
  2. arm the auto-resume timer (best effort);
  3. suspend the selected Kustomizations and HelmReleases, each annotated with the run id;
  4. wait, bounded, for reconciles in flight;
  5. pre hooks: Velero pod hooks, then `[[hook]] when = "pre-snapshot"`;
  6. snap_all(description);
  7. post hooks: `post-snapshot` hooks, then Velero pod post hooks;
  8. COMMAND, if given;
  9. resume exactly what step 3 suspended; disarm the timer.

Rules:
- Step 9 runs on every path out of step 3 (invariant 6): success, any exception,
  SIGTERM, SIGINT and SIGHUP (turned into PrechangeInterrupted while the run is in
  steps 1-8, and only recorded while it cleans up).
- On an abort, post hooks still run for every pod whose pre hook started, and the
  `post-snapshot` hooks run if the `pre-snapshot` hooks started.
- `--flux auto` snapshots without suspending when the API cannot be reached or refuses
  the credentials, and says so in the result; `required` aborts before step 2.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from subvault import process
from subvault.btrfs.snapdir import description_problem
from subvault.errors import EXIT_FAILED, CommandFailed, ConfigError, SubvaultError, UsageError
from subvault.hooks import Hook, HookOutcome, run_hook, select
from subvault.k8s import flux as fluxops
from subvault.k8s.autoresume import AutoResume
from subvault.k8s.client import KubeAuthError, KubeClient, KubeError, KubeUnreachable, ObjRef, PodInfo
from subvault.k8s.flux import FluxSelection, SuspendPlan
from subvault.k8s.velero import PodHook, PodHookPlan, plan_pod_hooks, run_pod_hook
from subvault.run.prechange_result import PrechangeResult
from subvault.run.signal_guard import SignalGuard

FluxMode = Literal["auto", "required", "off"]
FluxClient = KubeClient
Log = Callable[[str], None]
ArmTimer = Callable[[str], "AutoResume | None"]
DEFAULT_WAIT_TIMEOUT = 120.0
OUTPUT_TAIL_LINES = 50


class FluxUnavailable(SubvaultError):
    """`--flux required` and the API could not be used; nothing was changed."""


class HookFailed(SubvaultError):
    """A hook with on-error Fail failed."""


class ResumeFailed(SubvaultError):
    """Some objects subvault suspended could not be resumed."""


class PrechangeFailed(SubvaultError):
    """The run stopped early or something after the snapshot failed; `result` says how far it got."""

    def __init__(self, result: PrechangeResult, cause: BaseException) -> None:
        self.result = result
        self.exit_code = getattr(cause, "exit_code", EXIT_FAILED)
        where = "the snapshot was taken" if result.snapshot_taken else "no snapshot was taken"
        if result.resume_failed:
            flux = f"Flux NOT resumed for {len(result.resume_failed)} objects; run `subvault pre-change --resume`"
        elif result.resumed:
            flux = f"Flux resumed ({len(result.resumed)} objects)"
        else:
            flux = "Flux untouched"
        super().__init__(f"pre-change failed: {cause}; {where}; {flux}")


def default_description(now: datetime) -> str:
    """Return the default snapshot description `pre-change-YYYYMMDD-HHMMSS`."""
    return f"pre-change-{now:%Y%m%d-%H%M%S}"


def new_run_id(now: datetime) -> str:
    """Return the run id written into the annotation: `pre-change-<time>-<pid>`."""
    return f"{fluxops.RUN_PREFIX}{now:%Y%m%dT%H%M%S}-{os.getpid()}"


def _safe(log: Log) -> Log:
    """Wrap log so that a dead terminal (SSH dropped: EIO, EPIPE) never stops the cleanup."""

    def say(message: str) -> None:
        try:
            log(message)
        except OSError:
            pass

    return say


@dataclass
class _Run:
    """The state of one run, so that cleanup knows what to undo."""

    kube: KubeClient | None
    result: PrechangeResult
    say: Log
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    plan: SuspendPlan = field(default_factory=lambda: SuspendPlan((), (), ()))
    pod_plan: PodHookPlan = field(default_factory=lambda: PodHookPlan((), ()))
    kube_ok: bool = True
    done: list[ObjRef] = field(default_factory=list)
    started_pods: set[tuple[str, str]] = field(default_factory=set)
    generic_started: bool = False
    post_done: bool = False
    timer: AutoResume | None = None
    live_run: Callable[[str], bool] = lambda run_id: False

    def warn(self, message: str) -> None:
        self.result.warnings.append(message)
        self.say(f"warning: {message}")

    def read(self, mode: FluxMode, selection: FluxSelection, node: str | None, pod_hooks: bool) -> None:
        """Step 1: list and plan. Raise FluxUnavailable/ConfigError/MalformedAnnotation."""
        if mode != "off":
            self._read_flux(mode, selection)
        if pod_hooks and node and self.kube is not None and self.kube_ok:
            try:
                pods: list[PodInfo] = self.kube.list_node_pods(node)
            except (KubeUnreachable, KubeAuthError) as e:
                if mode == "required":
                    raise FluxUnavailable(f"--flux required: {e}; nothing was changed") from None
                self.warn(f"pod hooks skipped: {e}")
                return
            self.pod_plan = plan_pod_hooks(pods)

    def _read_flux(self, mode: FluxMode, selection: FluxSelection) -> None:
        if self.kube is None:
            if mode == "required":
                raise ConfigError("--flux required, but [flux] kubeconfig is not set")
            self.result.flux = "not-configured"
            self.warn("Flux not suspended: [flux] kubeconfig is not set")
            return
        try:
            objects = fluxops.list_flux(self.kube, selection.kinds)
        except (KubeUnreachable, KubeAuthError) as e:
            if mode == "required":
                raise FluxUnavailable(f"--flux required: {e}; nothing was changed") from None
            self.kube_ok = False
            self.result.flux = "unavailable"
            self.warn(f"Flux NOT suspended, snapshotting anyway: {e}")
            return
        # Another pre-change that is still running keeps its own objects: never adopted here.
        busy = {o.ref: o.annotations[fluxops.ANNOTATION] for o in objects if fluxops.is_ours(o) and self.live_run(o.annotations[fluxops.ANNOTATION])}
        for ref, other in sorted(busy.items()):
            self.say(f"left alone (suspended by {other}, which is still running): {ref}")
        self.plan = fluxops.plan_suspend([o for o in objects if o.ref not in busy], selection)
        self.result.flux = "suspended"
        self.result.user_suspended = [str(r) for r in self.plan.user_suspended]
        for ref in self.plan.user_suspended:
            self.say(f"left alone (suspended by someone else): {ref}")
        if self.plan.adopt:
            self.warn(f"adopting {len(self.plan.adopt)} objects left suspended by an earlier pre-change")

    def suspend(self, run_id: str) -> None:
        """Step 3."""
        if self.kube is None or not self.plan.ours:
            return
        fluxops.suspend(self.kube, self.plan.ours, run_id, self.done, self.say)
        self.result.suspended = [str(r) for r in self.plan.suspend]
        self.result.adopted = [str(r) for r in self.plan.adopt]

    def wait(self, timeout: float) -> None:
        """Step 4: bounded; a timeout or a failing poll only warns."""
        if self.kube is None or not self.done:
            return
        try:
            busy = fluxops.wait_idle(self.kube, self.done, timeout, clock=self.clock, sleep=self.sleep)
        except (KubeError, KubeAuthError) as e:
            self.warn(f"could not check for reconciles in flight: {e}")
            return
        if busy:
            self.result.still_reconciling = [str(r) for r in busy]
            self.warn(f"still reconciling after {timeout:g}s, snapshotting anyway: {', '.join(map(str, busy))}")

    def pre_hooks(self, hooks: Sequence[Hook]) -> None:
        """Step 5. Raise HookFailed at the first fatal failure."""
        for hook in self.pod_plan.pre:
            self.started_pods.add(_pod_key(hook))
            self._record(run_pod_hook(self._client(), hook, self.say), raise_fatal=True)
        self.generic_started = True
        for generic in select(hooks, "pre-snapshot"):
            self._record(run_hook(generic, self.say), raise_fatal=True)

    def post_hooks(self, hooks: Sequence[Hook], *, normal: bool) -> None:
        """Step 7 (normal) or its abort form; on the normal path raise HookFailed after all ran."""
        self.post_done = True
        fatal: list[HookOutcome] = []
        if normal or self.generic_started:
            for generic in select(hooks, "post-snapshot"):
                fatal += self._record(run_hook(generic, self.say), raise_fatal=False)
        for hook in self.pod_plan.post:
            if normal or _pod_key(hook) in self.started_pods:
                fatal += self._record(run_pod_hook(self._client(), hook, self.say), raise_fatal=False)
        if normal and fatal:
            names = "; ".join(f"{o.name}: {o.detail}" for o in fatal)
            raise HookFailed(f"post hooks failed ({names}); COMMAND not run")

    def _client(self) -> KubeClient:
        assert self.kube is not None, "pod hooks are planned only with a client"
        return self.kube

    def _record(self, outcome: HookOutcome, *, raise_fatal: bool) -> list[HookOutcome]:
        self.result.hooks.append(outcome)
        if outcome.ok or not outcome.fatal:
            if not outcome.ok:
                self.warn(f"{outcome.name} failed, continuing: {outcome.detail}")
            return []
        if raise_fatal:
            raise HookFailed(f"{outcome.name} failed: {outcome.detail}")
        return [outcome]

    def command(self, argv: Sequence[str] | None) -> None:
        """Step 8. Raise CommandFailed if it exits non-zero."""
        if not argv:
            return
        self.say(f"running {' '.join(argv)}")
        res = process.run_tail(list(argv), what="COMMAND")
        self.result.command_exit = res.returncode
        output = res.stdout.splitlines()[-OUTPUT_TAIL_LINES:]
        self.result.command_output = "\n".join(output)
        for line in output:
            self.say(f"| {line}")
        if res.stderr:
            self.warn(f"COMMAND: {res.stderr}")
        if res.returncode != 0:
            failed = CommandFailed(list(argv), res.returncode, res.stdout, "COMMAND")
            # pre-change exits with COMMAND's own status, as a wrapper should (`exit 7` -> 7).
            failed.exit_code = res.returncode if 0 < res.returncode < 256 else EXIT_FAILED
            raise failed

    def cleanup(self, hooks: Sequence[Hook]) -> None:
        """Step 9 and the abort form of step 7. Raises nothing on purpose."""
        if not self.post_done:
            self.post_hooks(hooks, normal=False)
        if self.kube is not None and self.done:
            report = fluxops.resume(self.kube, self.done, self.say, sleep=self.sleep)
            self.result.resumed = [str(r) for r in report.resumed]
            self.result.resume_failed = [f"{r}: {why}" for r, why in report.failed]
        if self.timer is not None:
            if self.result.resume_failed:
                self.warn(f"auto-resume timer {self.timer.unit}.timer left armed to retry the resume")
            else:
                self.timer.disarm(self.say)


def _pod_key(hook: PodHook) -> tuple[str, str]:
    return (hook.pod.namespace, hook.pod.name)


def run_prechange(
    *,
    flux: KubeClient | None,
    flux_mode: FluxMode,
    hooks: Sequence[Hook],
    snap_all: Callable[[str], object],
    description: str | None,
    command: Sequence[str] | None,
    now: datetime,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    log: Log,
    selection: FluxSelection = FluxSelection(),
    node: str | None = None,
    pod_hooks: bool = True,
    arm_timer: ArmTimer | None = None,
    run_id: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    dry_run: bool = False,
    live_run: Callable[[str], bool] | None = None,
    release_lock: Callable[[], None] | None = None,
) -> PrechangeResult:
    """Run one pre-change (see the module docstring for the order) and return what it did.

    dry_run: only read Flux and the pods (GETs); `planned` lists the steps it would take.
    `flux` serves Flux and the Velero pod hooks of `node` (None: neither); `arm_timer(run_id)`
    arms the auto-resume timer; `live_run(run_id)`: is another pre-change that marked
    objects still running (its objects are left to it). `release_lock()` runs after the
    snapshot and post hooks, before COMMAND: the lock guards the quiesce-and-snapshot
    window, not the user's change. Raise PrechangeFailed (carrying the result) if it
    stopped early, a fatal hook or COMMAND failed, a signal arrived, or resume failed;
    Flux has been resumed before it is raised.
    """
    run_id = run_id or new_run_id(now)
    result = PrechangeResult(run_id, _description(description, now), dry_run=dry_run)
    run = _Run(flux, result, _safe(log), sleep, clock)
    if live_run is not None:
        run.live_run = live_run
    if dry_run:
        run.read(flux_mode, selection, node, pod_hooks)
        result.planned = _planned_steps(run, hooks, result.description, command)
        return result
    failure: SubvaultError | None = None
    with SignalGuard() as guard:
        try:
            run.read(flux_mode, selection, node, pod_hooks)
            _quiesce_snapshot_change(run, run_id, hooks, snap_all, command, wait_timeout, arm_timer, release_lock)
        except SubvaultError as e:
            failure = e
            result.error = str(e)
        finally:
            guard.defer()
            run.cleanup(hooks)
            result.signals = [signal.Signals(s).name for s in guard.received]
    if failure is None and result.resume_failed:
        failure = ResumeFailed(f"could not resume {', '.join(result.resume_failed)}")
        result.error = str(failure)
    if failure is not None:
        raise PrechangeFailed(result, failure) from failure
    return result


def _description(given: str | None, now: datetime) -> str:
    """The snapshot description: the one given, refused before anything is suspended or
    quiesced when info.xml cannot hold it, or the default."""
    if given is not None and (problem := description_problem(given)):
        raise UsageError(f"--desc {problem}")
    return given or default_description(now)


def _quiesce_snapshot_change(
    run: _Run, run_id: str, hooks: Sequence[Hook], snap_all: Callable[[str], object], command: Sequence[str] | None,
    wait_timeout: float, arm_timer: ArmTimer | None, release_lock: Callable[[], None] | None,
) -> None:
    """The steps between reading Flux and cleaning up, in the module docstring's order."""
    result = run.result
    if run.kube is not None and run.plan.ours and arm_timer is not None:
        run.timer = arm_timer(run_id)
        result.auto_resume_unit = run.timer.unit if run.timer else None
    run.suspend(run_id)
    run.wait(wait_timeout)
    run.pre_hooks(hooks)
    run.say(f"snapshotting all subvolumes: {result.description}")
    result.snapshot = snap_all(result.description)
    result.snapshot_taken = True
    run.post_hooks(hooks, normal=True)
    if release_lock is not None:
        release_lock()
    run.command(command)


def _planned_steps(run: _Run, hooks: Sequence[Hook], description: str, command: Sequence[str] | None) -> list[str]:
    """What a real run would do, in order, from what `read` found."""
    steps = [f"would suspend {ref}" for ref in run.plan.suspend]
    steps += [f"would adopt {ref} (left suspended by an earlier pre-change)" for ref in run.plan.adopt]
    steps += [f"would leave alone {ref} (suspended by someone else)" for ref in run.plan.user_suspended]
    steps += [f"would run pod hook {hook.pod.namespace}/{hook.pod.name} (pre)" for hook in run.pod_plan.pre]
    steps += [f"would run {h.name} (pre-snapshot)" for h in select(hooks, "pre-snapshot")]
    steps.append(f"would snapshot every subvolume: {description}")
    steps += [f"would run {h.name} (post-snapshot)" for h in select(hooks, "post-snapshot")]
    steps += [f"would run pod hook {hook.pod.namespace}/{hook.pod.name} (post)" for hook in run.pod_plan.post]
    if command:
        steps.append(f"would run COMMAND: {' '.join(command)}")
    steps += [f"would resume {ref}" for ref in run.plan.ours]
    return steps


def resume_recorded(flux: KubeClient, log: Log = lambda _m: None, run_id: str | None = None) -> list[str]:
    """`subvault pre-change --resume`: resume every object carrying subvault's annotation.

    Given run_id, only that run's. Return the resumed objects as `Kind/ns/name`.
    Raise ResumeFailed if any could not be resumed; KubeUnreachable/KubeAuthError if
    the API cannot be used at all.
    """
    report = fluxops.resume_recorded(flux, _safe(log), run_id)
    if report.failed:
        raise ResumeFailed("could not resume " + "; ".join(f"{r}: {why}" for r, why in report.failed))
    return [str(r) for r in report.resumed]
