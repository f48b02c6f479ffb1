"""Pure parts of pre-change: the suspend plan, in-flight detection, Velero annotations, hooks."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from subvault.errors import ConfigError
from subvault.k8s.client import Condition, FluxObject, ObjRef, PodInfo
from subvault.k8s.flux import ANNOTATION, FluxSelection, in_flight, is_ours, plan_suspend
from subvault.k8s.velero import (
    MalformedAnnotation,
    parse_command,
    parse_go_duration,
    plan_pod_hooks,
    pod_hook,
)
from subvault.run.prechange import default_description, new_run_id

PRE = "pre.hook.backup.velero.io"
POST = "post.hook.backup.velero.io"


def obj(name: str, *, suspended: bool = False, ann: dict | None = None, ns: str = "apps",
        kind: str = "Kustomization", labels: dict | None = None, conds: tuple = ()) -> FluxObject:
    return FluxObject(ObjRef(kind, ns, name), suspended, ann or {}, labels or {}, conds)  # type: ignore[arg-type]  # loose test inputs (plain dicts and tuples) for the frozen fields


def test_user_suspended_objects_are_left_alone_and_ours_are_adopted():
    plan = plan_suspend(
        [
            obj("running"),
            obj("user", suspended=True),
            obj("leftover", suspended=True, ann={ANNOTATION: "pre-change-20260101T000000-1"}),
            obj("foreign-annotation", suspended=True, ann={ANNOTATION: "someone-else"}),
        ],
        FluxSelection(),
    )
    assert [r.name for r in plan.suspend] == ["running"]
    assert [r.name for r in plan.adopt] == ["leftover"]
    assert sorted(r.name for r in plan.user_suspended) == ["foreign-annotation", "user"]


def test_selection_by_kind_namespace_and_labels():
    objects = [
        obj("a", ns="apps", labels={"tier": "db"}),
        obj("b", ns="apps"),
        obj("c", ns="infra", labels={"tier": "db"}),
        obj("d", ns="apps", kind="HelmRelease", labels={"tier": "db"}),
    ]
    plan = plan_suspend(objects, FluxSelection(kinds=("Kustomization",), namespaces=("apps",), labels={"tier": "db"}))
    assert [str(r) for r in plan.suspend] == ["Kustomization/apps/a"]


@given(st.lists(st.tuples(st.text(min_size=1, max_size=5), st.booleans(), st.booleans()), max_size=20, unique_by=lambda t: t[0]))
def test_plan_partitions_and_never_touches_user_suspended(specs):
    objects = [obj(n, suspended=s or o, ann={ANNOTATION: "pre-change-x"} if o else {}) for n, s, o in specs]
    plan = plan_suspend(objects, FluxSelection())
    touched = set(plan.ours)
    assert touched.isdisjoint(plan.user_suspended)
    assert len(touched) + len(plan.user_suspended) == len(objects)
    for o in objects:
        if o.suspended and not is_ours(o):
            assert o.ref in plan.user_suspended


def test_in_flight_means_reconciling_or_ready_unknown():
    assert in_flight(obj("x", conds=(Condition("Ready", "Unknown", "Progressing"),)))
    assert in_flight(obj("x", conds=(Condition("Ready", "True"), Condition("Reconciling", "True"))))
    assert not in_flight(obj("x", conds=(Condition("Ready", "False", "BuildFailed"),)))
    assert not in_flight(obj("x"))


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600),
                                           ("2.5s", 2.5), ("0", 0), ("1h2m3s", 3723), ("10us", 1e-5)])
def test_go_durations(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "", "1x", "-5s", "s", "1.5.5s", "30 s"])
def test_bad_go_durations(text):
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_command_is_json_array_or_whole_string():
    assert parse_command('["/bin/sh", "-c", "sync"]') == ("/bin/sh", "-c", "sync")
    assert parse_command("/usr/bin/flush --all") == ("/usr/bin/flush --all",)
    for bad in ["", "  ", "[", "[]", '["a", 1]']:
        with pytest.raises(ValueError):
            parse_command(bad)


def pod(ann: dict, containers: tuple = ("app", "sidecar"), phase: str = "Running", name: str = "p") -> PodInfo:
    return PodInfo("db", name, containers, ann, phase)


def test_velero_defaults():
    hook = pod_hook(pod({f"{PRE}/command": '["fsync"]'}), "pre")
    assert hook is not None
    assert (hook.container, hook.command, hook.on_error, hook.timeout) == ("app", ("fsync",), "Fail", 30.0)
    assert pod_hook(pod({f"{PRE}/command": "x"}), "post") is None


def test_velero_explicit_values_and_legacy_names():
    ann = {f"{POST}/command": "unlock", f"{POST}/container": "sidecar", f"{POST}/on-error": "Continue",
           f"{POST}/timeout": "1m"}
    hook = pod_hook(pod(ann), "post")
    assert hook is not None and (hook.container, hook.on_error, hook.timeout) == ("sidecar", "Continue", 60.0)
    legacy = pod_hook(pod({"hook.backup.velero.io/command": '["lock"]', "hook.backup.velero.io/timeout": "5s"}), "pre")
    assert legacy is not None and legacy.command == ("lock",) and legacy.timeout == 5.0


@pytest.mark.parametrize("field, value", [("command", "[broken"), ("container", "nope"), ("on-error", "Ignore"),
                                          ("timeout", "forever")])
def test_malformed_annotation_names_pod_and_annotation(field, value):
    ann = {f"{PRE}/command": '["ok"]', f"{PRE}/{field}": value}
    with pytest.raises(MalformedAnnotation) as info:
        pod_hook(pod(ann, name="pg-0"), "pre")
    assert "db/pg-0" in str(info.value) and f"{PRE}/{field}" in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_plan_skips_pods_that_are_not_running():
    plan = plan_pod_hooks([
        pod({f"{PRE}/command": "a", f"{POST}/command": "b"}, name="up"),
        pod({f"{PRE}/command": "a"}, phase="Pending", name="down"),
    ])
    assert [h.pod.name for h in plan.pre] == ["up"] and [h.pod.name for h in plan.post] == ["up"]


def test_hook_rules_and_defaults_live_in_the_config_schema_only():
    from subvault.config.load import parse_config

    cfg = parse_config('[[hook]]\nwhen = "pre-snapshot"\nrun = ["sync"]\n')
    assert cfg.hook[0].timeout == 30.0 and cfg.hook[0].on_error == "fail" and cfg.hook[0].name == "hook sync"
    for bad, key in [('when = "before"\nrun = ["x"]', "when"), ('when = "pre-snapshot"\nrun = []', "run"),
                     ('when = "pre-snapshot"\nrun = ["x"]\ntimeout = 0', "timeout"),
                     ('when = "pre-snapshot"\nrun = ["x"]\non_error = "x"', "on_error")]:
        with pytest.raises(ConfigError, match=f"hook #1: {key}: "):
            parse_config(f"[[hook]]\n{bad}\n")


def test_default_description_and_run_id():
    now = datetime(2026, 11, 26, 3, 0, 5)
    assert default_description(now) == "pre-change-20261126-030005"
    assert new_run_id(now).startswith("pre-change-20261126T030005-")
