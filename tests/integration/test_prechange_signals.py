"""Invariant 6 across signals: a real child process runs pre-change and is signalled mid-snapshot.

The child's snap_all prints SNAPSHOTTING and blocks reading its stdin (which the
test never writes); the test waits for that line, sends the signal, and checks that
the fake API server saw every suspended object resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from tests.integration.fakekube import FakeKube, flux_obj
except ImportError:  # tests/ is not a package: pytest put this directory on sys.path
    from fakekube import FakeKube, flux_obj

from subvault.k8s.autoresume import arm, unit_name

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

CHILD = r'''
import json, sys
from datetime import datetime
from pathlib import Path
from subvault.k8s.lightkube_client import LightkubeClient
from subvault.run.prechange import PrechangeFailed, run_prechange

def snap_all(desc):
    print("SNAPSHOTTING", flush=True)
    sys.stdin.readline()  # blocks until the test signals us
    return "never"

try:
    run_prechange(flux=LightkubeClient(Path(sys.argv[1])), flux_mode="required", hooks=[], snap_all=snap_all,
                  description=None, command=None, now=datetime.now(), wait_timeout=0,
                  log=lambda m: print(m, file=sys.stderr))
except PrechangeFailed as e:
    print(json.dumps({"error": str(e), "resumed": e.result.resumed}), flush=True)
    sys.exit(e.exit_code)
print(json.dumps({"error": None}), flush=True)
'''


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_invariant_6_flux_resumed_after_signal_while_snapshotting(tmp_path, signum):
    with FakeKube() as fake:
        fake.add(flux_obj("Kustomization", "flux-system", "apps"))
        fake.add(flux_obj("HelmRelease", "db", "postgres"))
        fake.add(flux_obj("HelmRelease", "media", "jellyfin", suspend=True))
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, str(script), str(kubeconfig)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout.readline().strip() == "SNAPSHOTTING"
            suspended = [c.path.rsplit("/", 1)[1] for c in fake.patches()]
            assert sorted(suspended) == ["apps", "postgres"]
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        report = json.loads(out.strip().splitlines()[-1])
        assert proc.returncode == 1, err
        assert f"interrupted by {signal.Signals(signum).name}" in report["error"]
        assert sorted(report["resumed"]) == ["HelmRelease/db/postgres", "Kustomization/flux-system/apps"]
        bodies = [c.body["spec"]["suspend"] for c in fake.patches()]
        assert bodies == [True, True, False, False]
        assert fake.get("Kustomization", "flux-system", "apps")["spec"]["suspend"] is False
        assert fake.get("HelmRelease", "media", "jellyfin")["spec"]["suspend"] is True


def fake_systemd(tmp_path: Path, monkeypatch) -> Path:
    """Put recording systemd-run/systemctl stand-ins first on PATH; return their log file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemd.log"
    for name in ("systemd-run", "systemctl"):
        tool = bin_dir / name
        tool.write_text(f"#!{sys.executable}\nimport sys, json\n"
                        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_auto_resume_timer_is_armed_and_disarmed(tmp_path, monkeypatch):
    log = fake_systemd(tmp_path, monkeypatch)
    timer = arm("pre-change-20261126T030000-42", ["/usr/bin/subvault", "pre-change", "--resume"], print, delay=900)
    assert timer is not None and timer.unit == "subvault-resume-pre-change-20261126T030000-42"
    assert timer.disarm(print)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0][:3] == [f"--unit={timer.unit}", "--on-active=900s", "--timer-property=AccuracySec=1s"]
    assert calls[0][-4:] == ["--", "/usr/bin/subvault", "pre-change", "--resume"]
    assert calls[1] == ["stop", f"{timer.unit}.timer"]


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="would arm a real timer on a systemd host")
def test_without_systemd_arming_is_skipped_with_a_warning():
    said: list[str] = []
    assert arm("pre-change-x", ["true"], said.append) is None
    assert said and "--resume" in said[0]


def test_unit_names_are_safe():
    assert unit_name("pre-change-a b/c") == "subvault-resume-pre-change-a_b_c"
