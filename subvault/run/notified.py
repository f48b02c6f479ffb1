"""A job's [notify] lifecycle, built from the config: Apprise URLs (notify.urls and urls_file) and the dead-man ping."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from subvault.config.schema import Config
from subvault.config.verify import notify_urls
from subvault.notify.lifecycle import Job, monitored


def wants_notify(cfg: Config) -> bool:
    """Whether [notify] names anything to tell."""
    return bool(cfg.notify.urls or cfg.notify.urls_file or cfg.notify.ping)


def notified(job: str, cfg: Config, *, ping: bool) -> AbstractContextManager[Job]:
    """monitored(job) with the config's URLs (and its dead-man ping when ping is true)."""
    return monitored(job, notify_urls(cfg), cfg.notify.ping if ping else None, Path(cfg.defaults.state_dir))
