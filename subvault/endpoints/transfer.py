"""One verified transfer between two endpoints: send | [zstd] | [ssh] | receive, check, name.

Write ordering on the receiving side (invariant 3):
  1. the receive lands in the container under the stream's own name;
  2. it is checked: read-only and received_uuid equal to the source's uuid;
  3. only then is it renamed to its final name.
A crash before 3 leaves a non-final name, which the next run deletes as a partial.
"""

from __future__ import annotations

import posixpath
import subprocess
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

from subvault import process
from subvault.endpoints.endpoint import Endpoint
from subvault.errors import CommandFailed, PermanentError, TransientError

Progress = Callable[[int], None]


class TransferFailed(TransientError):
    """A stage of the send | receive pipeline failed; the partial is removed by the next run."""


class LinkLost(TransferFailed):
    """The ssh connection itself failed (exit 255): the rest of this target's work would too."""


SSH_CONNECTION_ERROR = 255


class VerifyFailed(PermanentError):
    """A receive finished but its result is not the snapshot that was sent."""


@dataclass(frozen=True)
class Transferred:
    bytes: int
    seconds: float
    name: str


def transfer(
    source: Endpoint,
    path: str,
    *,
    uuid: str,
    parent: str | None,
    clones: Sequence[str],
    dest: Endpoint,
    container: str,
    final_name: str,
    compress: bool,
    meter: bool = True,
    progress: Progress | None = None,
    stall_seconds: float | None = None,
    gate: ContextManager[object] = nullcontext(),
) -> Transferred:
    """Send the snapshot at path (uuid) into container on dest, verify it and give it final_name.

    `gate` is held only while the stream flows (the caller's limit on bulk streams);
    verifying and renaming happen outside it.

    Parent and clone paths are on the source side. Compression applies only when a side
    is remote. With meter, bytes are counted (progress, stall detection) between the
    sending and the receiving stages. Raise CommandFailed/NoSpace/StalledTransfer if a
    stage fails, VerifyFailed (after deleting the result) if the result is wrong.
    """
    wire = compress and not (source.is_local and dest.is_local)
    bulk = parent is None  # a full send is the big one: it gets its own ssh connection
    send = source.send_stages(path, parent, clones, compress=wire, bulk=bulk)
    recv = dest.receive_stages(container, compress=wire, bulk=bulk)
    what = f"send {path} to {dest.name}"
    # The receiver's chatter ("At snapshot …") must never reach our stdout (--json).
    try:
        with gate, process.pipeline([*send, *recv], what=what, stdout=subprocess.DEVNULL) as pipe:
            result = pipe.run(
                meter_after=len(send) - 1 if meter else None,
                progress=progress,
                stall_seconds=stall_seconds,
            )
    except CommandFailed as exc:
        if exc.argv[:1] == ["ssh"] and exc.returncode == SSH_CONNECTION_ERROR:
            raise LinkLost(f"{what}: the connection to {dest.name if not dest.is_local else source.name} was lost ({_how(exc)}); run again, it resumes from the last verified snapshot") from None
        raise TransferFailed(f"{what}: {_stage_name(exc.argv)} {_how(exc)}; run again, it resumes from the last verified snapshot") from None
    received = posixpath.join(container, posixpath.basename(path.rstrip("/")))
    _verify(dest, received, uuid)
    final = posixpath.join(container, final_name)
    if final != received:
        dest.rename(received, final)
    return Transferred(result.bytes, result.seconds, final_name)


def _verify(dest: Endpoint, received: str, uuid: str) -> None:
    """Raise VerifyFailed, after removing it, unless received is read-only with received_uuid == uuid."""
    shown = dest.show(received)
    if shown.readonly and shown.received_uuid == uuid:
        return
    try:
        dest.delete(received)
    except CommandFailed:
        pass  # the next run removes it as a partial
    raise VerifyFailed(
        f"{dest.name}: received {posixpath.basename(received)} is not the snapshot sent "
        f"(read-only={shown.readonly}, received_uuid={shown.received_uuid}, expected {uuid}); removed, run again"
    )


def _stage_name(argv: list[str]) -> str:
    """Name a failed stage by what it did: "btrfs receive", "btrfs send", "ssh (…)", "zstd"."""
    if argv and argv[0] == "ssh":
        return f"ssh ({argv[-1].split('|')[-1].strip().split(' /')[0]} on the remote)"
    return " ".join(argv[:2]) if argv[:1] == ["btrfs"] else (argv[0] if argv else "?")


def _how(exc: CommandFailed) -> str:
    if exc.returncode < 0:
        return f"was killed by signal {-exc.returncode}"
    tail = exc.stderr_tail.strip().splitlines()
    return f"failed: {tail[-1]}" if tail else f"exited {exc.returncode}"
