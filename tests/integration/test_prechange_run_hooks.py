"""The pre-change orchestrator against an in-memory KubeClient: edge semantics of invariant 6."""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import pytest

from subvault.hooks import Hook
from subvault.k8s.client import Condition, ExecResult, FluxObject, KubeApiError, ObjRef, PodInfo
from subvault.k8s.flux import ANNOTATION
from subvault.run.prechange import PrechangeFailed, run_prechange
from subvault.run.signal_guard import SignalGuard

NOW = datetime(2026, 11, 26, 3, 0, 0)


class MemoryKube:
    """A KubeClient keeping objects in a dict and every call in `events`."""

    server = "memory://"

    def __init__(self, objects: Sequence[FluxObject] = (), pods: Sequence[PodInfo] = ()) -> None:
        self.objects = {o.ref: o for o in objects}
        self.pods = list(pods)
        self.events: list[str] = []
        self.fail_resume = False
        self.exec_codes: dict[str, int] = {}

    def list_flux(self, kind):
        return [o for o in self.objects.values() if o.ref.kind == kind]

    def patch_flux(self, ref: ObjRef, *, suspend: bool, annotations: Mapping[str, str | None]) -> FluxObject:
        if not suspend and self.fail_resume:
            raise KubeApiError("boom", 500)
        self.events.append(f"{'suspend' if suspend else 'resume'} {ref.name}")
        ann = {**self.objects[ref].annotations, **annotations}
        new = replace(self.objects[ref], suspended=suspend, annotations={k: v for k, v in ann.items() if v is not None})
        self.objects[ref] = new
        return new

    def list_node_pods(self, node):
        return self.pods

    def exec(self, pod, container, command, timeout):
        self.events.append(f"exec {pod.name} {' '.join(command)}")
        return ExecResult(self.exec_codes.get(command[0], 0), "", "")


def ks(name: str, suspended: bool = False, **kw) -> FluxObject:
    return FluxObject(ObjRef("Kustomization", "apps", name), suspended, **kw)


def prechange(kube, events, **kw):
    def snap(desc):
        events.append(f"snapshot {desc}")
        return "snap"

    args = dict(flux=kube, flux_mode="auto", hooks=[], snap_all=snap, description=None, command=None,
                now=NOW, wait_timeout=0, log=lambda m: None, sleep=lambda s: None)
    args.update(kw)
    return run_prechange(**args)


def test_order_suspend_hooks_snapshot_post_command_resume(tmp_path):
    marker = tmp_path / "command-ran"
    kube = MemoryKube([ks("a")], [PodInfo("db", "pg", ("pg",), {
        "pre.hook.backup.velero.io/command": '["lock"]', "post.hook.backup.velero.io/command": '["unlock"]'})])
    events = kube.events
    result = prechange(kube, events, node="n1", command=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert events == ["suspend a", "exec pg lock", "snapshot pre-change-20261126-030000", "exec pg unlock", "resume a"]
    assert marker.exists() and result.command_exit == 0 and result.ok
    assert kube.objects[ObjRef("Kustomization", "apps", "a")].annotations == {}


def test_post_hook_failure_after_snapshot_fails_the_run_skips_command_and_resumes():
    kube = MemoryKube([ks("a")], [PodInfo("db", "pg", ("pg",), {"post.hook.backup.velero.io/command": '["unlock"]'})])
    kube.exec_codes["unlock"] = 1
    with pytest.raises(PrechangeFailed) as info:
        prechange(kube, kube.events, node="n1", command=["false"])
    assert info.value.result.snapshot_taken and info.value.result.command_exit is None
    assert kube.events[-1] == "resume a" and "snapshot was taken" in str(info.value)


def test_failing_command_fails_the_run_after_the_snapshot_and_resumes():
    kube = MemoryKube([ks("a")])
    with pytest.raises(PrechangeFailed) as info:
        prechange(kube, kube.events, command=[sys.executable, "-c", "import sys; print('nope'); sys.exit(3)"])
    assert info.value.result.command_exit == 3 and "nope" in info.value.result.command_output
    assert kube.events[-1] == "resume a"


def test_generic_hooks_run_around_the_snapshot_and_a_hanging_one_is_stopped():
    kube = MemoryKube([ks("a")])
    hooks = [Hook(when="pre-snapshot", run=["sleep", "30"], timeout=0.3), Hook(when="post-snapshot", run=["true"])]
    with pytest.raises(PrechangeFailed) as info:
        prechange(kube, kube.events, hooks=hooks)
    result = info.value.result
    assert not result.snapshot_taken and "timed out" in result.error
    assert [h.ok for h in result.hooks] == [False, True]  # the post hook still ran
    assert kube.events == ["suspend a", "resume a"]


def test_continue_hook_failure_only_warns():
    kube = MemoryKube([ks("a")])
    result = prechange(kube, kube.events, hooks=[Hook(when="pre-snapshot", run=["false"], on_error="continue")])
    assert result.ok and result.snapshot_taken and any("continuing" in w for w in result.warnings)


def test_resume_failure_keeps_the_auto_resume_timer_armed():
    kube = MemoryKube([ks("a")])
    kube.fail_resume = True
    disarmed = []

    class Timer:
        unit = "subvault-resume-x"

        def disarm(self, log):
            disarmed.append(True)

    with pytest.raises(PrechangeFailed) as info:
        prechange(kube, kube.events, arm_timer=lambda run_id: Timer())
    assert info.value.result.resume_failed and not disarmed
    assert "--resume" in str(info.value)


def test_timer_is_disarmed_after_a_clean_resume():
    kube = MemoryKube([ks("a")])
    armed, disarmed = [], []

    class Timer:
        unit = "u"

        def disarm(self, log):
            disarmed.append(True)

    result = prechange(kube, kube.events, arm_timer=lambda run_id: armed.append(run_id) or Timer())
    assert armed == [result.run_id] and disarmed == [True]


def test_bounded_wait_for_reconciles_in_flight_warns_and_snapshots():
    busy = ks("a", conditions=(Condition("Ready", "Unknown", "Progressing"),))
    kube = MemoryKube([busy])
    ticks = iter(range(100))
    result = prechange(kube, kube.events, wait_timeout=5, clock=lambda: next(ticks))
    assert result.still_reconciling == ["Kustomization/apps/a"] and result.snapshot_taken


def test_flux_off_and_not_configured():
    kube = MemoryKube([ks("a")])
    assert prechange(kube, kube.events, flux_mode="off").flux == "off"
    assert kube.events == ["snapshot pre-change-20261126-030000"]
    assert prechange(None, [], flux_mode="auto").flux == "not-configured"
    with pytest.raises(PrechangeFailed) as info:
        prechange(None, [], flux_mode="required")
    assert info.value.exit_code == 2 and not info.value.result.snapshot_taken


def test_adopted_leftovers_are_resumed_at_the_end():
    kube = MemoryKube([ks("old", suspended=True, annotations={ANNOTATION: "pre-change-earlier"})])
    result = prechange(kube, kube.events)
    assert result.adopted == ["Kustomization/apps/old"] and kube.events[-1] == "resume old"


def test_objects_of_a_pre_change_still_running_are_not_adopted():
    kube = MemoryKube([ks("theirs", suspended=True, annotations={ANNOTATION: "pre-change-live"}),
                       ks("old", suspended=True, annotations={ANNOTATION: "pre-change-dead"})])
    result = prechange(kube, kube.events, live_run=lambda run_id: run_id == "pre-change-live")
    assert result.adopted == ["Kustomization/apps/old"] and result.user_suspended == []
    assert not any("theirs" in e for e in kube.events), kube.events


def test_signal_guard_restores_handlers():
    before = {s: signal.getsignal(s) for s in SignalGuard.SIGNALS}
    with SignalGuard() as guard:
        assert signal.getsignal(signal.SIGTERM) == guard._handle
    assert {s: signal.getsignal(s) for s in SignalGuard.SIGNALS} == before
