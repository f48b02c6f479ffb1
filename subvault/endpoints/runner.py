"""Where endpoint commands run: here, or on a host over OpenSSH.

Rules:
- Commands go through `subvault.process` as argv lists. Over ssh, the remote side gets
  one command line: each argv shell-quoted, the stages of a pipeline joined by ` | `,
  and steps joined by ` && ` (the only operators subvault ever sends; `subvault serve`
  accepts nothing else). Joining steps saves round trips: on a real link each one
  costs a channel, a login shell and the latency.
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
Step = Sequence[Argv]  # one pipeline: its stages, stdout of each into the next
CONTROL_PERSIST_SECONDS = 60


class Runner(Protocol):
    """Runs endpoint commands on one side."""

    label: str
    joins_steps: bool  # True when several steps travel as one command (one round trip)

    def run(self, cmds: Sequence[Argv], *, what: str, check: bool = True) -> Result: ...

    def run_steps(self, steps: Sequence[Step], *, what: str, check: bool = True) -> Result: ...

    def stages(self, cmds: Sequence[Argv], *, bulk: bool = False, before: Sequence[Step] = (), after: Sequence[Step] = ()) -> list[Argv]: ...

    def close(self) -> None: ...


class LocalRunner:
    """Commands run on this host."""

    label = "local"
    joins_steps = False

    def run(self, cmds: Sequence[Argv], *, what: str, check: bool = True) -> Result:
        """Run one command (a single-stage list) and return its result."""
        if len(cmds) != 1:
            raise ValueError("LocalRunner.run takes one command; use stages() for pipelines")
        return process.run(cmds[0], what=what, check=check)

    def run_steps(self, steps: Sequence[Step], *, what: str, check: bool = True) -> Result:
        """Run single-command steps one after another, like `a && b`: stop at the first failure.

        Return the last step run, with the stdout of every step run, in order.
        """
        out: list[str] = []
        res = Result([], 0, "", "")
        for step in steps:
            res = self.run(step, what=what, check=check)
            out.append(res.stdout)
            if res.returncode != 0:
                break
        return Result(res.argv, res.returncode, "".join(out), res.stderr)

    def stages(self, cmds: Sequence[Argv], *, bulk: bool = False, before: Sequence[Step] = (), after: Sequence[Step] = ()) -> list[Argv]:
        if before or after:
            raise ValueError("a local pipeline cannot carry other steps; run them separately")
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


def steps_line(steps: Sequence[Step]) -> str:
    """Join steps into one remote command line: each a pipeline, joined by ` && `."""
    return " && ".join(command_line(step) for step in steps)


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

    joins_steps = True

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

        def master(suffix: str) -> list[str]:
            return [
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={control_dir()}/%C{suffix}",
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
        # Bulk streams (full sends, one at a time) get a master connection of their own:
        # a master encrypts all its channels in one process, and a big stream there would
        # starve the small commands. The stream's pipe is handed to the master (fd
        # passing), so multiplexing adds no copy, and the handshake is paid once, not
        # per subvolume.
        self.base = [*argv, *(master("") if multiplex else []), *tail]
        self.bulk_base = [*argv, *(master("-bulk") if multiplex else []), *tail]
        self.multiplex = multiplex

    def argv(self, cmds: Sequence[Argv]) -> Argv:
        return [*self.base, self.url.host, command_line(cmds)]

    def run(self, cmds: Sequence[Argv], *, what: str, check: bool = True) -> Result:
        return process.run(self.argv(cmds), what=f"{what} on {self.label}", check=check)

    def run_steps(self, steps: Sequence[Step], *, what: str, check: bool = True) -> Result:
        """Run the steps as one remote `a && b && …` command: one round trip."""
        return process.run([*self.base, self.url.host, steps_line(steps)], what=f"{what} on {self.label}", check=check)

    def stages(self, cmds: Sequence[Argv], *, bulk: bool = False, before: Sequence[Step] = (), after: Sequence[Step] = ()) -> list[Argv]:
        """Return the one ssh stage running cmds remotely, with `before` steps ahead of it and `after` ones behind."""
        line = steps_line([*before, cmds, *after])
        return [[*(self.bulk_base if bulk else self.base), self.url.host, line]]

    def close(self) -> None:
        """Stop the shared connections, if running."""
        if self.multiplex:
            for base in (self.base, self.bulk_base):
                process.run([*base, "-O", "exit", self.url.host], check=False)
