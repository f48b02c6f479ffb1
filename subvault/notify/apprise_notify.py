"""Notifications through Apprise (Telegram via `tgram://` and every service Apprise knows).

Rules:
- Messages are short HTML: every piece of text is escaped, and the whole message
  (title and body) stays under Telegram's 4096-character limit; lines that do not fit
  are replaced by one "… N more" line.
- Sending never raises: a malformed, failing or unreachable URL becomes a warning
  (returned and logged), so a notification can never hide the error it reports.
- Secrets inside Apprise URLs (bot tokens, passwords, API keys) are registered with
  `subvault.secrets.mask()` before anything is sent or logged, and Apprise's own log
  records pass through the same redaction.
"""

from __future__ import annotations

import functools
import html
import logging
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import apprise

from subvault.secrets import mask, redact

log = logging.getLogger("subvault.notify")


@functools.cache
def _apprise() -> ModuleType:
    """Apprise, imported here on first use and nowhere else: importing it takes longer
    (about 90 ms) than all of subvault's start-up, and most runs never notify."""
    import apprise

    return apprise

# Telegram rejects messages over 4096 characters; Apprise sends the title as a bold
# first line, so title and body share this budget, with room for the markup.
MESSAGE_LIMIT = 4096
_BUDGET = MESSAGE_LIMIT - 96
_LINE_LIMIT = 400
_URL_SPLIT = re.compile(r"[/:@?&=,#]+")


class _RedactApprise(logging.Filter):
    """Replace registered secrets in every record Apprise logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


_FILTER = _RedactApprise()


def _install_log_filter() -> None:
    logger = logging.getLogger(_apprise().LOGGER_NAME)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def validate_url(url: str) -> str | None:
    """Given an Apprise URL, return None when Apprise can use it, else a one-line error.

    The error never contains the URL itself (it may hold a token); the config schema
    prefixes it with the key, e.g. `notify.urls[0]`. As a side effect the URL and its
    secret parts are registered with `secrets.mask()`, before Apprise logs anything.
    """
    if not isinstance(url, str) or not url.strip():
        return "expected an Apprise URL such as tgram://BOT_TOKEN/CHAT_ID, got an empty value"
    _install_log_filter()
    mask(url)
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        return "expected an Apprise URL of the form SERVICE://…, such as tgram://BOT_TOKEN/CHAT_ID"
    if _apprise().Apprise.instantiate(url) is None:
        return (
            f"Apprise cannot use this {scheme}:// URL (unknown service or missing/invalid "
            "parts); see https://github.com/caronc/apprise/wiki for its format"
        )
    return None


_WEBHOOKS = ("json", "form", "xml")


def register_url_secrets(url: str) -> None:
    """Register every secret part of an Apprise URL with `secrets.mask()`.

    Secrets are the parts Apprise itself hides in its privacy view of the URL (bot
    tokens, passwords, keys). An unusable URL is masked whole, since its parts are
    unknown.
    """
    _install_log_filter()
    mask(url)
    # Generic webhooks (json://, form://, xml://) carry their token in the path, which
    # Apprise shows: the whole path and query, and each long segment (8+ characters, so
    # that words like "hook" stay readable), are masked too.
    split = urlsplit(url)
    if split.scheme.rstrip("s") in _WEBHOOKS:
        for part in (split.path.strip("/"), split.query, *split.path.split("/")):
            if len(part) >= 8:
                mask(part)
    plugin = _apprise().Apprise.instantiate(url)
    if plugin is None:
        return
    public = set(_URL_SPLIT.split(unquote(plugin.url(privacy=True))))
    for part in _URL_SPLIT.split(unquote(plugin.url(privacy=False))):
        if part not in public:
            mask(part)


@dataclass(frozen=True)
class Message:
    """A notification: title and lines of plain text (escaped when rendered)."""

    title: str
    lines: tuple[str, ...] = ()
    kind: str = "failure"  # failure | success | warning | info

    def render(self, limit: int = _BUDGET) -> tuple[str, str]:
        """Return (title, body) as escaped HTML whose total length is at most limit."""
        title = html.escape(_clip(redact(self.title), 200))
        budget = limit - len(title) - 1
        body: list[str] = []
        used = 0
        for i, line in enumerate(self.lines):
            piece = html.escape(_clip(redact(line), _LINE_LIMIT))
            remaining = len(self.lines) - i - 1
            reserve = len(_more_line(remaining + 1)) + 1 if remaining else 0
            if used + len(piece) + 1 + reserve > budget:
                body.append(_more_line(len(self.lines) - i))
                break
            body.append(piece)
            used += len(piece) + 1
        return title, "\n".join(body)


def _clip(text: str, limit: int) -> str:
    """Return text on one line (whitespace runs collapsed), cut to limit with "…"."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _more_line(n: int) -> str:
    return f"… {n} more"


_TYPES = {"failure": "FAILURE", "success": "SUCCESS", "warning": "WARNING", "info": "INFO"}  # Message.kind -> apprise.NotifyType


def send(urls: Sequence[str], title: str, body: str, *, kind: str = "failure") -> list[str]:
    """Send one notification to each Apprise URL; return one warning per URL that failed.

    body is plain text, one problem per line; it is escaped and truncated here. Never
    raises for a bad or unreachable URL: the warning is also logged.
    """
    return send_message(urls, Message(title, tuple(body.splitlines()), kind))


def send_message(urls: Sequence[str], message: Message) -> list[str]:
    """Send a rendered Message to each URL; return the warnings (see `send`)."""
    _install_log_filter()
    title, body = message.render()
    warnings: list[str] = []
    for index, url in enumerate(urls):
        problem = _send_one(url, title, body, getattr(_apprise().NotifyType, _TYPES.get(message.kind, "INFO")))
        if problem:
            warning = redact(f"notification to notify.urls[{index}] ({_scheme(url)}://) failed: {problem}")
            log.warning("%s", warning)
            warnings.append(warning)
    return warnings


def _send_one(url: str, title: str, body: str, notify_type: apprise.NotifyType) -> str | None:
    """Send to one URL; return None on success, else why it failed."""
    error = validate_url(url)
    if error:
        return error
    register_url_secrets(url)
    client = _apprise().Apprise()
    client.add(url)
    try:
        result = client.notify(body=body, title=title, notify_type=notify_type, body_format=_apprise().NotifyFormat.HTML)
    except Exception as exc:  # noqa: BLE001 - a plugin bug must not hide the error being reported
        return f"{type(exc).__name__}: {exc}"
    if result:
        return None
    return _reason(result) or "the service did not accept it; check the URL and the network"


def _reason(result: object) -> str:
    """Return the last warning or error Apprise logged for a failed result."""
    reasons: list[str] = []
    for service in getattr(result, "results", None) or list(result):  # type: ignore[call-overload]  # Apprise returns a result object or an iterable of them; neither is typed
        for attempt in getattr(service, "attempts", None) or []:
            for entry in attempt.logs:
                level = getattr(entry, "level", "")
                if str(level).upper() in ("WARNING", "ERROR", "CRITICAL"):
                    reasons.append(str(getattr(entry, "message", entry)))
    return reasons[-1] if reasons else ""


def _scheme(url: str) -> str:
    return url.partition("://")[0] or "?"


def hostname() -> str:
    """Return this machine's short host name, for message titles."""
    return socket.gethostname().split(".")[0]
