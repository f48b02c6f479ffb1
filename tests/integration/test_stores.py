"""One suite every object store passes: memory, file, and S3 against a real server on loopback."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3server import S3Server, free_port

from subvault.secrets import redact
from subvault.stores import ObjectNotFound, Store, StoreAuthError, StoreError, StoreUnreachable, open_store
from subvault.stores.credentials import load_credentials_file, parse_env_lines

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server.start(tmp_path_factory.mktemp("s3root"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return open_store(f"memory://{tmp_path.name}")
    if request.param == "file":
        (tmp_path / "files").mkdir()
        return open_store(f"file://{tmp_path}/files")
    server: S3Server = request.getfixturevalue("s3")
    bucket = "b" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    server.make_bucket(bucket)
    creds = server.credentials_file(tmp_path / "s3.env")
    return open_store(f"s3://{bucket}/vps1", endpoint=server.endpoint, credentials=creds)


def test_round_trip(store: Store) -> None:
    store.put("root/a/part-000000", b"hello")
    assert store.get("root/a/part-000000") == b"hello"
    with store.open("root/a/part-000000") as f:
        assert f.read() == b"hello"
    assert store.stat("root/a/part-000000").size == 5


def test_put_replaces(store: Store) -> None:
    store.put("k", b"one")
    store.put("k", b"two!")
    assert store.get("k") == b"two!"
    assert store.stat("k").size == 4


def test_empty_object(store: Store) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.stat("empty").size == 0


def test_list_with_prefixes(store: Store) -> None:
    for key in ["root/u1/manifest.json", "root/u1/part-000000", "root/u2/part-000000", "rootfs/x", "pvc/y"]:
        store.put(key, key.encode())
    assert [o.key for o in store.list("root/")] == ["root/u1/manifest.json", "root/u1/part-000000", "root/u2/part-000000"]
    assert [o.key for o in store.list("root")] == [
        "root/u1/manifest.json", "root/u1/part-000000", "root/u2/part-000000", "rootfs/x"]
    assert [o.key for o in store.list("root/u1/part")] == ["root/u1/part-000000"]
    assert len(list(store.list())) == 5
    assert list(store.list("nothing/")) == []
    sizes = {o.key: o.size for o in store.list("pvc/")}
    assert sizes == {"pvc/y": len(b"pvc/y")}


def test_stat_and_get_of_missing_raise_not_found(store: Store) -> None:
    with pytest.raises(ObjectNotFound):
        store.stat("root/missing")
    with pytest.raises(ObjectNotFound):
        store.get("root/missing")
    with pytest.raises(ObjectNotFound):
        store.open("root/missing")


def test_delete_is_idempotent(store: Store) -> None:
    store.put("root/u/x", b"1")
    store.delete("root/u/x")
    store.delete("root/u/x")
    store.delete("never/was")
    with pytest.raises(ObjectNotFound):
        store.stat("root/u/x")
    assert list(store.list("root/")) == []


@pytest.mark.parametrize("key", ["/abs", "../escape", "a/../../b", "a//b", "dir/", ""])
def test_keys_cannot_escape_the_prefix(store: Store, key: str) -> None:
    """Invariant 8: a store touches only its prefix."""
    with pytest.raises(StoreError):
        store.put(key, b"x")


def test_large_object_64mib(store: Store) -> None:
    data = os.urandom(64 << 20)
    store.put("big/part-000000", data)
    assert store.stat("big/part-000000").size == len(data)
    digest = hashlib.sha256()
    with store.open("big/part-000000") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(data).digest()


def test_put_of_a_view_sends_the_view_itself_not_a_copy(store: Store) -> None:
    """The offsite writer hands each part over as a view of a reused buffer: the
    store must not copy the part (peak RSS would grow by one part), and must have
    sent every byte before put returns (the buffer is refilled right after)."""
    import tracemalloc

    buf = bytearray(os.urandom(32 << 20))
    view = memoryview(buf)[: 24 << 20]
    want = hashlib.sha256(view).digest()
    tracemalloc.start()
    try:
        store.put("view/part-000000", view)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    buf[:] = bytes(len(buf))
    if not isinstance(store, type(open_store("memory://x"))):  # the memory store keeps its copy by design
        assert peak < 8 << 20, f"put allocated {peak >> 20} MiB for a 24 MiB view"
    with store.open("view/part-000000") as f:
        assert hashlib.sha256(f.read()).digest() == want


def test_s3_store_stays_inside_its_prefix(s3: S3Server, tmp_path: Path) -> None:
    """Invariant 8: objects beside the prefix are neither listed nor deleted."""
    s3.make_bucket("shared")
    creds = s3.credentials_file(tmp_path / "c.env")
    neighbour = open_store("s3://shared/vps1-other", endpoint=s3.endpoint, credentials=creds)
    neighbour.put("keep.txt", b"not ours")
    store = open_store("s3://shared/vps1", endpoint=s3.endpoint, credentials=creds)
    store.put("a", b"1")
    assert [o.key for o in store.list()] == ["a"]
    assert (s3.root / "shared" / "vps1" / "a").read_bytes() == b"1"
    store.delete("a")
    assert neighbour.get("keep.txt") == b"not ours"


def test_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    creds = tmp_path / "c.env"
    creds.write_text("AWS_ACCESS_KEY_ID=AKIDEXAMPLE\nAWS_SECRET_ACCESS_KEY=secretsecret\n")
    creds.chmod(0o600)
    store = open_store("s3://b/p", endpoint=f"http://127.0.0.1:{free_port()}", credentials=creds)
    with pytest.raises(StoreUnreachable) as err:
        store.put("x", b"1")
    assert "\n" not in str(err.value) and "cannot reach" in str(err.value)
    assert "secretsecret" not in str(err.value)


def test_file_store_missing_root_is_unreachable(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/not-mounted")
    with pytest.raises(StoreUnreachable):
        store.put("x", b"1")


def test_wrong_credentials_is_auth_error(s3: S3Server, tmp_path: Path) -> None:
    s3.make_bucket("authb")
    creds = tmp_path / "bad.env"
    creds.write_text(f"AWS_ACCESS_KEY_ID={s3.access_key}\nAWS_SECRET_ACCESS_KEY=wrong-secret-value\n")
    creds.chmod(0o600)
    store = open_store("s3://authb/p", endpoint=s3.endpoint, credentials=creds)
    with pytest.raises(StoreAuthError) as err:
        store.put("x", b"1")
    assert "wrong-secret-value" not in str(err.value)
    with pytest.raises(StoreAuthError):
        list(store.list())


def test_invariant_11_world_readable_credentials_file_is_refused(tmp_path: Path) -> None:
    """Invariant 11: a secrets file readable by others is refused."""
    creds = tmp_path / "c.env"
    creds.write_text("AWS_ACCESS_KEY_ID=AKIDEXAMPLE\nAWS_SECRET_ACCESS_KEY=topsecretvalue\n")
    creds.chmod(0o644)
    with pytest.raises(StoreAuthError) as err:
        open_store("s3://b/p", endpoint="http://127.0.0.1:1", credentials=creds)
    assert "chmod 600" in str(err.value) and "topsecretvalue" not in str(err.value)


def test_invariant_11_credentials_are_masked(tmp_path: Path) -> None:
    """Invariant 11: secrets read from a file are registered for masking."""
    creds = tmp_path / "c.env"
    creds.write_text("export AWS_ACCESS_KEY_ID='AKIDMASKME1'\n# comment\nAWS_SECRET_ACCESS_KEY=\"maskme-secret-2\"\n")
    creds.chmod(0o600)
    loaded = load_credentials_file(creds)
    assert loaded.access_key_id == "AKIDMASKME1" and loaded.secret_access_key == "maskme-secret-2"
    assert "maskme" not in repr(loaded)
    shown = redact("key maskme-secret-2 id AKIDMASKME1")
    assert "maskme-secret-2" not in shown and "AKIDMASKME1" not in shown and shown.startswith("key ***")
    assert parse_env_lines("A=1\nB = '2'\n") == {"A": "1", "B": "2"}


def test_credentials_from_environment(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.make_bucket("envb")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    store = open_store("s3://envb/p", endpoint=s3.endpoint)
    store.put("x", b"1")
    assert store.get("x") == b"1"


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(StoreAuthError, match="no S3 credentials"):
        open_store("s3://b/p", endpoint="http://127.0.0.1:1")


@pytest.mark.parametrize("size", [0, 1000, 5 << 20, 10 << 20, (10 << 20) + 1])
def test_s3_stream_stores_exactly_what_was_written_only_on_commit(s3: S3Server, tmp_path: Path, size: int) -> None:
    """S3's `stream`: empty, one piece, exactly one and two pieces, and one byte more;
    nothing is visible while it is written, and commit returns its size and SHA-256."""
    from subvault.stores.credentials import Credentials
    from subvault.stores.s3 import S3Store

    bucket = "st" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    s3.make_bucket(bucket)
    store = S3Store(bucket, "vps1", Credentials(s3.access_key, s3.secret_key), endpoint=s3.endpoint,
                    concurrency=2, piece_size=5 << 20)
    data = os.urandom(size)
    streamed = store.stream("root/a/part-000000")
    view = memoryview(data)
    while view:
        view = view[os.write(streamed.fd, view[:1 << 20]):]
    assert not list(store.list("root/"))
    streamed.end_input()
    assert streamed.commit() == (size, hashlib.sha256(data).hexdigest())
    assert store.get("root/a/part-000000") == data


@pytest.mark.parametrize("size", [1000, 12 << 20])
def test_s3_stream_abort_leaves_nothing(s3: S3Server, tmp_path: Path, size: int) -> None:
    from subvault.stores.credentials import Credentials
    from subvault.stores.s3 import S3Store

    bucket = "sa" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    s3.make_bucket(bucket)
    store = S3Store(bucket, "vps1", Credentials(s3.access_key, s3.secret_key), endpoint=s3.endpoint,
                    concurrency=2, piece_size=5 << 20)
    streamed = store.stream("k")
    view = memoryview(os.urandom(size))
    while view:
        view = view[os.write(streamed.fd, view[:1 << 20]):]
    streamed.end_input()  # a one-piece object is sent from here on
    streamed.abort()
    assert not list(store.list())
    client = store._client  # type: ignore[attr-defined]
    try:
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix="vps1/").get("Uploads", [])
    except client.exceptions.ClientError:
        uploads = []  # rclone answers 404 when nothing exists under the prefix
    assert uploads == []
