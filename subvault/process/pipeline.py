"""The pipeline lifecycle: start a chain of stages, wait for every one, stop the siblings
of the first that fails and name it with the tail of its stderr (invariant 9).

Stream bytes never pass through Python: the kernel connects the stages, and the meter
reads a stage's write count from /proc (meter.py). Only a stream the kernel cannot
count is spliced through this process (splice.py).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from subvault.errors import bounded
from subvault.process.launch import Stage, as_text, describe, dies_with_us, log, not_found, raise_for, wait_armed
from subvault.process.meter import IoMeter, Meter, ProgressCallback, counted_stage
from subvault.process.splice import pump

# How a stage ends when we stopped it (or its reader went away): never the root cause.
_STOPPED = (0, None, -signal.SIGTERM, -signal.SIGPIPE, 141)

Target = IO[bytes] | int | None  # a stage's stdin or stdout: a file, an fd, PIPE, DEVNULL or inherited


@dataclass(frozen=True)
class PipelineResult:
    bytes: int
    seconds: float


class Pipeline:
    """A chain of processes, stdout of each into stdin of the next.

    Use as a context manager: leaving it kills any stage still alive.
    """

    def __init__(
        self,
        stages: Iterable[Sequence[object]],
        *,
        what: str = "",
        stdin: Target = None,
        stdout: Target = None,
        env: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.stages_argv = [as_text(s) for s in stages]
        self.pass_fds = tuple(pass_fds)  # directories the stages name as /proc/self/fd/N
        self.what = what
        self.stdin = stdin
        self.stdout = stdout
        self.env = {**os.environ, **env} if env else None
        self._stages: list[Stage] = []

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """Stop every stage still running (TERM, then KILL after 10 s) and reap them all."""
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

    def _start(self, argv: list[str], stdin: Target, stdout: Target) -> Stage:
        log.debug("pipeline stage %s", describe(argv))
        try:
            if shutil.which(argv[0], path=(self.env or os.environ).get("PATH")) is None:
                raise FileNotFoundError(argv[0])
            proc = subprocess.Popen(
                dies_with_us(argv), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=self.env, pass_fds=self.pass_fds
            )
        except FileNotFoundError:
            self.kill()
            raise not_found(argv, self.what) from None
        wait_armed(proc.pid)
        stage = Stage(argv, proc)
        stage.reader = threading.Thread(target=_drain_stderr, args=(stage,), daemon=True)
        stage.reader.start()
        self._stages.append(stage)
        return stage

    def _chain(self, argvs: list[list[str]], stdin: Target, stdout: Target) -> list[Stage]:
        """Start argvs in order, each one's stdout the next one's stdin; the first reads
        stdin, the last writes stdout. Return the stages started."""
        started: list[Stage] = []
        for i, argv in enumerate(argvs):
            last = i == len(argvs) - 1
            stage = self._start(argv, started[-1].proc.stdout if started else stdin, stdout if last else subprocess.PIPE)
            if started and started[-1].proc.stdout is not None:
                started[-1].proc.stdout.close()  # only the child holds it now
            started.append(stage)
        return started

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
        counted = counted_stage(self.stages_argv, meter_after) if meter_after is not None else None
        if meter_after is not None and counted is None:
            counter = Meter(self.what, stall_seconds, progress, watch, failed=self._any_failed, stop=self.kill)
            total = self._run_spliced(meter_after, counter)
        else:
            stages = self._chain(self.stages_argv, self.stdin, self.stdout)
            meter = None
            if counted is not None:
                index, io_field = counted
                meter = IoMeter(stages[index], io_field, self.what, stall_seconds, progress, watch,
                                failed=self._any_failed, stop=self.kill)
            self._wait_all(meter)
            total = meter.total if meter is not None else 0
        if progress and meter_after is not None:
            progress(total)
        return PipelineResult(total, time.monotonic() - started)

    def _run_spliced(self, after: int, meter: Meter) -> int:
        """Run stages 0..after into one pipe and the rest from another, splicing the stream
        between them through this process (counted on the way); return the count."""
        head = self._chain(self.stages_argv[: after + 1], self.stdin, subprocess.PIPE)
        source = head[-1].proc.stdout
        assert source is not None
        tail_argvs = self.stages_argv[after + 1 :]
        sink: IO[bytes] | None = None
        if tail_argvs:
            sink = self._chain(tail_argvs, subprocess.PIPE, self.stdout)[0].proc.stdin
            assert sink is not None
            sink_fd = sink.fileno()
        else:
            assert self.stdout is not None, "a metered pipeline needs a consumer"
            sink_fd = self.stdout if isinstance(self.stdout, int) else self.stdout.fileno()  # the caller's to close
        try:
            total = pump(source.fileno(), sink_fd, meter)
        except BrokenPipeError:
            self._wait_all()  # raises for the stage that broke
            raise
        finally:
            meter.close()
            source.close()
        if sink is not None:
            sink.close()
        self._wait_all()
        return total

    def capture(self) -> str:
        """Run all stages, return the last stage's stdout as text; check every stage.

        For small outputs only (listings, dumps): the whole output is held in memory.
        """
        return "".join(self.lines())

    def lines(self) -> Iterator[str]:
        """Run all stages, yield the last stage's stdout line by line; check every stage at the end.

        The reader sets the pace: a stage blocks while its lines wait to be read.
        """
        last = self._chain(self.stages_argv, self.stdin, subprocess.PIPE)[-1].proc.stdout
        assert last is not None
        try:
            for raw in last:
                yield raw.decode(errors="surrogateescape")
        finally:
            last.close()
        self._wait_all()

    def _any_failed(self) -> bool:
        return any(s.proc.poll() not in (None, 0) for s in self._stages)

    def _wait_all(self, meter: IoMeter | None = None) -> None:
        """Wait for every stage; on the first failure stop the others and raise.

        With a meter, it is read on every wake-up (and once more when its stage has
        exited, before that stage is reaped); it raises StalledTransfer on a stall.
        """
        pending = list(self._stages)
        failed: Stage | None = None
        exits = _ExitWatch(pending, tick=IoMeter.TICK if meter else None)
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
            culprit = next((s for s in self._stages if s.proc.returncode not in _STOPPED), failed)
            raise_for(culprit.argv, culprit.proc.returncode, "\n".join(culprit.stderr_tail), self.what)


def _drain_stderr(stage: Stage) -> None:
    assert stage.proc.stderr is not None
    for raw in stage.proc.stderr:
        stage.stderr_tail.append(bounded(raw.decode(errors="replace").rstrip(), 500))


def _exited(stage: Stage) -> bool:
    """True when the stage has exited (a zombie stays readable in /proc until reaped), or is no child of ours any more."""
    try:
        return os.waitid(os.P_PID, stage.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _ExitWatch:
    """Wait until some child exits, through pidfds (no polling loop with sleeps); with tick, at most that long."""

    def __init__(self, stages: list[Stage], tick: float | None = None) -> None:
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

    def reaped(self, stage: Stage) -> None:
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


pipeline = Pipeline  # the name callers build one with: process.pipeline([...], what=...)
