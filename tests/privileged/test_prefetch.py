"""Reading ahead an incremental send: what the scan finds, and the window it keeps."""

from __future__ import annotations

import os
from datetime import timedelta

from replication_helpers import T0, context, make_sources, snap

from subvault.btrfs.prefetch import Prefetch
from subvault.run.replicate import replicate


def _pair(make_fs, mib_changed: int = 3):
    src = make_fs("src")
    paths = make_sources(src.mountpoint, names=("data",), mib=1)
    big = paths["data"] / "big.bin"
    big.write_bytes(os.urandom(32 << 20))
    old = snap("data", paths["data"], T0)
    with open(big, "r+b") as fh:
        for i in range(mib_changed):
            fh.seek((i * 7 + 3) << 20)
            fh.write(os.urandom(1 << 20))
    new = snap("data", paths["data"], T0 + timedelta(hours=1), change=False)
    return paths, old, new


def test_scan_finds_exactly_the_changed_data_and_stays_within_its_window(make_fs):
    _, old, new = _pair(make_fs, mib_changed=3)
    with Prefetch(str(new.path), str(old.path), window=1 << 20) as ahead:
        ahead._threads[0].join()  # the scan: it ends on its own
        assert ahead.expected == 3 << 20
        assert ahead.advised <= 2 << 20, "never more than the window (plus one extent) ahead of the stream"
        ahead.moved(1 << 40)
        ahead.join()
        assert ahead.advised == ahead.expected


def test_a_failing_scan_only_loses_the_head_start(make_fs, tmp_path):
    _, old, new = _pair(make_fs)
    with Prefetch(str(tmp_path / "no-such-snapshot"), str(old.path)) as ahead:
        ahead.join()
    assert ahead.expected is None and ahead.advised == 0


class _Watcher:
    def __init__(self) -> None:
        self.expected: list[int] = []
        self.moved = 0

    def expect(self, total: int) -> None:
        self.expected.append(total)

    def __call__(self, n: int) -> None:
        self.moved = n


def test_progress_learns_the_expected_size_of_an_incremental_send(make_fs, tmp_path):
    paths, _, _ = _pair(make_fs, mib_changed=2)
    root = make_fs("tgt").mountpoint / "backup"
    root.mkdir()
    ctx = context(paths, str(root), now=T0 + timedelta(minutes=5), state=tmp_path / "state")
    watchers: list[_Watcher] = []

    def factory(subject: str) -> _Watcher:
        watchers.append(_Watcher())
        return watchers[-1]

    # the first run sends T0 in full (no scan unasked-for: this watcher asks), then the change
    assert not replicate(ctx, progress=factory).errors
    ctx = context(paths, str(root), now=T0 + timedelta(hours=1, minutes=5), state=tmp_path / "state")
    assert not replicate(ctx, progress=factory).errors
    last = watchers[-1]
    assert last.expected == [2 << 20] and last.moved >= 2 << 20
