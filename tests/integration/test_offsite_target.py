"""The offsite target's state: scan, deletions in order, and holds when the bucket is down."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from offsite_fixtures import T0, mac_key, make_age_key, make_stream, request
from s3server import free_port

from subvault.offsite import layout
from subvault.offsite.plan import LocalSnapshot, lock_until, plan_offsite
from subvault.offsite.target import apply_deletions, holds_for_pruner, scan
from subvault.offsite.upload import upload
from subvault.plan.retention import parse_policy
from subvault.stores import open_store
from subvault.timeutil import parse_duration

pytestmark = pytest.mark.integration
PART = 64 << 10


@pytest.fixture
def populated(tmp_path: Path):
    age = make_age_key(tmp_path / "id.txt")
    store = open_store(f"memory://{tmp_path.name}")
    key = mac_key(tmp_path)
    src = make_stream(tmp_path / "s", 2 * PART, seed=31)
    upload(store, request("pvc", "a", None, ("a",), src, (age.recipient,), hours=0), key, part_size=PART)
    upload(store, request("pvc", "b", "a", ("a", "b"), src, (age.recipient,), hours=24), key, part_size=PART)
    upload(store, request("pvc", "c", None, ("c",), src, (age.recipient,), hours=48), key, part_size=PART)
    store.put(layout.journal_key("pvc", "d"), b'{"journal": {"parent_uuid": "c"}, "mac": ""}')
    return store, key


def test_scan_reads_points_and_unfinished_uploads(populated) -> None:
    store, key = populated
    state = scan(store, key, "pvc")
    assert sorted(p.uuid for p in state.points) == ["a", "b", "c"]
    assert state.in_progress == {"d": "c"} and state.problems == ()


def test_planned_deletions_remove_whole_snapshots_and_keep_chains(populated) -> None:
    """Invariant 4, end to end: keep 'latest' drops the old chain, never the kept one."""
    store, key = populated
    state = scan(store, key, "pvc")
    local = [LocalSnapshot("c", T0 + timedelta(hours=48))]
    plan = plan_offsite(state.points, local, parse_policy("latest"), parse_duration("30d"),
                        T0 + timedelta(days=3), T0.tzinfo, state.in_progress)
    assert {d.uuid for d in plan.delete} == {"a", "b", "d"}
    deleted = apply_deletions(store, "pvc", plan.delete)
    assert deleted[0] == layout.manifest_key("pvc", "a")  # the manifest goes first
    assert {o.key.split("/")[1] for o in store.list("pvc/")} == {"c"}
    assert [p.uuid for p in scan(store, key, "pvc").points] == ["c"]


def test_unreachable_bucket_holds_what_the_chain_needs(populated, tmp_path: Path) -> None:
    """Issue 6 fault: the bucket unreachable must not let the local pruner delete the chain's base."""
    store, key = populated
    cache = tmp_path / "state" / "offsite-holds.json"
    local = [LocalSnapshot(u, T0 + timedelta(hours=h)) for u, h in [("b", 24), ("c", 48), ("x", 60)]]
    holds, warning = holds_for_pruner(store, key, "pvc", local, cache)
    assert warning is None and "c" in holds and "x" not in holds

    creds = tmp_path / "c.env"
    creds.write_text("AWS_ACCESS_KEY_ID=AKIDUNREACH\nAWS_SECRET_ACCESS_KEY=unreachable-secret\n")
    creds.chmod(0o600)
    down = open_store("s3://b/p", endpoint=f"http://127.0.0.1:{free_port()}", credentials=creds)
    cached, warning = holds_for_pruner(down, key, "pvc", local, cache)
    assert set(cached) == set(holds) and warning and "cached" in warning
    cache.unlink()
    everything, warning = holds_for_pruner(down, key, "pvc", local, cache)
    assert set(everything) == {"b", "c", "x"} and warning and "holding every local snapshot" in warning


def test_lock_until_covers_the_chain() -> None:
    created = T0
    assert lock_until(created, parse_policy("8d 5w 12m"), parse_duration("30d")) == created + timedelta(days=30 + 372)
    assert lock_until(created, parse_policy("all"), parse_duration("30d")) is None
    assert lock_until(created, parse_policy("*d"), parse_duration("30d")) is None
