"""Where endpoint commands run: here, or on a host over OpenSSH.

Rules:
- Commands go through `subvault.process` as argv lists. Over ssh, the remote side gets
  one command line: each argv shell-quoted, stages joined by ` | ` (the only operator
  subvault ever sends; `subvault serve` accepts nothing else).
- One ssh connection per target: ControlMaster=auto with a ControlPath in a private
  directory and a short ControlPersist; `close()` stops the master. Options the user
  gives (`ssh_options`) come first, so they win over ours (ssh keeps the first value).
- A URL without user or port leaves them to ~/.ssh/config.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence
from urllib.parse import urlsplit

from subvault import process
from subvault.errors import ConfigError, Refused
from subvault.process import Result

Argv = list[str]
CONTROL_PERSIST_SECONDS = 60


class Runner(Protocol):
    """Runs endpoint commands on one side."""

    label: str

    def run(self, cmds: Sequence[Argv], *, what: str, check: bool = True) -> Result: ...

    def stages(self, cmds: Sequence[Argv], *, bulk: bool = False) -> list[Argv]: ...

    def close(self) -> None: ...


class LocalRunner:
    """Commands run on this host."""

    label = "local"

    def run(self, cmds: Sequence[Argv], *, what: str, check: bool = True) -> Result:
        """Run one command (a single-stage list) and return its result."""
        if len(cmds) != 1:
            raise ValueError("LocalRunner.run takes one command; use stages() for pipelines")
        return process.run(cmds[0], what=what, check=check)

    def stages(self, cmds: Sequence[Argv], *, bulk: bool = False) -> list[Argv]:
        return [list(c) for c in cmds]

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class SshUrl:
    host: str
    path: str
    user: str | None = None
    port: int | None = None


def parse_ssh_url(url: str) -> SshUrl:
    """Given ssh://[user@]host[:port]/path, return its parts. Raise ConfigError if malformed."""
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname or not parts.path.startswith("/"):
        raise ConfigError(f'"{url}" is not an ssh target (expected "ssh://user@host:22/path")')
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f'"{url}": the port is not a number') from None
    return SshUrl(host=parts.hostname, path=parts.path.rstrip("/") or "/", user=parts.username, port=port)


def command_line(cmds: Sequence[Argv]) -> str:
    """Join argvs into the one remote command line: each shell-quoted, joined by ` | `."""
    return " | ".join(shlex.join(c) for c in cmds)


def control_dir() -> Path:
    """Return a private directory for ssh control sockets (short path: sockets are limited to 108 bytes).

    Raise Refused if it exists and is not ours with mode 0700.
    """
    path = Path(tempfile.gettempdir()) / f"subvault-ssh-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        st = path.lstat()
        if st.st_uid != os.getuid() or (st.st_mode & 0o077) or not path.is_dir() or path.is_symlink():
            raise Refused(f"{path} is not a private directory of this user; remove it and run again") from None
    return path


class SshRunner:
    """Commands run on a host over OpenSSH, sharing one connection."""

    def __init__(
        self,
        url: SshUrl,
        *,
        identity: str | None = None,
        cipher: str | None = None,
        options: Sequence[str] = (),
        multiplex: bool = True,
    ) -> None:
        self.url = url
        self.label = f"{url.user + '@' if url.user else ''}{url.host}"
        argv = ["ssh"]
        for opt in options:
            argv += ["-o", opt]
        self.common = list(argv)
        if multiplex:
            argv += [
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={control_dir()}/%C",
                "-o", f"ControlPersist={CONTROL_PERSIST_SECONDS}",
            ]
        tail: list[str] = []
        # A dead link must end the connection, not hang every later command on it
        # (user options come first, so ~/.ssh/config-style overrides still win).
        tail += ["-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if url.port:
            tail += ["-p", str(url.port)]
        if url.user:
            tail += ["-l", url.user]
        if identity:
            tail += ["-i", identity]
        if cipher:
            tail += ["-c", cipher]
        self.base = argv + tail
        # Bulk streams (full sends) get a connection of their own: through the shared
        # master every byte would take one more hop and one process for all channels.
        self.bulk_base = [*self.common, "-o", "ControlMaster=no", "-o", "ControlPath=none", *tail]
        self.multiplex = multiplex

    def argv(self, cmds: Sequence[Argv]) -> Argv:
        return [*self.base, self.url.host, command_line(cmds)]

    def run(self, cmds: Sequence[Argv], *, what: str, check: bool = True) -> Result:
        return process.run(self.argv(cmds), what=f"{what} on {self.label}", check=check)

    def stages(self, cmds: Sequence[Argv], *, bulk: bool = False) -> list[Argv]:
        if bulk:
            return [[*self.bulk_base, self.url.host, command_line(cmds)]]
        return [self.argv(cmds)]

    def close(self) -> None:
        """Stop the shared connection, if one is running."""
        if self.multiplex:
            process.run([*self.base, "-O", "exit", self.url.host], check=False)
