"""Dead-man pings in healthchecks.io style.

Protocol (healthchecks.io, also Uptime Kuma push and compatible services):
  URL/start        the job started
  URL              the job succeeded
  URL/fail         the job failed
  URL/<exit code>  the job ended with this exit code (0 = success)
Every ping carries the same `rid` (run id) so the service can pair start and end.
The request body is a short log (the problems), which healthchecks.io shows.

Rules:
- Short timeouts, and a retry only after a quick failure (refused, HTTP error): a ping
  must not delay or block the job. A URL that timed out once is not tried again in the
  same job; its later pings are reported as skipped. So a dead service costs one
  timeout (TIMEOUT_SECONDS) per job, not one per ping and attempt.
- A failed ping is a warning (returned and logged), never an exception.
- The ping URL is a secret (anyone holding it can report success) and is masked.
"""

from __future__ import annotations

import logging
import urllib.parse
import uuid
from dataclasses import dataclass, field

from subvault.secrets import mask, redact

log = logging.getLogger("subvault.notify")

TIMEOUT_SECONDS = 5.0
ATTEMPTS = 2
BODY_LIMIT = 10_000


def validate_ping_url(url: str) -> str | None:
    """Given a ping URL, return None if it is usable, else a one-line error."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return "expected an http(s) URL such as https://hc-ping.com/UUID"
    return None


def register_ping_secret(url: str) -> None:
    """Mask the secret part of a ping URL (its path, which identifies the check)."""
    path = urllib.parse.urlsplit(url).path.strip("/")
    if path:
        mask(path)
    mask(url.rstrip("/"))


@dataclass
class Pinger:
    """Pings one check URL; every ping of one Pinger shares a run id."""

    url: str
    timeout: float = TIMEOUT_SECONDS
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    unresponsive: bool = False

    def __post_init__(self) -> None:
        register_ping_secret(self.url)

    def start(self) -> str | None:
        """Ping URL/start; return a warning if it failed, else None."""
        return self._ping("start")

    def success(self, body: str = "") -> str | None:
        """Ping URL (success); return a warning if it failed, else None."""
        return self._ping("", body)

    def fail(self, body: str = "") -> str | None:
        """Ping URL/fail; return a warning if it failed, else None."""
        return self._ping("fail", body)

    def exit_code(self, code: int, body: str = "") -> str | None:
        """Ping URL/<code> (0 means success); return a warning if it failed, else None."""
        return self._ping(str(int(code)), body)

    def endpoint(self, suffix: str) -> str:
        """Return the URL for one kind of ping, with the run id as a query parameter."""
        parts = urllib.parse.urlsplit(self.url)
        path = parts.path.rstrip("/")
        if suffix:
            path = f"{path}/{suffix}"
        query = urllib.parse.parse_qsl(parts.query)
        query.append(("rid", self.run_id))
        return urllib.parse.urlunsplit(parts._replace(path=path, query=urllib.parse.urlencode(query)))

    def _ping(self, suffix: str, body: str = "") -> str | None:
        error = validate_ping_url(self.url)
        if error:
            return self._warn(suffix, error)
        if self.unresponsive:
            return self._warn(suffix, "skipped: the URL did not answer earlier in this job")
        data = redact(body)[-BODY_LIMIT:].encode()
        problem = ""
        for _ in range(ATTEMPTS):
            problem, timed_out = _post(self.endpoint(suffix), data, self.timeout)
            if not problem:
                return None
            if timed_out:
                self.unresponsive = True
                break
        return self._warn(suffix, problem)

    def _warn(self, suffix: str, problem: str) -> str:
        warning = redact(f"dead-man ping ({suffix or 'success'}) failed: {problem}")
        log.warning("%s", warning)
        return warning


def _post(url: str, data: bytes, timeout: float) -> tuple[str, bool]:
    """POST data to url; return ('', False) on a 2xx answer, else (why not, whether it timed out)."""
    # The HTTP client (urllib.request with ssl, about 25 ms to import) loads here, when a
    # ping is sent: a run that pings nothing, or pings at its end, starts without it.
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data, method="POST", headers={"User-Agent": "subvault"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked above
            response.read(1024)
            return "", False
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}", False
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        timed_out = isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError)
        return (f"no answer within {timeout:g}s" if timed_out else f"{type(exc).__name__}: {reason}"), timed_out
