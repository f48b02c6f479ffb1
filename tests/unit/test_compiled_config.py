"""The compiled config (config/compiled.py): reused only for the exact text it was made from, by its owner."""

from __future__ import annotations

import os

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


def test_a_changed_config_module_is_not(saved, monkeypatch):
    real = compiled._stamp()
    monkeypatch.setattr(compiled, "_stamp", lambda: (real[0], [*real[1], ("rules.py", 1, 1)]))
    assert compiled.load(str(saved)) is None
