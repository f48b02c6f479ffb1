"""The streaming upload executor under faults: every stage checked, nothing half-done journaled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from offsite_fixtures import T0, appending_sink, mac_key, make_age_key, make_stream, request

from subvault.errors import CommandFailed
from subvault.offsite import layout
from subvault.offsite.restore import restore, verify_target
from subvault.offsite.upload import UploadRequest, upload
from subvault.stores import open_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
PART = 256 << 10


@pytest.fixture(params=["buffered", "staged"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """A store taking parts as bytes (memory://) and one that lets age write them in place."""
    if request.param == "buffered":
        return open_store(f"memory://{tmp_path.name}")
    (tmp_path / "bucket").mkdir()
    return open_store(f"file://{tmp_path}/bucket")


def _no_temporaries(tmp_path: Path) -> bool:
    return not [p for p in (tmp_path / "bucket").rglob("*") if ".tmp-" in p.name]


def _journal(store) -> dict:
    return json.loads(store.get(layout.journal_key("pvc", "u1")))["journal"]


def _manifests(store) -> list[str]:
    return [o.key for o in store.list() if o.key.endswith(layout.MANIFEST)]


def test_invariant_9_source_failing_mid_stream_journals_only_whole_slices(store, tmp_path: Path) -> None:
    """A source that dies after 2.5 parts: the error is raised, no manifest, and the
    short slice it left is not journaled; the next run resumes and restores exactly."""
    age = make_age_key(tmp_path / "id.txt")
    key = mac_key(tmp_path)
    src = make_stream(tmp_path / "s.bin", 5 * PART, seed=21)
    failing = UploadRequest("pvc", "u1", None, ("u1",), T0,
                            ["sh", "-c", f'head -c {5 * PART // 2} "$0"; exit 3', str(src)], (age.recipient,))
    with pytest.raises(CommandFailed):
        upload(store, failing, key, part_size=PART, compress=["cat"])
    assert not _manifests(store)
    # Only whole slices are journaled: both whole ones, or fewer when the source's exit
    # is noticed before the second is stored (a race the design allows); never the half.
    sizes = [p["plain_size"] for p in _journal(store)["parts"]] if any(store.list(layout.journal_key("pvc", "u1"))) else []
    assert sizes in ([], [PART], [PART, PART])
    assert _no_temporaries(tmp_path)

    result = upload(store, request("pvc", "u1", None, ("u1",), src, (age.recipient,)), key,
                    part_size=PART, compress=["cat"])
    assert (result.parts_reused, result.parts_uploaded) == (len(sizes), 5 - len(sizes))
    out = tmp_path / "out.bin"
    restore(store, "pvc", "u1", age.identity, appending_sink(out), key, decompress=["cat"])
    assert out.read_bytes() == src.read_bytes()


def test_invariant_9_failing_age_is_raised_not_hung(store, tmp_path: Path) -> None:
    """age refusing its recipient exits before reading: the feeding side sees EPIPE and
    the error names age; nothing is stored."""
    src = make_stream(tmp_path / "s.bin", 8 * PART, seed=22)
    req = request("pvc", "u1", None, ("u1",), src, ("age1notarecipient",))
    with pytest.raises(CommandFailed) as err:
        upload(store, req, mac_key(tmp_path), part_size=4 * PART, compress=["cat"])
    assert "age" in str(err.value)
    assert not list(store.list("pvc/u1/part-"))
    assert not _manifests(store)
    assert _no_temporaries(tmp_path)


def test_stream_ending_on_a_part_boundary_has_no_empty_part(store, tmp_path: Path) -> None:
    age = make_age_key(tmp_path / "id.txt")
    key = mac_key(tmp_path)
    src = make_stream(tmp_path / "s.bin", 3 * PART, seed=23)
    result = upload(store, request("pvc", "u1", None, ("u1",), src, (age.recipient,)), key,
                    part_size=PART, compress=["cat"])
    assert len(result.manifest.parts) == 3
    assert result.stream_bytes == 3 * PART
    out = tmp_path / "out.bin"
    restore(store, "pvc", "u1", age.identity, appending_sink(out), key, decompress=["cat"])
    assert out.read_bytes() == src.read_bytes()
    assert verify_target(store, key) == []


def test_journal_of_another_format_starts_the_upload_over(tmp_path: Path) -> None:
    age = make_age_key(tmp_path / "id.txt")
    store = open_store(f"memory://{tmp_path.name}")
    key = mac_key(tmp_path)
    src = make_stream(tmp_path / "s.bin", 2 * PART, seed=24)
    req = request("pvc", "u1", None, ("u1",), src, (age.recipient,))
    real_put = store.put

    def failing_put(k: str, data: bytes, **kw: object) -> None:
        if k.endswith("part-000001.zst.age"):
            raise OSError("simulated crash")
        real_put(k, data, **kw)

    store.put = failing_put  # type: ignore[method-assign]  # a fault injected into this one store object
    with pytest.raises(OSError):
        upload(store, req, key, part_size=PART, compress=["cat"])
    store.put = real_put  # type: ignore[method-assign]  # the fault removed again
    raw = json.loads(store.get(layout.journal_key("pvc", "u1")))
    raw["journal"]["format"] = 1
    raw["mac"] = key.mac_bytes(json.dumps(raw["journal"], sort_keys=True, separators=(",", ":")).encode())
    store.put(layout.journal_key("pvc", "u1"), json.dumps(raw).encode())

    result = upload(store, req, key, part_size=PART, compress=["cat"])
    assert (result.parts_reused, result.parts_uploaded) == (0, 2)
    out = tmp_path / "out.bin"
    restore(store, "pvc", "u1", age.identity, appending_sink(out), key, decompress=["cat"])
    assert out.read_bytes() == src.read_bytes()


def test_resumed_stream_ending_early_on_a_boundary_drops_the_journal_tail(tmp_path: Path) -> None:
    """The regenerated stream is a shorter prefix ending on a part boundary: the manifest
    names only its parts, not journaled parts of the longer stream beyond its end."""
    age = make_age_key(tmp_path / "id.txt")
    store = open_store(f"memory://{tmp_path.name}")
    key = mac_key(tmp_path)
    src = make_stream(tmp_path / "s.bin", 5 * PART, seed=25)
    req = request("pvc", "u1", None, ("u1",), src, (age.recipient,))
    real_put = store.put

    def failing_put(k: str, data: bytes, **kw: object) -> None:
        if k.endswith("part-000004.zst.age"):
            raise OSError("simulated crash")
        real_put(k, data, **kw)

    store.put = failing_put  # type: ignore[method-assign]  # a fault injected into this one store object
    with pytest.raises(OSError):
        upload(store, req, key, part_size=PART, compress=["cat"])
    store.put = real_put  # type: ignore[method-assign]  # the fault removed again
    assert len(_journal(store)["parts"]) == 4

    src.write_bytes(src.read_bytes()[:2 * PART])
    result = upload(store, req, key, part_size=PART, compress=["cat"])
    assert (result.parts_reused, result.parts_uploaded, len(result.manifest.parts)) == (2, 0, 2)
    out = tmp_path / "out.bin"
    restore(store, "pvc", "u1", age.identity, appending_sink(out), key, decompress=["cat"])
    assert out.read_bytes() == src.read_bytes()


def test_journal_stays_a_contiguous_prefix_when_a_part_fails_with_the_next_one_queued(tmp_path: Path) -> None:
    """Part 1's store fails after part 2 is already queued behind it: part 2 must not be
    stored nor journaled (in position 1, where part 1 belongs); the journal names part 0 only."""
    import threading

    age = make_age_key(tmp_path / "id.txt")
    store = open_store(f"memory://{tmp_path.name}")
    src = make_stream(tmp_path / "s.bin", 4 * PART, seed=26)
    queued = threading.Event()
    real_put = store.put

    def failing_put(k: str, data: bytes, **kw: object) -> None:
        if k.endswith("part-000001.zst.age"):
            assert queued.wait(30), "part 2 was never queued"
            raise OSError("simulated store failure")
        real_put(k, data, **kw)

    def progress(parts: int, _bytes: int) -> None:
        if parts == 3:  # slice 2 is committed: part 2 is queued behind part 1
            queued.set()

    store.put = failing_put  # type: ignore[method-assign]
    with pytest.raises(OSError, match="simulated"):
        upload(store, request("pvc", "u1", None, ("u1",), src, (age.recipient,)), mac_key(tmp_path),
               part_size=PART, compress=["cat"], progress=progress)
    assert [p["key"] for p in _journal(store)["parts"]] == [layout.part_key("pvc", "u1", 0)]
    assert not any(o.key == layout.part_key("pvc", "u1", 2) for o in store.list())
