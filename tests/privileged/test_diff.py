"""`subvault diff` on real btrfs: many changes, reversed order, awkward names."""

from __future__ import annotations

import json
import os
import shutil


def _snap(homelab) -> int:
    homelab.cli("snapshot", "--force")
    return max(int(n) for n in os.listdir(homelab.paths["home"] / ".snapshots") if n.isdigit())


def test_diff_ten_thousand_changes_every_time(homelab):
    home = homelab.paths["home"]
    a = _snap(homelab)
    many = home / "many"
    many.mkdir()
    for i in range(10_000):
        (many / f"file-{i:05d}.txt").write_text(str(i))
    b = _snap(homelab)
    for _ in range(5):
        proc = homelab.cli("diff", "home", str(a), str(b), "--json", check=False)
        assert proc.returncode == 0, proc.stderr
        changes = json.loads(proc.stdout)["result"]
        paths = {c["path"] for c in changes}
        assert len([p for p in paths if p.startswith("many/file-")]) == 10_000
        assert all(c["kind"] == "added" for c in changes if c["path"].startswith("many/"))


def test_diff_reversed_shows_real_names_never_orphans(homelab):
    home = homelab.paths["home"]
    (home / "gone").mkdir()
    (home / "gone" / "acl.txt").write_text("a")
    (home / "gone" / "sub").mkdir()
    (home / "gone" / "sub" / "deep.txt").write_text("b")
    (home / "kept.txt").write_text("k")
    a = _snap(homelab)
    shutil.rmtree(home / "gone")
    (home / "kept.txt").write_text("changed")
    (home / "fresh").mkdir()
    (home / "fresh" / "new.txt").write_text("n")
    b = _snap(homelab)
    forward = {c["path"]: c["kind"] for c in json.loads(homelab.cli("diff", "home", str(a), str(b), "--json").stdout)["result"]}
    backward = {c["path"]: c["kind"] for c in json.loads(homelab.cli("diff", "home", str(b), str(a), "--json").stdout)["result"]}
    for changes in (forward, backward):
        assert not [p for p in changes if p.split("/")[0].startswith("o") and "-" in p.split("/")[0]], changes
    assert forward["gone/acl.txt"] == "deleted" and forward["gone/sub/deep.txt"] == "deleted" and forward["fresh/new.txt"] == "added"
    assert backward["gone/acl.txt"] == "added" and backward["gone/sub/deep.txt"] == "added" and backward["fresh/new.txt"] == "deleted"
    assert forward["kept.txt"] == backward["kept.txt"] == "modified"


def test_diff_names_with_newlines_spaces_and_unicode(homelab):
    home = homelab.paths["home"]
    a = _snap(homelab)
    names = ["new\nline", "with space", "tab\there", "ünïcødé", "back\\slash", "equals=sign x=1"]
    for name in names:
        (home / name).write_text("x")
    b = _snap(homelab)
    result = json.loads(homelab.cli("diff", "home", str(a), str(b), "--json").stdout)["result"]
    assert {c["path"] for c in result} >= set(names)
    text = homelab.cli("diff", "home", str(a), str(b)).stdout
    assert "newnline" not in text and "new\\nline" in text
