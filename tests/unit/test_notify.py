"""Notification pieces that need no network: URL checks, secrets, rendering, state."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from subvault.notify.apprise_notify import MESSAGE_LIMIT, Message, register_url_secrets, validate_url
from subvault.notify.lifecycle import STATE_FILE, Job, failure_message, load_outcome, save_outcome
from subvault.notify.ping import Pinger, validate_ping_url
from subvault.notify.unit_failure import already_notified, job_of_unit, unit_failure_message
from subvault.secrets import redact

TOKEN = "918273645:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ"


def test_valid_apprise_urls() -> None:
    assert validate_url(f"tgram://{TOKEN}/987654321") is None
    assert validate_url("json://127.0.0.1:8080/hook") is None


def test_malformed_apprise_urls_give_an_error_without_the_url() -> None:
    for bad in ["", "tgram://", "nosuchservice://x", "not a url", f"tgram:/{TOKEN}"]:
        error = validate_url(bad)
        assert error, bad
        assert "AAbb" not in error


def test_bot_token_is_masked() -> None:
    register_url_secrets(f"tgram://{TOKEN}/987654321")
    shown = redact(f"failed tgram://{TOKEN}/987654321")
    assert "AAbbCCdd" not in shown and "918273645" not in shown
    # the chat id alone is not a secret (in the whole URL it goes with it, whatever the order)
    assert "987654321" in redact("sent to chat 987654321")


def test_password_in_url_is_masked() -> None:
    register_url_secrets("json://user:hunter2secret@127.0.0.1:8080/x")
    assert "hunter2secret" not in redact("json://user:hunter2secret@127.0.0.1:8080/x")


def test_render_escapes_html() -> None:
    title, body = Message("a <b> & c", ("x < y", "<script>")).render()
    assert title == "a &lt;b&gt; &amp; c"
    assert body == "x &lt; y\n&lt;script&gt;"


def test_render_truncates_with_more_line() -> None:
    lines = tuple(f"problem number {i} with some text" for i in range(1000))
    title, body = Message("t", lines).render()
    assert len(title) + len(body) < MESSAGE_LIMIT
    shown = body.splitlines()
    assert shown[-1] == f"… {1000 - (len(shown) - 1)} more"


def test_short_message_is_not_truncated() -> None:
    assert Message("t", ("one", "two")).render()[1] == "one\ntwo"


@settings(deadline=None)  # timing is not what these properties test
@given(
    title=st.text(max_size=300),
    lines=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=600), max_size=300),
)
def test_property_rendered_message_fits_telegram(title: str, lines: list[str]) -> None:
    t, b = Message(title, tuple(lines)).render()
    assert len(t) + 1 + len(b) <= MESSAGE_LIMIT
    assert "<" not in t + b and ">" not in t + b


def test_ping_endpoints() -> None:
    pinger = Pinger("https://hc-ping.com/0f3c-uuid-example", run_id="r1")
    assert pinger.endpoint("start") == "https://hc-ping.com/0f3c-uuid-example/start?rid=r1"
    assert pinger.endpoint("") == "https://hc-ping.com/0f3c-uuid-example?rid=r1"
    assert pinger.endpoint("3") == "https://hc-ping.com/0f3c-uuid-example/3?rid=r1"
    assert "0f3c-uuid-example" not in redact("GET https://hc-ping.com/0f3c-uuid-example/start")


def test_ping_url_validation() -> None:
    assert validate_ping_url("https://hc-ping.com/x") is None
    assert validate_ping_url("hc-ping.com/x")
    assert Pinger("ftp://example.invalid/x").start() is not None  # a warning, no exception


def test_state_is_a_cache(tmp_path: Path) -> None:
    assert load_outcome(tmp_path, "run") is None
    (tmp_path / STATE_FILE).write_text("{not json")
    assert load_outcome(tmp_path, "run") is None
    assert save_outcome(tmp_path, "run", "failed", True) is None
    assert load_outcome(tmp_path, "run") == "failed"
    assert json.loads((tmp_path / STATE_FILE).read_text())["run"]["notified"] is True


def test_unwritable_state_is_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "could not remember" in (save_outcome(blocker / "sub", "run", "ok", False) or "")


def test_failure_message_names_exit_meaning() -> None:
    job = Job("run", 3, ["replication to pi failed: connection refused"])
    message = failure_message(job)
    assert "partly failed" in message.title
    assert message.lines == ("replication to pi failed: connection refused",)


def test_unit_failure_message_and_dedup(tmp_path: Path, monkeypatch) -> None:
    assert job_of_unit("subvault-run.service") == "run"
    env = {"MONITOR_SERVICE_RESULT": "exit-code", "MONITOR_EXIT_STATUS": "1", "MONITOR_INVOCATION_ID": "inv-1"}
    message = unit_failure_message("subvault-run.service", env, ["line a", "line b"])
    assert "subvault-run.service failed" in message.title and "exit 1" in message.title
    assert message.lines[-2:] == ("line a", "line b")
    assert not already_notified("subvault-run.service", tmp_path, env)
    monkeypatch.setenv("INVOCATION_ID", "inv-1")
    save_outcome(tmp_path, "run", "failed", True)
    assert already_notified("subvault-run.service", tmp_path, env)
    assert not already_notified("subvault-run.service", tmp_path, {**env, "MONITOR_INVOCATION_ID": "inv-2"})


def test_exit_codes_of_exceptions_leaving_a_job() -> None:
    from subvault.errors import ConfigError, LockHeld
    from subvault.notify.lifecycle import exit_code_of

    assert exit_code_of(SystemExit(0)) == 0
    assert exit_code_of(SystemExit(None)) == 0
    assert exit_code_of(SystemExit(3)) == 3
    assert exit_code_of(KeyboardInterrupt()) == 130
    assert exit_code_of(ConfigError("bad")) == 2
    assert exit_code_of(LockHeld("busy")) == 1
    assert exit_code_of(ValueError("bug")) == 1


def test_clean_system_exit_is_a_success(tmp_path: Path) -> None:
    import pytest

    from subvault.notify.lifecycle import monitored

    with pytest.raises(SystemExit):
        with monitored("check", [], None, tmp_path):
            raise SystemExit(0)
    assert load_outcome(tmp_path, "check") == "ok"
    with pytest.raises(SystemExit):
        with monitored("check", [], None, tmp_path):
            raise SystemExit(3)
    assert load_outcome(tmp_path, "check") == "failed"


def test_invariant_11_webhook_path_tokens_and_library_logs_are_redacted() -> None:
    # -v once printed `Max retries exceeded with url: /SECRETTOKEN123` from a json:// URL.
    import logging

    from subvault.notify.apprise_notify import register_url_secrets
    from subvault.secrets import RedactingFormatter

    register_url_secrets("json://127.0.0.1:47999/SECRETTOKEN123")
    record = logging.LogRecord("urllib3", logging.WARNING, __file__, 1, "Max retries exceeded with url: %s", ("/SECRETTOKEN123",), None)
    assert "SECRETTOKEN123" not in RedactingFormatter("%(name)s: %(message)s").format(record)
    assert redact("pre-snapshot hook ran") == "pre-snapshot hook ran"  # short words stay readable
