"""Tree digest on plain temp directories: what changes it and what does not."""

from __future__ import annotations

import os
import shutil

import pytest

from subvault.dr.digest import tree_digest


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "a"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("vps1\n")
    (root / "data.bin").write_bytes(os.urandom(3 << 20))
    (root / "empty").mkdir()
    os.symlink("etc/hostname", root / "link")
    return root


def copy(src, dst):
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return dst


def test_equal_trees_have_equal_digests(tree, tmp_path):
    a, b = tree_digest(tree), tree_digest(copy(tree, tmp_path / "b"))
    assert a == b and a.entries == 6 and a.bytes == (3 << 20) + 5


def test_times_do_not_count(tree):
    before = tree_digest(tree)
    os.utime(tree / "etc" / "hostname", (0, 0))
    os.utime(tree / "etc", (0, 0))
    assert tree_digest(tree) == before


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "etc" / "hostname").write_text("vps2\n"),
        lambda r: os.chmod(r / "etc" / "hostname", 0o600),
        lambda r: os.chmod(r / "empty", 0o700),
        lambda r: (r / "new").write_text(""),
        lambda r: (r / "etc" / "hostname").rename(r / "etc" / "hostname2"),
        lambda r: (os.unlink(r / "link"), os.symlink("data.bin", r / "link")),
        lambda r: os.setxattr(r / "etc" / "hostname", "user.test", b"1"),
        lambda r: (r / "data.bin").open("r+b").write(b"\0"),
    ],
    ids=["content", "file-mode", "dir-mode", "new-file", "rename", "symlink-target", "xattr", "one-byte"],
)
def test_each_change_changes_the_digest(tree, change):
    before = tree_digest(tree)
    try:
        change(tree)
    except OSError as exc:  # e.g. user xattrs unsupported on this tmpfs
        pytest.skip(f"cannot make this change here: {exc}")
    assert tree_digest(tree).digest != before.digest


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_changes_the_digest(tree):
    before = tree_digest(tree)
    os.chown(tree / "etc" / "hostname", 1000, 1000)
    assert tree_digest(tree).digest != before.digest


def test_first_difference_names_the_path(tree, tmp_path):
    other = copy(tree, tmp_path / "b")
    (other / "etc" / "hostname").write_text("changed\n")
    diff = tree_digest(tree, keep_records=True).first_difference(tree_digest(other, keep_records=True))
    assert diff is not None and diff.startswith("etc/hostname\t")


def test_missing_root_raises(tmp_path):
    with pytest.raises(OSError):
        tree_digest(tmp_path / "nope")


def test_digest_does_not_depend_on_the_pool(tmp_path):
    from subvault.dr import digest

    root = tmp_path / "many"
    for i in range(digest.WINDOW * 2 + 3):
        d = root / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        size = digest.INLINE + i if i % 3 == 0 else i * 11
        (d / f"f{i}").write_bytes(os.urandom(size))
    one = tree_digest(root, workers=1, keep_records=True)
    four = tree_digest(root, workers=4, keep_records=True)
    assert one == four and one.records == four.records


def test_every_content_byte_of_a_large_file_counts_in_the_pool(tmp_path):
    from subvault.dr import digest

    root = tmp_path / "big"
    root.mkdir()
    data = bytearray(os.urandom(digest.INLINE * 3))
    (root / "f").write_bytes(data)
    before = tree_digest(root, workers=2)
    data[-1] ^= 1
    (root / "f").write_bytes(data)
    assert tree_digest(root, workers=2) != before



def test_a_big_file_hashed_by_several_threads_gives_the_same_digest(tree, monkeypatch):
    """BLAKE3 spread over threads for big files: the same content hash, so the same tree digest."""
    from subvault.dr import digest

    if digest._THREADED is None:
        pytest.fail("the blake3 package is missing; it is a dependency")
    one_thread = tree_digest(tree, keep_records=True)
    monkeypatch.setattr(digest, "BIG", 1 << 20)  # data.bin (3 MiB) now takes the threaded path
    monkeypatch.setattr(digest, "READ_CHUNK", 1 << 20)  # in several chunks
    assert tree_digest(tree, keep_records=True).records == one_thread.records


def test_a_file_record_ends_with_the_blake3_of_its_bytes_on_every_path(tmp_path, monkeypatch):
    """Inline, pool and threaded paths all record BLAKE3 of the whole content (drill digests keep their values)."""
    from blake3 import blake3

    from subvault.dr import digest

    monkeypatch.setattr(digest, "BIG", 2 << 20)  # the last file takes the threaded path
    monkeypatch.setattr(digest, "READ_CHUNK", 1 << 20)
    root = tmp_path / "paths"
    root.mkdir()
    sizes = {"empty": 0, "inline": digest.INLINE - 1, "pool": digest.INLINE + 1, "threaded": (2 << 20) + (1 << 19) + 3}
    data = {name: os.urandom(size) for name, size in sizes.items()}
    for name, content in data.items():
        (root / name).write_bytes(content)
    records = {r.split("\t", 1)[0]: r for r in tree_digest(root, keep_records=True, workers=2).records}
    for name, content in data.items():
        assert records[name].endswith(f"\tf\t{len(content)}\t{blake3(content).hexdigest()}"), name
