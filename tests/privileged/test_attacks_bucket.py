"""Adversarial suite, layer 4: anyone with write access to the bucket (issue 13, items 5-8).

The attacker uses exactly that access: the same store (the S3 API of a real
`rclone serve s3`, or the directory of a file:// target), deleting, replacing and
copying objects, or running a second `subvault offsite` with its own state dir.
Every test ends by asserting that each kept backup still exists and restores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from subvault.offsite import layout
from subvault.stores import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from s3server import S3Server  # noqa: E402

SUB = "var_lib_pvc"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server.start(tmp_path_factory.mktemp("s3root"))
    try:
        yield server
    finally:
        server.stop()


class Bucket:
    """The target as the attacker sees it, and as the test configures it."""

    def __init__(self, url: str, toml: str, store) -> None:
        self.url, self.toml, self.store = url, toml, store

    def keys(self, prefix: str = "") -> list[str]:
        return [o.key for o in self.store.list(prefix)]

    def points(self) -> list[str]:
        return sorted(k.split("/")[1] for k in self.keys(f"{SUB}/") if k.endswith("/" + layout.MANIFEST))

    def manifest(self, uuid: str) -> dict:
        return json.loads(self.store.get(layout.manifest_key(SUB, uuid)))


@pytest.fixture(params=["file", "s3"])
def bucket(request, tmp_path) -> Bucket:
    if request.param == "file":
        root = tmp_path / "bucket"
        root.mkdir()
        url = f"file://{root}"
        return Bucket(url, f'url = "{url}"\n', open_store(url))
    server: S3Server = request.getfixturevalue("s3")
    name = "b" + os.urandom(6).hex()
    server.make_bucket(name)
    creds = server.credentials_file(tmp_path / "s3.env")
    url = f"s3://{name}/vps1"
    toml = f'url = "{url}"\nendpoint = "{server.endpoint}"\ncredentials = "{creds}"\n'
    return Bucket(url, toml, open_store(url, endpoint=server.endpoint, credentials=creds))


@pytest.fixture
def lab(homelab, bucket, tmp_path):
    key = tmp_path / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    text = homelab.config.read_text().replace(f'name = "{SUB}"\n', f'name = "{SUB}"\ntargets = ["offsite"]\n')
    homelab.config.write_text(text + f'''
[[target]]
name = "offsite"
type = "object"
{bucket.toml}recipients = ["{recipient}"]
keep = "8d 5w 12m"
full_every = "30d"
part_size_mib = 1
mac_key = "{tmp_path}/offsite.mac"
''')
    homelab.identity = key
    homelab.bucket = bucket
    homelab.mac = tmp_path / "offsite.mac"
    return homelab


def _json(lab, *args, check=True):
    proc = lab.cli(*args, "--json", check=check)
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else None


def _offsite(lab, check=True):
    proc, doc = _json(lab, "offsite", check=check)
    return proc, [i["action"] for i in doc["result"]["items"]] if doc else []


def _two_points(lab) -> tuple[str, str]:
    """Upload a full, change data, upload an incremental; return (older, newer) uuids."""
    lab.cli("snapshot")
    lab.cli("offsite")
    first = lab.bucket.points()
    (lab.paths[SUB] / "nextcloud" / "later.txt").write_text("second point\n")
    lab.cli("snapshot", "--force")
    lab.cli("offsite")
    second = [u for u in lab.bucket.points() if u not in first]
    assert len(first) == 1 and len(second) == 1
    return first[0], second[0]


def _restores(lab, at: str = "latest", name: str = "r") -> Path:
    into = lab.paths["var_tmp"] / name
    into.mkdir()
    lab.cli("restore", SUB, "--from", "offsite", "--at", at, "--into", str(into), "--identity", str(lab.identity))
    return into / SUB


def _check(lab):
    proc = lab.cli("check", check=False)
    return proc.returncode, proc.stdout + proc.stderr


def _status_count(lab) -> int:
    for line in lab.cli("status").stdout.splitlines():  # (status --json is issue 12's)
        cells = line.split()
        if cells[:2] == [SUB, "offsite:offsite"]:
            return int(cells[3])
    raise AssertionError("no offsite row in status")


def _assert_all_kept_restore(lab, expect_file: str | None = "second point\n") -> None:
    lab.cli("verify", "--target", "offsite")
    restored = _restores(lab, name="final")
    assert (restored / "nextcloud" / "blob.bin").read_bytes() == (lab.paths[SUB] / "nextcloud" / "blob.bin").read_bytes()
    if expect_file is not None:
        assert (restored / "nextcloud" / "later.txt").read_text() == expect_file


# --- item 5: tampering between verifies ---------------------------------------------------

@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_attack_damaged_part_fails_check_and_is_resent(lab, damage):
    _older, newer = _two_points(lab)
    assert _check(lab)[0] == 0 and _status_count(lab) == 2
    part = layout.part_key(SUB, newer, 0)
    if damage == "delete":
        lab.bucket.store.delete(part)
    else:
        lab.bucket.store.put(part, lab.bucket.store.get(part)[:-1])
    code, text = _check(lab)
    assert code == 1 and part in text
    assert _status_count(lab) == 1  # the damaged point is not counted
    proc, actions = _offsite(lab)
    assert "up-to-date" not in actions and "uploaded" in actions
    assert _check(lab)[0] == 0 and _status_count(lab) == 2
    _assert_all_kept_restore(lab)


def test_attack_flipped_byte_is_found_by_verify_then_resent(lab):
    _older, newer = _two_points(lab)
    code, text = _check(lab)
    assert "verify" in text  # never verified: check warns and says how often
    part = layout.part_key(SUB, newer, 0)
    data = bytearray(lab.bucket.store.get(part))
    data[len(data) // 2] ^= 0x01
    lab.bucket.store.put(part, bytes(data))
    proc = lab.cli("verify", "--target", "offsite", check=False)
    assert proc.returncode != 0 and part in proc.stderr
    code, text = _check(lab)
    assert code == 1 and newer in text  # the last verify's finding stands until it is re-sent
    _proc, actions = _offsite(lab)
    assert "uploaded" in actions
    _assert_all_kept_restore(lab)
    code, text = _check(lab)
    assert code == 0


# --- item 6: two writers, one bucket --------------------------------------------------------

def _second_writer(lab, tmp_path: Path) -> Path:
    """The same config with its own state dir: another host or a copied config."""
    other = tmp_path / "writer2.toml"
    other.write_text(lab.config.read_text().replace(str(lab.state), str(tmp_path / "state2")))
    return other


def _spawn(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "subvault.cli.main", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_attack_second_writer_while_one_is_writing_is_refused(lab, tmp_path):
    """This test process is the first writer (it holds the claim, as a running offsite does)."""
    from subvault.offsite.lease import WriterLease
    from subvault.offsite.manifest import MacKey

    lab.cli("snapshot")
    lab.cli("offsite")
    (lab.paths[SUB] / "nextcloud" / "later.txt").write_text("second point\n")
    lab.cli("snapshot", "--force")
    with WriterLease(lab.bucket.store, MacKey.load(lab.mac)):
        for config in (lab.config, _second_writer(lab, tmp_path)):
            proc = _spawn(config, "offsite")
            _out, err = proc.communicate()
            assert proc.returncode == 1 and "another offsite run" in err
        assert len(lab.bucket.points()) == 1
    lab.cli("offsite")
    assert not lab.bucket.keys("_subvault/writers/")  # released
    _assert_all_kept_restore(lab)


def test_attack_two_writers_at_once_leave_a_whole_bucket(lab, tmp_path):
    lab.cli("snapshot")
    procs = [_spawn(lab.config, "offsite"), _spawn(_second_writer(lab, tmp_path), "offsite")]
    results = [(p.communicate(), p.returncode)[::-1] for p in procs]
    codes = [code for code, _ in results]
    assert 0 in codes and set(codes) <= {0, 1}, results
    lab.cli("verify", "--target", "offsite")
    assert len(lab.bucket.points()) == 1
    restored = _restores(lab)
    assert (restored / "nextcloud" / "blob.bin").read_bytes() == (lab.paths[SUB] / "nextcloud" / "blob.bin").read_bytes()


def test_attack_forged_claim_cannot_block_backups(lab):
    lab.bucket.store.put("_subvault/writers/20260101T000000000000Z-forged.json",
                         json.dumps({"claim": {"host": "x", "pid": 1, "expires": "2999-01-01T00:00:00+00:00"}, "mac": "0" * 64}).encode())
    lab.cli("snapshot")
    lab.cli("offsite")
    assert len(lab.bucket.points()) == 1


# --- item 7: rollback -----------------------------------------------------------------------

def test_attack_newest_manifest_deleted_is_detected_and_never_silently_restored(lab):
    older, newer = _two_points(lab)
    lab.bucket.store.delete(layout.manifest_key(SUB, newer))
    code, text = _check(lab)
    assert code == 1 and newer in text and "gone" in text
    proc = lab.cli("verify", "--target", "offsite", check=False)
    assert proc.returncode != 0 and newer in proc.stderr
    into = lab.paths["var_tmp"] / "r0"
    into.mkdir()
    proc = lab.cli("restore", SUB, "--from", "offsite", "--at", "latest", "--into", str(into), "--identity", str(lab.identity), check=False)
    assert proc.returncode == 1 and newer in proc.stderr and not (into / SUB).exists()
    # (asking for the older point by its own time restores it: test_restore_of_an_older_point_by_its_time_is_not_refused;
    # here both points may be of the same second, which --at cannot tell apart)
    # the next offsite re-sends the lost point (its snapshot is still local); the alarm clears
    _proc, actions = _offsite(lab)
    assert "uploaded" in actions
    assert _check(lab)[0] == 0
    _assert_all_kept_restore(lab)


def test_attack_older_manifest_deleted_dry_run_refuses_as_the_restore_does(lab):
    """The newest point's chain runs through an older manifest that is deleted: the restore refuses,
    and its --dry-run reaches the same verdict (it said "would restore")."""
    older, newer = _two_points(lab)
    lab.bucket.store.delete(layout.manifest_key(SUB, older))
    into = lab.paths["var_tmp"] / "r0"
    into.mkdir()
    argv = ["restore", SUB, "--from", "offsite", "--at", "latest", "--into", str(into), "--identity", str(lab.identity)]
    real = lab.cli(*argv, check=False)
    dry = lab.cli(*argv, "--dry-run", check=False)
    assert real.returncode == 1 and older in real.stderr, real.stdout + real.stderr
    assert dry.returncode == real.returncode and older in dry.stderr and "would" not in dry.stdout, dry.stdout + dry.stderr
    assert not (into / SUB).exists()


def test_attack_ledger_rolled_back_with_the_newest_point(lab):
    lab.cli("snapshot")
    lab.cli("offsite")
    ledger = layout.ledger_key(SUB)
    old_ledger = lab.bucket.store.get(ledger)
    (lab.paths[SUB] / "nextcloud" / "later.txt").write_text("second point\n")
    lab.cli("snapshot", "--force")
    lab.cli("offsite")
    newer = lab.bucket.points()
    # a consistent older bucket: the older ledger replayed, the newer point's objects deleted
    for uuid in newer:
        if uuid.encode() not in old_ledger:
            for key in lab.bucket.keys(f"{SUB}/{uuid}/"):
                lab.bucket.store.delete(key)
            gone = uuid
    lab.bucket.store.put(ledger, old_ledger)
    code, text = _check(lab)
    assert code == 1 and "rolled back" in text and gone in text
    # state dir lost (a cache): the bucket's own ledger is trusted again; the next offsite heals
    shutil.rmtree(lab.state)
    assert _check(lab)[0] == 0
    lab.cli("offsite")
    _assert_all_kept_restore(lab)


def test_attack_manifest_replayed_under_another_name_is_refused_and_kept(lab):
    older, newer = _two_points(lab)
    store = lab.bucket.store
    store.put(layout.manifest_key(SUB, newer), store.get(layout.manifest_key(SUB, older)))
    code, text = _check(lab)
    assert code == 1 and "moved or swapped" in text
    proc, actions = _offsite(lab, check=False)
    assert proc.returncode != 0 or "up-to-date" not in actions
    assert layout.manifest_key(SUB, newer) in lab.bucket.keys()  # reported, not deleted
    assert any(k.startswith(f"{SUB}/{newer}/part-") for k in lab.bucket.keys())


def test_attack_parts_swapped_between_points_is_detected(lab):
    older, newer = _two_points(lab)
    store = lab.bucket.store
    a, b = layout.part_key(SUB, older, 0), layout.part_key(SUB, newer, 0)
    da, db = store.get(a), store.get(b)
    store.put(a, db)
    store.put(b, da)
    proc = lab.cli("verify", "--target", "offsite", check=False)
    assert proc.returncode != 0 and a in proc.stderr and b in proc.stderr
    assert _check(lab)[0] == 1


# --- item 8: lost MAC key -------------------------------------------------------------------

def test_attack_lost_mac_key_is_an_error_not_a_new_key(lab):
    older, newer = _two_points(lab)
    lab.mac.rename(lab.mac.with_suffix(".away"))
    before = lab.bucket.keys()
    for args in (["offsite"], ["check"]):
        proc = lab.cli(*args, check=False)
        assert proc.returncode != 0 and str(lab.mac) in proc.stdout + proc.stderr, args
        assert "copy" in proc.stdout + proc.stderr, args
    lab.cli("status")
    assert not lab.mac.exists() and lab.bucket.keys() == before
    lab.mac.with_suffix(".away").rename(lab.mac)
    _assert_all_kept_restore(lab)


def test_attack_new_mac_key_and_leftover_journal_delete_nothing(lab):
    older, newer = _two_points(lab)
    store = lab.bucket.store
    # a crash between the manifest and the journal's deletion left a journal behind
    store.put(layout.journal_key(SUB, newer), json.dumps({"journal": {"parent_uuid": older}, "mac": ""}).encode())
    lab.mac.rename(lab.mac.with_suffix(".real"))
    lab.mac.write_text(os.urandom(32).hex() + "\n")  # someone made a new key
    lab.mac.chmod(0o600)
    before = lab.bucket.keys()
    lab.cli("snapshot", "--force")
    lab.cli("offsite", check=False)
    assert set(before) <= set(lab.bucket.keys())  # nothing deleted for failing authentication
    code, text = _check(lab)
    assert code == 1 and "fails authentication" in text
    lab.mac.with_suffix(".real").replace(lab.mac)
    _assert_all_kept_restore(lab)
