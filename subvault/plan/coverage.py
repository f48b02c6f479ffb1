"""Coverage planner: is every subvolume protected by a layer or excluded with a reason?

Pure: the caller lists the subvolumes of every configured filesystem and passes the
configured paths; this returns problems. No I/O.

Rules (invariant 5):
- A subvolume is protected when one of the paths where it is reachable is the path
  of a configured [[subvolume]] that has at least one layer.
- A subvolume is excluded when one of its paths equals or lies under an [[exclude]]
  path that has a reason. An exclude covers everything beneath it (e.g. the
  subvolumes container runtimes create under /var/lib/containers). An exclude by
  filesystem UUID covers that whole filesystem, or one subvolume path on it and
  everything beneath (the way to exclude a subvolume that is mounted nowhere).
- Every mounted btrfs filesystem counts, configured or not. Its top level (subvolume
  5) counts only when the caller found files in it outside any subvolume.
- Snapshots and replicas are not data to protect: a subvolume under a `.snapshots`
  directory (or the `.snapshots` subvolume itself), a read-only subvolume, or one
  marked as subvault's/snapper's snapshot. A received subvolume that was made
  writable again (a restore) is live data and must be covered.
- A subvolume nested inside a protected one is NOT in the parent's snapshots (btrfs
  snapshots stop at subvolume boundaries); it needs its own entry or an exclude.
- A configured [[subvolume]] path that matches no subvolume is a problem; so is an
  [[exclude]] without a reason, and a [[subvolume]] with no layer.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from subvault.model import SubvolInfo

SNAPSHOT_DIR = ".snapshots"
FIX = "add it as [[subvolume]] or [[exclude]] with a reason"


class ProblemKind(StrEnum):
    """What a `check` problem is about; stable names for JSON output and metrics."""

    UNPROTECTED = "unprotected"
    NESTED = "nested"
    MISSING = "missing"
    NO_REASON = "exclude-without-reason"
    NO_LAYER = "no-layer"
    STALE = "stale"
    DRILL = "drill"
    CHAIN = "chain"
    SPACE = "space"
    FLUX = "flux-suspended"
    NEIGHBOUR = "neighbour"  # another tool on this host deletes what subvault holds


@dataclass(frozen=True)
class Problem:
    """One thing `check` reports: its kind, what it is about, and a one-line fix."""

    kind: ProblemKind
    subject: str
    message: str


@dataclass(frozen=True)
class FoundSubvolume:
    """A subvolume as found on a filesystem.

    path: relative to the filesystem's top level ("" is the top level itself).
    mount_paths: absolute paths where it is reachable now (its own mount points and
    paths inside a mounted ancestor); empty when it is not reachable.
    managed_snapshot: subvault or snapper made it as a snapshot.
    """

    fs_uuid: str
    subvol_id: int
    path: str
    mount_paths: tuple[str, ...]
    uuid: str
    parent_uuid: str | None = None
    received_uuid: str | None = None
    readonly: bool = False
    managed_snapshot: bool = False
    loose_file: str | None = None  # top level only: a file found outside every subvolume


@dataclass(frozen=True)
class ProtectedPath:
    """A configured [[subvolume]]: its name, absolute path and the layers it is in."""

    name: str
    path: str
    layers: tuple[str, ...] = ("local",)


@dataclass(frozen=True)
class ExcludedPath:
    """A configured [[exclude]]: absolute path and the reason it needs no backup."""

    path: str
    reason: str


@dataclass(frozen=True)
class ExcludedFilesystem:
    """A configured [[exclude]] by filesystem UUID: the whole of it, or one subvolume path ("" = whole)."""

    fs_uuid: str
    subvolume: str
    reason: str


@dataclass(frozen=True)
class MountPoint:
    """A mount of a btrfs subvolume: which filesystem, which subvolume, where."""

    fs_uuid: str
    subvol_path: str
    mount_path: str


# Placeholders that say nothing about why (an older `init` wrote "review me").
_PLACEHOLDERS = {"", "review me", "todo", "tbd", "fixme", "?", "xxx", "reason"}


def is_reason(text: str) -> bool:
    """Whether an [[exclude]] reason says something, not a placeholder."""
    return text.strip().lower().rstrip(".!") not in _PLACEHOLDERS


def norm_path(path: str) -> str:
    """Return an absolute path without trailing slashes or dot segments."""
    # POSIX keeps a leading "//", so strip every leading slash first.
    return posixpath.normpath("/" + path.strip().lstrip("/"))


def norm_subvol_path(path: str) -> str:
    """Return a top-level-relative subvolume path: no `<FS_TREE>/`, no slashes around."""
    path = path.strip()
    path = path.removeprefix("<FS_TREE>")
    path = posixpath.normpath("/" + path).strip("/")
    return path


def is_under(child: str, parent: str) -> bool:
    """Return True when child (a top-level-relative path) lies strictly inside parent."""
    if parent == "":
        return child != ""
    return child.startswith(parent + "/")


def is_at_or_under(path: str, root: str) -> bool:
    """Return True when absolute path equals root or lies inside it."""
    return path == root or root == "/" or path.startswith(root.rstrip("/") + "/")


def reachable_paths(fs_uuid: str, subvol_path: str, mounts: Iterable[MountPoint]) -> tuple[str, ...]:
    """Return every absolute path where a subvolume is reachable through the mounts.

    A subvolume is reachable at a mount of itself, and inside the mount of any
    ancestor (a nested subvolume shows up as a directory there).
    """
    subvol_path = norm_subvol_path(subvol_path)
    found: set[str] = set()
    for mount in mounts:
        if mount.fs_uuid != fs_uuid:
            continue
        mounted = norm_subvol_path(mount.subvol_path)
        if mounted == subvol_path:
            found.add(norm_path(mount.mount_path))
        elif is_under(subvol_path, mounted):
            rest = subvol_path[len(mounted) :].lstrip("/")
            found.add(norm_path(posixpath.join(mount.mount_path, rest)))
    return tuple(sorted(found, key=lambda p: (len(p), p)))


def is_snapshot(sub: FoundSubvolume) -> bool:
    """Return True for snapshots and replicas, which are not data to protect."""
    in_snapshot_dir = SNAPSHOT_DIR in norm_subvol_path(sub.path).split("/")
    return sub.managed_snapshot or sub.readonly or in_snapshot_dir


def describe(sub: FoundSubvolume) -> str:
    """Return how a message names a subvolume: where it is mounted, else its fs path."""
    if sub.mount_paths:
        return sorted(sub.mount_paths, key=lambda p: (len(p), p))[0]
    return f"subvolume '{norm_subvol_path(sub.path) or '<top level>'}' on filesystem {sub.fs_uuid}"


def plan_coverage(
    found: Sequence[FoundSubvolume],
    protected: Sequence[ProtectedPath],
    excluded: Sequence[ExcludedPath],
    excluded_fs: Sequence[ExcludedFilesystem] = (),
) -> list[Problem]:
    """Given the subvolumes found and the configuration, return every coverage problem.

    Problems come in a stable order: config problems first, then subvolumes by path.
    """
    problems = _config_problems(found, protected, excluded)
    protected_by_path = {norm_path(p.path): p for p in protected if p.layers}
    reasons = [norm_path(e.path) for e in excluded if is_reason(e.reason)]
    fs_reasons = [e for e in excluded_fs if is_reason(e.reason)]
    live = [s for s in found if not is_snapshot(s)]
    covered = {s: _protection(s, protected_by_path) for s in live}
    guarded_fs = {s.fs_uuid for s in live if covered[s] is not None}
    for sub in sorted(live, key=lambda s: (describe(s), s.fs_uuid, s.subvol_id)):
        if covered[sub] is not None or _excluded(sub, reasons) or _excluded_fs(sub, fs_reasons):
            continue
        problems.append(_uncovered_problem(sub, live, covered, whole_fs_hint=sub.fs_uuid not in guarded_fs))
    return problems


def _config_problems(
    found: Sequence[FoundSubvolume],
    protected: Sequence[ProtectedPath],
    excluded: Sequence[ExcludedPath],
) -> list[Problem]:
    problems: list[Problem] = []
    reachable = {norm_path(p) for s in found for p in s.mount_paths}
    for entry in protected:
        path = norm_path(entry.path)
        if path not in reachable:
            problems.append(Problem(
                ProblemKind.MISSING, path,
                f"{path}: [[subvolume]] '{entry.name}' is configured but no subvolume is there any more; "
                "fix its path, or remove it from the config",
            ))
        elif not entry.layers:
            problems.append(Problem(
                ProblemKind.NO_LAYER, path,
                f"{path}: [[subvolume]] '{entry.name}' is in no layer, so nothing protects it; "
                "give it a timeline or a target",
            ))
    for gap in excluded:
        if not is_reason(gap.reason):
            path = norm_path(gap.path)
            placeholder = f" ({gap.reason.strip()!r} is a placeholder)" if gap.reason.strip() else ""
            problems.append(Problem(
                ProblemKind.NO_REASON, path,
                f"{path}: [[exclude]] has no reason{placeholder}; add reason = \"…\" saying why it needs no backup",
            ))
    return problems


def _protection(sub: FoundSubvolume, protected_by_path: dict[str, ProtectedPath]) -> ProtectedPath | None:
    for path in sub.mount_paths:
        entry = protected_by_path.get(norm_path(path))
        if entry is not None:
            return entry
    return None


def _excluded(sub: FoundSubvolume, exclude_paths: list[str]) -> bool:
    return any(is_at_or_under(norm_path(p), root) for p in sub.mount_paths for root in exclude_paths)


def _excluded_fs(sub: FoundSubvolume, excluded: Sequence[ExcludedFilesystem]) -> bool:
    path = norm_subvol_path(sub.path)
    for e in excluded:
        root = norm_subvol_path(e.subvolume)
        if e.fs_uuid.lower() == sub.fs_uuid.lower() and (root == "" or path == root or is_under(path, root)):
            return True
    return False


def _uncovered_problem(
    sub: FoundSubvolume,
    live: Sequence[FoundSubvolume],
    covered: dict[FoundSubvolume, ProtectedPath | None],
    whole_fs_hint: bool = False,
) -> Problem:
    name = describe(sub)
    path = norm_subvol_path(sub.path)
    whole = f'; or, if nothing on it needs a backup, [[exclude]] filesystem = "{sub.fs_uuid}" with a reason' if whole_fs_hint else ""
    if path == "":
        example = f" (e.g. {sub.loose_file})" if sub.loose_file else ""
        return Problem(
            ProblemKind.UNPROTECTED, name,
            f"{name}: the top level of btrfs filesystem {sub.fs_uuid} holds files outside any subvolume{example}, "
            f"and nothing protects them; {FIX}{whole}",
        )
    parent = _nearest_protected_ancestor(sub, live, covered)
    if parent is not None:
        return Problem(
            ProblemKind.NESTED, name,
            f"{name}: nested subvolume inside protected {parent.path} ('{parent.name}'); "
            f"its contents are NOT in {parent.path}'s snapshots; {FIX}",
        )
    if not sub.mount_paths:
        return Problem(
            ProblemKind.UNPROTECTED, name,
            f"{name} is not mounted, so nothing protects it; delete it if it is left over, "
            f"or mount it and add it as [[subvolume]], or add [[exclude]] filesystem = \"{sub.fs_uuid}\" "
            f"subvolume = \"{path}\" with a reason",
        )
    return Problem(ProblemKind.UNPROTECTED, name, f"{name}: subvolume is not protected; {FIX}{whole}")


def _nearest_protected_ancestor(
    sub: FoundSubvolume,
    live: Sequence[FoundSubvolume],
    covered: dict[FoundSubvolume, ProtectedPath | None],
) -> ProtectedPath | None:
    path = norm_subvol_path(sub.path)
    best: tuple[int, ProtectedPath] | None = None
    for other in live:
        entry = covered.get(other)
        if entry is None or other.fs_uuid != sub.fs_uuid:
            continue
        other_path = norm_subvol_path(other.path)
        if is_under(path, other_path) and (best is None or len(other_path) > best[0]):
            best = (len(other_path), entry)
    return best[1] if best else None


def parse_mountinfo(text: str, fs_uuid_of_source: dict[str, str]) -> list[MountPoint]:
    """Given /proc/self/mountinfo text, return its btrfs mounts as MountPoints.

    fs_uuid_of_source maps a mount source (e.g. /dev/sda3) to its filesystem UUID;
    mounts of unknown sources are left out. The mountinfo `root` field is the path
    inside the filesystem, so subvolume mounts and bind mounts both work.
    """
    mounts: list[MountPoint] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3 or fields[sep + 1] != "btrfs" or len(fields) < 5:
            continue
        uuid = fs_uuid_of_source.get(_unescape(fields[sep + 2]))
        if uuid:
            mounts.append(MountPoint(uuid, norm_subvol_path(_unescape(fields[3])), norm_path(_unescape(fields[4]))))
    return mounts


def btrfs_mount_sources(text: str) -> dict[str, str]:
    """Given /proc/self/mountinfo text, return {mount source: one mount path} for btrfs."""
    sources: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" in fields:
            sep = fields.index("-")
            if len(fields) >= sep + 3 and fields[sep + 1] == "btrfs":
                sources.setdefault(_unescape(fields[sep + 2]), _unescape(fields[4]))
    return sources


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (\\040 is a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def found_from_info(
    fs_uuid: str,
    info: SubvolInfo,
    mounts: Sequence[MountPoint],
    managed_snapshot: bool = False,
) -> FoundSubvolume:
    """Given a subvolume as the btrfs adapter lists it, return it as coverage input."""
    return FoundSubvolume(
        fs_uuid=fs_uuid,
        subvol_id=info.id,
        path=norm_subvol_path(info.path),
        mount_paths=reachable_paths(fs_uuid, info.path, mounts),
        uuid=info.uuid,
        parent_uuid=info.parent_uuid,
        received_uuid=info.received_uuid,
        readonly=info.readonly,
        managed_snapshot=managed_snapshot,
    )
