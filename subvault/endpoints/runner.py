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
- Every ssh call has time limits (`limit_options`): ConnectTimeout bounds the TCP
  connect and the banner exchange, ServerAliveInterval x ServerAliveCountMax bounds key
  exchange, authentication and a dead link. Each is added only where `ssh -G` shows
  OpenSSH's default, so a value from ~/.ssh/config or ssh_options wins.
- The host always follows `--`: it can never be read as an option.
- ssh's own failure (exit 255) on a command is `Unreachable`, with ssh's reason, never
  an answer of the remote command; a host that failed so is not asked again in the
  same command (the `unreachable` dict the caller keeps for that command).
"""

from __future__ import annotations

import functools
import os
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from subvault import process
from subvault.errors import CommandFailed, ConfigError, Refused, SubvaultError
from subvault.process import Result

Argv = list[str]
Step = Sequence[Argv]  # one pipeline: its stages, stdout of each into the next
UnreachableHosts = dict[tuple[tuple[str, ...], str], str]  # (ssh argv, host) -> ssh's reason, for one command
CONTROL_PERSIST_SECONDS = 60
SSH_FAILED = 255  # ssh's own failure, never a remote command's answer
# Time limits (docs/design.md, "ssh time limits"), used where the user set none.
CONNECT_TIMEOUT = 10  # seconds for the TCP connect and the server's banner
SERVER_ALIVE_INTERVAL = 15  # a keep-alive after this many silent seconds ...
SERVER_ALIVE_COUNT_MAX = 4  # ... and this many unanswered end it: 60 s for key exchange, login, or a dead link


class Unreachable(SubvaultError):
    """ssh could not connect, or its connection failed (exit 255): nothing was asked of the remote."""


def limit_options(effective: dict[str, str]) -> Argv:
    """Given `ssh -G` output as a dict, return the -o options for the limits still at OpenSSH's default. Pure."""
    out: Argv = []
    if effective.get("connecttimeout", "none") == "none":
        out += ["-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
    if effective.get("serveraliveinterval", "0") == "0":
        out += ["-o", f"ServerAliveInterval={SERVER_ALIVE_INTERVAL}"]
        if effective.get("serveralivecountmax", "3") == "3":
            out += ["-o", f"ServerAliveCountMax={SERVER_ALIVE_COUNT_MAX}"]
    return out


@functools.lru_cache(maxsize=64)
def effective_options(argv: tuple[str, ...], host: str) -> dict[str, str]:
    """Return what ssh makes of its config files and argv for host (`ssh -G`), or {} if it cannot say."""
    try:
        res = process.run([*argv, "-G", "--", host], check=False, timeout=30)
    except CommandFailed:
        return {}  # no ssh, or it hung: the real call reports it
    if res.returncode != 0:
        return {}  # a bad option: the real call reports it
    return dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)


def ssh_headline(reason: str) -> str:
    """Say first what happened to the connection: refused, timed out, or failed."""
    low = reason.lower()
    if "refused" in low:
        return "connection refused"
    if "timed out" in low or "timeout" in low:
        return "connection timed out"
    return "ssh connection failed"


def ssh_reason(stderr: str) -> str:
    """The line of ssh's stderr that says why it failed (the last one that is not a warning)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("Warning:", "Pseudo-terminal"))]
    return lines[-1][:300] if lines else "ssh exited 255 without a reason"


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
    if parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
        raise ConfigError(f'"{url}": the host and user must not start with "-"')
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
        config_file: str | None = None,
        unreachable: UnreachableHosts | None = None,
    ) -> None:
        self.url = url
        self.label = f"{url.user + '@' if url.user else ''}{url.host}"
        argv = ["ssh", *(["-F", config_file] if config_file else [])]
        for opt in options:
            argv += ["-o", opt]

        def master(suffix: str) -> list[str]:
            return [
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={control_dir()}/%C{suffix}",
                "-o", f"ControlPersist={CONTROL_PERSIST_SECONDS}",
            ]

        tail: list[str] = []
        if url.port:
            tail += ["-p", str(url.port)]
        if url.user:
            tail += ["-l", url.user]
        if identity:
            tail += ["-i", identity]
        if cipher:
            tail += ["-c", cipher]
        # Never prompt. A dead or silent host must end the call, not hang every later
        # one: limits only where nobody set one (see limit_options).
        tail += ["-o", "BatchMode=yes", *limit_options(effective_options(tuple(argv + tail), url.host))]
        # Bulk streams (full sends, one at a time) get a master connection of their own:
        # a master encrypts all its channels in one process, and a big stream there would
        # starve the small commands. The stream's pipe is handed to the master (fd
        # passing), so multiplexing adds no copy, and the handshake is paid once, not
        # per subvolume.
        self.base = [*argv, *(master("") if multiplex else []), *tail]
        self.bulk_base = [*argv, *(master("-bulk") if multiplex else []), *tail]
        self.multiplex = multiplex
        self._key = (tuple(argv + tail), url.host)
        self._unreachable = unreachable if unreachable is not None else {}

    def argv(self, cmds: Sequence[Argv]) -> Argv:
        return [*self.base, "--", self.url.host, command_line(cmds)]

    def run(self, cmds: Sequence[Argv], *, what: str, check: bool = True) -> Result:
        return self._run(self.argv(cmds), what=what, check=check)

    def run_steps(self, steps: Sequence[Step], *, what: str, check: bool = True) -> Result:
        """Run the steps as one remote `a && b && …` command: one round trip."""
        return self._run([*self.base, "--", self.url.host, steps_line(steps)], what=what, check=check)

    def _run(self, argv: Argv, *, what: str, check: bool) -> Result:
        """Run one ssh call. Raise Unreachable when ssh itself failed (now, or earlier in this command)."""
        known = self._unreachable.get(self._key)
        if known is None:
            try:
                res = process.run(argv, what=f"{what} on {self.label}", check=check)
            except CommandFailed as exc:
                if exc.returncode != SSH_FAILED:
                    raise
                stderr = exc.stderr_tail
            else:
                if res.returncode != SSH_FAILED:
                    return res
                stderr = res.stderr
            known = self._unreachable[self._key] = ssh_reason(stderr)
        where = f"{self.label}:{self.url.port}" if self.url.port else self.label
        raise Unreachable(f"{ssh_headline(known)}: {where} over ssh ({known}); check that the host is up and its sshd answers, then run again")

    def stages(self, cmds: Sequence[Argv], *, bulk: bool = False, before: Sequence[Step] = (), after: Sequence[Step] = ()) -> list[Argv]:
        """Return the one ssh stage running cmds remotely, with `before` steps ahead of it and `after` ones behind."""
        line = steps_line([*before, cmds, *after])
        return [[*(self.bulk_base if bulk else self.base), "--", self.url.host, line]]

    def exit_argv(self, *, bulk: bool) -> Argv:
        """The call that stops a shared connection."""
        return [*(self.bulk_base if bulk else self.base), "-O", "exit", "--", self.url.host]

    def close(self) -> None:
        """Stop the shared connections, if running."""
        if self.multiplex:
            for bulk in (False, True):
                process.run(self.exit_argv(bulk=bulk), check=False)
