"""The offsite layer on real btrfs: send | zstd | age into a file:// store, restore with btrfs receive."""

from __future__ import annotations

import json
import subprocess

import pytest

from subvault.btrfs import adapter, local_scan


@pytest.fixture
def offsite(homelab, tmp_path):
    key = tmp_path / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    homelab.config.write_text(homelab.config.read_text().replace("prechange_keep = 10", 'prechange_keep = 10\ntargets = ["offsite"]') + f'''
[[target]]
name = "offsite"
type = "object"
url = "file://{bucket}"
recipients = ["{recipient}"]
keep = "8d 5w 12m"
full_every = "30d"
part_size_mib = 1
mac_key = "{tmp_path}/offsite.mac"
''')
    return key, bucket


def _offsite(homelab, *args):
    return json.loads(homelab.cli("offsite", "--json", *args).stdout)["result"]


def test_upload_full_then_incremental_and_restore(homelab, offsite, tmp_path):
    key, bucket = offsite
    homelab.cli("snapshot")
    first = _offsite(homelab)
    ups = [i for i in first["items"] if i["action"] == "uploaded"]
    assert len(ups) == 8 and all(i["data"]["full"] for i in ups)
    pvc = homelab.paths["var_lib_pvc"]
    (pvc / "nextcloud" / "new.txt").write_text("after the first upload\n")
    homelab.cli("snapshot", "--force")
    second = _offsite(homelab, "--target", "offsite")
    incs = [i for i in second["items"] if i["action"] == "uploaded"]
    assert len(incs) == 8 and not any(i["data"]["full"] for i in incs)
    # every object is present with its hash; the MAC key never lands in the bucket
    homelab.cli("verify", "--target", "offsite", "--deep", "--identity", str(key))
    assert not any(p.name.endswith(".mac") for p in bucket.rglob("*"))
    into = homelab.paths["var_tmp"]
    homelab.cli("restore", "var_lib_pvc", "--from", "offsite", "--at", "latest", "--into", str(into), "--identity", str(key))
    restored = into / "var_lib_pvc"
    assert (restored / "nextcloud" / "new.txt").read_text() == "after the first upload\n"
    assert (restored / "nextcloud" / "blob.bin").read_bytes() == (pvc / "nextcloud" / "blob.bin").read_bytes()
    assert not adapter.show(restored).readonly
    assert not (into / ".subvault-offsite").exists()


def test_wrong_identity_is_a_clear_error(homelab, offsite, tmp_path):
    homelab.cli("snapshot")
    _offsite(homelab)
    other = tmp_path / "other.key"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    proc = homelab.cli("restore", "home", "--from", "offsite", "--into", str(homelab.paths["var_tmp"]), "--identity", str(other), check=False)
    assert proc.returncode == 1
    assert "does not decrypt this backup" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (homelab.paths["var_tmp"] / "home").exists()


def test_missing_or_corrupt_part_is_named_and_restore_refuses(homelab, offsite, tmp_path):
    key, bucket = offsite
    homelab.cli("snapshot")
    _offsite(homelab)
    parts = sorted(p for p in (bucket / "var_lib_pvc").rglob("part-*"))
    parts[0].write_bytes(b"garbage")
    proc = homelab.cli("verify", "--target", "offsite", check=False)
    assert proc.returncode != 0 and parts[0].name in proc.stderr
    proc = homelab.cli("restore", "var_lib_pvc", "--from", "offsite", "--into", str(homelab.paths["var_tmp"]), "--identity", str(key), check=False)
    assert proc.returncode == 1 and "refusing to restore" in proc.stderr and parts[0].name in proc.stderr
    assert not (homelab.paths["var_tmp"] / "var_lib_pvc").exists()


def test_unreachable_bucket_keeps_what_the_chain_needs_locally(homelab, offsite, tmp_path):
    key, bucket = offsite
    homelab.cli("snapshot")
    _offsite(homelab)
    base = {s.uuid for s in local_scan.scan("data", homelab.paths["data"])}
    bucket.rename(tmp_path / "bucket-gone")  # the NAS is not mounted
    proc = homelab.cli("offsite", check=False)
    assert proc.returncode == 1
    assert "offsite: " in proc.stderr and "directory does not exist (is the disk mounted?)" in proc.stderr
    # a tight timeline would delete the base; the offsite chain holds it
    homelab.config.write_text(homelab.config.read_text().replace('timeline = "24h 7d 4w"', 'timeline = "latest"'))
    homelab.cli("snapshot", "--force")
    homelab.cli("prune")
    left = {s.uuid for s in local_scan.scan("data", homelab.paths["data"])}
    assert base <= left


def test_invariant_10_recipe_restores_with_standard_tools_only(homelab, offsite, tmp_path):
    """Invariant 10: age, zstd and btrfs receive alone restore what the bucket holds."""
    key, bucket = offsite
    homelab.cli("snapshot")
    _offsite(homelab)
    (homelab.paths["home"] / "user" / "later.txt").write_text("two\n")
    homelab.cli("snapshot", "--force")
    _offsite(homelab)
    sub = bucket / "home"
    manifests = [json.loads(m.read_text()) for m in sub.glob("*/manifest.json")]
    newest = max(manifests, key=lambda m: (m["created"], len(m["chain"])))
    dest = homelab.paths["var_tmp"] / "recipe"
    dest.mkdir()
    for link in newest["chain"]:
        manifest = json.loads((sub / link / "manifest.json").read_text())
        d = dest / link
        d.mkdir()
        decrypted = b"".join(
            subprocess.run(["age", "-d", "-i", str(key), str(bucket / p["key"])], check=True, capture_output=True).stdout
            for p in manifest["parts"]
        )
        plain = subprocess.run(["zstd", "-d", "-c"], input=decrypted, check=True, capture_output=True).stdout
        subprocess.run(["btrfs", "receive", str(d)], input=plain, check=True, capture_output=True)
    restored = dest / newest["chain"][-1] / "snapshot"
    assert (restored / "user" / "later.txt").read_text() == "two\n"


def _set_date(snapdir, date_text):
    info = snapdir / "info.xml"
    import re

    info.write_text(re.sub(r"<date>[^<]*</date>", f"<date>{date_text}</date>", info.read_text()))


def test_offsite_restore_points_are_addressed_by_number_and_uuid_even_within_one_second(homelab, offsite, tmp_path):
    """`--at 3` is a snapshot number as --help says; two points of one second differ; numbers outlive the machine."""
    import re

    key, bucket = offsite
    home = homelab.paths["home"]
    homelab.cli("snapshot")
    _offsite(homelab, "--target", "offsite")
    (home / "user" / "notes.txt").write_text("second, same second\n")
    homelab.cli("snapshot", "--force")
    snaps = home / ".snapshots"
    first_date = re.search(r"<date>([^<]*)</date>", (snaps / "1" / "info.xml").read_text()).group(1)
    _set_date(snaps / "2", first_date)
    _offsite(homelab, "--target", "offsite")
    uuid1 = adapter.show(snaps / "1" / "snapshot").uuid
    scratch = homelab.paths["var_tmp"]

    def restore(at, name, *extra, check=True):
        into = scratch / name
        into.mkdir(exist_ok=True)
        return homelab.cli("restore", "home", "--from", "offsite", "--at", at, "--into", str(into), "--identity", str(key), *extra, check=check)

    for at, name, want in [("1", "n1", "remember the drill\n"), ("2", "n2", "second, same second\n"),
                           (uuid1, "u1", "remember the drill\n"), (uuid1[:8], "p1", "remember the drill\n"),
                           ("latest", "l", "second, same second\n")]:
        promised = json.loads(restore(at, name, "--dry-run", "--json").stdout)["result"]["items"][0]["detail"]
        done = json.loads(restore(at, name, "--json").stdout)["result"]["items"][0]["detail"]
        assert (scratch / name / "home" / "user" / "notes.txt").read_text() == want, at
        assert promised.split(" -> ")[0] == done.split(" -> ")[0]
    # the machine is gone: the number comes from the manifest, not from a local snapshot
    subprocess.run(["btrfs", "subvolume", "delete", str(snaps / "1" / "snapshot")], check=True, capture_output=True)
    subprocess.run(["rm", "-r", str(snaps / "1")], check=True)
    restore("1", "gone")
    assert (scratch / "gone" / "home" / "user" / "notes.txt").read_text() == "remember the drill\n"
    missing = restore("9", "none", check=False)
    assert missing.returncode == 1 and "no restore point #9" in missing.stderr and "#2" in missing.stderr
    bad = restore("tuesday", "none", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "not a snapshot number, uuid or time" in bad.stderr


@pytest.mark.parametrize("lose", ["manifest", "part"])
def test_a_chain_that_lost_its_full_is_never_up_to_date_and_the_next_upload_is_a_full(homelab, offsite, tmp_path, lose):
    """The newest chain's full object is lost: offsite uploads a full at once, status and check say so in whole words."""
    import shutil

    key, bucket = offsite
    home = homelab.paths["home"]
    homelab.cli("snapshot")
    _offsite(homelab)
    (home / "user" / "notes.txt").write_text("changed\n")
    homelab.cli("snapshot", "--force")
    _offsite(homelab)
    full = next(m for m in (bucket / "home").glob("*/manifest.json") if json.loads(m.read_text())["parent_uuid"] is None)
    if lose == "manifest":
        shutil.rmtree(full.parent)
    else:
        next(full.parent.glob("part-*")).unlink()
    full_uuid = full.parent.name

    status = homelab.cli("status").stdout
    row = next(line for line in status.splitlines() if line.startswith("home") and "offsite" in line)
    assert row.split()[2] == "never", "a point that cannot be restored is not fresh"
    error = next(line for line in status.splitlines() if line.startswith("error: home offsite:offsite"))
    assert full_uuid in error and "cannot be restored" in error
    check = homelab.cli("check", check=False)
    assert check.returncode == 1 and full_uuid in check.stdout + check.stderr

    dry = json.loads(homelab.cli("offsite", "--dry-run", "--json").stdout)["result"]
    item = next(i for i in dry["items"] if i["subject"] == "home→offsite")
    assert item["action"] == "would-upload" and "full:" in item["detail"] and "full: full" not in item["detail"]
    assert full_uuid in item["detail"]
    res = json.loads(homelab.cli("offsite", "--json").stdout)["result"]
    home_items = [i for i in res["items"] if i["subject"] == "home→offsite"]
    assert [i["action"] for i in home_items] == ["uploaded"] and home_items[0]["data"]["full"]
    assert "full: full" not in home_items[0]["detail"] and full_uuid in home_items[0]["data"]["reason"]
    again = json.loads(homelab.cli("offsite", "--json").stdout)["result"]
    # a full whose part is lost stays (kept by policy) and is still reported damaged; one whose manifest is gone is gone
    assert [i["action"] for i in again["items"] if i["subject"] == "home→offsite"] == ["up-to-date" if lose == "manifest" else "damaged"]
    status = homelab.cli("status").stdout
    row = next(line for line in status.splitlines() if line.startswith("home") and "offsite" in line)
    assert row.split()[2] != "never"
    into = homelab.paths["var_tmp"]
    homelab.cli("restore", "home", "--from", "offsite", "--into", str(into), "--identity", str(key))
    assert (into / "home" / "user" / "notes.txt").read_text() == "changed\n"


def test_attack_replaced_newest_manifest_is_never_not_due_in_run(homelab, offsite):
    # The timer's `run` once said "not-due"/"up-to-date" (exit 0) while `offsite` refused.
    key, bucket = offsite
    homelab.cli("snapshot")
    _offsite(homelab)
    homelab.cli("snapshot", "--force")
    _offsite(homelab)
    manifests = sorted((bucket / "var_lib_pvc").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    manifests[-1].write_text('{"x": 1}')
    proc = homelab.cli("run", "--json", check=False)
    assert proc.returncode != 0, proc.stdout
    items = [i for i in json.loads(proc.stdout)["result"]["items"] if i["subject"] == "var_lib_pvc→offsite"]
    assert not any(i["action"] in ("not-due", "up-to-date") for i in items), items
    assert manifests[-1].read_text() == '{"x": 1}'  # reported, never deleted


def test_invariant_11_world_readable_age_identity_is_refused(homelab, offsite, tmp_path):
    key, bucket = offsite
    homelab.cli("snapshot")
    _offsite(homelab)
    key.chmod(0o644)
    proc = homelab.cli("restore", "var_lib_pvc", "--from", "offsite", "--at", "latest", "--into", str(homelab.paths["var_tmp"]),
                       "--identity", str(key), check=False)
    assert proc.returncode == 1 and "age identity" in proc.stderr and "group or others" in proc.stderr, proc.stderr
    assert not (homelab.paths["var_tmp"] / "var_lib_pvc").exists()


def test_invariant_7_a_renamed_subvolume_offsite_says_its_old_points_are_left_under_the_old_name(homelab, offsite):
    """Offsite points cannot be moved (a manifest's MAC binds its name): a new chain starts, and the run says why and what is left."""
    key, bucket = offsite
    homelab.cli("snapshot")
    _offsite(homelab)
    before = sorted(p.relative_to(bucket) for p in (bucket / "home").rglob("*"))
    homelab.config.write_text(homelab.config.read_text().replace('name = "home"', 'name = "homedir"'))
    homelab.cli("snapshot", "--force")
    result = _offsite(homelab)
    [warning] = [w for w in result["warnings"] if w.startswith("homedir→offsite")]
    assert "home/ in " in warning and "1 restore points" in warning and 'set name = "home" back' in warning, warning
    assert not [w for w in result["warnings"] if not w.startswith("homedir→")], result["warnings"]
    assert sorted(p.relative_to(bucket) for p in (bucket / "home").rglob("*")) == before, "the old points are untouched"
