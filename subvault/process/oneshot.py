"""One-shot processes: run a command to its end (`run`, `run_tail`), or start one the
caller talks to and stops (`spawn`, `spawn_console`)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from subvault.errors import CommandFailed
from subvault.process.launch import as_text, describe, dies_with_us, log, not_found, raise_for, wait_armed
from subvault.secrets import redact

TAIL_BYTES = 64 * 1024
_GRACE_SECONDS = 2.0
_ORPHAN_OUTPUT_SECONDS = 30.0


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[object],
    *,
    check: bool = True,
    what: str = "",
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    cwd: str | None = None,
    pass_fds: Sequence[int] = (),
) -> Result:
    """Run argv to completion and return its output as text.

    Raise CommandFailed (or NoSpace) when it exits non-zero and check is true.
    `timeout` is only for short metadata commands; transfers use `pipeline`.
    """
    args = as_text(argv)
    log.debug("run %s", describe(args))
    full_env = None
    if env is not None:
        full_env = {**os.environ, **env}
    try:
        proc = subprocess.run(
            args,
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=cwd,
            errors="surrogateescape",
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError:
        raise not_found(args, what) from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(args, -1, f"timed out after {timeout}s", what) from None
    if check and proc.returncode != 0:
        raise_for(args, proc.returncode, proc.stderr, what)
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def run_tail(argv: Sequence[object], *, what: str, timeout: float | None = None, tail_bytes: int = TAIL_BYTES) -> Result:
    """Run a user's command (a hook, pre-change's COMMAND) and return its exit and output tail.

    Rules, because the command is not ours:
    - Output (stdout and stderr together) is kept as a bounded tail of `tail_bytes`:
      a command printing gigabytes costs no memory.
    - It runs in a process group of its own. Its result is its own exit status; once it
      has exited, whatever it left running in that group (a background child holding
      the output open) is stopped, and `stderr` says so. It never turns into a timeout.
    - Past `timeout` seconds the whole group is stopped (TERM, then KILL) and
      CommandFailed says it timed out. stdin is inherited, so a command may still ask.
    Never raises for a non-zero exit: the caller reads `returncode`.
    """
    args = as_text(argv)
    log.debug("run (tail) %s", describe(args))
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except (FileNotFoundError, PermissionError) as exc:
        raise CommandFailed(args, 127, f"{args[0]}: cannot run it ({exc.strerror}); check the path", what) from None
    tail = bytearray()

    def drain() -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            tail.extend(chunk)
            if len(tail) > 2 * tail_bytes:
                del tail[: len(tail) - tail_bytes]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc.pid)
        proc.wait()
        reader.join()
        raise CommandFailed(args, -1, f"timed out after {timeout:g}s and was stopped", what) from None
    note = ""
    if _group_alive(proc.pid):  # something it started is still running in its group
        _stop_group(proc.pid)
        note = "it left processes running in the background; they were stopped"
    reader.join(_ORPHAN_OUTPUT_SECONDS)  # only a process that left the group can hold it longer
    text = redact(bytes(tail[-tail_bytes:]).decode(errors="replace"))
    return Result(args, returncode, text, note)


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in process group pgid."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _stop_group(pgid: int) -> None:
    """TERM a process group, then KILL what is left of it after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + _GRACE_SECONDS
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for processes that are not our children to exit
        if not _group_alive(pgid):
            return


def spawn(argv: Sequence[object]) -> subprocess.Popen[str]:
    """Start a long-running server (the demo's sshd) and return it; the caller stops it.

    Its stderr is a text pipe the caller reads (e.g. to learn that it is listening).
    """
    args = as_text(argv)
    log.debug("spawn %s", describe(args))
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def spawn_console(argv: Sequence[object]) -> subprocess.Popen[bytes]:
    """Start a program we talk to over its stdin and stdout (a VM's serial console), binary, in its own session.

    stderr goes with stdout; the caller reads stdout, writes stdin and stops the process.
    """
    args = as_text(argv)
    log.debug("spawn %s", describe(args))
    # Dies with the thread that started it (setpriv --pdeathsig): a drill killed by
    # SIGTERM or SIGKILL never leaves its VM running.
    proc = subprocess.Popen(dies_with_us(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    wait_armed(proc.pid)
    return proc
