"""pre-change through the real lightkube adapter against the loopback fake API server."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path

import pytest

try:
    from tests.integration.fakekube import Call, ExecReply, FakeKube, flux_obj, pod_obj
except ImportError:  # tests/ is not a package: pytest put this directory on sys.path
    from fakekube import Call, ExecReply, FakeKube, flux_obj, pod_obj

from subvault.errors import CommandFailed, UsageError
from subvault.k8s.client import FIELD_MANAGER, KubeAuthError
from subvault.k8s.flux import ANNOTATION, SUSPENDED_AT
from subvault.k8s.lightkube_client import LightkubeClient
from subvault.k8s.velero import MalformedAnnotation
from subvault.run.prechange import PrechangeFailed, resume_recorded, run_prechange

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 26, 3, 0, 0)
PRE = "pre.hook.backup.velero.io"
POST = "post.hook.backup.velero.io"


@pytest.fixture
def fake():
    with FakeKube(token="secret-token") as server:
        server.add(flux_obj("Kustomization", "flux-system", "apps"))
        server.add(flux_obj("Kustomization", "flux-system", "infra"))
        server.add(flux_obj("HelmRelease", "db", "postgres"))
        server.add(flux_obj("HelmRelease", "media", "jellyfin", suspend=True))  # suspended by the user
        yield server


@pytest.fixture
def client(fake, tmp_path):
    kube = LightkubeClient(fake.write_kubeconfig(tmp_path / "kubeconfig", token="secret-token"))
    yield kube
    kube.close()


def run(client, fake, **kw):
    def snap_all(desc: str) -> str:
        fake.mark(f"snapshot {desc}")
        return "snap-42"

    args = dict(flux=client, flux_mode="auto", hooks=[], snap_all=snap_all, description=None, command=None,
                now=NOW, wait_timeout=0, log=lambda m: None, node="node1", sleep=lambda s: None)
    args.update(kw)
    return run_prechange(**args)


def summary(fake: FakeKube) -> list[str]:
    """The Flux patches and markers, in order: `suspend NAME` / `resume NAME` / markers."""
    out = []
    for call in fake.calls:
        if isinstance(call, str):
            out.append(call)
        elif call.method == "PATCH":
            out.append(("suspend " if call.body["spec"]["suspend"] else "resume ") + call.path.rsplit("/", 1)[1])
    return out


def test_order_suspend_then_snapshot_then_resume(client, fake):
    result = run(client, fake, description="before-flux-update")
    assert summary(fake) == [
        "suspend postgres", "suspend apps", "suspend infra",
        "snapshot before-flux-update",
        "resume postgres", "resume apps", "resume infra",
    ]
    assert result.ok and result.snapshot == "snap-42"
    assert all(c.field_manager == FIELD_MANAGER and not c.field_manager.startswith("kubectl") for c in fake.patches())
    assert all(c.content_type == "application/merge-patch+json" for c in fake.patches())
    first = fake.patches()[0].body
    at = first["metadata"]["annotations"].pop(SUSPENDED_AT)
    assert datetime.fromisoformat(at).tzinfo is not None
    assert first == {"metadata": {"annotations": {ANNOTATION: result.run_id}}, "spec": {"suspend": True}}
    after = fake.get("Kustomization", "flux-system", "apps")
    assert after["spec"]["suspend"] is False
    assert not {ANNOTATION, SUSPENDED_AT} & set(after["metadata"].get("annotations", {}))


def test_objects_the_user_suspended_are_left_alone(client, fake):
    result = run(client, fake)
    assert not [c for c in fake.patches() if c.path.endswith("/jellyfin")]
    assert fake.get("HelmRelease", "media", "jellyfin")["spec"]["suspend"] is True
    assert result.user_suspended == ["HelmRelease/media/jellyfin"]


def test_resume_after_a_failing_snapshot(client, fake):
    def snap_all(desc):
        fake.mark("snapshot")
        raise CommandFailed(["btrfs", "subvolume", "snapshot"], 1, "ERROR: btrfs said no", "snap-all")

    with pytest.raises(PrechangeFailed) as info:
        run(client, fake, snap_all=snap_all)
    assert summary(fake)[3:] == ["snapshot", "resume postgres", "resume apps", "resume infra"]
    assert "btrfs said no" in str(info.value) and "Flux resumed (3 objects)" in str(info.value)


class PrechangeBoom(Exception):
    pass


def test_resume_after_an_unexpected_exception_too(client, fake):
    with pytest.raises(PrechangeBoom):
        run(client, fake, snap_all=lambda d: (_ for _ in ()).throw(PrechangeBoom("bug")))
    assert summary(fake)[-3:] == ["resume postgres", "resume apps", "resume infra"]


def test_crash_then_resume_resumes_only_ours(client, fake):
    fake.add(flux_obj("Kustomization", "other", "from-other-run", suspend=True,
                      annotations={ANNOTATION: "pre-change-20260101T000000-7"}))
    # a crash after suspending: the patches happened, the process died before resuming
    client.patch_flux(fake_ref("Kustomization", "flux-system", "apps"), suspend=True,
                      annotations={ANNOTATION: "pre-change-20261126T030000-1"})
    resumed = resume_recorded(client)
    assert sorted(resumed) == ["Kustomization/flux-system/apps", "Kustomization/other/from-other-run"]
    assert fake.get("HelmRelease", "media", "jellyfin")["spec"]["suspend"] is True
    assert fake.get("Kustomization", "flux-system", "apps")["spec"]["suspend"] is False


def test_resume_can_be_limited_to_one_run(client, fake):
    fake.add(flux_obj("Kustomization", "other", "a", suspend=True, annotations={ANNOTATION: "pre-change-1"}))
    fake.add(flux_obj("Kustomization", "other", "b", suspend=True, annotations={ANNOTATION: "pre-change-2"}))
    assert resume_recorded(client, run_id="pre-change-2") == ["Kustomization/other/b"]
    assert fake.get("Kustomization", "other", "a")["spec"]["suspend"] is True


def fake_ref(kind, ns, name):
    from subvault.k8s.client import ObjRef

    return ObjRef(kind, ns, name)


def hooked_pod(name: str, ann: dict, containers=("app",), node="node1") -> dict:
    return pod_obj("db", name, node, list(containers), ann)


def test_pod_hooks_run_through_exec_on_this_node_only(client, fake):
    fake.pods += [
        hooked_pod("pg-0", {f"{PRE}/command": '["/bin/sh", "-c", "psql -c CHECKPOINT"]', f"{POST}/command": "unlock"}),
        hooked_pod("elsewhere", {f"{PRE}/command": "x"}, node="node2"),
    ]
    result = run(client, fake)
    assert [(e.pod, e.container, e.command) for e in fake.execs] == [
        ("pg-0", "app", ["/bin/sh", "-c", "psql -c CHECKPOINT"]), ("pg-0", "app", ["unlock"])]
    pods_call = next(c for c in fake.calls if isinstance(c, Call) and c.path == "/api/v1/pods")
    assert pods_call.query["fieldSelector"] == ["spec.nodeName=node1"]
    assert result.ok and [h.ok for h in result.hooks] == [True, True]


def test_hook_timeout_with_fail_aborts_and_post_hooks_run_for_started_pods(client, fake):
    fake.pods += [
        hooked_pod("a", {f"{PRE}/command": "lock-a", f"{POST}/command": "unlock-a"}),
        hooked_pod("b", {f"{PRE}/command": "hang", f"{PRE}/timeout": "300ms", f"{POST}/command": "unlock-b"}),
        hooked_pod("c", {f"{PRE}/command": "lock-c", f"{POST}/command": "unlock-c"}),
    ]
    fake.exec_handler = lambda call: ExecReply(hang=call.command == ["hang"])
    with pytest.raises(PrechangeFailed) as info:
        run(client, fake)
    ran = [e.command[0] for e in fake.execs]
    assert ran == ["lock-a", "hang", "unlock-a", "unlock-b"]  # c never started, so no unlock-c
    assert fake.execs[1].abandoned.wait(10)
    assert "did not finish within 0.3s" in str(info.value) and "no snapshot was taken" in str(info.value)
    assert not [m for m in fake.calls if isinstance(m, str)]  # no snapshot
    assert summary(fake)[-3:] == ["resume postgres", "resume apps", "resume infra"]


def test_hook_failure_with_continue_snapshots_anyway(client, fake):
    fake.pods.append(hooked_pod("a", {f"{PRE}/command": "lock", f"{PRE}/on-error": "Continue"}))
    fake.exec_handler = lambda call: ExecReply(stderr="database busy\n", exit_code=2)
    result = run(client, fake)
    assert result.snapshot_taken and result.hooks[0].detail == "exit 2: database busy"
    assert any("continuing" in w for w in result.warnings)


def test_malformed_annotation_is_a_clear_error_before_anything_changes(client, fake):
    fake.pods.append(hooked_pod("pg-0", {f"{PRE}/command": '["unterminated"'}))
    with pytest.raises(PrechangeFailed) as info:
        run(client, fake)
    assert isinstance(info.value.__cause__, MalformedAnnotation)
    assert "db/pg-0" in str(info.value) and f"{PRE}/command" in str(info.value)
    assert fake.patches() == [] and fake.execs == []


def refused_url() -> str:
    """A loopback port that refuses connections (bound, never listening), kept for the test's life."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    refused_url.keep.append(sock)  # type: ignore[attr-defined]  # a function attribute keeps the sockets bound for the session
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


refused_url.keep = []  # type: ignore[attr-defined]  # a function attribute keeps the sockets bound for the session


@pytest.fixture
def unreachable(tmp_path):
    return LightkubeClient(FakeKube().write_kubeconfig(tmp_path / "kc", server=refused_url()))


def test_unreachable_api_with_required_aborts_before_the_snapshot(unreachable):
    snapped = []
    with pytest.raises(PrechangeFailed) as info:
        run_prechange(flux=unreachable, flux_mode="required", hooks=[], snap_all=snapped.append, description=None,
                      command=None, now=NOW, wait_timeout=0, log=lambda m: None)
    assert snapped == [] and "cannot reach the Kubernetes API" in str(info.value)
    assert "\n" not in str(info.value)


def test_unreachable_api_with_auto_warns_and_snapshots(unreachable):
    snapped = []
    result = run_prechange(flux=unreachable, flux_mode="auto", hooks=[], snap_all=snapped.append, description="d",
                           command=None, now=NOW, wait_timeout=0, log=lambda m: None, node="node1")
    assert snapped == ["d"] and result.flux == "unavailable" and result.ok
    assert any("Flux NOT suspended" in w and "Connection refused" in w for w in result.warnings)


def test_expired_credentials_are_a_clear_error(fake, tmp_path):
    stale = LightkubeClient(fake.write_kubeconfig(tmp_path / "stale", token="expired"))
    with pytest.raises(PrechangeFailed) as info:
        run(stale, fake, flux_mode="required")
    assert "401 Unauthorized" in str(info.value) and "expired or invalid" in str(info.value)
    with pytest.raises(KubeAuthError):
        resume_recorded(stale)
    result = run(stale, fake)  # auto: warn, snapshot anyway, and say so
    assert result.flux == "unavailable" and result.snapshot_taken and fake.patches() == []


def test_a_failed_suspend_part_way_resumes_what_was_suspended(client, fake):
    fake.fail_patch = lambda call: 500 if call.path.endswith("/infra") and call.body["spec"]["suspend"] else None
    with pytest.raises(PrechangeFailed):
        run(client, fake)
    assert summary(fake) == ["suspend postgres", "suspend apps", "suspend infra", "resume postgres", "resume apps"]


def test_missing_kubeconfig_is_a_config_error(tmp_path):
    from subvault.errors import ConfigError

    with pytest.raises(ConfigError, match="kubeconfig"):
        LightkubeClient(Path(tmp_path / "nope"))


def test_a_description_info_xml_cannot_hold_is_refused_before_flux_is_touched(fake):
    snapped: list[str] = []
    with pytest.raises(UsageError, match="--desc holds the control character 0x1b"):
        run_prechange(flux=fake, flux_mode="required", hooks=[], snap_all=snapped.append, description="up\x1b[31m",
                      command=None, now=NOW, wait_timeout=0, log=lambda m: None)
    assert snapped == [] and fake.calls == []
