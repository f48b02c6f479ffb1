"""One verified transfer between two endpoints: send | [zstd] | [ssh] | receive, check, name.

Write ordering on the receiving side (invariant 3):
  1. the receive lands in the container under the stream's own name;
  2. it is checked: read-only and received_uuid equal to the source's uuid;
  3. only then is it renamed to its final name.
A crash before 2 leaves a partial under a non-final name, which the next run deletes;
a crash between 2 and 3 leaves a complete receive, which the next run checks the same
way and adopts (plan.replication).

Round trips to a remote receiver: the check's `btrfs subvolume show` rides in the
receive's own command (`btrfs receive C && btrfs subvolume show C/name`), and the
rename may be left `owed`, for the caller to send with its next command.
"""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NoReturn

from subvault import process
from subvault.btrfs import adapter
from subvault.btrfs.prefetch import Prefetch
from subvault.endpoints import commands as C
from subvault.endpoints.endpoint import SSH_CONNECTION_ERROR, Endpoint
from subvault.endpoints.runner import Step
from subvault.errors import CommandFailed, NoSpace, StalledTransfer, SubvaultError, cause_line
from subvault.plan.replication import Removal, ReplicationPlan

Progress = Callable[[int], None]

class TransferFailed(SubvaultError):
    """A stage of the send | receive pipeline failed; the partial is removed by the next run."""

class LinkLost(TransferFailed):
    """The ssh connection itself failed (exit 255): the rest of this target's work would too."""

class VerifyFailed(SubvaultError):
    """A receive finished but its result is not the snapshot that was sent."""

@dataclass(frozen=True)
class Transferred:
    bytes: int
    seconds: float
    name: str
    owed: tuple[Step, ...] = ()  # the rename still to run on dest (when rename=False)


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
    before: Sequence[Step] = (),
    rename: bool = True,
    untrusted: bool = False,
) -> Transferred:
    """Send the snapshot at path (uuid) into container on dest, verify it and give it final_name.

    `gate` (the caller's limit on bulk streams) is held only while the stream flows.
    `before`: steps owed to dest, run ahead of the receive. rename=False: a remote's
    rename is returned as `owed`, not run.

    Parent and clone paths are on the source side; compression applies only when a side
    is remote; with meter, bytes are counted (progress, stall) between send and receive.
    Raise CommandFailed/NoSpace/StalledTransfer if a stage fails, VerifyFailed (after
    deleting the result) if the result is wrong.

    untrusted (pull: the source may lie; dest is local): received with --chroot; what it
    made is found as what is new in the container, never by the name the source reported.
    """
    wire = compress and not (source.is_local and dest.is_local)
    bulk = parent is None  # a full send is the big one: it gets its own ssh connection
    received = posixpath.join(container, posixpath.basename(path.rstrip("/")))
    if untrusted and not dest.is_local:
        raise ValueError("an untrusted stream is received only into a local container")
    existing = _children(container) if untrusted else {}
    joined = dest.runner.joins_steps
    if before and not joined:
        dest.apply(before, "finish earlier work")
    send = source.send_stages(path, parent, clones, compress=wire, bulk=bulk)
    recv = dest.receive_stages(container, compress=wire, bulk=bulk, before=before if joined else (),
                               after=[[C.show(received)]] if joined else (), chroot=untrusted)
    what = f"send {path} to {dest.name}"
    try:
        result, shown_text = _stream(source, path, parent, [*send, *recv], len(send), what, joined=joined,
                                     meter=meter, wire=wire, progress=progress, stall_seconds=stall_seconds, gate=gate)
    except (CommandFailed, NoSpace, StalledTransfer) as exc:
        _failed(exc, what, source, dest, lambda: _discard(dest, container, received, final_name, existing if untrusted else None))
    received = _made_by_receive(container, existing, what) if untrusted else received
    _verify(dest, received, uuid, _parse_answer(shown_text, dest, received) if joined else dest.show(received))
    final = posixpath.join(container, final_name)
    owed: tuple[Step, ...] = ()
    if final != received and (rename or not joined):
        dest.rename(received, final)
    elif final != received:
        owed = ([C.rename(received, final)],)
    return Transferred(result.bytes, result.seconds, final_name, owed=owed)


def _failed(exc: CommandFailed | NoSpace | StalledTransfer, what: str, source: Endpoint, dest: Endpoint,
            discard: Callable[[], None]) -> NoReturn:
    """After a failed stream: remove what it made where that is safe, and raise what the caller acts on."""
    if isinstance(exc, NoSpace):
        discard()
        raise exc
    if isinstance(exc, StalledTransfer):
        if dest.is_local:  # a stalled remote may not answer the delete either
            discard()
        raise exc
    if exc.argv[:1] == ["ssh"] and exc.returncode == SSH_CONNECTION_ERROR:
        raise LinkLost(f"{what}: the connection to {dest.name if not dest.is_local else source.name} was lost ({_how(exc)}); run again, it resumes from the last verified snapshot") from None
    discard()
    raise TransferFailed(f"{what}: {_stage_name(exc.argv)} {_how(exc)}; run again, it resumes from the last verified snapshot") from None


def _stream(
    source: Endpoint, path: str, parent: str | None, stages: list[list[str]], senders: int, what: str, *,
    joined: bool, meter: bool, wire: bool, progress: Progress | None, stall_seconds: float | None,
    gate: ContextManager[object],
) -> tuple[process.PipelineResult, str]:
    """Run send | receive; return its result and what a joined `show` answered on stdout."""
    # Reading ahead needs the source here and the meter's count; a full send is scanned
    # only when someone watches its progress (the scan walks the whole tree).
    expect = getattr(progress, "expect", None)
    scan = source.is_local and meter and (parent is not None or expect is not None)
    ahead = Prefetch(path, parent, on_expected=None if wire else expect) if scan else nullcontext()
    # The receiver's chatter ("At snapshot …") must never reach our stdout (--json);
    # a joined `show` answers on it, into a file (never a pipe nobody drains).
    with tempfile.TemporaryFile() as answer:
        with gate, ahead, process.pipeline(stages, what=what, stdout=answer if joined else process.DEVNULL) as pipe:
            result = pipe.run(
                meter_after=senders - 1 if meter else None,
                progress=progress,
                stall_seconds=stall_seconds,
                watch=ahead.moved if isinstance(ahead, Prefetch) else None,
            )
        answer.seek(0)
        return result, answer.read().decode(errors="replace")


def _discard(dest: Endpoint, container: str, received: str, final_name: str, existing: dict[int, str] | None) -> None:
    """After a failed receive, remove what it made: by name for our own streams; for an
    untrusted stream (pull) only subvolumes that were not in the container before it, by
    id, never the name the source reported (which may name a kept entry)."""
    if existing is None:
        _discard_partial(dest, received, final_name)
        return
    for sid, name in _children(container).items():
        if sid not in existing:
            _discard_partial(dest, posixpath.join(container, name), final_name)


def _discard_partial(dest: Endpoint, received: str, final_name: str) -> None:
    """Delete what a failed receive left under its stream name, and wait until its space is back.

    At once, not at the next run: a receive that hit ENOSPC would otherwise keep the
    target full until then. Only a non-final name is deleted (it was made by this
    receive: partials were settled before it); where the stream name is the final
    name, or the endpoint refuses, the next run's plan decides (invariant 3).
    """
    if posixpath.basename(received) == final_name:
        return
    try:
        container = posixpath.dirname(received)
        dest.apply([[C.delete(received)], [C.sync(container)], [C.commit(container)]], "remove the partial receive")
    except SubvaultError:
        pass  # nothing was received yet, or the endpoint would not: the next run removes it


def _children(container: str) -> dict[int, str]:
    """Subvolume id -> name of each subvolume directly in container (symlinks and plain files skipped)."""
    import os

    out = {}
    for e in os.scandir(container):
        if e.is_dir(follow_symlinks=False) and adapter.is_subvolume(e.path):
            out[adapter.show(e.path).id] = e.name
    return out


def _made_by_receive(container: str, existing: dict[int, str], what: str) -> str:
    """Return the one subvolume the receive added to container (by id, whatever its name). Raise VerifyFailed otherwise, deleting nothing."""
    new = [name for sid, name in _children(container).items() if sid not in existing]
    if len(new) != 1:
        raise VerifyFailed(f"{what}: the stream made {sorted(new) or 'no subvolume'} in {container}, not one; nothing was removed, look at it")
    return posixpath.join(container, new[0])


def settle_steps(container: str, plan: ReplicationPlan, set_aside: dict[str, str] | None = None) -> list[Step]:
    """Steps due before the next receive into container: delete partials (and wait for their space), adopt complete receives.

    set_aside: partial name -> a new final name, for complete receives an append-only key
    may not delete (they are renamed out of the next stream's way instead).
    """
    set_aside = set_aside or {}
    steps: list[Step] = [
        [C.rename(posixpath.join(container, r.name), posixpath.join(container, set_aside[r.name]))]
        if r.name in set_aside
        else [C.delete(posixpath.join(container, r.name))]
        for r in plan.partials
    ]
    if len(set_aside) < len(plan.partials):
        steps.append([C.sync(container)])  # a partial's space comes back only after the cleaner ran
    steps += [[C.rename(posixpath.join(container, a.name), posixpath.join(container, a.final))] for a in plan.adopt]
    return steps

def prune_steps(container: str, removals: Sequence[Removal]) -> list[Step]:
    """Steps deleting these entries from container."""
    return [[C.delete(posixpath.join(container, r.name))] for r in removals]

def _parse_answer(text: str, dest: Endpoint, received: str) -> C.Shown:
    try:
        return C.parse_show(text)
    except ValueError:
        raise VerifyFailed(f"{dest.name}: no `btrfs subvolume show` answer for {received} after the receive; run again") from None

def _verify(dest: Endpoint, received: str, uuid: str, shown: C.Shown) -> None:
    """Raise VerifyFailed, after removing it, unless received is read-only with received_uuid == uuid."""
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
    cause = cause_line(exc.stderr_tail)
    return f"failed: {cause}" if cause else f"exited {exc.returncode}"
