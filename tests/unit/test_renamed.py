"""run/renamed.py: the names remembered per target, and the refusal's one line (invariant 7)."""

from __future__ import annotations

from subvault.model import Entry
from subvault.run.renamed import NAMES_FILE, Renamed, known_names, refusal, remember_names


def test_remembered_names_are_a_union_per_target_and_a_damaged_file_reads_as_none(tmp_path):
    assert known_names(tmp_path, "pi") == []
    assert remember_names(tmp_path, "pi", ["data", "pvc"]) is None
    assert remember_names(tmp_path, "pi", ["files"]) is None
    assert remember_names(tmp_path, "usb", ["data"]) is None
    assert known_names(tmp_path, "pi") == ["data", "files", "pvc"]
    assert known_names(tmp_path, "usb") == ["data"]
    (tmp_path / NAMES_FILE).write_text("{not json")
    assert known_names(tmp_path, "pi") == []


def test_invariant_7_refusal_names_the_old_directory_and_both_fixes():
    found = Renamed("data", "/mnt/backup/vps1/data", 3)
    msg = str(refusal("files→pi", "files", "/srv/data", found, None))
    assert "\n" not in msg and msg.startswith("files→pi: ")
    assert "/mnt/backup/vps1/data holds 3" in msg and 'set name = "data" back for path /srv/data' in msg
    fix = msg.split("`")[1]
    assert fix.startswith("cd /mnt/backup/vps1 && mv -T -- data files && for e in files/data.*;"), fix
    # the new name's container already made: deleted when empty, moved aside (never deleted) when it holds anything
    assert "rmdir -- files && mv -T -- data files" in str(refusal("s", "files", "/p", found, []))
    partial = [Entry("snapshot", "u", None, readonly=False, incoming=True)]
    assert "mv -T -- files .files.aside && mv -T -- data files" in str(refusal("s", "files", "/p", found, partial))

    # two names swapped: the new name's container holds another subvolume's receives; only the config can say
    other = [Entry("files.20261120T000000Z", "u", "r", readonly=True)]
    swapped = str(refusal("s", "files", "/p", found, other))
    assert "swapped" in swapped and 'set name = "data" back' in swapped and "mv" not in swapped
