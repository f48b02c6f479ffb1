"""What an adoption plan says. Plain values, no I/O.

The planners fill them; `render.py` writes the config from them, `apply.py` carries out
the actions, the CLI prints them.

Rules:
- An Action is one step of the hand-over: its kind, what it acts on, one human line, the
  command a person would run instead (when there is one), and the data `apply` acts on.
- `found` says what was seen, `manual` what stays for a person to do, `comments` what has
  no equivalent (written at the top of the config).
- SNAPPER_OFF is what each snapper config is set to: no timeline, no cleanup; its
  snapshots stay. ADOPTED_KEY marks a snapshot subvault took over (`adopted=snapper`,
  `adopted=btrbk` in its info.xml userdata).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SNAPPER_OFF = ("TIMELINE_CREATE=no", "TIMELINE_CLEANUP=no", "NUMBER_CLEANUP=no", "EMPTY_PRE_POST_CLEANUP=no")
ADOPTED_KEY = "adopted"


@dataclass
class Action:
    kind: str  # write-config, snapper-config, disable-timer, disable-cron, move-local, move-entry, take-over, install-timers
    subject: str
    detail: str
    command: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class SubPlan:
    name: str
    path: str
    timeline: str
    prechange_keep: int
    targets: list[str]
    snapper: str | None = None
    btrbk: str | None = None
    comments: list[str] = field(default_factory=list)


@dataclass
class TargetPlan:
    name: str
    url: str
    keep: str
    compress: str = "none"
    ssh_identity: str | None = None
    ssh_cipher: str | None = None
    ssh_options: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    btrbk_dir: str = ""  # btrbk's target directory (the path part of url)
    keeps: dict[str, tuple[str, int]] = field(default_factory=dict)  # subvolume -> (keep btrbk gave it, btrbk.conf line)
    line: int = 0  # btrbk.conf line of the first target line for this directory
    containers: list[str] = field(default_factory=list)  # <dir>/<host>/<sub> of each subvolume listed there


@dataclass
class AdoptPlan:
    subvolumes: list[SubPlan] = field(default_factory=list)
    targets: list[TargetPlan] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)  # top-of-file: what has no equivalent
    toml: str = ""
