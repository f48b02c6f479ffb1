"""Killed during upload: the next run resumes from the last complete part (issue 6, faults)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from offsite_fixtures import appending_sink, mac_key, make_age_key, make_stream, request

from subvault.offsite import layout
from subvault.offsite.restore import restore, verify_target
from subvault.offsite.upload import upload
from subvault.stores import open_store

pytestmark = pytest.mark.integration
PART = 512 << 10

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from offsite_fixtures import mac_key, request
    from pathlib import Path
    from subvault.offsite.upload import upload
    from subvault.stores import open_store

    store = open_store({url!r})
    real_put = store.put
    def put(key, data, **kw):
        real_put(key, data, **kw)
        print("stored", key, flush=True)
    store.put = put
    req = request("pvc", "u1", None, ("u1",), Path({src!r}), ({recipient!r},))
    upload(store, req, mac_key(Path({tmp!r})), part_size={part})
    print("done", flush=True)
""")


def _run_child_until_journal(url: str, src: Path, recipient: str, tmp: Path, journal_writes: int) -> None:
    """Start an uploading process and SIGKILL its whole group after `journal_writes` journal updates."""
    code = CHILD.format(tests=str(Path(__file__).parent), url=url, src=str(src), recipient=recipient,
                        tmp=str(tmp), part=PART)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             start_new_session=True, cwd=Path(__file__).parents[2])
    seen = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            assert line.strip() != "done", "the upload finished before it could be killed"
            if line.strip().endswith(layout.JOURNAL):
                seen += 1
                if seen == journal_writes:
                    os.killpg(child.pid, signal.SIGKILL)
                    break
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def test_killed_upload_resumes_from_last_complete_part(tmp_path: Path) -> None:
    age = make_age_key(tmp_path / "id.txt")
    (tmp_path / "bucket").mkdir()
    url = f"file://{tmp_path}/bucket"
    store = open_store(url)
    src = make_stream(tmp_path / "stream.bin", 12 * PART, seed=11)
    _run_child_until_journal(url, src, age.recipient, tmp_path, journal_writes=3)

    assert not any(o.key.endswith(layout.MANIFEST) for o in store.list())  # invariant 4
    journal = json.loads(store.get(layout.journal_key("pvc", "u1")))["journal"]
    assert len(journal["parts"]) >= 3

    result = upload(store, request("pvc", "u1", None, ("u1",), src, (age.recipient,)), mac_key(tmp_path),
                    part_size=PART)
    assert result.parts_reused == len(journal["parts"])
    assert result.parts_reused + result.parts_uploaded == len(result.manifest.parts)
    out = tmp_path / "restored.bin"
    restore(store, "pvc", "u1", age.identity, appending_sink(out), mac_key(tmp_path))
    assert out.read_bytes() == src.read_bytes()
    assert verify_target(store, mac_key(tmp_path)) == []
    assert not [o for o in store.list("pvc/u1/") if o.key.endswith(layout.JOURNAL)]


def test_resume_reuploads_from_where_the_stream_differs(tmp_path: Path) -> None:
    """The stream is checked, not trusted: parts after the first differing slice are uploaded anew."""
    age = make_age_key(tmp_path / "id.txt")
    store = open_store("memory://resume")
    key = mac_key(tmp_path)
    src = make_stream(tmp_path / "a.bin", 5 * PART, seed=12)
    req = request("pvc", "u1", None, ("u1",), src, (age.recipient,))

    real_put = store.put

    def failing_put(k: str, data: bytes, **kw: object) -> None:
        if k.endswith("part-000003.zst.age"):
            raise OSError("simulated crash")
        real_put(k, data, **kw)

    store.put = failing_put  # type: ignore[method-assign]  # a fault injected into this one store object
    with pytest.raises(OSError):
        upload(store, req, key, part_size=PART, compress=["cat"])
    store.put = real_put  # type: ignore[method-assign]  # the fault removed again

    changed = bytearray(src.read_bytes())
    changed[2 * PART + 10] ^= 0xFF
    src.write_bytes(bytes(changed))
    result = upload(store, req, key, part_size=PART, compress=["cat"])
    assert (result.parts_reused, result.parts_uploaded) == (2, 3)
    out = tmp_path / "out.bin"
    restore(store, "pvc", "u1", age.identity, appending_sink(out), key, decompress=["cat"])
    assert out.read_bytes() == bytes(changed)


def test_stray_parts_of_a_longer_attempt_are_removed(tmp_path: Path) -> None:
    age = make_age_key(tmp_path / "id.txt")
    store = open_store("memory://stray")
    key = mac_key(tmp_path)
    src = make_stream(tmp_path / "a.bin", 2 * PART, seed=13)
    store.put(layout.part_key("pvc", "u1", 7), b"left by an earlier, longer attempt")
    result = upload(store, request("pvc", "u1", None, ("u1",), src, (age.recipient,)), key, part_size=PART)
    assert sorted(o.key for o in store.list("pvc/u1/part-")) == [p.key for p in result.manifest.parts]
