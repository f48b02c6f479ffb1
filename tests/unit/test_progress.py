"""The progress line (bytes, rate, ETA) and the send-stream dump it learns sizes from."""

from __future__ import annotations

from subvault.btrfs.dump import extents
from subvault.run.replicate import progress_line


def test_extents_in_stream_order_with_escaped_paths() -> None:
    dump = "\n".join(
        [
            "snapshot        ./snapshot                      uuid=aa transid=24 parent_uuid=bb parent_transid=9",
            "update_extent   ./snapshot/data.bin             offset=0 len=1048576",
            "update_extent   ./snapshot/my\\ photos/a\\\\b.jpg offset=4096 len=8192",
            "utimes          ./snapshot/data.bin             atime=2026-11-26T07:00:00+0000",
        ]
    )
    assert extents(dump) == [("data.bin", 0, 1 << 20), ("my photos/a\\b.jpg", 4096, 8192)]


def test_progress_line_without_a_known_size_shows_bytes_and_rate() -> None:
    assert progress_line("data→pi", 10 << 20, 2.0, None) == "data→pi: 10.0 MiB  5.0 MiB/s"


def test_progress_line_with_a_known_size_shows_an_eta() -> None:
    assert progress_line("data→pi", 10 << 20, 2.0, 100 << 20) == "data→pi: 10.0 of ~100.0 MiB  5.0 MiB/s  ETA 0:00:18"
    assert progress_line("data→pi", 0, 0.5, 100 << 20).endswith("ETA --")
    assert progress_line("data→pi", 120 << 20, 2.0, 100 << 20).endswith("ETA 0:00:00"), "more than expected: done soon"


def test_read_ahead_opens_only_regular_files_inside_the_snapshot(tmp_path) -> None:
    import os

    from subvault.btrfs.prefetch import _open

    snap = tmp_path / "snap"
    (snap / "d").mkdir(parents=True)
    (snap / "d" / "f").write_text("x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    (snap / "link").symlink_to(tmp_path / "outside")
    (snap / "flink").symlink_to(tmp_path / "outside" / "secret")
    fd = _open(str(snap), "d/f")
    assert fd is not None
    os.close(fd)
    for rel in ("link/secret", "flink", "d", "../outside/secret", "d/../d/f", "missing"):
        assert _open(str(snap), rel) is None, rel
