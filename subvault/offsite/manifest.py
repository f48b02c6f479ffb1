"""The manifest of one uploaded snapshot, and its authentication.

Rules:
- A snapshot exists offsite only when its manifest and every part it names exist
  (invariant 4); the uploader writes the manifest last.
- The manifest carries an HMAC-SHA256 over its canonical JSON (sorted keys, no spaces,
  the `mac` field left out) with a key only the backup side holds (`MacKey`, a local
  file, 0600, made while the bucket holds no restore point; missing later, it is an error). age proves nothing about who wrote a file: anyone
  with the public recipients can encrypt. The MAC binds subvolume, uuid, parent, chain
  and every part's size and ciphertext SHA-256, so a forged manifest, a swapped part,
  a missing part or a manifest moved to another snapshot's place is detected.
- Restoring without the MAC key is possible (`verify_mac=False`); it then trusts the
  bucket, and says so loudly.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from subvault.errors import SubvaultError
from subvault.offsite import layout
from subvault.secrets import SecretsFileExposed, read_private
from subvault.stores.base import StoreAuthError

log = logging.getLogger("subvault.offsite")

FORMAT_VERSION = 1
DEFAULT_MAC_KEY = Path("/etc/subvault/offsite.mac")


class ManifestError(SubvaultError):
    """A manifest is malformed, forged, or does not match its objects."""


class MacKeyMissing(SubvaultError):
    """The manifest key is gone while the bucket holds points signed with it."""


@dataclass(frozen=True)
class Part:
    """One part object: its key, ciphertext size and ciphertext SHA-256 (hex)."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Point:
    """A snapshot's place in its subvolume's offsite chain: what an upload is asked to
    send (parts.UploadRequest) and what its manifest records. `chain` runs from the full
    to this uuid."""

    subvolume: str
    uuid: str
    parent_uuid: str | None
    chain: tuple[str, ...]
    created: datetime


@dataclass(frozen=True)
class Manifest(Point):
    """The record of one uploaded snapshot: its point, then how it is stored (the fields
    keep the order the signed payload has always had)."""

    parts: tuple[Part, ...]
    recipients: tuple[str, ...] = ()
    compression: str = "zstd"
    encryption: str = "age"
    format: int = FORMAT_VERSION
    number: int | None = None  # the snapper number at the source, so `--at 3` works after the machine is gone
    mac: str = field(default="", compare=False)

    @property
    def total_size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def is_full(self) -> bool:
        return self.parent_uuid is None

    @property
    def key(self) -> str:
        return layout.manifest_key(self.subvolume, self.uuid)

    def payload(self) -> dict[str, Any]:
        """Return the JSON-ready dict of every field but the MAC."""
        data = asdict(self)
        data.pop("mac")
        if self.number is None:  # manifests written before the field keep their MAC
            data.pop("number")
        data["chain"] = list(self.chain)
        data["recipients"] = list(self.recipients)
        data["parts"] = [asdict(p) for p in self.parts]
        data["created"] = self.created.isoformat()
        data["total_size"] = self.total_size
        return data

    def check_shape(self) -> None:
        """Raise ManifestError if the fields contradict each other."""
        if not self.chain or self.chain[-1] != self.uuid:
            raise ManifestError(f"manifest {self.key}: chain does not end at its own uuid")
        if (self.parent_uuid is None) != (len(self.chain) == 1):
            raise ManifestError(f"manifest {self.key}: parent and chain disagree")
        if self.parent_uuid is not None and self.chain[-2] != self.parent_uuid:
            raise ManifestError(f"manifest {self.key}: parent is not the previous link of the chain")
        for i, part in enumerate(self.parts):
            if part.key != layout.part_key(self.subvolume, self.uuid, i):
                raise ManifestError(f"manifest {self.key}: part {i} has an unexpected key {part.key!r}")


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


class MacKey:
    """The secret that authenticates manifests. Only the backup side holds it."""

    def __init__(self, secret: bytes, path: Path | None = None) -> None:
        if len(secret) < 32:
            raise ValueError("a manifest MAC key needs at least 32 bytes")
        self._secret = secret
        self.path = path

    def __repr__(self) -> str:
        return f"MacKey(path={self.path})"

    @classmethod
    def load_or_create(cls, path: str | Path = DEFAULT_MAC_KEY) -> MacKey:
        """Return the key in path, creating it (0600, 32 random bytes, hex) if absent.

        Raise StoreAuthError if the file is accessible by group or others or is malformed.
        """
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # whole or absent; a second run making one at once keeps the first
                log.warning("created the offsite manifest key %s; back it up: restores verify with it", path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return cls.load(path)

    @classmethod
    def load(cls, path: str | Path) -> MacKey:
        """Return the key in path. Raise StoreAuthError if it is missing, too open or malformed."""
        path = Path(path)
        try:
            text = read_private(path, "manifest key").strip()
        except SecretsFileExposed as exc:
            raise StoreAuthError(str(exc)) from None
        try:
            return cls(bytes.fromhex(text), path)
        except ValueError:
            raise StoreAuthError(f"manifest key {path} is not 64 hex digits") from None

    def sign(self, manifest: Manifest) -> Manifest:
        """Return the manifest with its MAC set."""
        from dataclasses import replace

        return replace(manifest, mac=self._mac(manifest))

    def check(self, manifest: Manifest) -> None:
        """Raise ManifestError if the manifest's MAC is not ours."""
        if not manifest.mac or not hmac.compare_digest(manifest.mac, self._mac(manifest)):
            raise ManifestError(
                f"manifest {manifest.key} fails authentication: it was not written with the key {self.path or ''} "
                "(forged, altered, or another installation's)"
            )

    def mac_bytes(self, payload: bytes) -> str:
        """Return the hex HMAC-SHA256 of payload."""
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def check_bytes(self, payload: bytes, mac: str) -> bool:
        """Return True if mac is our HMAC of payload."""
        return isinstance(mac, str) and hmac.compare_digest(mac, self.mac_bytes(payload))

    def _mac(self, manifest: Manifest) -> str:
        return hmac.new(self._secret, _canonical(manifest.payload()), hashlib.sha256).hexdigest()


def to_json(manifest: Manifest) -> bytes:
    """Return the manifest as pretty JSON bytes, MAC included."""
    data = manifest.payload()
    data["mac"] = manifest.mac
    return (json.dumps(data, sort_keys=True, indent=2) + "\n").encode()


def from_json(raw: bytes, where: str = "manifest") -> Manifest:
    """Given manifest JSON, return the Manifest. Raise ManifestError if malformed or of an unknown format."""
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT_VERSION:
            raise ManifestError(f"{where}: format {data.get('format')!r} is not supported (expected {FORMAT_VERSION})")
        manifest = Manifest(
            subvolume=data["subvolume"],
            uuid=data["uuid"],
            parent_uuid=data["parent_uuid"],
            chain=tuple(data["chain"]),
            created=datetime.fromisoformat(data["created"]),
            parts=tuple(Part(p["key"], int(p["size"]), p["sha256"]) for p in data["parts"]),
            recipients=tuple(data.get("recipients", ())),
            compression=data["compression"],
            encryption=data["encryption"],
            format=data["format"],
            number=_number(data.get("number")),
            mac=data.get("mac", ""),
        )
    except ManifestError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None
    if data.get("total_size") != manifest.total_size:
        raise ManifestError(f"{where}: total_size does not match its parts")
    manifest.check_shape()
    return manifest


def _number(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ValueError(f"number {value!r} is not a snapshot number")
    return value


def authenticate(manifest: Manifest, key: MacKey | None, *, expected_key: str | None = None) -> None:
    """Check a loaded manifest: its MAC (unless key is None, which warns) and its place.

    Raise ManifestError if the MAC fails or the manifest was read from another
    snapshot's key (a manifest copied over another one).
    """
    if expected_key is not None and manifest.key != expected_key:
        raise ManifestError(f"manifest at {expected_key} describes {manifest.key}: it was moved or swapped")
    if key is None:
        log.warning(
            "NOT verifying the authenticity of %s (--no-verify-mac): a forged manifest would be trusted", manifest.key
        )
        return
    key.check(manifest)
