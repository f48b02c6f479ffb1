"""The capture format: versioned JSON manifest, files checked by sha256."""

from __future__ import annotations

import json

import pytest
from test_dr_sample import sample_manifest

from subvault.dr import manifest as M


def test_roundtrip():
    m = sample_manifest()
    assert M.decode(M.encode(m)) == m


def test_json_is_versioned_and_readable():
    data = json.loads(M.encode(sample_manifest()))
    assert data["format"] == "subvault-dr" and data["version"] == M.VERSION
    assert data["disks"][0]["table"]["partitions"][0]["start"] == 2048


def test_a_newer_version_is_refused():
    data = json.loads(M.encode(sample_manifest()))
    data["version"] = M.VERSION + 1
    with pytest.raises(M.CaptureInvalid, match="newer"):
        M.decode(json.dumps(data).encode())


def test_unknown_fields_from_a_newer_minor_are_ignored():
    data = json.loads(M.encode(sample_manifest()))
    data["something_new"] = 1
    assert M.decode(json.dumps(data).encode()).host == "vps1"


@pytest.mark.parametrize("bad", [b"not json", b'{"format": "other"}', b'{"format": "subvault-dr", "version": 1}'])
def test_garbage_is_refused(bad):
    with pytest.raises(M.CaptureInvalid):
        M.decode(bad)


def _write(tmp_path, files):
    here = tmp_path / "captures" / "x"
    here.mkdir(parents=True)
    digests = {}
    for rel, data in files.items():
        (here / rel).write_bytes(data)
        digests[rel] = M.sha256_file(here / rel)
    m = sample_manifest()
    (here / M.MANIFEST).write_bytes(M.encode(M.Manifest(**{**m.__dict__, "files": digests})))
    (tmp_path / M.LATEST).symlink_to("captures/x")
    return here


def test_read_capture_follows_latest_and_checks_files(tmp_path):
    here = _write(tmp_path, {"fstab": b"UUID=x / btrfs defaults 0 0\n"})
    m, where = M.read_capture(tmp_path)
    assert where == here.resolve() and m.files
    assert M.read_capture(here)[1] == here.resolve()  # a capture's own dir works too


def test_a_missing_capture_is_refused(tmp_path):
    with pytest.raises(M.CaptureInvalid, match="run `subvault dr capture`"):
        M.read_capture(tmp_path)


def test_a_changed_file_is_refused(tmp_path):
    here = _write(tmp_path, {"fstab": b"a\n"})
    (here / "fstab").write_bytes(b"b\n")
    with pytest.raises(M.CaptureInvalid, match="does not match"):
        M.read_capture(tmp_path)
