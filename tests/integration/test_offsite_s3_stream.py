"""Killed while S3 pieces are in flight: the journal names only stored parts, the resume restores exactly.

The S3 store streams each part as a multipart upload whose pieces are sent concurrently
while the next part is encrypted. A process SIGKILLed in the middle of a part, with
several of its pieces already sent and others on the wire, must leave a journal that
names only parts whose objects are complete (invariant 4: no manifest), and the next
run must clear the unfinished upload, reuse the journaled parts and restore byte-exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from offsite_fixtures import appending_sink, mac_key, make_age_key, make_stream, request
from s3server import S3Server

from subvault.offsite import layout
from subvault.offsite.restore import restore, verify_target
from subvault.offsite.upload import upload
from subvault.stores.credentials import Credentials
from subvault.stores.s3 import S3Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
PIECE = 5 << 20  # the smallest piece S3 (and rclone serve s3) accepts before the last
PART = 2 * PIECE + (2 << 20)  # three pieces per part
CONCURRENCY = 3
HELD = "part-000002"
# Uncompressed (`cat` for zstd), so every part is PART bytes of plaintext and 3 pieces.

# The child wraps the client's UploadPart: every piece of part 2 is really sent to the
# server, then held (never returns), so part 2 stays an unfinished multipart upload with
# several pieces in flight while age for it is mid-stream. Lines tell the parent where it is.
CHILD = textwrap.dedent("""
    import sys, threading
    sys.path.insert(0, {tests!r})
    from offsite_fixtures import mac_key, request
    from pathlib import Path
    from subvault.offsite.upload import upload
    from subvault.stores.credentials import Credentials
    from subvault.stores.s3 import S3Store

    store = S3Store("resume", "vps1", Credentials({key!r}, {secret!r}), endpoint={endpoint!r},
                    concurrency={concurrency}, piece_size={piece})
    real_part, real_put = store._client.upload_part, store.put
    never = threading.Event()
    def upload_part(**kw):
        print("piece", kw["Key"], kw["PartNumber"], flush=True)
        resp = real_part(**kw)
        if {held!r} in kw["Key"]:
            print("held", kw["Key"], kw["PartNumber"], flush=True)
            never.wait()
        return resp
    def put(key, data, **kw):
        real_put(key, data, **kw)
        print("stored", key, flush=True)
    store._client.upload_part = upload_part
    store.put = put
    req = request("pvc", "u1", None, ("u1",), Path({src!r}), ({recipient!r},))
    upload(store, req, mac_key(Path({tmp!r})), part_size={part}, compress=["cat"])
    print("done", flush=True)
""")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server.start(tmp_path_factory.mktemp("s3root"))
    server.make_bucket("resume")
    yield server
    server.stop()


def _client(s3: S3Server):
    return boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1", aws_access_key_id=s3.access_key,
                        aws_secret_access_key=s3.secret_key, config=Config(s3={"addressing_style": "path"}))


def _unfinished(s3: S3Server) -> list[str]:
    try:
        page = _client(s3).list_multipart_uploads(Bucket="resume", Prefix="vps1/")
    except _client(s3).exceptions.ClientError:
        return []  # rclone answers 404 when nothing exists under the prefix
    return [u["Key"] for u in page.get("Uploads", [])]


def _kill_with_pieces_in_flight(s3: S3Server, src: Path, recipient: str, tmp: Path) -> list[str]:
    """Run the child until at least two pieces of part 2 are in flight, SIGKILL it; return its lines."""
    code = CHILD.format(tests=str(Path(__file__).parent), key=s3.access_key, secret=s3.secret_key,
                        endpoint=s3.endpoint, concurrency=CONCURRENCY, piece=PIECE, held=HELD, src=str(src),
                        recipient=recipient, tmp=str(tmp), part=PART)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             start_new_session=True, cwd=Path(__file__).parents[2])
    lines: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.strip())
            assert line.strip() != "done", "the upload finished before it could be killed"
            if sum(1 for x in lines if x.startswith("held")) >= 2:
                os.killpg(child.pid, signal.SIGKILL)
                break
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return lines


def test_invariant_4_s3_upload_killed_with_pieces_in_flight_resumes_and_restores_exactly(s3: S3Server, tmp_path: Path) -> None:
    age = make_age_key(tmp_path / "id.txt")
    src = make_stream(tmp_path / "stream.bin", 4 * PART + PIECE, seed=31)
    lines = _kill_with_pieces_in_flight(s3, src, age.recipient, tmp_path)
    held = [x for x in lines if x.startswith("held")]
    assert len(held) >= 2 and all(HELD in x for x in held)  # several pieces of one part in flight

    store = S3Store("resume", "vps1", Credentials(s3.access_key, s3.secret_key), endpoint=s3.endpoint,
                    concurrency=CONCURRENCY, piece_size=PIECE)
    assert not any(o.key.endswith(layout.MANIFEST) for o in store.list())  # invariant 4
    assert layout.part_key("pvc", "u1", 2) not in {o.key for o in store.list()}  # never completed
    assert _unfinished(s3)  # the kill left part 2's multipart upload behind
    journal = json.loads(store.get(layout.journal_key("pvc", "u1")))["journal"]
    assert 1 <= len(journal["parts"]) <= 2
    for i, part in enumerate(journal["parts"]):  # every journaled part is whole and stored
        assert part["key"] == layout.part_key("pvc", "u1", i)
        assert hashlib.sha256(store.get(part["key"])).hexdigest() == part["sha256"]

    result = upload(store, request("pvc", "u1", None, ("u1",), src, (age.recipient,)), mac_key(tmp_path),
                    part_size=PART, compress=["cat"])
    assert result.parts_reused == len(journal["parts"])
    assert result.parts_reused + result.parts_uploaded == len(result.manifest.parts) == 5
    assert not _unfinished(s3)
    out = tmp_path / "restored.bin"
    restore(store, "pvc", "u1", age.identity, appending_sink(out), mac_key(tmp_path), decompress=["cat"])
    assert out.read_bytes() == src.read_bytes()
    assert verify_target(store, mac_key(tmp_path)) == []
    assert not [o for o in store.list("pvc/u1/") if o.key.endswith(layout.JOURNAL)]


def test_s3_part_is_streamed_in_concurrent_pieces_never_buffered_whole(s3: S3Server, tmp_path: Path) -> None:
    """A 40 MiB part through the S3 store with its defaults: sent as pieces no larger than
    one piece, several at once (a barrier only the concurrent sending passes), never as
    one whole-part body, and every piece buffer is back in the bounded pool afterwards."""
    from subvault.stores import open_store
    from subvault.stores.s3 import DEFAULT_CONCURRENCY, PIECE_SIZE

    age = make_age_key(tmp_path / "id.txt")
    creds = s3.credentials_file(tmp_path / "s3.env")
    store = open_store("s3://resume/stream", endpoint=s3.endpoint, credentials=creds)
    part = 5 * PIECE_SIZE
    src = make_stream(tmp_path / "s.bin", 2 * part + 1000, seed=32)
    bodies: list[int] = []
    wave = threading.Barrier(2, timeout=60)  # two pieces of the first part must be on the wire together
    lock = threading.Lock()
    in_flight = peak = 0
    real_part, real_put = store._client.upload_part, store._client.put_object  # type: ignore[attr-defined]

    def body_size(body: object) -> int:
        return len(body) if isinstance(body, (bytes, bytearray)) else len(body)  # type: ignore[arg-type]

    def upload_part(**kw: object) -> object:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            bodies.append(body_size(kw["Body"]))
        try:
            if kw["PartNumber"] in (1, 2) and str(kw["Key"]).endswith(layout.part_key("pvc", "u1", 0)):
                wave.wait()
            return real_part(**kw)
        finally:
            with lock:
                in_flight -= 1

    def put_object(**kw: object) -> object:
        if "/part-" in str(kw["Key"]):
            bodies.append(body_size(kw["Body"]))
        return real_put(**kw)

    store._client.upload_part = upload_part  # type: ignore[attr-defined]
    store._client.put_object = put_object  # type: ignore[attr-defined]
    result = upload(store, request("pvc", "u1", None, ("u1",), src, (age.recipient,)), mac_key(tmp_path),
                    part_size=part, compress=["cat"])
    assert len(result.manifest.parts) == 3
    assert bodies and max(bodies) <= PIECE_SIZE  # never a whole part in one body
    assert 2 <= peak <= DEFAULT_CONCURRENCY
    assert len(store._pieces._free) <= DEFAULT_CONCURRENCY + 1  # type: ignore[attr-defined]
    out = tmp_path / "out.bin"
    restore(store, "pvc", "u1", age.identity, appending_sink(out), mac_key(tmp_path), decompress=["cat"])
    assert out.read_bytes() == src.read_bytes()


def test_invariant_9_server_gone_mid_part_is_raised_as_unreachable_then_resumes(tmp_path: Path) -> None:
    """The S3 server stops while a part's pieces are being sent: the upload raises
    StoreUnreachable (not a hang, not age's broken pipe), writes no manifest, and its
    journal names only complete parts, in order; a run against the server restarted on the same
    data resumes from there and restores byte-exact."""
    from subvault.stores import StoreUnreachable

    age = make_age_key(tmp_path / "id.txt")
    root = tmp_path / "s3root"
    server = S3Server.start(root)
    try:
        server.make_bucket("gone")
        store = S3Store("gone", "vps1", Credentials(server.access_key, server.secret_key), endpoint=server.endpoint,
                        concurrency=CONCURRENCY, piece_size=PIECE, max_attempts=1)
        src = make_stream(tmp_path / "s.bin", 3 * PART, seed=33)
        real_part = store._client.upload_part  # type: ignore[attr-defined]

        def upload_part(**kw: object) -> object:
            if str(kw["Key"]).endswith(layout.part_key("pvc", "u1", 2)) and kw["PartNumber"] == 1:
                server.stop()
            return real_part(**kw)

        store._client.upload_part = upload_part  # type: ignore[attr-defined]
        with pytest.raises(StoreUnreachable):
            upload(store, request("pvc", "u1", None, ("u1",), src, (age.recipient,)), mac_key(tmp_path),
                   part_size=PART, compress=["cat"])
    finally:
        server.stop()
    again = S3Server.start(root)
    try:
        store = S3Store("gone", "vps1", Credentials(again.access_key, again.secret_key), endpoint=again.endpoint,
                        concurrency=CONCURRENCY, piece_size=PIECE)
        assert not any(o.key.endswith(layout.MANIFEST) for o in store.list())
        journal = json.loads(store.get(layout.journal_key("pvc", "u1")))["journal"]
        done = len(journal["parts"])  # part 0 is finished before part 2 begins; part 1 may be
        assert done in (1, 2)
        for i, part in enumerate(journal["parts"]):
            assert part["key"] == layout.part_key("pvc", "u1", i)
            assert hashlib.sha256(store.get(part["key"])).hexdigest() == part["sha256"]
        result = upload(store, request("pvc", "u1", None, ("u1",), src, (age.recipient,)), mac_key(tmp_path),
                        part_size=PART, compress=["cat"])
        assert (result.parts_reused, result.parts_uploaded) == (done, 3 - done)
        out = tmp_path / "out.bin"
        restore(store, "pvc", "u1", age.identity, appending_sink(out), mac_key(tmp_path), decompress=["cat"])
        assert out.read_bytes() == src.read_bytes()
    finally:
        again.stop()
