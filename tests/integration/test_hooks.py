"""Hooks and pre-change's COMMAND run as real processes: bounded output, own exit, no leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from subvault.hooks import Hook, run_hook

REPO = Path(__file__).resolve().parents[2]

# VmHWM (this process's own peak), not getrusage's ru_maxrss: that one survives fork and
# exec, so it starts at the parent's peak (pytest's, after a long run).
MEASURE = r"""
import json, sys
from subvault import process
res = process.run_tail([sys.executable, "-c", "import sys\nblock = b'x' * 1048576\nfor _ in range(400): sys.stdout.buffer.write(block)"], what="loud hook")
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rc": res.returncode, "tail": len(res.stdout), "maxrss_kib": hwm}))
"""


def test_hook_output_is_a_bounded_tail():
    # A hook printing 400 MB once took subvault to 1.2 GB RSS: only a tail is kept.
    proc = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, cwd=REPO, check=True)
    got = json.loads(proc.stdout)
    assert got["rc"] == 0
    assert 0 < got["tail"] <= 64 * 1024
    assert got["maxrss_kib"] < 120 * 1024, got


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_hook_leaving_a_background_child_is_judged_by_its_own_exit_and_the_child_is_stopped(tmp_path):
    pidfile = tmp_path / "pid"
    hook = Hook(when="pre-snapshot", run=["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started"], timeout=20)
    lines: list[str] = []
    outcome = run_hook(hook, lines.append)
    assert outcome.ok, outcome
    assert "background" in outcome.detail
    assert _state(int(pidfile.read_text())) in ("gone", "Z")


def test_hook_timeout_stops_the_whole_group(tmp_path):
    pidfile = tmp_path / "pid"
    hook = Hook(when="pre-snapshot", run=["sh", "-c", f"sleep 300 & echo $! > {pidfile}; sleep 300"], timeout=1)
    outcome = run_hook(hook, lambda m: None)
    assert not outcome.ok and outcome.fatal
    assert "timed out" in outcome.detail
    assert _state(int(pidfile.read_text())) in ("gone", "Z")


def test_hook_failure_shows_its_last_output_line():
    hook = Hook(when="pre-snapshot", run=("sh", "-c", "echo first; echo 'database is locked' >&2; exit 3"), on_error="continue")
    outcome = run_hook(hook, lambda m: None)
    assert not outcome.ok and not outcome.fatal
    assert "database is locked" in outcome.detail


def test_missing_hook_program_is_one_line():
    outcome = run_hook(Hook(when="pre-snapshot", run=("/nonexistent/flush",)), lambda m: None)
    assert not outcome.ok and "cannot run it" in outcome.detail and "\n" not in outcome.detail


def test_ping_url_that_never_answers_costs_one_timeout_per_job():
    # A listener that accepts and never answers: once cost ~40 s (2 pings x 2 attempts x 10 s).
    import socket

    from subvault.notify.ping import Pinger

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    try:
        pinger = Pinger(f"http://127.0.0.1:{port}/ping/abcd-1234", timeout=0.5)
        first = pinger.start()
        second = pinger.success("ok")
        server.setblocking(False)
        accepted = 0
        while True:
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                break
            accepted += 1
            conn.close()
        assert accepted == 1  # one attempt, then the URL is known dead for this job
        assert first and "no answer" in first
        assert second and "skipped" in second
        assert "abcd-1234" not in first + second  # the URL is a secret
    finally:
        server.close()


def test_age_failure_shows_ages_cause_not_its_report_line(tmp_path):
    import pytest

    from subvault import process
    from subvault.errors import CommandFailed

    with pytest.raises(CommandFailed) as err:
        with process.pipeline([["printf", "data"], ["age", "-r", "age1notakey"]], what="age encrypt") as pipe:
            pipe.capture()
    assert "recipient" in str(err.value) and "report unexpected" not in str(err.value)
    with pytest.raises(CommandFailed) as err:
        process.run(["age", "-d", "-i", str(tmp_path / "missing-identity")], what="age decrypt", input="")
    assert "missing-identity" in str(err.value) and "report unexpected" not in str(err.value)


def test_a_console_program_dies_with_the_process_that_started_it():
    # A drill killed by SIGTERM or SIGKILL once left its QEMU running (and its port open).
    import signal

    script = "from subvault import process\nimport time\np = process.spawn_console(['sleep', '300'])\nprint(p.pid, flush=True)\ntime.sleep(300)\n"
    for sig in (signal.SIGTERM, signal.SIGKILL):
        owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
        child = int(owner.stdout.readline())
        assert _state(child) not in ("gone", "Z")
        owner.send_signal(sig)
        owner.wait()
        for _ in range(100):  # the kernel delivers the death signal at once; reaping may lag
            if _state(child) in ("gone", "Z"):
                break
            import time

            time.sleep(0.05)
        assert _state(child) in ("gone", "Z"), sig
