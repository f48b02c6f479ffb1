"""Invariant 7 on btrfs targets: a subvolume renamed in the config is found by uuid, never sent in full again.

A target keeps a subvolume's receives in `<root>/<host>/<name>/`, under its configured
name. When that directory holds no receive of this subvolume's snapshots (a full send is
planned), but a sibling directory holds
verified receives of this subvolume's own snapshots (a `received_uuid` equal to a local
snapshot's uuid), the subvolume was renamed in the config: a full send would store a
second copy and orphan the first forever. Replication refuses instead, names the old
directory and the fix, and holds every local snapshot (the old directory's base among
them) until the user has chosen. The old directory is never touched: subvault owns the
directories of its configured names only (invariant 8), so nothing prunes or deletes it.

Where the siblings come from:
- a local target: the host directory is read (each subvolume directly in it; dot names,
  such as adopt's staging containers, are not containers of a name);
- an ssh target: the endpoint protocol (and `serve`) lists only a container the client
  names, so the names this host replicated to that target before are remembered in
  `<state_dir>/target-names.json` and those containers are listed. That file is a cache
  (invariant 12): without it a rename over ssh is not detected, and the old behaviour
  (a full send under the new name) follows.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from subvault.btrfs import adapter
from subvault.endpoints.endpoint import Endpoint
from subvault.errors import RenamedSubvolume
from subvault.model import Entry
from subvault.offsite import layout
from subvault.plan.replication import Source, is_verified

NAMES_FILE = "target-names.json"


@dataclass(frozen=True)
class Renamed:
    old_name: str
    old_container: str
    matches: int  # verified receives there of this subvolume's snapshots


def find_renamed(ep: Endpoint, host: str, sub_name: str, sources: Iterable[Source], known_names: Iterable[str]) -> Renamed | None:
    """Return the sibling container holding verified receives of these sources, or None.

    Only called when sub_name's own container holds no receive of these sources (a full send is planned).
    """
    identities = {u for s in sources for u in (s.uuid, s.received_uuid) if u}
    if not identities:
        return None
    host_dir = posixpath.join(ep.root, host)
    names = _local_siblings(host_dir) if ep.is_local else sorted(set(known_names))
    for name in names:
        if name == sub_name or name.startswith("."):
            continue
        container = posixpath.join(host_dir, name)
        listed: list[Entry] = ep.entries(container, name) or []
        matched = [e for e in listed if is_verified(e) and e.received_uuid in identities]
        if matched:
            return Renamed(name, container, len(matched))
    return None


def _local_siblings(host_dir: str) -> list[str]:
    try:
        with os.scandir(host_dir) as it:
            dirs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in dirs if adapter.is_subvolume(Path(host_dir, n)))


def refusal(
    subject: str, sub_name: str, sub_path: str, found: Renamed, own: list[Entry] | None, where: str = "on the target"
) -> RenamedSubvolume:
    """Return the one-line error: what was found, that nothing was sent, and the two ways to fix it.

    own: the entries of sub_name's own container (None: there is none). An empty one is
    removed by the fix with rmdir (which refuses one holding a plain file); one holding anything (partials, a writable copy) is moved aside
    under a dot name, never deleted by a command subvault wrote; one holding verified
    receives of another subvolume (two names swapped) gets only "the name back".
    """
    host_dir = posixpath.dirname(found.old_container)
    old, new = found.old_name, sub_name
    others = sum(1 for e in own or [] if is_verified(e))
    if others:  # two names swapped: each container holds the other's receives; only the config can say which is which
        return RenamedSubvolume(
            f"{subject}: {found.old_container} holds {found.matches} of this subvolume's snapshots (same uuids), while "
            f"{posixpath.join(host_dir, new)} holds {others} receives of another subvolume: were names swapped in the config? "
            f"Not sending it in full again (nor pruning the other's receives); set name = \"{old}\" back for path {sub_path}"
        )
    clear = ""
    if own is not None:
        # An empty container goes with rmdir (an empty subvolume too, kernel >= 4.18), which
        # refuses anything that holds a file: the fix never deletes what subvault did not list.
        clear = f"mv -T -- {new} .{new}.aside && " if own else f"rmdir -- {new} && "
    fix = (
        f"cd {shlex.quote(host_dir)} && {clear}mv -T -- {old} {new} && "
        f'for e in {new}/{old}.*; do mv -T -- "$e" "{new}/{new}.${{e#{new}/{old}.}}"; done'
    )
    return RenamedSubvolume(
        f"{subject}: no verified backup under {posixpath.join(host_dir, new)}, but {found.old_container} holds "
        f"{found.matches} of this subvolume's snapshots (same uuids): it was renamed from {old!r} in the config. "
        f"Not sending it in full again (a second copy; the old one would never be pruned). Either set name = \"{old}\" "
        f"back for path {sub_path}, or {where} run: `{fix}` (the directory and its entries take the new name; "
        "the next run is incremental)"
    )


def owner_of(entries: list[Entry], others: Iterable[tuple[str, list[Source]]]) -> tuple[str, int] | None:
    """Return (another configured subvolume, its verified receives here) when a container holds receives of its snapshots."""
    verified = [e.received_uuid for e in entries if is_verified(e)]
    if not verified:
        return None
    for name, sources in others:
        identities = {u for s in sources for u in (s.uuid, s.received_uuid) if u}
        count = sum(1 for u in verified if u in identities)
        if count:
            return name, count
    return None


def occupied(subject: str, container: str, sub_name: str, other: str, count: int) -> RenamedSubvolume:
    """Return the error for a full send into a container that holds another configured subvolume's receives."""
    return RenamedSubvolume(
        f"{subject}: {container} holds {count} receives of subvolume {other!r} (same uuids): was {other!r} renamed from "
        f"{sub_name!r} in the config? Not sending {sub_name!r} in full into it (its keep would prune them); resolve "
        f"{other!r} first (its own error gives the fix), then run again"
    )


def offsite_old_names(names: Iterable[str], sub_name: str, uuids: set[str]) -> dict[str, int]:
    """Given an object target's keys, return {other subvolume prefix: restore points there of these uuids}.

    Offsite keys are `SUBVOL/UUID/manifest.json` (offsite/layout.py), so a subvolume renamed
    in the config left its points under its old prefix. They cannot be moved (a manifest's
    MAC binds its subvolume name): the caller warns that a new chain starts.
    """
    found: dict[str, int] = {}
    for key in names:
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == layout.MANIFEST and parts[0] != sub_name and parts[1] in uuids:
            found[parts[0]] = found.get(parts[0], 0) + 1
    return found


def offsite_warning(subject: str, url: str, sub_name: str, sub_path: str, old: dict[str, int]) -> str:
    name, count = max(old.items(), key=lambda kv: kv[1])
    return (
        f"{subject}: {name}/ in {url} holds {count} restore points of this subvolume's snapshots (same uuids): was it renamed "
        f"from {name!r} in the config? This upload starts a new chain under {sub_name}/ with a full; the points under {name}/ "
        "are no longer pruned or listed (a manifest's MAC binds its name, so they cannot be moved). Either set name = "
        f"\"{name}\" back for path {sub_path}, or delete {name}/ from the bucket once the new chain covers your keep "
        "(until then docs/offsite-recipe.md restores them)"
    )


def holds_while_renamed(sources: Iterable[Source], target: str) -> dict[str, str]:
    """Hold every local snapshot: the old directory's base is among them, and the user has not chosen yet."""
    return {s.uuid: f"target {target} holds this subvolume under its old name: held until that is resolved" for s in sources}


def known_names(state_dir: Path, target: str) -> list[str]:
    """Return the names this host replicated to target before (a cache; empty when unreadable)."""
    try:
        data = json.loads((state_dir / NAMES_FILE).read_text())
    except (OSError, ValueError):
        return []
    names = data.get(target) if isinstance(data, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def remember_names(state_dir: Path, target: str, names: Iterable[str]) -> str | None:
    """Add names to target's list (written atomically, only when it changes); return a warning if it could not be written."""
    try:
        data = json.loads((state_dir / NAMES_FILE).read_text())
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    before = set(known_names(state_dir, target))
    after = before | set(names)
    if after == before:
        return None
    data[target] = sorted(after)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".target-names.", dir=state_dir)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, state_dir / NAMES_FILE)
    except OSError as exc:
        return f"could not record the replicated names in {state_dir}: {exc.strerror or exc}"
    return None
