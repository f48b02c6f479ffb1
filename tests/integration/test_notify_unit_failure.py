"""`subvault notify-failure UNIT` (the OnFailure= template) against a loopback receiver."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from httpreceiver import HttpReceiver, http_receiver  # noqa: F401 - fixture

from subvault.notify.lifecycle import save_outcome
from subvault.notify.unit_failure import notify_unit_failure

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("journalctl") is None, reason="journalctl is not installed"),
]

ENV = {"MONITOR_SERVICE_RESULT": "exit-code", "MONITOR_EXIT_STATUS": "1", "MONITOR_INVOCATION_ID": "inv-42"}


def test_unit_failure_sends_journal_tail(http_receiver: HttpReceiver, tmp_path: Path) -> None:
    url = f"json://127.0.0.1:{http_receiver.port}/notify?format=html"
    assert notify_unit_failure("subvault-check.service", [url], tmp_path, ENV) == []
    note = http_receiver.wait().json()
    assert "subvault-check.service failed" in note["title"]
    assert "journalctl -u subvault-check.service -n 20" in note["message"]


def test_no_duplicate_when_subvault_already_notified(http_receiver: HttpReceiver, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INVOCATION_ID", "inv-42")
    save_outcome(tmp_path, "check", "failed", True)
    url = f"json://127.0.0.1:{http_receiver.port}/notify"
    assert notify_unit_failure("subvault-check.service", [url], tmp_path, ENV) == []
    assert http_receiver.drain() == []
