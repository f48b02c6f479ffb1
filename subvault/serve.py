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
import posixpath
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from subvault import process, pullholds
from subvault.btrfs import adapter, local_scan
from subvault.endpoints import commands as C
from subvault.plan.replication import parse_entry_time
from subvault.pullholds import NAME_RE
from subvault.serve_paths import CONTAINER, ENTRY, HOST, ROOT, Info, Opened, Rejected, check_subvolume, parts_of, subvolume_info
from subvault.timeutil import utcnow

READ = "read"
WRITE = "write"
CLEAR = "clear"  # delete what is not a kept backup (a partial): allowed under --append-only
HOLD = "hold"  # a puller records its base on its source (subvault.pullholds): allowed under --send-only
DELETE = "delete"


def _inside(root: Path, path: str, *, must_exist: bool = False) -> str:
    """Return path resolved, or raise Rejected unless it is absolute and inside root (the --send-only source side)."""
    if not path.startswith("/"):
        raise Rejected(f"path {path!r} is not absolute")
    resolved = Path(os.path.realpath(path))
    if resolved != root and root not in resolved.parents:
        raise Rejected(f"path {path!r} is outside {root}")
    if must_exist and not resolved.exists():
        raise Rejected(f"path {path!r} does not exist")
    return str(resolved)


def _check_source_stage(root: Path, argv: list[str]) -> tuple[str, list[str]]:
    """--send-only: given one stage, return (its kind, the argv to run). Raise Rejected otherwise."""
    n = len(argv)
    if n == 5 and argv[:4] == ["stat", "-f", "-c", "%T"]:
        return READ, C.fs_type(_inside(root, argv[4]))
    if n >= 3 and argv[:2] == ["btrfs", "subvolume"]:
        path = argv[-1]
        if argv == C.list_children(path) or argv == C.list_readonly(path):
            return READ, [*argv[:-1], _inside(root, path)]
        if argv == C.show(path):
            return READ, C.show(_inside(root, path))
        return WRITE, []
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
    if argv[:1] in (["mkdir"], ["mv"], ["btrfs"]):
        return WRITE, []
    raise Rejected(f"{shlex.join(argv[:3])}: not an allowed command")


class _Receiving:
    """Checks one stage for a receiving key (default or --append-only), on the fixed layout (subvault.serve_paths)."""

    def __init__(self, root: Path, host: str | None, opened: Opened) -> None:
        self.root, self.host, self.opened = root, host, opened

    def at(self, path: str, *depths: int) -> int:
        """Open path (one of depths below root), return its fd."""
        parts = parts_of(self.root, self.host, path)
        if len(parts) not in depths:
            raise Rejected(f"path {path!r} is not where this command works ({_DEPTH_NAMES[max(depths)]})")
        return self.opened.open(self.root, parts)

    def fdpath(self, path: str, *depths: int, subvolume: bool = False) -> str:
        fd = self.at(path, *depths)
        if subvolume:
            check_subvolume(fd, path)
        return Opened.path(fd)

    def new_name(self, path: str, depth: int) -> str:
        """Return /proc/self/fd/N/<name> for a path to create at depth: its parent is opened, its name is the last part."""
        parts = parts_of(self.root, self.host, path)
        if len(parts) != depth:
            raise Rejected(f"path {path!r} is not where this command works ({_DEPTH_NAMES[depth]})")
        return f"{Opened.path(self.opened.open(self.root, parts[:-1]))}/{parts[-1]}"

    def entry(self, path: str) -> tuple[str, Info]:
        """Open an entry and its container; return (the container's fd path, the entry's subvolume info)."""
        cfd = self.at(posixpath.dirname(path.rstrip("/")), CONTAINER)
        check_subvolume(cfd, path)
        parts = parts_of(self.root, self.host, path)
        if len(parts) != ENTRY:
            raise Rejected(f"path {path!r} is not an entry (<root>/<host>/<subvolume>/<entry>)")
        fd = self.opened.open(self.root, parts)
        check_subvolume(fd, path)
        info = subvolume_info(fd)
        container = Opened.path(cfd)
        if info.top_level != subvolume_info(cfd).id:
            raise Rejected(f"{path} is not a subvolume directly in its container")
        return container, info

    def stage(self, argv: list[str], append_only: bool) -> tuple[str, list[str]]:
        n = len(argv)
        if n == 5 and argv[:4] == ["stat", "-f", "-c", "%T"]:
            return READ, C.fs_type(self.fdpath(argv[4], ROOT, HOST, CONTAINER, ENTRY))
        if n >= 3 and argv[:2] == ["btrfs", "subvolume"]:
            path = argv[-1]
            if argv == C.list_children(path) or argv == C.list_readonly(path):
                return READ, [*argv[:-1], self.fdpath(path, CONTAINER, subvolume=True)]
            if argv == C.show(path):
                return READ, C.show(self.fdpath(path, CONTAINER, ENTRY))
            if argv == C.sync(path):
                return WRITE, C.sync(self.fdpath(path, CONTAINER, subvolume=True))
            if argv == C.create(path):
                return WRITE, C.create(self.new_name(path, CONTAINER))
            if argv == C.delete(path):
                return self._delete(path, append_only)
            raise Rejected(f"btrfs subvolume {argv[2]} is not allowed")
        if n == 4 and argv == C.commit(argv[3]):
            # Commit after clearing a partial: its space shows as free at once (ENOSPC).
            return WRITE, C.commit(self.fdpath(argv[3], CONTAINER, subvolume=True))
        if argv[:2] == ["mkdir", "-p"] and n == 3:
            return WRITE, C.mkdirs(self.new_name(argv[2], HOST))
        if argv[:2] == ["mv", "-T"] and n == 4:
            return WRITE, self._rename(argv[2], argv[3])
        if argv[:2] == ["btrfs", "receive"] and n == 3:
            # --chroot confines everything the stream does to the container it was opened as.
            return WRITE, ["btrfs", "receive", "--chroot", self.fdpath(argv[2], CONTAINER, subvolume=True)]
        if argv[:3] == ["btrfs", "send", "-q"]:
            return READ, self._send(argv)
        if argv in (C.ZSTD_COMPRESS, C.ZSTD_DECOMPRESS):
            return READ, list(argv)
        raise Rejected(f"{shlex.join(argv[:3])}: not an allowed command")

    def _delete(self, path: str, append_only: bool) -> tuple[str, list[str]]:
        """Delete an entry by the id of the subvolume that was checked, never by its name again.

        Under --append-only only what is not a complete receive (writable, or without a
        received_uuid) may go: a partial, whatever its name. A kept backup never.
        """
        container, info = self.entry(path)
        complete = info.readonly and bool(info.received_uuid)
        return (DELETE if complete else CLEAR), ["btrfs", "subvolume", "delete", "--subvolid", str(info.id), container]

    def _rename(self, src: str, dst: str) -> list[str]:
        """Only a complete receive may be renamed, to a new final name in the same container."""
        if posixpath.dirname(src.rstrip("/")) != posixpath.dirname(dst.rstrip("/")):
            raise Rejected("rename must stay in one directory")
        _, info = self.entry(src)
        if not (info.readonly and info.received_uuid):
            raise Rejected("only a complete receive (read-only, received) may be renamed")
        sub_name = posixpath.basename(posixpath.dirname(dst.rstrip("/")))
        if parse_entry_time(sub_name, posixpath.basename(src)) is not None:
            raise Rejected("only a fresh receive may be renamed")
        target = self.new_name(dst, ENTRY)
        if parse_entry_time(sub_name, posixpath.basename(dst)) is None or os.path.lexists(target):
            raise Rejected("rename target must be a new final name")
        return C.rename(self.new_name(src, ENTRY), target)

    def _send(self, argv: list[str]) -> list[str]:
        return _send_argv(argv, lambda path: self.fdpath(path, ENTRY, subvolume=True))


_DEPTH_NAMES = {ROOT: "<root>", HOST: "<root>/<host>", CONTAINER: "<root>/<host>/<subvolume>", ENTRY: "<root>/<host>/<subvolume>/<entry>"}


def _check_send(root: Path, argv: list[str]) -> list[str]:
    return _send_argv(argv, lambda path: _inside(root, path, must_exist=True))


def _send_argv(argv: list[str], resolve: Callable[[str], str]) -> list[str]:
    """`btrfs send [-p P | -c C]... PATH` rebuilt with -q and every path resolved; anything else is refused."""
    rest = argv[3:]
    out = ["btrfs", "send", "-q"]
    while len(rest) > 1:
        flag, value = rest[0], rest[1]
        if flag not in ("-p", "-c"):
            raise Rejected(f"btrfs send option {flag} is not allowed")
        out += [flag, resolve(value)]
        rest = rest[2:]
    if len(rest) != 1:
        raise Rejected("btrfs send needs one path")
    return [*out, resolve(rest[0])]


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
    stages: list[list[str]],
    root: Path,
    *,
    append_only: bool,
    send_only: bool,
    puller: str | None = None,
    host: str | None = None,
    opened: Opened | None = None,
) -> list[list[str]]:
    """Given one step's stages, return the argvs to run. Raise Rejected if any is not allowed.

    A receiving key's paths are opened into `opened`, whose fds the commands name and
    must inherit; the caller closes them once the step has run.
    """
    if send_only:
        checked = [_check_source_stage(root, s) for s in stages]
    else:
        receiving = _Receiving(root, host, opened if opened is not None else Opened())
        checked = [receiving.stage(s, append_only) for s in stages]
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

    snaps = local_scan.scan(os.path.basename(path) or "root", path, with_uuids=True)
    return json.dumps([
        {"number": s.number, "date": s.date.isoformat(), "uuid": s.uuid, "received_uuid": s.received_uuid, "path": str(s.path), "kind": s.kind}
        for s in snaps
    ]) + "\n"


def serve_main(
    root: str, *, append_only: bool = False, send_only: bool = False, puller: str | None = None, host: str | None = None
) -> int:
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
    if host is not None and not pullholds_name_ok(host):
        raise Rejected(f"--host {host!r} is not a host name")
    for step in steps:
        opened = Opened()
        try:
            try:
                cmds = check_step(step, base, append_only=append_only, send_only=send_only, puller=puller, host=host, opened=opened)
            except Rejected as exc:
                raise Rejected(f"subvault serve refused: {exc}") from None
            status = _run_step(cmds, tuple(opened.fds))
        finally:
            opened.close()
        if status != 0:
            return status
    return 0


def pullholds_name_ok(name: str) -> bool:
    return bool(NAME_RE.match(name))


def _run_step(cmds: list[list[str]], fds: tuple[int, ...] = ()) -> int:
    """Run one checked step with this process's stdout; only a stream (send, receive) gets stdin."""
    if cmds[0][:2] == ["subvault", "snapshots"]:
        # Answered here, not by a new process: the listing needs no privileges beyond reading.
        sys.stdout.write(snapshots_json(cmds[0][2]))
        sys.stdout.flush()
        return 0
    if cmds[0][:2] == ["subvault", "pulled"]:
        try:
            pullholds.write_record(cmds[0][4], cmds[0][3], cmds[0][5], utcnow())
        except ValueError as exc:
            raise Rejected(f"subvault serve refused: {exc}") from None
        return 0
    if len(cmds) == 1 and cmds[0][:2] not in (["btrfs", "send"], ["btrfs", "receive"]):
        res = process.run(cmds[0], check=False, what=cmds[0][0], input="", pass_fds=fds)
        sys.stdout.write(res.stdout)
        sys.stdout.flush()
        sys.stderr.write(res.stderr)
        sys.stderr.flush()
        return res.returncode
    with process.pipeline(cmds, what="serve", stdin=sys.stdin.buffer, stdout=sys.stdout.buffer, pass_fds=fds) as pipe:
        pipe.run()
    return 0
