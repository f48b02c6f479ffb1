"""The compiled config (config/compiled.py): reused only for the exact text it was made from, by its owner."""

from __future__ import annotations

import os
import sys
import types

import pytest

from subvault.config import compiled

TEXT = '[defaults]\nstate_dir = "/var/lib/subvault"\n'


@pytest.fixture
def saved(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBVAULT_RUNTIME_DIR", str(tmp_path / "run"))
    config = tmp_path / "subvault.toml"
    config.write_text(TEXT)
    compiled.save(str(config), TEXT, compiled.Compiled("/var/lib/subvault", [("root", "/"), ("data", "/srv/data")]))
    return config


def test_it_is_read_back_for_the_text_it_was_made_from(saved):
    got = compiled.load(str(saved))
    assert got is not None and got.state_dir == "/var/lib/subvault" and got.subvolumes == [("root", "/"), ("data", "/srv/data")]


def test_a_byte_order_mark_reads_as_the_validated_text(saved):
    saved.write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    assert compiled.load(str(saved)) is not None


@pytest.mark.parametrize("change", [
    lambda p: p.write_text(TEXT + " "),
    lambda p: p.write_bytes(TEXT.encode() + b"\xff"),
    lambda p: p.unlink(),
    lambda p: (p.unlink(), os.mkfifo(p)),
    lambda p: (p.unlink(), p.mkdir()),
])
def test_any_other_content_is_not(saved, change):
    change(saved)
    assert compiled.load(str(saved)) is None


def test_another_config_path_is_not(saved, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(TEXT)
    assert compiled.load(str(other)) is None


def test_a_corrupt_file_is_not(saved, tmp_path):
    (path,) = (tmp_path / "run").iterdir()
    path.write_bytes(b"\x00garbage")
    assert compiled.load(str(saved)) is None


def test_a_changed_module_of_the_saving_process_is_not(saved, tmp_path, monkeypatch):
    """Any subvault module the saving process had loaded (a rule the schema imports from plan/,
    say) counts: a copy of one is loaded, saved with, then edited."""
    copy = tmp_path / "subvault" / "plan" / "edited_rule.py"
    copy.parent.mkdir(parents=True)
    copy.write_text("LIMIT = 1\n")
    (tmp_path / "subvault" / "config").mkdir()
    (tmp_path / "subvault" / "config" / "compiled.py").write_text("")
    monkeypatch.setattr(compiled, "__file__", str(tmp_path / "subvault" / "config" / "compiled.py"))
    monkeypatch.setitem(sys.modules, "edited_rule", types.SimpleNamespace(__file__=str(copy)))
    compiled.save(str(saved), TEXT, compiled.Compiled("/s", [("root", "/")]))
    assert compiled.load(str(saved)) is not None
    copy.write_text("LIMIT = 22\n")
    assert compiled.load(str(saved)) is None


def test_another_version_is_not(saved, monkeypatch):
    monkeypatch.setattr(compiled, "__version__", "9.9.9")
    assert compiled.load(str(saved)) is None
