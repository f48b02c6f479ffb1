"""Drill verdicts: RPO, fstab resolution, UUID comparison, rendering."""

from __future__ import annotations

from datetime import timedelta

from test_dr_sample import ESP, FS, NOW, choices, fstab, sample_manifest, table

from subvault.dr.parse import parse_sfdisk_dump, render_sfdisk_script
from subvault.dr.report import Check, DrillReport, RestoredFs, compare_ids, render_report, resolve_fstab, rpo

SUBS = frozenset({"root", "var", "var_lib_pvc", "var_cache"})


def restored(**over):
    esp = RestoredFs("vda", 1, "vfat", ESP, "ESP")
    btrfs = RestoredFs("vda", 2, "btrfs", FS, "fedora", subvolumes=SUBS)
    return [over.get("esp", esp), over.get("btrfs", btrfs)]


def test_rpo_is_the_age_of_the_oldest_point():
    c = choices(timedelta(hours=2))
    c["data"] = c["data"].__class__("data", "e", NOW - timedelta(hours=5), "u")
    assert rpo(c, NOW) == timedelta(hours=5)
    assert rpo({}, NOW) == timedelta(0)


def test_fstab_resolves_on_the_restored_disk():
    checks = resolve_fstab(fstab(), restored())
    assert [c.name for c in checks] == ["fstab /", "fstab /boot/efi", "fstab /var", "fstab /var/lib/pvc", "fstab /var/cache"]
    assert all(c.ok for c in checks)  # tmpfs is not a filesystem on the disk


def test_fstab_fails_on_a_missing_subvolume_or_uuid():
    from subvault.dr.report import RestoredFs as R

    checks = resolve_fstab(fstab(), restored(btrfs=R("vda", 2, "btrfs", FS, "fedora", subvolumes=frozenset({"root"})), esp=R("vda", 1, "vfat", "FFFF-0000", "ESP")))
    bad = {c.name: c.detail for c in checks if not c.ok}
    assert "fstab /boot/efi" in bad and "no subvolume var_lib_pvc" in bad["fstab /var/lib/pvc"]


def test_ids_match_the_capture():
    tables = {"vda": parse_sfdisk_dump(render_sfdisk_script(table()))}
    assert all(c.ok for c in compare_ids(sample_manifest(), tables, restored()))


def test_ids_differ():
    from subvault.dr.report import RestoredFs as R

    checks = compare_ids(sample_manifest(), {}, restored(esp=R("vda", 1, "vfat", "0000-0000", "ESP")))
    assert {c.name for c in checks if not c.ok} == {"partition table vda", "filesystem vda:1"}


def test_report_json_and_text():
    r = DrillReport("pi", "latest", 12.34, 7200.0, {"root": NOW.isoformat()}, [Check("subvolume root", True)])
    assert r.ok and r.to_json()["rto_seconds"] == 12.34
    text = "\n".join(render_report(r))
    assert "RTO 12.3s" in text and "RPO 2h" in text
    r.checks.append(Check("digest root", False, "differs"))
    assert not r.ok and "FAIL digest root" in "\n".join(render_report(r))


def test_a_report_without_checks_is_not_ok():
    assert not DrillReport("pi", "latest", 1, 1, {}).ok


def test_a_disk_captured_without_a_table_must_have_none():
    from dataclasses import replace

    from subvault.dr.parse import no_table

    m = sample_manifest()
    m = replace(m, disks=(replace(m.disks[0], table=no_table()),))
    assert compare_ids(m, {"vda": None}, restored())[0].ok
    stale = compare_ids(m, {"vda": table()}, restored())[0]
    assert not stale.ok and "where the capture has none" in stale.detail
