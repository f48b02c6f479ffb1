"""Manifests: JSON round trip, authentication, the MAC key file."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from subvault.offsite import layout
from subvault.offsite.manifest import MacKey, Manifest, ManifestError, Part, authenticate, from_json, to_json
from subvault.stores import StoreAuthError


def manifest(parts: int = 2) -> Manifest:
    return Manifest(
        subvolume="pvc", uuid="u2", parent_uuid="u1", chain=("u1", "u2"),
        created=datetime(2026, 11, 1, 3, tzinfo=UTC),
        parts=tuple(Part(layout.part_key("pvc", "u2", i), 100 + i, f"{i:064x}") for i in range(parts)),
        recipients=("age1example",),
    )


@pytest.fixture
def key(tmp_path: Path) -> MacKey:
    return MacKey.load_or_create(tmp_path / "etc" / "offsite.mac")


def test_round_trip(key: MacKey) -> None:
    signed = key.sign(manifest())
    loaded = from_json(to_json(signed))
    assert loaded == signed and loaded.mac == signed.mac
    key.check(loaded)
    data = json.loads(to_json(signed))
    assert data["format"] == 1 and data["total_size"] == 201 and data["parent_uuid"] == "u1"


@pytest.mark.parametrize("change", [
    {"uuid": "u3", "chain": ("u1", "u3")},
    {"parent_uuid": None, "chain": ("u2",)},
    {"subvolume": "root"},
    {"recipients": ("age1attacker",)},
])
def test_any_change_fails_authentication(key: MacKey, change: dict) -> None:
    signed = key.sign(manifest())
    with pytest.raises(ManifestError, match="fails authentication"):
        key.check(replace(signed, **change))


def test_swapped_or_dropped_part_fails_authentication(key: MacKey) -> None:
    signed = key.sign(manifest(3))
    swapped = replace(signed, parts=(signed.parts[0], replace(signed.parts[1], sha256="f" * 64), signed.parts[2]))
    with pytest.raises(ManifestError):
        key.check(swapped)
    with pytest.raises(ManifestError):
        key.check(replace(signed, parts=signed.parts[:2]))


def test_another_key_fails(key: MacKey, tmp_path: Path) -> None:
    other = MacKey.load_or_create(tmp_path / "other.mac")
    with pytest.raises(ManifestError):
        key.check(other.sign(manifest()))


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "offsite.mac"
    first = MacKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = MacKey.load_or_create(path)
    assert second.sign(manifest()).mac == first.sign(manifest()).mac
    assert "offsite.mac" in repr(first) and path.read_text().strip() not in repr(first)


def test_open_key_file_is_refused(tmp_path: Path) -> None:
    """Invariant 11."""
    path = tmp_path / "offsite.mac"
    MacKey.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(StoreAuthError, match="chmod 600"):
        MacKey.load(path)


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(format=99),
    lambda d: d.pop("parts"),
    lambda d: d.update(total_size=1),
    lambda d: d.update(chain=["u9"]),
    lambda d: d["parts"][0].update(key="pvc/u2/../../etc/passwd"),
])
def test_malformed_manifests_are_refused(key: MacKey, mutate) -> None:
    data = json.loads(to_json(key.sign(manifest())))
    mutate(data)
    with pytest.raises(ManifestError):
        from_json(json.dumps(data).encode())
    with pytest.raises(ManifestError):
        from_json(b"not json")


def test_expected_key_detects_a_moved_manifest(key: MacKey) -> None:
    signed = key.sign(manifest())
    authenticate(signed, key, expected_key=layout.manifest_key("pvc", "u2"))
    with pytest.raises(ManifestError, match="moved or swapped"):
        authenticate(signed, key, expected_key=layout.manifest_key("pvc", "u1"))


def test_snapshot_number_round_trips_and_is_authenticated(key: MacKey) -> None:
    signed = key.sign(replace(manifest(), number=3))
    loaded = from_json(to_json(signed))
    assert loaded.number == 3
    key.check(loaded)
    with pytest.raises(ManifestError, match="fails authentication"):
        key.check(replace(signed, number=4))


def test_a_manifest_written_without_a_number_still_authenticates(key: MacKey) -> None:
    signed = key.sign(manifest())
    data = json.loads(to_json(signed))
    assert "number" not in data
    loaded = from_json(json.dumps(data).encode())
    assert loaded.number is None
    key.check(loaded)


@pytest.mark.parametrize("bad", ["3", -1, 2.5, True])
def test_a_malformed_number_is_refused(key: MacKey, bad) -> None:
    data = json.loads(to_json(key.sign(manifest())))
    data["number"] = bad
    with pytest.raises(ManifestError, match="malformed"):
        from_json(json.dumps(data).encode())
