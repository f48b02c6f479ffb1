"""What every executor needs: the config, the clock, the zone, and dry-run; and this host's name on targets."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from subvault.config.schema import Config
from subvault.timeutil import local_zone, utcnow


@dataclass
class Context:
    config: Config
    now: datetime = field(default_factory=utcnow)
    zone: InitVar[tzinfo | None] = None  # the zone to judge calendar periods in; None: the config's
    dry_run: bool = False
    say: Callable[[str], None] = lambda line: None  # progress lines for a terminal
    # Facts one layer learned during this command that a later layer may reuse
    # (e.g. replication's holds for the prune that follows). Never persisted.
    cache: dict[str, Any] = field(default_factory=dict)
    tz: tzinfo = field(init=False)

    def __post_init__(self, zone: tzinfo | None) -> None:
        self.tz = zone if zone is not None else local_zone(self.config.defaults.timezone)

    @property
    def unreachable(self) -> dict[tuple[tuple[str, ...], str], str]:
        """ssh hosts that could not be reached in this command: not asked again (endpoints.runner)."""
        known: dict[tuple[tuple[str, ...], str], str] = self.cache.setdefault("ssh-unreachable", {})
        return known

    @property
    def state_dir(self) -> Path:
        return Path(self.config.defaults.state_dir)


def host_name() -> str:
    """The source host's name on targets: the short hostname."""
    return socket.gethostname().split(".")[0] or "localhost"
