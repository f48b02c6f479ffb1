"""Adversarial suite: two writers on one bucket prefix, and the ledger (issue 13, items 6 and 7).

Real processes against the real S3 server (`rclone serve s3`) and the file store. The
end-to-end attacks through `subvault offsite` are in tests/privileged/test_attacks_bucket.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from offsite_fixtures import T0, mac_key
from s3server import S3Server

from subvault.offsite import layout, ledger
from subvault.offsite.lease import WriterBusy, WriterLease, read_claims
from subvault.plan.retention import parse_policy
from subvault.stores import open_store

pytestmark = pytest.mark.integration

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from offsite_fixtures import mac_key
    from subvault.offsite.lease import WriterLease
    from subvault.stores import open_store

    store = open_store({url!r}, endpoint={endpoint!r}, credentials={creds!r})
    with WriterLease(store, mac_key(Path({tmp!r}))):
        print("holding", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
""")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server.start(tmp_path_factory.mktemp("s3root"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["file", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> dict:
    if request.param == "file":
        (tmp_path / "files").mkdir()
        return {"url": f"file://{tmp_path}/files", "endpoint": None, "creds": None}
    server: S3Server = request.getfixturevalue("s3")
    bucket = "b" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    server.make_bucket(bucket)
    creds = str(server.credentials_file(tmp_path / "s3.env"))
    return {"url": f"s3://{bucket}/vps1", "endpoint": server.endpoint, "creds": creds}


def _store(t: dict):
    return open_store(t["url"], endpoint=t["endpoint"], credentials=t["creds"])


def test_attack_second_writer_process_is_refused_while_the_first_holds(target: dict, tmp_path: Path) -> None:
    code = HOLDER.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), **target)
    first = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdin is not None
        assert first.stdout.readline().strip() == "holding"
        store = _store(target)
        with pytest.raises(WriterBusy, match="another offsite run writes to"):
            with WriterLease(store, mac_key(tmp_path), pause=lambda s: None):
                pass
        assert len(read_claims(store, mac_key(tmp_path))[0]) == 1  # the loser removed its claim
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "released"
    finally:
        first.kill() if first.poll() is None else None
        first.wait()
    with WriterLease(store, mac_key(tmp_path)):  # free again
        assert len(read_claims(store, mac_key(tmp_path))[0]) == 1
    assert not list(store.list(layout.WRITERS))


def test_attack_forged_or_lapsed_claims_do_not_block(target: dict, tmp_path: Path) -> None:
    store = _store(target)
    key = mac_key(tmp_path)
    store.put(layout.WRITERS + "20990101T000000000000Z-forged.json", b'{"claim": {}, "mac": "00"}')
    clock = [T0]
    dead = WriterLease(store, key, clock=lambda: clock[0])
    dead.__enter__()
    dead._stop.set()  # the run died: its claim is never renewed nor released
    clock[0] = T0 + timedelta(hours=1)
    with WriterLease(store, key, clock=lambda: clock[0]) as lease:
        assert any("fails authentication" in w for w in lease.warnings)
    assert [o.key for o in store.list(layout.WRITERS)] == [layout.WRITERS + "20990101T000000000000Z-forged.json"]


def test_attack_ledger_replayed_or_emptied_is_detected_with_the_cache(target: dict, tmp_path: Path) -> None:
    store = _store(target)
    key = mac_key(tmp_path)
    cache = tmp_path / "state" / "ledger.json"
    first = ledger.Ledger("pvc", 1, {"a": T0})
    ledger.save(store, key, first)
    old = store.get(layout.ledger_key("pvc"))
    second = ledger.Ledger("pvc", 2, {"a": T0, "b": T0 + timedelta(days=1)})
    ledger.save(store, key, second)
    ledger.remember(cache, second)
    found, why = ledger.load(store, key, "pvc")
    assert found == second and why is None
    j = ledger.judge("pvc", found, why, ledger.read_cache(cache), {"a"})
    assert set(j.gone) == {"b"} and any("is gone" in p for p in j.problems)
    store.put(layout.ledger_key("pvc"), old)  # replay the older ledger
    found, why = ledger.load(store, key, "pvc")
    j = ledger.judge("pvc", found, why, ledger.read_cache(cache), {"a"})
    assert any("rolled back" in p for p in j.problems) and set(j.gone) == {"b"}
    ledger.remember(cache, found)
    assert ledger.read_cache(cache) == second  # the cache never goes back
    # without the cache (state dir lost) the bucket's ledger is trusted as found
    j = ledger.judge("pvc", found, why, None, {"a"})
    assert not j.problems and not j.gone
    # a gone point stays listed until the keep policy would drop it
    nxt = ledger.next_ledger("pvc", ledger.judge("pvc", found, why, second, {"a"}), found, {"a": T0}, (),
                             parse_policy("8d"), T0 + timedelta(days=2), T0.tzinfo)
    assert set(nxt.points) == {"a", "b"} and nxt.generation == 3
    nxt = ledger.next_ledger("pvc", ledger.judge("pvc", found, why, second, {"a"}), found,
                             {"a": T0, "c": T0 + timedelta(days=40)}, (), parse_policy("1d"),
                             T0 + timedelta(days=40), T0.tzinfo)
    assert set(nxt.points) == {"a", "c"}
    # the whole subvolume emptied, ledger and all: this host's cache still knows
    for info in list(store.list("pvc/")):
        store.delete(info.key)
    found, why = ledger.load(store, key, "pvc")
    j = ledger.judge("pvc", found, why, second, set())
    assert found is None and set(j.gone) == {"a", "b"} and any("rolled back or emptied" in p for p in j.problems)
    store.put(layout.ledger_key("pvc"), old.replace(b'"generation": 1', b'"generation": 9'))
    found, why = ledger.load(store, key, "pvc")
    assert found is None and "fails authentication" in str(why)


def _two_points(store, tmp_path: Path):
    from offsite_fixtures import make_age_key, make_stream, request

    from subvault.offsite.upload import upload

    age = make_age_key(tmp_path / "id.txt")
    src = make_stream(tmp_path / "s", 3 * (64 << 10), seed=7)
    key = mac_key(tmp_path)
    upload(store, request("pvc", "a", None, ("a",), src, (age.recipient,), hours=0), key, part_size=64 << 10)
    upload(store, request("pvc", "b", "a", ("a", "b"), src, (age.recipient,), hours=24), key, part_size=64 << 10)
    return key


def test_attack_deleted_or_resized_part_makes_the_point_and_its_dependents_not_whole(target: dict, tmp_path: Path) -> None:
    from subvault.offsite.target import scan

    store = _store(target)
    key = _two_points(store, tmp_path)
    assert [p.uuid for p in scan(store, key, "pvc").points] == ["a", "b"]
    store.delete(layout.part_key("pvc", "a", 1))
    state = scan(store, key, "pvc")
    assert state.points == [] and set(state.damaged) == {"a", "b"}
    assert any(p.key == layout.part_key("pvc", "a", 1) and p.what == "missing" for p in state.problems)


def test_attack_new_key_with_a_leftover_journal_deletes_nothing(target: dict, tmp_path: Path) -> None:
    from subvault.offsite.manifest import MacKey
    from subvault.offsite.plan import LocalSnapshot, plan_offsite
    from subvault.offsite.target import apply_deletions, scan
    from subvault.timeutil import parse_duration

    store = _store(target)
    _two_points(store, tmp_path)
    store.put(layout.journal_key("pvc", "b"), b'{"journal": {"parent_uuid": "a"}, "mac": ""}')
    before = sorted(o.key for o in store.list())
    other = MacKey.load_or_create(tmp_path / "new.mac")
    state = scan(store, other, "pvc")
    assert state.in_progress == {}  # a folder with a manifest is never an unfinished upload
    plan = plan_offsite(state.points, [LocalSnapshot("c", T0 + timedelta(days=2))], parse_policy("latest"),
                        parse_duration("30d"), T0 + timedelta(days=2), T0.tzinfo, {"b": "a"})
    apply_deletions(store, "pvc", plan.delete)  # even if asked to, an abandoned upload with a manifest stays
    assert sorted(o.key for o in store.list()) == before


def test_restore_of_an_older_point_by_its_time_is_not_refused() -> None:
    """Item 7: a gone newer point refuses `--at latest`, never `--at` the older point's own time."""
    reference = ledger.Ledger("pvc", 2, {"a": T0, "b": T0 + timedelta(hours=1), "c": T0}, {"a": 1, "b": 2, "c": 2})
    j = ledger.judge("pvc", reference, None, None, {"a"})
    latest = T0 + timedelta(days=1)
    assert ledger.newer_gone(j, T0, 1, latest) == [(T0, "c"), (T0 + timedelta(hours=1), "b")]
    assert ledger.newer_gone(j, T0, 2, T0) == []  # nothing gone is ordered after (T0, chain 2) up to T0
    assert ledger.newer_gone(j, T0, 1, T0) == [(T0, "c")]  # same second, longer chain: newer


def test_a_claim_left_by_a_killed_run_on_this_host_does_not_block_the_next_run(tmp_path):
    # A run killed mid-upload left its claim: the next run on the same host goes on at
    # once (its pid is gone), instead of waiting out the claim's 15 minutes.
    import socket
    import subprocess
    import sys
    from datetime import timedelta

    from subvault.offsite.lease import Claim, WriterLease
    from subvault.offsite.manifest import MacKey
    from subvault.stores.file import FileStore
    from subvault.timeutil import utcnow

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "bucket").mkdir()
    store = FileStore(tmp_path / "bucket")
    key = MacKey(b"k" * 32)
    now = utcnow()
    stale = WriterLease(store, key)
    stale._put(Claim("_subvault/writers/20260101T000000000000Z-dead.json", socket.gethostname(), dead.pid, now, now + timedelta(minutes=15)))
    with WriterLease(store, key):
        pass
    assert [i.key for i in store.list("_subvault/writers/")] == []
