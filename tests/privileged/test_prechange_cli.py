"""`subvault pre-change` end to end: real btrfs snapshots, Flux through a loopback fake API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from datetime import UTC

from fakekube import FakeKube, flux_obj  # noqa: E402

from subvault.btrfs import local_scan  # noqa: E402

PROBE = r'''
import json, os, sys, urllib.request
api, out, snapdir = sys.argv[1], sys.argv[2], sys.argv[3]
obj = json.load(urllib.request.urlopen(api + "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/apps"))
with open(out, "a") as fh:
    fh.write(json.dumps({"suspended": obj["spec"].get("suspend", False), "snapshots": sorted(os.listdir(snapdir))}) + "\n")
'''


def _setup(homelab, tmp_path, fake, *, hook: bool = True):
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    log = tmp_path / "probe.log"
    snapdir = homelab.paths["root"] / ".snapshots"
    homelab.cli("snapshot")  # .snapshots exists, #1 is a timeline snapshot
    argv = json.dumps([sys.executable, str(probe), fake.url, str(log), str(snapdir)])
    text = homelab.config.read_text() + f'\n[flux]\nkubeconfig = "{kubeconfig}"\nwait_seconds = 5\n'
    if hook:
        text += f'\n[[hook]]\nwhen = "pre-snapshot"\nrun = {argv}\n'
    homelab.config.write_text(text)
    return log, argv


def test_prechange_order_suspend_snapshot_resume(homelab, tmp_path):
    with FakeKube() as fake:
        fake.add(flux_obj("Kustomization", "flux-system", "apps"))
        fake.add(flux_obj("Kustomization", "flux-system", "mine", suspend=True))  # the user's own
        log, argv = _setup(homelab, tmp_path, fake)
        out = homelab.cli("pre-change", "--desc", "before-flux-update-20261126-0300", "--json", "--", *json.loads(argv))
        result = json.loads(out.stdout)["result"]
        assert result["ok"] and result["flux"] == "suspended"
        states = [json.loads(l) for l in log.read_text().splitlines()]
        # pre-snapshot hook: suspended, no pre-change snapshot yet; COMMAND: suspended, snapshot present
        assert states[0] == {"suspended": True, "snapshots": ["1"]}
        assert states[1] == {"suspended": True, "snapshots": ["1", "2"]}
        assert fake.get("Kustomization", "flux-system", "apps")["spec"]["suspend"] is False
        assert fake.get("Kustomization", "flux-system", "mine")["spec"]["suspend"] is True
        assert all(c.field_manager == "subvault" for c in fake.patches())
        snaps = local_scan.scan("var_lib_pvc", homelab.paths["var_lib_pvc"])
        assert snaps[-1].description == "before-flux-update-20261126-0300" and snaps[-1].kind == "prechange"


def test_prechange_resumes_when_snapshot_fails(homelab, tmp_path):
    with FakeKube() as fake:
        fake.add(flux_obj("Kustomization", "flux-system", "apps"))
        _setup(homelab, tmp_path, fake)
        (homelab.paths["data"] / ".snapshots").rename(homelab.paths["data"] / "moved")
        (homelab.paths["data"] / ".snapshots").mkdir()  # a plain directory: snap-all fails for data
        proc = homelab.cli("pre-change", check=False)
        assert proc.returncode == 1
        assert "snap-all incomplete" in proc.stderr and "Flux resumed" in proc.stderr
        assert fake.get("Kustomization", "flux-system", "apps")["spec"]["suspend"] is False


def test_prechange_flux_required_but_unreachable_aborts_before_snapshot(homelab, tmp_path):
    with FakeKube() as fake:
        _setup(homelab, tmp_path, fake, hook=False)
    # the server is gone now
    proc = homelab.cli("pre-change", "--flux", "required", check=False)
    assert proc.returncode != 0
    assert [s.number for s in local_scan.scan("root", homelab.paths["root"])] == [1]
    proc = homelab.cli("pre-change", check=False)  # auto: warns and snapshots anyway
    assert proc.returncode == 0, proc.stderr
    assert "Flux NOT suspended, snapshotting anyway: cannot reach the Kubernetes API" in proc.stderr
    assert [s.number for s in local_scan.scan("root", homelab.paths["root"])] == [1, 2]


def test_prechange_exits_with_commands_own_status(homelab, tmp_path):
    proc = homelab.cli("pre-change", "--flux", "off", "--desc", "exit-seven", "--", "sh", "-c", "echo out; exit 7", check=False)
    assert proc.returncode == 7, proc.stderr
    assert "COMMAND failed" in proc.stderr
    assert local_scan.scan("home", homelab.paths["home"])[-1].description == "exit-seven"  # the snapshot was still taken


def test_prechange_dry_run_changes_nothing(homelab, tmp_path):
    with FakeKube() as fake:
        fake.add(flux_obj("Kustomization", "flux-system", "apps"))
        fake.add(flux_obj("Kustomization", "flux-system", "mine", suspend=True))
        log, argv = _setup(homelab, tmp_path, fake)
        marker = tmp_path / "command-ran"
        before = sorted(os.listdir(homelab.paths["home"] / ".snapshots"))
        out = homelab.cli("pre-change", "--dry-run", "--json", "--", "touch", str(marker))
        result = json.loads(out.stdout)["result"]
        assert result["dry_run"] and result["ok"]
        assert "would suspend Kustomization/flux-system/apps" in result["planned"]
        assert any("would leave alone" in step and "mine" in step for step in result["planned"])
        assert any(step.startswith("would run COMMAND: touch") for step in result["planned"])
        assert fake.patches() == []  # Flux only read
        assert not log.exists() and not marker.exists()  # no hook, no COMMAND
        assert sorted(os.listdir(homelab.paths["home"] / ".snapshots")) == before
        text = homelab.cli("pre-change", "--dry-run", "--", "true").stdout
        assert "would snapshot every subvolume" in text
        assert homelab.cli("pre-change", "--dry-run", "--resume", check=False).returncode == 2


# -- invariant 6 after SIGKILL (issue 11, item 7) ------------------------------------

HOLD = "import sys\nopen(sys.argv[1], 'w').write('in COMMAND')\nimport time\ntime.sleep(20)\n"
SUSPENDED_AT = "subvault.io/suspended-at"


def _start_prechange(homelab, tmp_path):
    """Start a real `subvault pre-change -- <hold>`; return it once its COMMAND runs (Flux suspended)."""
    import os
    import subprocess

    fifo = tmp_path / "in-command"
    os.mkfifo(fifo)
    hold = tmp_path / "hold.py"
    hold.write_text(HOLD)
    env = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "subvault.cli.main", "--config", str(homelab.config), "pre-change", "--", sys.executable, str(hold), str(fifo)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parents[2],
    )
    with open(fifo) as fh:
        assert fh.read() == "in COMMAND"
    return proc


def _backdate(fake, kind, ns, name, hours: float):
    from datetime import datetime, timedelta

    with fake.lock:
        meta = fake.objects[(kind, ns, name)]["metadata"]
        assert SUSPENDED_AT in meta["annotations"], meta
        meta["annotations"][SUSPENDED_AT] = (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


def test_invariant_6_flux_left_suspended_by_killed_prechange_is_flagged_and_resumed_by_run(homelab, tmp_path):
    import signal

    with FakeKube() as fake:
        fake.add(flux_obj("Kustomization", "flux-system", "apps"))
        fake.add(flux_obj("HelmRelease", "db", "postgres"))
        fake.add(flux_obj("Kustomization", "flux-system", "mine", suspend=True))  # the user's own
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        homelab.config.write_text(homelab.config.read_text() + f'\n[flux]\nkubeconfig = "{kubeconfig}"\nwait_seconds = 0\npod_hooks = false\nauto_resume_seconds = 600\n')
        homelab.cli("run")
        proc = _start_prechange(homelab, tmp_path)
        try:
            assert fake.get("Kustomization", "flux-system", "apps")["spec"]["suspend"] is True
            # a live pre-change: `run` leaves its suspension alone, `check` is quiet within the delay
            homelab.cli("run")
            assert fake.get("Kustomization", "flux-system", "apps")["spec"]["suspend"] is True
            assert homelab.cli("check", check=False).returncode == 0
            # longer than the auto-resume delay: check fails even while pre-change lives
            _backdate(fake, "Kustomization", "flux-system", "apps", hours=2)
            proc_check = homelab.cli("check", check=False)
            assert proc_check.returncode == 1
            assert "Kustomization/flux-system/apps" in proc_check.stdout and "subvault pre-change --resume" in proc_check.stdout
            homelab.cli("run")
            assert fake.get("Kustomization", "flux-system", "apps")["spec"]["suspend"] is True, "never under a live pre-change"
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        # dead: check names every object it left suspended and the command that resumes it
        check = homelab.cli("check", check=False)
        assert check.returncode == 1
        for ref in ("Kustomization/flux-system/apps", "HelmRelease/db/postgres"):
            assert any(ref in line and "subvault pre-change --resume" in line for line in check.stdout.splitlines()), check.stdout
        assert "flux-system/mine" not in check.stdout
        # the next run resumes what the dead pre-change suspended, and only that
        out = homelab.cli("run")
        assert "resumed" in out.stdout + out.stderr
        assert fake.get("Kustomization", "flux-system", "apps")["spec"]["suspend"] is False
        assert fake.get("HelmRelease", "db", "postgres")["spec"]["suspend"] is False
        assert SUSPENDED_AT not in fake.get("Kustomization", "flux-system", "apps")["metadata"].get("annotations", {})
        assert fake.get("Kustomization", "flux-system", "mine")["spec"]["suspend"] is True
        assert homelab.cli("check").returncode == 0
def test_attack_timer_run_holds_the_lock_and_prechange_pauses_nothing(homelab, tmp_path):
    """Issue 13.9: pre-change takes the lock before it suspends Flux or runs a quiesce hook; when a
    running subvault does not finish within prechange_lock_wait, nothing has been paused."""
    from subvault.lock import exclusive

    with FakeKube() as fake:
        fake.add(flux_obj("Kustomization", "flux-system", "apps"))
        log, argv = _setup(homelab, tmp_path, fake)
        homelab.config.write_text(homelab.config.read_text().replace("[defaults]\n", "[defaults]\nprechange_lock_wait = 0\n", 1))
        with exclusive(homelab.state):  # a timer `run` in the middle of a send
            out = homelab.cli("pre-change", "--json", check=False)
        assert out.returncode != 0 and "another subvault" in out.stderr, out.stderr
        assert fake.patches() == [], "nothing was suspended"
        assert not log.exists(), "no quiesce hook ran"
        assert fake.get("Kustomization", "flux-system", "apps")["spec"].get("suspend", False) is False
        # once the lock is free the same command goes through
        out = homelab.cli("pre-change", "--json")
        assert json.loads(out.stdout)["result"]["ok"]
