"""Coverage planner: every subvolume is protected or excluded with a reason (invariant 5)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from subvault.model import SubvolInfo
from subvault.plan.coverage import (
    ExcludedFilesystem,
    ExcludedPath,
    FoundSubvolume,
    MountPoint,
    ProblemKind,
    ProtectedPath,
    btrfs_mount_sources,
    found_from_info,
    is_snapshot,
    parse_mountinfo,
    plan_coverage,
    reachable_paths,
)

FS = "fs-1111"
MOUNTS = [MountPoint(FS, "root", "/"), MountPoint(FS, "home", "/home")]


def sub(path: str, sid: int, **kw: object) -> FoundSubvolume:
    """A subvolume at top-level path, reachable wherever MOUNTS make it reachable."""
    return FoundSubvolume(FS, sid, path, reachable_paths(FS, path, MOUNTS), f"uuid-{sid}", **kw)  # type: ignore[arg-type]  # kw are FoundSubvolume's optional fields, as each test gives them


def fedora() -> list[FoundSubvolume]:
    return [
        sub("root", 256),
        sub("home", 257),
        sub("root/var/lib/pvc", 258),
        sub("root/.snapshots", 259),
        sub("root/.snapshots/1/snapshot", 260, readonly=True, managed_snapshot=True),
        sub("root/var/lib/pvc/.snapshots/7/snapshot", 261, readonly=True),
    ]


PROTECTED = [ProtectedPath("root", "/"), ProtectedPath("home", "/home"), ProtectedPath("var_lib_pvc", "/var/lib/pvc")]


def kinds(problems: list) -> list[str]:
    return [p.kind for p in problems]


def test_reachable_paths_through_mounts() -> None:
    assert reachable_paths(FS, "root/var/lib/pvc", MOUNTS) == ("/var/lib/pvc",)
    assert reachable_paths(FS, "<FS_TREE>/home/alice", MOUNTS) == ("/home/alice",)
    assert reachable_paths(FS, "other", MOUNTS) == ()
    assert reachable_paths("other-fs", "root", MOUNTS) == ()


def test_fully_configured_fedora_has_no_problems() -> None:
    assert plan_coverage(fedora(), PROTECTED, []) == []


def test_invariant_5_every_subvolume_protected_or_excluded() -> None:
    found = [*fedora(), sub("root/srv/new-app", 300)]
    problems = plan_coverage(found, PROTECTED, [])
    assert kinds(problems) == [ProblemKind.NESTED]
    assert problems[0].subject == "/srv/new-app"
    assert "/srv/new-app" in problems[0].message and "[[exclude]] with a reason" in problems[0].message
    assert plan_coverage(found, PROTECTED, [ExcludedPath("/srv/new-app", "scratch data")]) == []
    assert plan_coverage(found, [*PROTECTED, ProtectedPath("app", "/srv/new-app")], []) == []


def test_unprotected_top_level_subvolume() -> None:
    mounts = [*MOUNTS, MountPoint(FS, "data", "/data")]
    found = [*fedora(), FoundSubvolume(FS, 400, "data", reachable_paths(FS, "data", mounts), "u400")]
    problems = plan_coverage(found, PROTECTED, [])
    assert kinds(problems) == [ProblemKind.UNPROTECTED]
    assert problems[0].message == "/data: subvolume is not protected; add it as [[subvolume]] or [[exclude]] with a reason"


def test_nested_subvolume_message_says_contents_are_not_in_parent_snapshots() -> None:
    found = [*fedora(), sub("root/var/lib/pvc/db", 301)]
    [problem] = plan_coverage(found, PROTECTED, [])
    assert problem.kind == ProblemKind.NESTED
    assert "inside protected /var/lib/pvc" in problem.message
    assert "NOT in /var/lib/pvc's snapshots" in problem.message


def test_exclude_covers_everything_beneath_it() -> None:
    found = [*fedora(), *(sub(f"root/var/lib/containers/storage/btrfs/subvolumes/{i}", 500 + i) for i in range(5))]
    assert len(plan_coverage(found, PROTECTED, [])) == 5
    assert plan_coverage(found, PROTECTED, [ExcludedPath("/var/lib/containers", "images, pulled again")]) == []


def test_exclude_without_reason_is_a_problem_and_covers_nothing() -> None:
    found = [*fedora(), sub("root/var/cache", 302)]
    problems = plan_coverage(found, PROTECTED, [ExcludedPath("/var/cache", "  ")])
    assert kinds(problems) == [ProblemKind.NO_REASON, ProblemKind.NESTED]
    assert "add reason" in problems[0].message


def test_configured_path_that_no_longer_exists() -> None:
    found = [s for s in fedora() if s.path != "root/var/lib/pvc"]
    [problem] = plan_coverage(found, PROTECTED, [])
    assert problem.kind == ProblemKind.MISSING
    assert "var_lib_pvc" in problem.message and "/var/lib/pvc" in problem.message


def test_subvolume_in_no_layer_is_not_protected() -> None:
    protected = [*PROTECTED[:2], ProtectedPath("var_lib_pvc", "/var/lib/pvc", layers=())]
    assert kinds(plan_coverage(fedora(), protected, [])) == [ProblemKind.NO_LAYER, ProblemKind.NESTED]


def test_snapshots_and_replicas_are_not_data_to_protect() -> None:
    assert is_snapshot(sub("root/.snapshots", 1))
    assert is_snapshot(sub("root/.snapshots/3/snapshot", 2))
    assert is_snapshot(sub("backups/root.20261120T0300", 3, readonly=True, received_uuid="u-src"))
    assert is_snapshot(sub("whatever", 4, managed_snapshot=True))
    # a restored subvolume made writable again is live data
    assert not is_snapshot(sub("root/var/lib/restored", 5, received_uuid="u-src"))


def test_unmounted_subvolume_says_how_to_fix() -> None:
    found = [*fedora(), sub("root-old", 600)]
    [problem] = plan_coverage(found, PROTECTED, [])
    assert problem.kind == ProblemKind.UNPROTECTED
    assert "'root-old'" in problem.message and "not mounted" in problem.message


def test_exclude_by_filesystem_covers_the_whole_filesystem_or_one_subvolume_path() -> None:
    found = [*fedora(), sub("root-old", 600), sub("root-old/inner", 601), sub("scratch", 602)]
    assert len(plan_coverage(found, PROTECTED, [])) == 3
    only_old = [ExcludedFilesystem(FS, "root-old", "rollback leftover")]
    [left] = plan_coverage(found, PROTECTED, [], only_old)
    assert "'scratch'" in left.message and 'subvolume = "scratch"' in left.message
    assert plan_coverage(found, PROTECTED, [], [ExcludedFilesystem(FS, "", "scratch disk")]) == []
    assert len(plan_coverage(found, PROTECTED, [], [ExcludedFilesystem("other-fs", "", "x")])) == 3


def test_filesystem_with_nothing_configured_says_how_to_exclude_it_whole() -> None:
    other = [FoundSubvolume("fs-2222", 256, "appdata", ("/mnt/other/appdata",), "u-a")]
    [problem] = plan_coverage([*fedora(), *other], PROTECTED, [])
    assert problem.subject == "/mnt/other/appdata" and 'filesystem = "fs-2222"' in problem.message
    [problem] = plan_coverage([*fedora(), sub("scratch", 700)], PROTECTED, [])
    assert "filesystem =" not in problem.message or "subvolume =" in problem.message


def test_top_level_with_loose_files_is_data_to_protect() -> None:
    top = FoundSubvolume("fs-3333", 5, "", ("/mnt/data",), "", loose_file="/mnt/data/photos/a.jpg")
    [problem] = plan_coverage([top], [], [])
    assert problem.kind == ProblemKind.UNPROTECTED and "top level" in problem.message and "a.jpg" in problem.message
    assert plan_coverage([top], [ProtectedPath("data", "/mnt/data")], []) == []
    inner = FoundSubvolume("fs-3333", 256, "vm", ("/mnt/data/vm",), "u-vm")
    [nested] = plan_coverage([top, inner], [ProtectedPath("data", "/mnt/data")], [])
    assert nested.kind == ProblemKind.NESTED


def test_every_message_is_one_line() -> None:
    found = [*fedora(), sub("root/a", 1), sub("root-old", 2), sub("home/b", 3)]
    problems = plan_coverage(found, [*PROTECTED, ProtectedPath("gone", "/gone")], [ExcludedPath("/x", "")])
    assert len(problems) == 5
    assert all("\n" not in p.message for p in problems)


# -- properties ---------------------------------------------------------------

segment = st.sampled_from(["a", "b", "c", ".snapshots", "d"])
rel_paths = st.lists(st.lists(segment, min_size=1, max_size=4).map("/".join), min_size=1, max_size=12, unique=True)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[FoundSubvolume], list[ProtectedPath], list[ExcludedPath]]:
    paths = draw(rel_paths)
    mounts = [MountPoint(FS, "", "/")]
    found = [
        FoundSubvolume(FS, 256 + i, p, reachable_paths(FS, p, mounts), f"u{i}", readonly=draw(st.booleans()))
        for i, p in enumerate(paths)
    ]
    chosen = draw(st.lists(st.sampled_from(paths), max_size=len(paths)))
    protected = [ProtectedPath(f"n{i}", "/" + p) for i, p in enumerate(dict.fromkeys(chosen))]
    ex = draw(st.lists(st.sampled_from(paths), max_size=3))
    excluded = [ExcludedPath("/" + p, draw(st.sampled_from(["", "cache"]))) for p in ex]
    return found, protected, excluded


def _covered(s: FoundSubvolume, protected: list[ProtectedPath], excluded: list[ExcludedPath]) -> bool:
    path = s.mount_paths[0]
    return any(p.path == path for p in protected) or any(
        e.reason and (path == e.path or path.startswith(e.path + "/")) for e in excluded
    )


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_property_each_uncovered_live_subvolume_is_reported_exactly_once(layout) -> None:
    found, protected, excluded = layout
    problems = plan_coverage(found, protected, excluded)
    about = [p.subject for p in problems if p.kind in (ProblemKind.UNPROTECTED, ProblemKind.NESTED)]
    expected = [s.mount_paths[0] for s in found if not is_snapshot(s) and not _covered(s, protected, excluded)]
    assert sorted(about) == sorted(expected)


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_property_excluding_every_reported_path_fixes_coverage(layout) -> None:
    found, protected, excluded = layout
    problems = plan_coverage(found, protected, excluded)
    fixes = [ExcludedPath(p.subject, "test") for p in problems if p.kind in (ProblemKind.UNPROTECTED, ProblemKind.NESTED)]
    again = plan_coverage(found, protected, [*excluded, *fixes])
    assert not [p for p in again if p.kind in (ProblemKind.UNPROTECTED, ProblemKind.NESTED)]


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_property_snapshots_never_reported(layout) -> None:
    found, protected, excluded = layout
    snapshot_paths = {s.mount_paths[0] for s in found if is_snapshot(s)}
    live_paths = {s.mount_paths[0] for s in found if not is_snapshot(s)}
    problems = plan_coverage(found, protected, excluded)
    reported = {p.subject for p in problems if p.kind in (ProblemKind.UNPROTECTED, ProblemKind.NESTED)}
    assert not (reported & (snapshot_paths - live_paths))


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 0:31 /root / rw,relatime shared:1 - btrfs /dev/sda3 rw,seclabel,compress=zstd:1,subvol=/root
61 27 0:31 /home /home rw,relatime shared:30 - btrfs /dev/sda3 rw,subvol=/home
70 27 0:40 / /mnt/usb\\040disk rw,relatime - btrfs /dev/sdb1 rw,subvol=/
71 27 0:41 / /mnt/other rw,relatime - btrfs /dev/sdc1 rw,subvol=/
"""


def test_mountinfo_gives_btrfs_mounts_of_known_filesystems() -> None:
    sources = btrfs_mount_sources(MOUNTINFO)
    assert sources == {"/dev/sda3": "/", "/dev/sdb1": "/mnt/usb disk", "/dev/sdc1": "/mnt/other"}
    mounts = parse_mountinfo(MOUNTINFO, {"/dev/sda3": FS, "/dev/sdb1": "fs-usb"})
    assert mounts == [
        MountPoint(FS, "root", "/"),
        MountPoint(FS, "home", "/home"),
        MountPoint("fs-usb", "", "/mnt/usb disk"),
    ]
    assert reachable_paths("fs-usb", "backup/root.1", mounts) == ("/mnt/usb disk/backup/root.1",)


def test_found_from_adapter_info() -> None:
    info = SubvolInfo(258, "root/var/lib/pvc", "u258", None, None, False, 10, 256)
    found = found_from_info(FS, info, MOUNTS)
    assert found.mount_paths == ("/var/lib/pvc",) and found.subvol_id == 258 and not found.readonly


def test_placeholder_reason_is_no_reason() -> None:
    from subvault.plan.coverage import ExcludedPath, ProblemKind, is_reason, plan_coverage

    assert not is_reason("review me") and not is_reason("  TODO ") and not is_reason("")
    assert is_reason("ephemeral: a cache")
    problems = plan_coverage([], [], [ExcludedPath("/var/cache", "review me")])
    assert [p.kind for p in problems] == [ProblemKind.NO_REASON]
    assert "placeholder" in problems[0].message
