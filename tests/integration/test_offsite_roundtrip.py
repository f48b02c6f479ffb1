"""Upload and restore through real zstd and age, against the file store and a real S3 server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from offsite_fixtures import BufferedFileStore, appending_sink, mac_key, make_age_key, make_stream, request
from s3server import S3Server, free_port

from subvault.errors import CommandFailed
from subvault.offsite import layout
from subvault.offsite.manifest import MacKey, ManifestError, from_json, to_json
from subvault.offsite.restore import IdentityMismatch, RestoreRefused, load_manifest, restore, verify_target
from subvault.offsite.upload import upload
from subvault.stores import Store, StoreUnreachable, open_store

pytestmark = pytest.mark.integration
PART = 256 << 10


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    server = S3Server.start(tmp_path_factory.mktemp("s3root"))
    server.make_bucket("offsite")
    yield server
    server.stop()


@pytest.fixture(params=["file", "file-buffered", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":  # age writes each part in place (FileStore.stage)
        (tmp_path / "bucket").mkdir()
        return open_store(f"file://{tmp_path}/bucket")
    if request.param == "file-buffered":  # the path every store without stage takes
        (tmp_path / "bucket").mkdir()
        return BufferedFileStore(tmp_path / "bucket")
    server: S3Server = request.getfixturevalue("s3")
    return open_store(f"s3://offsite/{tmp_path.name}", endpoint=server.endpoint,
                      credentials=server.credentials_file(tmp_path / "s3.env"))


@pytest.fixture
def age(tmp_path: Path):
    return make_age_key(tmp_path / "identity.txt")


def test_full_then_incremental_restores_byte_identical(store: Store, age, tmp_path: Path) -> None:
    key = mac_key(tmp_path)
    full = make_stream(tmp_path / "full.bin", 3 * PART + 1234, seed=1)
    inc = make_stream(tmp_path / "inc.bin", PART // 2, seed=2)
    r1 = upload(store, request("pvc", "u1", None, ("u1",), full, (age.recipient,)), key, part_size=PART)
    r2 = upload(store, request("pvc", "u2", "u1", ("u1", "u2"), inc, (age.recipient,), hours=1), key, part_size=PART)
    assert r1.manifest.is_full and not r2.manifest.is_full
    assert r1.parts_uploaded >= 1 and r2.manifest.chain == ("u1", "u2")
    assert not [o for o in store.list() if o.key.endswith(layout.JOURNAL)]
    out = tmp_path / "restored.bin"
    result = restore(store, "pvc", "u2", age.identity, appending_sink(out), key)
    assert [m.uuid for m in result.chain] == ["u1", "u2"]
    assert out.read_bytes() == full.read_bytes() + inc.read_bytes()
    assert verify_target(store, key) == []


def test_upload_is_idempotent_once_the_manifest_exists(store: Store, age, tmp_path: Path) -> None:
    key = mac_key(tmp_path)
    src = make_stream(tmp_path / "s.bin", PART, seed=3)
    req = request("root", "u1", None, ("u1",), src, (age.recipient,))
    first = upload(store, req, key, part_size=PART)
    again = upload(store, req, key, part_size=PART)
    assert again.already_done and again.manifest == first.manifest


def test_empty_stream_round_trips(store: Store, age, tmp_path: Path) -> None:
    key = mac_key(tmp_path)
    src = tmp_path / "empty.bin"
    src.write_bytes(b"")
    upload(store, request("root", "u1", None, ("u1",), src, (age.recipient,)), key, part_size=PART)
    out = tmp_path / "out.bin"
    restore(store, "root", "u1", age.identity, appending_sink(out), key)
    assert out.read_bytes() == b""


def test_invariant_4_failing_source_writes_no_manifest(store: Store, age, tmp_path: Path) -> None:
    """Invariant 9 and 4: a failed stage leaves no manifest behind."""
    key = mac_key(tmp_path)
    req = request("root", "u1", None, ("u1",), tmp_path / "does-not-exist", (age.recipient,))
    with pytest.raises(CommandFailed):
        upload(store, req, key, part_size=PART)
    assert not [o for o in store.list() if o.key.endswith(layout.MANIFEST)]


def _uploaded(store: Store, tmp_path: Path, age) -> tuple[MacKey, bytes]:
    key = mac_key(tmp_path)
    src = make_stream(tmp_path / "s.bin", 3 * PART, seed=4)
    upload(store, request("root", "u1", None, ("u1",), src, (age.recipient,)), key, part_size=PART)
    return key, src.read_bytes()


def test_missing_part_is_named_and_restore_refuses(store: Store, age, tmp_path: Path) -> None:
    key, _ = _uploaded(store, tmp_path, age)
    victim = layout.part_key("root", "u1", 1)
    store.delete(victim)
    out = tmp_path / "out.bin"
    with pytest.raises(RestoreRefused, match=f"{victim}: missing"):
        restore(store, "root", "u1", age.identity, appending_sink(out), key)
    assert not out.exists()
    assert [str(p) for p in verify_target(store, key)] == [f"{victim}: missing"]


def test_corrupted_part_is_named_and_restore_refuses(store: Store, age, tmp_path: Path) -> None:
    key, _ = _uploaded(store, tmp_path, age)
    victim = layout.part_key("root", "u1", 2)
    data = bytearray(store.get(victim))
    data[len(data) // 2] ^= 0xFF
    store.put(victim, bytes(data))
    out = tmp_path / "out.bin"
    with pytest.raises(RestoreRefused, match=f"{victim}: SHA-256 does not match"):
        restore(store, "root", "u1", age.identity, appending_sink(out), key)
    assert not out.exists()


def test_swapped_part_is_detected(store: Store, age, tmp_path: Path) -> None:
    key, _ = _uploaded(store, tmp_path, age)
    store.put(layout.part_key("root", "u1", 0), store.get(layout.part_key("root", "u1", 1)))
    with pytest.raises(RestoreRefused, match="part-000000"):
        restore(store, "root", "u1", age.identity, appending_sink(tmp_path / "o"), key)


def test_forged_manifest_is_detected(store: Store, age, tmp_path: Path) -> None:
    key, _ = _uploaded(store, tmp_path, age)
    mkey = layout.manifest_key("root", "u1")
    data = json.loads(store.get(mkey))
    data["parent_uuid"], data["chain"] = "evil", ["evil", "u1"]
    store.put(mkey, json.dumps(data).encode())
    with pytest.raises(ManifestError, match="fails authentication"):
        load_manifest(store, "root", "u1", key)
    other = MacKey.load_or_create(tmp_path / "other.mac")
    store.put(mkey, to_json(other.sign(from_json(store.get(mkey)))))
    with pytest.raises(ManifestError, match="fails authentication"):
        load_manifest(store, "root", "u1", key)


def test_manifest_moved_to_another_snapshot_is_detected(store: Store, age, tmp_path: Path) -> None:
    key, _ = _uploaded(store, tmp_path, age)
    store.put(layout.manifest_key("root", "u9"), store.get(layout.manifest_key("root", "u1")))
    with pytest.raises(ManifestError, match="moved or swapped"):
        load_manifest(store, "root", "u9", key)


def test_no_verify_mac_restores_and_warns(store: Store, age, tmp_path: Path, caplog) -> None:
    _, original = _uploaded(store, tmp_path, age)
    out = tmp_path / "out.bin"
    with caplog.at_level(logging.WARNING, "subvault.offsite"):
        restore(store, "root", "u1", age.identity, appending_sink(out), None)
    assert out.read_bytes() == original
    assert "NOT verifying the authenticity" in caplog.text


def test_wrong_identity_is_a_clear_error(store: Store, age, tmp_path: Path) -> None:
    key, _ = _uploaded(store, tmp_path, age)
    stranger = make_age_key(tmp_path / "stranger.txt")
    out = tmp_path / "out.bin"
    with pytest.raises(IdentityMismatch) as err:
        restore(store, "root", "u1", stranger.identity, appending_sink(out), key)
    message = str(err.value)
    assert message == (f"the age identity {stranger.identity} does not decrypt this backup; "
                       f"use the identity whose recipient is {age.recipient}")
    assert not out.exists()


def test_missing_chain_link_refuses(store: Store, age, tmp_path: Path) -> None:
    key = mac_key(tmp_path)
    a = make_stream(tmp_path / "a", PART, seed=5)
    upload(store, request("root", "u1", None, ("u1",), a, (age.recipient,)), key, part_size=PART)
    upload(store, request("root", "u2", "u1", ("u1", "u2"), a, (age.recipient,)), key, part_size=PART)
    store.delete(layout.manifest_key("root", "u1"))
    with pytest.raises(RestoreRefused, match="link 0 of its chain"):
        restore(store, "root", "u2", age.identity, appending_sink(tmp_path / "o"), key)


def test_unreachable_bucket_is_a_clear_error(age, tmp_path: Path) -> None:
    creds = tmp_path / "c.env"
    creds.write_text("AWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=secretvalue\n")
    creds.chmod(0o600)
    store = open_store("s3://offsite/p", endpoint=f"http://127.0.0.1:{free_port()}", credentials=creds)
    src = make_stream(tmp_path / "s", PART, seed=6)
    with pytest.raises(StoreUnreachable) as err:
        upload(store, request("root", "u1", None, ("u1",), src, (age.recipient,)), mac_key(tmp_path), part_size=PART)
    assert "cannot reach" in str(err.value) and "\n" not in str(err.value)
