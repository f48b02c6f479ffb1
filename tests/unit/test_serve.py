"""`subvault serve`: how a command line is split into steps and each step checked (no btrfs needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from subvault import serve
from subvault.endpoints import commands as C
from subvault.endpoints.runner import steps_line
from subvault.serve import Rejected, check_step, split_steps


def test_steps_line_round_trips_through_split_steps(tmp_path: Path) -> None:
    odd = str(tmp_path / "a dir with 'quotes' && | ;")
    steps = [[C.show(odd)], [C.ZSTD_DECOMPRESS, C.receive(odd)], [C.rename(odd + "/x", odd + "/y")]]
    assert split_steps(steps_line(steps)) == steps


@pytest.mark.parametrize(
    "line",
    [
        "",
        "stat -f -c %T / ; id",
        "stat -f -c %T / || id",
        "stat -f -c %T / && && id",
        "&& stat -f -c %T /",
        "btrfs send -q /a | zstd -c -T0 -3 -q | cat",
        "stat -f -c %T / |",
    ],
)
def test_malformed_command_lines_are_rejected(line: str) -> None:
    with pytest.raises(Rejected):
        steps = split_steps(line)
        for step in steps:
            check_step(step, Path("/"), append_only=False, send_only=False)


def test_too_many_steps_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(Rejected, match="more than"):
        split_steps(" && ".join([f"stat -f -c %T {tmp_path}"] * (serve.MAX_STEPS + 1)))


def test_each_step_is_checked_against_the_root_and_the_mode(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (cmd,) = check_step([C.mkdirs(str(root / "x"))], root, append_only=True, send_only=False)
    assert cmd[:2] == ["mkdir", "-p"] and cmd[2].startswith("/proc/self/fd/") and cmd[2].endswith("/x"), "the opened root, not its name"
    with pytest.raises(Rejected, match="outside"):
        check_step([C.mkdirs(str(tmp_path / "x"))], root, append_only=False, send_only=False)
    with pytest.raises(Rejected, match="send-only"):
        check_step([C.mkdirs(str(root / "x"))], root, append_only=False, send_only=True)
    with pytest.raises(Rejected, match="send-only"):
        check_step([C.delete(str(root / "x"))], root, append_only=False, send_only=True)


@pytest.mark.parametrize(
    "rel, depth_ok",
    [("", True), ("h", True), ("h/sub", True), ("h/sub/e", True), ("h/sub/e/deeper", False), ("h/../other", False), ("h/./sub", False)],
)
def test_paths_deeper_than_the_layout_or_with_dots_are_refused(tmp_path: Path, rel: str, depth_ok: bool) -> None:
    from subvault.serve_paths import parts_of

    path = f"{tmp_path}/{rel}" if rel else str(tmp_path)
    if depth_ok:
        assert parts_of(tmp_path, None, path) == [p for p in rel.split("/") if p]
    else:
        with pytest.raises(Rejected):
            parts_of(tmp_path, None, path)


def test_attack_a_host_bound_key_touches_no_other_host(tmp_path: Path) -> None:
    from subvault.serve_paths import parts_of

    assert parts_of(tmp_path, "vps1", str(tmp_path / "vps1" / "data")) == ["vps1", "data"]
    for other in ("vps2", "vps2/data", "vps2/data/data.20261120T000000Z", "vps10"):
        with pytest.raises(Rejected, match="only touch"):
            parts_of(tmp_path, "vps1", str(tmp_path / other))
    (tmp_path / "vps2").mkdir()
    with pytest.raises(Rejected, match="only touch"):
        check_step([C.mkdirs(str(tmp_path / "vps2"))], tmp_path, append_only=True, send_only=False, host="vps1")
    # the root itself: only its filesystem type (the client's check that the disk is mounted)
    check_step([["stat", "-f", "-c", "%T", str(tmp_path)]], tmp_path, append_only=True, send_only=False, host="vps1")
    with pytest.raises(Rejected, match="not where"):
        check_step([C.list_children(str(tmp_path))], tmp_path, append_only=True, send_only=False, host="vps1")


def test_a_symlink_anywhere_in_a_path_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "h").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "h" / "sub").symlink_to(tmp_path / "elsewhere")
    for argv in (C.list_children(str(root / "h" / "sub")), C.receive(str(root / "h" / "sub")), C.delete(str(root / "h" / "sub" / "e"))):
        with pytest.raises(Rejected, match="not a directory"):
            check_step([argv], root, append_only=False, send_only=False)


def test_split_listing_separates_show_children_and_readonly() -> None:
    text = "\n".join(
        [
            "backup/vm/data",
            "\tName: \t\t\tdata",
            "\tUUID: \t\t\t11111111-1111-1111-1111-111111111111",
            "\tFlags: \t\t\t-",
            "ID 260 gen 12 top level 259 parent_uuid - received_uuid aaaa uuid bbbb path backup/vm/data/data.20261120T000000Z",
            "ID 261 gen 13 top level 259 parent_uuid - received_uuid - uuid cccc path backup/vm/data/snapshot",
            "ID 260 gen 12 top level 259 path backup/vm/data/data.20261120T000000Z",
        ]
    )
    show, children, readonly = C.split_listing(text)
    assert C.parse_show(show).uuid == "11111111-1111-1111-1111-111111111111"
    assert [(c.name, c.received_uuid) for c in children] == [("data.20261120T000000Z", "aaaa"), ("snapshot", None)]
    assert readonly == {"data.20261120T000000Z"}


def test_invariant_8_append_only_key_cannot_rename_a_container_to_unmask_kept_backups(tmp_path: Path) -> None:
    """Renaming the container would make its kept entries look like partials: refused."""
    root = tmp_path / "root"
    kept = root / "vm" / "data" / "data.20261120T000000Z"
    kept.mkdir(parents=True)
    with pytest.raises(Rejected, match="not where"):
        check_step([C.rename(str(root / "vm" / "data"), str(root / "vm" / "vm.20240101T000000Z"))], root, append_only=True, send_only=False)
    for path in (root / "vm" / "data", root / "vm", root):
        with pytest.raises(Rejected, match="not an entry|not where|outside"):
            check_step([C.delete(str(path))], root, append_only=False, send_only=False)


def test_a_filesystem_commit_is_allowed_only_on_a_container_inside_the_root(tmp_path: Path) -> None:
    # The positive case needs btrfs (the container must be a subvolume): the ENOSPC test runs it.
    root = tmp_path / "root"
    (root / "vm" / "data").mkdir(parents=True)
    with pytest.raises(Rejected):
        check_step([C.commit(str(tmp_path))], root, append_only=True, send_only=False)
    with pytest.raises(Rejected):
        check_step([C.commit(str(root / "vm" / "data"))], root, append_only=False, send_only=True)
    with pytest.raises(Rejected, match="not a subvolume"):
        check_step([C.commit(str(root / "vm" / "data"))], root, append_only=True, send_only=False)
