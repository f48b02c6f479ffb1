"""`subvault serve`: the restricted endpoint behind an authorized_keys forced command.

The client's command line arrives in SSH_ORIGINAL_COMMAND. It is split with shlex into
steps joined by `&&`, each one command or two joined by `|`. Each stage must match one
shape of subvault.endpoints.commands, with every path inside --root (after resolving
symlinks and `..`). Anything else is refused with one line on stderr and exit 2.
Nothing goes through a shell: accepted stages run as a subvault.process pipeline with
this process's stdin and stdout.

Steps run in order and the first failure ends the command, as `&&` does in a shell.
Each step is checked just before it runs, not all at once up front: a step may create
what the next one names (a receive, then its `show`), and a path is resolved only once
everything before it has happened, so nothing a stream created can lead a later step
outside the root.

Modes:
- default: list, show, mkdir, create container, receive (confined with --chroot),
  rename out of a receive, delete, send;
- --append-only: the same, but delete only what is not a kept backup (a partial
  receive, under a non-final name); pruning then runs on this host
  (`subvault prune-received`);
- --send-only: only stat, list, show, snapshots and send (a source for `subvault pull`),
  and, with --puller NAME, the record of NAME's incremental base (subvault.pullholds).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter
from subvault.endpoints import commands as C
from subvault.errors import EXIT_USAGE, SubvaultError
from subvault.plan.replication import parse_entry_time

READ = "read"
WRITE = "write"
CLEAR = "clear"  # delete what is not a kept backup (a partial): allowed under --append-only
HOLD = "hold"  # a puller records its base on its source (subvault.pullholds): allowed under --send-only
DELETE = "delete"


class Rejected(SubvaultError):
    """The command is not one the restricted endpoint allows."""

    exit_code = EXIT_USAGE


def _inside(root: Path, path: str, *, must_exist: bool = False) -> str:
    """Return path resolved, or raise Rejected unless it is absolute and inside root."""
    if not path.startswith("/"):
        raise Rejected(f"path {path!r} is not absolute")
    resolved = Path(os.path.realpath(path))
    if resolved != root and root not in resolved.parents:
        raise Rejected(f"path {path!r} is outside {root}")
    if must_exist and not resolved.exists():
        raise Rejected(f"path {path!r} does not exist")
    return str(resolved)


def _check_stage(root: Path, argv: list[str]) -> tuple[str, list[str]]:
    """Given one stage, return (its kind READ/WRITE/DELETE, the argv to run). Raise Rejected otherwise."""
    n = len(argv)
    if n == 5 and argv[:4] == ["stat", "-f", "-c", "%T"]:
        return READ, C.fs_type(_inside(root, argv[4]))
    if n >= 3 and argv[:2] == ["btrfs", "subvolume"]:
        verb, path = argv[2], argv[-1]
        if argv == C.list_children(path) or argv == C.list_readonly(path):
            return READ, [*argv[:-1], _inside(root, path)]
        if argv == C.show(path):
            return READ, C.show(_inside(root, path))
        if argv == C.sync(path):
            return WRITE, C.sync(_inside(root, path))
        if argv == C.create(path):
            return WRITE, C.create(_inside(root, path))
        if argv == C.delete(path):
            resolved = _inside(root, path, must_exist=True)
            if resolved == str(root):
                raise Rejected("refusing to delete the root")
            # Only an entry of a container (<root>/<host>/<sub>/<name>) that is not under
            # a final name is a receive in progress or cut off, which the sender clears;
            # everything else may be, or may hold, a kept backup.
            kind = CLEAR if _is_entry(root, resolved) and not _is_final(resolved) else DELETE
            return kind, C.delete(resolved)
        raise Rejected(f"btrfs subvolume {verb} is not allowed")
    if n == 4 and argv == C.commit(argv[3]):
        return WRITE, C.commit(_inside(root, argv[3]))
    if argv[:2] == ["mkdir", "-p"] and n == 3:
        return WRITE, C.mkdirs(_inside(root, argv[2]))
    if argv[:2] == ["mv", "-T"] and n == 4:
        return WRITE, _check_rename(root, argv[2], argv[3])
    if argv[:2] == ["btrfs", "receive"] and n == 3:
        # --chroot confines everything the stream does to the destination directory.
        return WRITE, ["btrfs", "receive", "--chroot", _inside(root, argv[2], must_exist=True)]
    if argv[:3] == ["btrfs", "send", "-q"]:
        return READ, _check_send(root, argv)
    if argv in (C.ZSTD_COMPRESS, C.ZSTD_DECOMPRESS):
        return READ, list(argv)
    if n == 3 and argv[:2] == ["subvault", "snapshots"]:
        return READ, C.snapshots(_inside(root, argv[2], must_exist=True))
    if n == 6 and argv[:3] == ["subvault", "pulled", "--puller"]:
        path = _inside(root, argv[4], must_exist=True)
        if not adapter.is_subvolume(path):
            raise Rejected(f"{argv[4]} is not a subvolume")
        return HOLD, C.pulled(argv[3], path, argv[5])
    raise Rejected(f"{shlex.join(argv[:3])}: not an allowed command")


def _is_entry(root: Path, path: str) -> bool:
    """True when path is an entry of a container: exactly <root>/<host>/<sub>/<name>."""
    return len(Path(path).relative_to(root).parts) == 3


def _is_final(path: str) -> bool:
    """True when path is named like a kept entry of its container (<sub>.<UTC time>)."""
    return parse_entry_time(os.path.basename(os.path.dirname(path)), os.path.basename(path)) is not None


def _check_rename(root: Path, src: str, dst: str) -> list[str]:
    """Only a fresh receive may be renamed, to a final name in the same directory, never over something."""
    src_r, dst_r = _inside(root, src, must_exist=True), _inside(root, dst)
    if os.path.dirname(src_r) != os.path.dirname(dst_r):
        raise Rejected("rename must stay in one directory")
    if not _is_entry(root, src_r):
        raise Rejected("only an entry of a container (<root>/<host>/<subvolume>/<name>) may be renamed")
    sub_name = os.path.basename(os.path.dirname(dst_r))
    if parse_entry_time(sub_name, os.path.basename(src_r)) is not None:
        raise Rejected("only a fresh receive may be renamed")
    if parse_entry_time(sub_name, os.path.basename(dst_r)) is None or os.path.lexists(dst_r):
        raise Rejected("rename target must be a new final name")
    return C.rename(src_r, dst_r)


def _check_send(root: Path, argv: list[str]) -> list[str]:
    rest = argv[3:]
    out = ["btrfs", "send", "-q"]
    while len(rest) > 1:
        flag, value = rest[0], rest[1]
        if flag not in ("-p", "-c"):
            raise Rejected(f"btrfs send option {flag} is not allowed")
        out += [flag, _inside(root, value, must_exist=True)]
        rest = rest[2:]
    if len(rest) != 1:
        raise Rejected("btrfs send needs one path")
    return [*out, _inside(root, rest[0], must_exist=True)]


MAX_STEPS = 1000


def split_steps(line: str) -> list[list[list[str]]]:
    """Given the client's command line, return its steps, each a list of stages (argvs).

    Raise Rejected unless it is one to MAX_STEPS steps joined by `&&`, each one command
    or two joined by `|`.
    """
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise Rejected(f"cannot parse the command: {exc}") from None
    steps: list[list[list[str]]] = [[[]]]
    for tok in tokens:
        if tok == "&&":
            steps.append([[]])
        elif tok == "|":
            steps[-1].append([])
        else:
            steps[-1][-1].append(tok)
    if not tokens or any(not stage for step in steps for stage in step) or any(len(step) > 2 for step in steps):
        raise Rejected("expected commands joined by &&, each one command or one command and zstd joined by |")
    if len(steps) > MAX_STEPS:
        raise Rejected(f"more than {MAX_STEPS} steps in one command")
    return steps


def check_step(
    stages: list[list[str]], root: Path, *, append_only: bool, send_only: bool, puller: str | None = None
) -> list[list[str]]:
    """Given one step's stages, return the argvs to run. Raise Rejected if any is not allowed."""
    checked = [_check_stage(root, s) for s in stages]
    kinds = {k for k, _ in checked}
    if HOLD in kinds:
        if len(checked) != 1 or puller is None:
            raise Rejected("this key records no pull holds (give its forced command --puller NAME)")
        if checked[0][1][3] != puller:
            raise Rejected(f"this key records holds for puller {puller} only")
    if send_only and kinds - {READ, HOLD}:
        raise Rejected("this key may only list and send (--send-only)")
    if append_only and DELETE in kinds:
        raise Rejected("this key may not delete (--append-only); prune on the target host")
    cmds = [argv for _, argv in checked]
    zstd = [c for c in cmds if c[0] == "zstd"]
    if zstd and not _valid_zstd_pair(cmds):
        raise Rejected("zstd may only decompress into btrfs receive or compress after btrfs send")
    return cmds


def _valid_zstd_pair(cmds: list[list[str]]) -> bool:
    if len(cmds) != 2:
        return False
    return (cmds[0] == C.ZSTD_DECOMPRESS and cmds[1][:2] == ["btrfs", "receive"]) or (
        cmds[0][:2] == ["btrfs", "send"] and cmds[1] == C.ZSTD_COMPRESS
    )


def snapshots_json(path: str) -> str:
    """JSON of the timeline snapshots under <path>/.snapshots: number, date, uuid, path."""
    import json

    from subvault.btrfs import local

    snaps = local.scan(os.path.basename(path) or "root", path, with_uuids=True)
    return json.dumps([
        {"number": s.number, "date": s.date.isoformat(), "uuid": s.uuid, "received_uuid": s.received_uuid, "path": str(s.path), "kind": s.kind}
        for s in snaps
    ]) + "\n"


def serve_main(root: str, *, append_only: bool = False, send_only: bool = False, puller: str | None = None) -> int:
    """Run the steps in SSH_ORIGINAL_COMMAND, each if allowed; return the exit status of the last one run.

    Raise Rejected (exit 2) if the command is missing or a step is not allowed (steps
    before it have run), NotFound if root is missing.
    """
    line = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    base = Path(os.path.realpath(root))
    if not base.is_dir():
        raise Rejected(f"--root {root} does not exist")
    if not line:
        raise Rejected("no command (this key only runs subvault's endpoint commands)")
    try:
        steps = split_steps(line)
    except Rejected as exc:
        raise Rejected(f"subvault serve refused: {exc}") from None
    for step in steps:
        try:
            cmds = check_step(step, base, append_only=append_only, send_only=send_only, puller=puller)
        except Rejected as exc:
            raise Rejected(f"subvault serve refused: {exc}") from None
        status = _run_step(cmds)
        if status != 0:
            return status
    return 0


def _run_step(cmds: list[list[str]]) -> int:
    """Run one checked step with this process's stdout; only a stream (send, receive) gets stdin."""
    if cmds[0][:2] == ["subvault", "snapshots"]:
        # Answered here, not by a new process: the listing needs no privileges beyond reading.
        sys.stdout.write(snapshots_json(cmds[0][2]))
        sys.stdout.flush()
        return 0
    if cmds[0][:2] == ["subvault", "pulled"]:
        from subvault import pullholds
        from subvault.timeutil import utcnow

        try:
            pullholds.write_record(cmds[0][4], cmds[0][3], cmds[0][5], utcnow())
        except ValueError as exc:
            raise Rejected(f"subvault serve refused: {exc}") from None
        return 0
    if len(cmds) == 1 and cmds[0][:2] not in (["btrfs", "send"], ["btrfs", "receive"]):
        res = process.run(cmds[0], check=False, what=cmds[0][0], input="")
        sys.stdout.write(res.stdout)
        sys.stdout.flush()
        sys.stderr.write(res.stderr)
        sys.stderr.flush()
        return res.returncode
    with process.pipeline(cmds, what="serve", stdin=sys.stdin.buffer, stdout=sys.stdout.buffer) as pipe:
        pipe.run()
    return 0
