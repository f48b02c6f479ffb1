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
    assert check_step([C.mkdirs(str(root / "x"))], root, append_only=True, send_only=False) == [C.mkdirs(str(root / "x"))]
    with pytest.raises(Rejected, match="outside"):
        check_step([C.mkdirs(str(tmp_path / "x"))], root, append_only=False, send_only=False)
    with pytest.raises(Rejected, match="send-only"):
        check_step([C.mkdirs(str(root / "x"))], root, append_only=False, send_only=True)
    kept = root / "vm" / "data" / "data.20261120T000000Z"
    partial = root / "vm" / "data" / "snapshot"
    kept.mkdir(parents=True)
    partial.mkdir()
    with pytest.raises(Rejected, match="append-only"):
        check_step([C.delete(str(kept))], root, append_only=True, send_only=False)
    assert check_step([C.delete(str(partial))], root, append_only=True, send_only=False) == [C.delete(str(partial))]
    with pytest.raises(Rejected, match="send-only"):
        check_step([C.delete(str(partial))], root, append_only=False, send_only=True)


def test_steps_run_in_order_each_checked_just_before_it_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    """The first step runs; the second, outside the root, is refused when its turn comes."""
    root = tmp_path / "root"
    root.mkdir()
    line = steps_line([[C.mkdirs(str(root / "made"))], [C.mkdirs(str(tmp_path / "escaped"))]])
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", line)
    with pytest.raises(Rejected, match="outside"):
        serve.serve_main(str(root))
    assert (root / "made").is_dir() and not (tmp_path / "escaped").exists()


def test_a_failing_step_ends_the_command_with_its_status(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "file").write_text("")
    line = steps_line([[C.mkdirs(str(root / "file" / "sub"))], [C.mkdirs(str(root / "after"))]])
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", line)
    assert serve.serve_main(str(root)) != 0
    assert not (root / "after").exists()


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
    with pytest.raises(Rejected, match="only an entry"):
        check_step([C.rename(str(root / "vm" / "data"), str(root / "vm" / "vm.20240101T000000Z"))], root, append_only=True, send_only=False)
    with pytest.raises(Rejected, match="append-only"):
        check_step([C.delete(str(root / "vm" / "data"))], root, append_only=True, send_only=False)
    with pytest.raises(Rejected, match="append-only"):
        check_step([C.delete(str(root / "vm"))], root, append_only=True, send_only=False)


def test_a_filesystem_commit_inside_the_root_is_allowed_even_append_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "vm" / "data").mkdir(parents=True)
    container = str(root / "vm" / "data")
    assert check_step([C.commit(container)], root, append_only=True, send_only=False) == [C.commit(container)]
    with pytest.raises(Rejected):
        check_step([C.commit(str(tmp_path))], root, append_only=True, send_only=False)
    with pytest.raises(Rejected):
        check_step([C.commit(container)], root, append_only=False, send_only=True)
