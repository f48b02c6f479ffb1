"""Notifications and dead-man pings end to end, against a loopback HTTP receiver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from httpreceiver import HttpReceiver, Recorded, http_receiver  # noqa: F401 - fixture

from subvault.errors import NotBtrfs
from subvault.notify.apprise_notify import MESSAGE_LIMIT, send
from subvault.notify.lifecycle import STATE_FILE, monitored

pytestmark = pytest.mark.integration

UNREACHABLE = "json://127.0.0.1:1/nobody-listens"


def notify_url(rx: HttpReceiver) -> str:
    return f"json://127.0.0.1:{rx.port}/notify?format=html"


def is_notification(r: Recorded) -> bool:
    return r.path == "/notify"


def is_ping(r: Recorded) -> bool:
    return r.path.startswith("/ping")


def test_failure_names_the_problem_then_recovery_arrives(http_receiver: HttpReceiver, tmp_path: Path) -> None:
    urls = [notify_url(http_receiver)]
    problem = "/var/lib/new-app: subvolume is not protected; add it as [[subvolume]] or [[exclude]] with a reason"

    with monitored("check", urls, None, tmp_path) as job:
        job.report(1, [problem])
    failure = http_receiver.wait(is_notification).json()
    assert failure["type"] == "failure"
    assert "subvault check" in failure["title"]
    assert "/var/lib/new-app" in failure["message"]

    with monitored("check", urls, None, tmp_path) as job:
        job.report(0)
    recovery = http_receiver.wait(is_notification).json()
    assert recovery["type"] == "success"
    assert "recovered" in recovery["title"]

    with monitored("check", urls, None, tmp_path) as job:
        job.report(0)
    assert [r for r in http_receiver.drain() if is_notification(r)] == []


def test_no_recovery_message_without_remembered_failure(http_receiver: HttpReceiver, tmp_path: Path) -> None:
    urls = [notify_url(http_receiver)]
    with monitored("run", urls, None, tmp_path) as job:
        job.report(1, ["replication to pi failed"])
    http_receiver.wait(is_notification)
    (tmp_path / STATE_FILE).unlink()  # the state is a cache (invariant 12)

    with monitored("run", urls, None, tmp_path) as job:
        job.report(0)
    assert json.loads((tmp_path / STATE_FILE).read_text())["run"]["outcome"] == "ok"
    assert [r for r in http_receiver.drain() if is_notification(r)] == []


def test_pings_start_then_success_with_one_run_id(http_receiver: HttpReceiver, tmp_path: Path) -> None:
    ping = f"{http_receiver.url}/ping/abcd-1234"
    with monitored("run", [], ping, tmp_path) as job:
        start = http_receiver.wait(is_ping)
        job.report(0)
    end = http_receiver.wait(is_ping)
    assert start.path == "/ping/abcd-1234/start"
    assert end.path == "/ping/abcd-1234"
    assert start.query["rid"] == end.query["rid"]


def test_exception_pings_exit_code_notifies_and_propagates(http_receiver: HttpReceiver, tmp_path: Path) -> None:
    ping = f"{http_receiver.url}/ping/abcd-1234"
    with pytest.raises(NotBtrfs, match="/var/lib/pvc is not on btrfs"):
        with monitored("run", [notify_url(http_receiver)], ping, tmp_path):
            raise NotBtrfs("/var/lib/pvc is not on btrfs; fix [[subvolume]] var_lib_pvc")
    pings = [http_receiver.wait(is_ping), http_receiver.wait(is_ping)]
    assert [p.path for p in pings] == ["/ping/abcd-1234/start", "/ping/abcd-1234/1"]
    assert "/var/lib/pvc is not on btrfs" in pings[1].text()
    note = http_receiver.wait(is_notification).json()
    assert "/var/lib/pvc is not on btrfs" in note["message"]


def test_unreachable_url_warns_and_the_real_error_propagates(http_receiver: HttpReceiver, tmp_path: Path) -> None:
    urls = [UNREACHABLE, notify_url(http_receiver)]
    dead_ping = "http://127.0.0.1:1/ping/x"
    with pytest.raises(NotBtrfs, match="the real error"):
        with monitored("run", urls, dead_ping, tmp_path) as job:
            raise NotBtrfs("the real error")
    assert any("notify.urls[0]" in w for w in job.warnings)
    assert any("dead-man ping" in w for w in job.warnings)
    # the reachable URL still got the message
    assert "the real error" in http_receiver.wait(is_notification).json()["message"]


def test_unreachable_url_is_a_warning_not_an_error() -> None:
    warnings = send([UNREACHABLE], "subvault check failed", "one problem")
    assert len(warnings) == 1 and "notify.urls[0]" in warnings[0]


def test_long_message_arrives_truncated_under_telegram_limit(http_receiver: HttpReceiver) -> None:
    lines = [f"/srv/volume-{i}: subvolume is not protected; add it as [[subvolume]]" for i in range(500)]
    assert send([notify_url(http_receiver)], "subvault check failed", "\n".join(lines)) == []
    note = http_receiver.wait(is_notification).json()
    assert len(note["title"]) + len(note["message"]) < MESSAGE_LIMIT
    last = note["message"].splitlines()[-1]
    assert last.startswith("… ") and last.endswith(" more")
    shown = len(note["message"].splitlines()) - 1
    assert int(last.split()[1]) == 500 - shown


def test_message_is_html_escaped(http_receiver: HttpReceiver) -> None:
    assert send([notify_url(http_receiver)], "check <failed>", "/srv/<script>&x") == []
    note = http_receiver.wait(is_notification).json()
    assert "&lt;script&gt;&amp;x" in note["message"]
    assert "<script>" not in note["message"]
    assert "&lt;failed&gt;" in note["title"]


def test_secret_in_url_is_never_in_warnings() -> None:
    secret = "AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ"
    warnings = send([f"json://user:{secret}@127.0.0.1:1/x"], "t", "b")
    assert warnings and all(secret not in w for w in warnings)
