"""The only package that starts processes.

Rules:
- argv lists only, never a shell.
- Every stage of a pipeline is checked: if one fails, the others are stopped, and the
  error names the first stage that failed with the tail of its stderr (invariant 9).
- Timeouts are by progress, not by wall clock: a pipeline is stalled when no stage
  has moved bytes for `stall_seconds`, however long the whole transfer takes.
- Secrets registered with `secrets.mask()` never appear in errors or logs.
- No module outside this package imports `subprocess`: what callers need (DEVNULL, the
  handle type `Process`, TimeoutExpired) is exported here.

One module per job:
  launch.py    what every start shares: argv as text, the redacted log line, typed errors, dying with us
  oneshot.py   run, run_tail, spawn, spawn_console
  pipeline.py  the pipeline lifecycle: start the chain, wait, stop the siblings, name the culprit
  meter.py     progress and stall detection (/proc/PID/io counts, or the spliced bytes)
  splice.py    pipes widened, the stream spliced through this process where it must be
  streams.py   a pipeline's end read or written from Python (PipelineReader, PipelineWriter)
  filters.py   one command fed from Python (Filter, FdFilter, filter_bytes)
streams and filters are imported by their users (offsite) from their modules, not here:
they load ctypes, which no other command needs at start-up.
"""

from subprocess import DEVNULL, TimeoutExpired
from subprocess import Popen as Process

from subvault.process.oneshot import Result, run, run_tail, spawn, spawn_console
from subvault.process.pipeline import Pipeline, PipelineResult, pipeline

__all__ = [
    "DEVNULL",
    "Pipeline",
    "PipelineResult",
    "Process",
    "Result",
    "TimeoutExpired",
    "pipeline",
    "run",
    "run_tail",
    "spawn",
    "spawn_console",
]
