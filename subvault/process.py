"""The only module that starts processes.

Rules:
- argv lists only, never a shell.
- Every stage of a pipeline is checked: if one fails, the others are stopped, and the
  error names the first stage that failed with the tail of its stderr (invariant 9).
- Timeouts are by progress, not by wall clock: a pipeline is stalled when no stage
  has moved bytes for `stall_seconds`, however long the whole transfer takes.
- Secrets registered with `secrets.mask()` never appear in errors or logs.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from subvault.errors import CommandFailed, NoSpace, StalledTransfer, bounded
from subvault.secrets import redact

log = logging.getLogger("subvault.process")

STDERR_TAIL_LINES = 20


def _describe(argv: Sequence[str]) -> str:
    return redact(" ".join(argv))


def _raise_for(argv: Sequence[str], returncode: int, stderr: str, what: str) -> None:
    stderr = redact(stderr)
    if "No space left on device" in stderr or "ENOSPC" in stderr:
        raise NoSpace(f"{what or _describe(argv[:3])}: no space left on device; free space or prune, then retry")
    raise CommandFailed([redact(a) for a in argv], returncode, stderr, what)


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
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
    argv = [str(a) for a in argv]
    log.debug("run %s", _describe(argv))
    full_env = None
    if env is not None:
        full_env = {**os.environ, **env}
    try:
        proc = subprocess.run(
            argv,
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
        raise CommandFailed(argv, 127, f"{argv[0]}: command not found; install it", what) from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(argv, -1, f"timed out after {timeout}s", what) from None
    if check and proc.returncode != 0:
        _raise_for(argv, proc.returncode, proc.stderr, what)
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


TAIL_BYTES = 64 * 1024
_GRACE_SECONDS = 2.0
_ORPHAN_OUTPUT_SECONDS = 30.0


def run_tail(argv: Sequence[str], *, what: str, timeout: float | None = None, tail_bytes: int = TAIL_BYTES) -> Result:
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
    argv = [str(a) for a in argv]
    log.debug("run (tail) %s", _describe(argv))
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except (FileNotFoundError, PermissionError) as exc:
        raise CommandFailed(argv, 127, f"{argv[0]}: cannot run it ({exc.strerror}); check the path", what) from None
    tail = bytearray()

    def drain() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
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
        raise CommandFailed(argv, -1, f"timed out after {timeout:g}s and was stopped", what) from None
    note = ""
    if _group_alive(proc.pid):  # something it started is still running in its group
        _stop_group(proc.pid)
        note = "it left processes running in the background; they were stopped"
    reader.join(_ORPHAN_OUTPUT_SECONDS)  # only a process that left the group can hold it longer
    text = redact(bytes(tail[-tail_bytes:]).decode(errors="replace"))
    return Result(argv, returncode, text, note)


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


def spawn(argv: Sequence[str], *, stderr_text: bool = True) -> subprocess.Popen:
    """Start a long-running server (the demo's sshd) and return it; the caller stops it.

    Its stderr is a text pipe the caller reads (e.g. to learn that it is listening).
    """
    argv = [str(a) for a in argv]
    log.debug("spawn %s", _describe(argv))
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=stderr_text)


def spawn_console(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start a program we talk to over its stdin and stdout (a VM's serial console), binary, in its own session.

    stderr goes with stdout; the caller reads stdout, writes stdin and stops the process.
    """
    argv = [str(a) for a in argv]
    log.debug("spawn %s", _describe(argv))
    # Dies with the thread that started it (setpriv --pdeathsig): a drill killed by
    # SIGTERM or SIGKILL never leaves its VM running.
    return subprocess.Popen(_dies_with_us(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


@dataclass
class _Stage:
    argv: list[str]
    proc: subprocess.Popen
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    reader: threading.Thread | None = None


@dataclass(frozen=True)
class PipelineResult:
    bytes: int
    seconds: float


ProgressCallback = Callable[[int], None]


class Pipeline:
    """A chain of processes, stdout of each into stdin of the next.

    Stream bytes never pass through Python: the kernel connects the stages, and the
    meter (progress, stall detection) reads a stage's write count from /proc (see run).
    Use as a context manager: leaving it kills any stage still alive.
    """

    def __init__(
        self,
        stages: Sequence[Sequence[str]],
        *,
        what: str = "",
        stdin: IO | int | None = None,
        stdout: IO | int | None = None,
        env: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.stages_argv = [[str(a) for a in s] for s in stages]
        self.pass_fds = tuple(pass_fds)  # directories the stages name as /proc/self/fd/N
        self.what = what
        self.stdin = stdin
        self.stdout = stdout
        self.env = {**os.environ, **env} if env else None
        self._stages: list[_Stage] = []

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        for stage in self._stages:
            if stage.proc.poll() is None:
                try:
                    stage.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for stage in self._stages:
            try:
                stage.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stage.proc.kill()
                stage.proc.wait()

    def _start(self, argv: list[str], stdin, stdout) -> _Stage:
        log.debug("pipeline stage %s", _describe(argv))
        try:
            if shutil.which(argv[0], path=(self.env or os.environ).get("PATH")) is None:
                raise FileNotFoundError(argv[0])
            proc = subprocess.Popen(
                _dies_with_us(argv), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=self.env, pass_fds=self.pass_fds
            )
        except FileNotFoundError:
            self.kill()
            raise CommandFailed(argv, 127, f"{argv[0]}: command not found; install it", self.what) from None
        stage = _Stage(argv, proc)
        stage.reader = threading.Thread(target=self._drain_stderr, args=(stage,), daemon=True)
        stage.reader.start()
        self._stages.append(stage)
        return stage

    @staticmethod
    def _drain_stderr(stage: _Stage) -> None:
        assert stage.proc.stderr is not None
        for raw in stage.proc.stderr:
            stage.stderr_tail.append(bounded(raw.decode(errors="replace").rstrip(), 500))

    def run(
        self,
        *,
        meter_after: int | None = None,
        progress: ProgressCallback | None = None,
        stall_seconds: float | None = None,
        watch: ProgressCallback | None = None,
    ) -> PipelineResult:
        """Run all stages to completion and check each one.

        meter_after: index of the stage whose output is counted (needed for progress and
        stall detection); None counts nothing. The kernel connects every stage directly
        either way: the count is that stage's write total, read from /proc/PID/io four
        times a second. Only where the kernel keeps no such count are the bytes spliced
        through this process instead. progress is called at most twice a second, watch
        on every new count (it must be cheap).
        """
        started = time.monotonic()
        total = 0
        argvs = self.stages_argv
        counted = _counted_stage(argvs, meter_after) if meter_after is not None and _io_accounting() else None
        if meter_after is None or counted is not None:
            self._start_direct()
            meter = None
            if counted is not None:
                index, field = counted
                meter = _IoMeter(self, self._stages[index], field, stall_seconds, progress, watch)
            self._wait_all(meter)
            if meter is not None:
                total = meter.total
                if progress:
                    progress(total)
        else:
            head = argvs[: meter_after + 1]
            tail = argvs[meter_after + 1 :]
            prev_stdout = self.stdin
            for i, argv in enumerate(head):
                stage = self._start(argv, prev_stdout, subprocess.PIPE)
                if i > 0:
                    self._stages[i - 1].proc.stdout.close()
                prev_stdout = stage.proc.stdout
            source = self._stages[-1].proc.stdout
            tail_stages: list[_Stage] = []
            sink_fd: int
            if tail:
                prev = subprocess.PIPE
                for i, argv in enumerate(tail):
                    last = i == len(tail) - 1
                    stage = self._start(argv, prev, self.stdout if last else subprocess.PIPE)
                    if i > 0:
                        tail_stages[-1].proc.stdout.close()
                    if i == 0:
                        first_tail = stage
                    tail_stages.append(stage)
                    prev = stage.proc.stdout
                sink_fd = first_tail.proc.stdin.fileno()
                sink_close = first_tail.proc.stdin.close
            else:
                assert self.stdout is not None, "a metered pipeline needs a consumer"
                sink_fd = self.stdout if isinstance(self.stdout, int) else self.stdout.fileno()
                sink_close = lambda: None  # noqa: E731 - the caller owns its stdout
            total = self._copy(source, sink_fd, progress, stall_seconds, watch)
            sink_close()
            self._wait_all()
        return PipelineResult(total, time.monotonic() - started)

    def _start_direct(self) -> None:
        """Start every stage, each one's stdout the next one's stdin."""
        prev_stdout = self.stdin
        for i, argv in enumerate(self.stages_argv):
            last = i == len(self.stages_argv) - 1
            stage = self._start(argv, prev_stdout, self.stdout if last else subprocess.PIPE)
            if i > 0 and self._stages[i - 1].proc.stdout is not None:
                self._stages[i - 1].proc.stdout.close()  # only the child holds it now
            prev_stdout = stage.proc.stdout

    def capture(self) -> str:
        """Run all stages, return the last stage's stdout as text; check every stage.

        For small outputs only (listings, dumps): the whole output is held in memory.
        """
        return "".join(self.lines())

    def lines(self) -> Iterator[str]:
        """Run all stages, yield the last stage's stdout line by line; check every stage at the end.

        The reader sets the pace: a stage blocks while its lines wait to be read.
        """
        prev_stdout = self.stdin
        for i, argv in enumerate(self.stages_argv):
            stage = self._start(argv, prev_stdout, subprocess.PIPE)
            if i > 0:
                self._stages[i - 1].proc.stdout.close()
            prev_stdout = stage.proc.stdout
        last = self._stages[-1].proc.stdout
        try:
            for raw in last:
                yield raw.decode(errors="surrogateescape")
        finally:
            last.close()
        self._wait_all()

    def _copy(self, source, sink_fd: int, progress, stall_seconds, watch=None) -> int:
        """Move bytes from source to sink, counting them; return the total.

        The bytes move with splice(2), pipe to pipe inside the kernel, so metering costs
        no copy through Python. Both pipes are widened to PIPE_BYTES so that each wake-up
        moves up to that much, not one 64 KiB default pipe's worth. Both directions are
        waited on with a timeout, so a stalled reader or a stalled writer is noticed
        (stall_seconds without progress).
        """
        total = 0
        src_fd = source.fileno()
        for fd in (src_fd, sink_fd):
            _widen_pipe(fd)
        meter = _Meter(self, stall_seconds, progress, watch)
        splice_ok = hasattr(os, "splice")
        try:
            while True:
                if not meter.wait(src_fd, select.POLLIN):
                    break  # a stage failed while we waited; _wait_all reports it
                try:
                    if splice_ok:
                        n = os.splice(src_fd, sink_fd, PIPE_BYTES, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
                    else:
                        n = _copy_chunk(src_fd, sink_fd)
                except BlockingIOError:
                    # The source is readable, so the sink is full: wait for the reader.
                    if not meter.wait(sink_fd, select.POLLOUT):
                        break
                    continue
                except OSError as exc:
                    if exc.errno == errno.EINVAL and splice_ok:
                        splice_ok = False  # a sink splice cannot write to; copy instead
                        continue
                    if exc.errno == errno.EPIPE:
                        self._wait_all()  # raises for the stage that broke
                    raise
                if n == 0:
                    break
                total += n
                meter.moved(total)
        finally:
            meter.close()
            source.close()
        if progress:
            progress(total)
        return total

    def _any_failed(self) -> bool:
        return any(s.proc.poll() not in (None, 0) for s in self._stages)

    def _wait_all(self, meter: _IoMeter | None = None) -> None:
        """Wait for every stage; on the first failure stop the others and raise.

        With a meter, it is read on every wake-up (and once more when its stage has
        exited, before that stage is reaped); it raises StalledTransfer on a stall.
        """
        pending = list(self._stages)
        failed: _Stage | None = None
        exits = _ExitWatch(pending, tick=_IoMeter.TICK if meter else None)
        try:
            while pending:
                if meter is not None:
                    # Once the counted stage is reaped its pid may be reused: then only
                    # the stall timer runs on (a receiver stuck after the sender ended).
                    meter.sample(alive=meter.stage in pending)
                for stage in list(pending):
                    if meter is not None and stage is meter.stage and stage.proc.returncode is None:
                        if not _exited(stage):
                            continue  # never reap it between two readings: its last count would be lost
                        meter.sample()  # the final count, read before the stage is reaped
                    rc = stage.proc.poll()
                    if rc is None:
                        continue
                    pending.remove(stage)
                    exits.reaped(stage)
                    if rc != 0 and failed is None:
                        failed = stage
                        self.kill()
                if pending:
                    exits.wait()
        finally:
            exits.close()
        for stage in self._stages:
            if stage.reader:
                stage.reader.join(timeout=5)
        if failed is not None:
            # The root cause is the earliest stage that failed on its own, not one that
            # died of SIGPIPE/SIGTERM because we stopped it.
            culprit = failed
            for stage in self._stages:
                rc = stage.proc.returncode
                if rc not in (0, None, -signal.SIGTERM, -signal.SIGPIPE, 141):
                    culprit = stage
                    break
            _raise_for(culprit.argv, culprit.proc.returncode, "\n".join(culprit.stderr_tail), self.what)


CHUNK = 1 << 20
PIPE_BYTES = 1 << 20  # the default /proc/sys/fs/pipe-max-size
F_SETPIPE_SZ = 1031


def _widen_pipe(fd: int) -> None:
    """Ask for a PIPE_BYTES pipe buffer on fd (best effort: a file or a lower limit just keeps its size)."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass


class _ExitWatch:
    """Wait until some child exits, through pidfds (no polling loop with sleeps); with tick, at most that long."""

    def __init__(self, stages: list[_Stage], tick: float | None = None) -> None:
        self.tick_ms = int(tick * 1000) if tick else None
        self.fds: dict[int, int] = {}  # pid -> pidfd
        self.poller = select.poll()
        for stage in stages:
            try:
                fd = os.pidfd_open(stage.proc.pid)
            except (OSError, AttributeError):
                continue  # already reaped, or no pidfd: the timeout below still wakes us
            self.fds[stage.proc.pid] = fd
            self.poller.register(fd, select.POLLIN)

    def reaped(self, stage: _Stage) -> None:
        fd = self.fds.pop(stage.proc.pid, None)
        if fd is not None:
            self.poller.unregister(fd)
            os.close(fd)

    def wait(self) -> None:
        self.poller.poll(self.tick_ms or (1000 if self.fds else 20))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class _Meter:
    """Waits on one fd at a time, with stall detection by progress, and reports progress."""

    def __init__(
        self, pipe: Pipeline, stall_seconds: float | None, progress: ProgressCallback | None, watch: ProgressCallback | None = None
    ) -> None:
        self.pipe = pipe
        self.watch = watch
        self.stall_seconds = stall_seconds
        self.progress = progress
        self.last_move = time.monotonic()
        self.last_report = 0.0
        self.pollers: dict[tuple[int, int], select.poll] = {}

    def close(self) -> None:
        self.pollers.clear()

    def wait(self, fd: int, event: int) -> bool:
        """Block until fd is ready; return False if a stage failed meanwhile. Raise StalledTransfer."""
        key = (fd, event)
        poller = self.pollers.get(key)
        if poller is None:
            poller = self.pollers[key] = select.poll()
            poller.register(fd, event | select.POLLERR | select.POLLHUP)
        while not poller.poll(1000):
            self.check_stall(time.monotonic())
            if self.pipe._any_failed():
                return False
        return True

    def check_stall(self, now: float) -> None:
        """Raise StalledTransfer, after stopping every stage, when no byte moved for stall_seconds."""
        if self.stall_seconds and now - self.last_move > self.stall_seconds:
            self.pipe.kill()
            raise StalledTransfer(
                f"{self.pipe.what or 'transfer'} stalled: no data for {int(self.stall_seconds)}s; "
                "check the network and the target, then run again (it resumes)"
            )

    def moved(self, total: int) -> None:
        """total bytes have moved so far: restart the stall clock, tell watch, and progress at most twice a second."""
        now = time.monotonic()
        self.last_move = now
        if self.watch:
            self.watch(total)
        if self.progress and now - self.last_report >= 0.5:
            self.progress(total)
            self.last_report = now


def _dies_with_us(argv: list[str]) -> list[str]:
    """Return argv run so that it is killed when the thread that started it ends (PR_SET_PDEATHSIG).

    A stage's bytes never pass through this process, so nothing else would stop a send
    | receive whose subvault was killed: it would finish unattended while the next run
    may already be clearing its destination. Every Pipeline is waited for by the thread
    that started it, so that thread ends only after its stages (util-linux's setpriv;
    without it the stage runs as given).
    """
    setpriv = _setpriv()
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


class _IoMeter(_Meter):
    """Counts the stream from the kernel's I/O accounting (/proc/PID/io): no byte passes through us.

    The count is a stage's writes (wchar) or, after an ssh stage, the next stage's reads
    (rchar; see _counted_stage). For `btrfs send` it is exactly the stream (the kernel's
    writes for its ioctl are accounted to it); for zstd what it wrote. No new bytes for
    stall_seconds kills the pipeline: a stall is judged by progress, never by a
    wall-clock limit.
    """

    TICK = 0.25

    def __init__(
        self,
        pipe: Pipeline,
        stage: _Stage,
        field: str,
        stall_seconds: float | None,
        progress: ProgressCallback | None,
        watch: ProgressCallback | None,
    ) -> None:
        super().__init__(pipe, stall_seconds, progress, watch)
        self.stage = stage
        self.field = field.encode() + b":"
        self.path = f"/proc/{stage.proc.pid}/io"
        self.total = 0

    def sample(self, alive: bool = True) -> None:
        """Read the count (while the stage is alive); report news; raise StalledTransfer (after stopping every stage) on a stall."""
        count = _io_count(self.path, self.field) if alive else None
        if count is not None and count > self.total:
            self.total = count
            self.moved(count)
            return
        self.check_stall(time.monotonic())


def _exited(stage: _Stage) -> bool:
    """True when the stage has exited (a zombie stays readable in /proc until reaped), or is no child of ours any more."""
    try:
        return os.waitid(os.P_PID, stage.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _counted_stage(argvs: list[list[str]], after: int) -> tuple[int, str] | None:
    """Return (stage index, /proc/PID/io field) whose count is the stream leaving stage `after`.

    Normally that stage's writes (wchar). An ssh client, though, may be a ControlMaster
    client that hands its pipes to the master: then count what the next stage reads
    (rchar). None when neither can be counted (ssh is the last stage): splice instead.
    """
    if argvs[after][:1] != ["ssh"]:
        return after, "wchar"
    if after + 1 < len(argvs):
        return after + 1, "rchar"
    return None


def _io_count(path: str, field: bytes = b"wchar:") -> int | None:
    """Return one field (b"wchar:", b"rchar:") of a /proc/PID/io file, or None once the process is gone."""
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


_IO_ACCOUNTING: bool | None = None


def _io_accounting() -> bool:
    """True when the kernel keeps per-process I/O counts this process may read (CONFIG_TASK_IO_ACCOUNTING)."""
    global _IO_ACCOUNTING
    if _IO_ACCOUNTING is None:
        _IO_ACCOUNTING = _io_count(f"/proc/{os.getpid()}/io") is not None
    return _IO_ACCOUNTING


def _copy_chunk(src_fd: int, sink_fd: int) -> int:
    """Copy up to CHUNK bytes through user space (when splice cannot be used)."""
    chunk = os.read(src_fd, CHUNK)
    view = memoryview(chunk)
    while view:
        view = view[os.write(sink_fd, view):]
    return len(chunk)


def pipeline(stages: Iterable[Sequence[str]], **kw) -> Pipeline:
    """Build a Pipeline; see its docstring."""
    return Pipeline(list(stages), **kw)
