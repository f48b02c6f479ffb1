"""Generic hooks from config: an argv run on the host before or after a snapshot.

```toml
[[hook]]
when = "pre-snapshot"                  # or "post-snapshot"
run = ["/usr/local/bin/app-flush", "--all"]
timeout = 30                           # seconds, optional
on_error = "fail"                      # or "continue", optional
```

Rules:
- `run` is an argv executed through subvault.process (no shell); a hook that runs
  longer than its timeout is killed and counts as failed. Only a bounded tail of its
  output is kept, and what it leaves running in the background is stopped when it exits.
- A failed hook with on_error "fail" stops the pre stage; "continue" only warns.
- Never fsfreeze in a hook: a frozen filesystem blocks btrfs snapshot creation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from subvault import process
from subvault.config.schema import HookConf
from subvault.errors import CommandFailed

# One `[[hook]]` of the config. Its rules and defaults live in the schema only.
Hook = HookConf
HookWhen = Literal["pre-snapshot", "post-snapshot"]


@dataclass(frozen=True)
class HookOutcome:
    """What happened to one hook (generic or pod): ok, or why not and whether that is fatal."""

    name: str
    ok: bool
    detail: str = ""
    fatal: bool = False


Log = Callable[[str], None]


def run_hook(hook: Hook, log: Log) -> HookOutcome:
    """Run one hook; return its outcome. Never raises CommandFailed."""
    log(f"running {hook.name}")
    try:
        res = process.run_tail(list(hook.run), what=hook.name, timeout=hook.timeout)
        if res.returncode != 0:
            raise CommandFailed(res.argv, res.returncode, res.stdout, hook.name)
    except CommandFailed as e:
        fatal = hook.on_error == "fail"
        log(f"{hook.name} failed ({'fatal' if fatal else 'continuing'}): {e}")
        return HookOutcome(hook.name, False, str(e), fatal)
    if res.stderr:
        log(f"{hook.name}: {res.stderr}")
    return HookOutcome(hook.name, True, res.stderr)


def select(hooks: Sequence[Hook], when: HookWhen) -> list[Hook]:
    """Return the hooks for one moment, in config order."""
    return [h for h in hooks if h.when == when]
