"""Restore from an offsite target: verify everything, then decrypt and feed the chain.

Order (nothing reaches the sink before every check has passed):
1. Load the target manifest and every manifest of its chain, full first; each must
   authenticate with the MAC key (unless `mac_key` is None: `--no-verify-mac`, which
   warns) and sit at its own key.
2. Check every part of every link: present, the recorded size, the recorded SHA-256
   (streamed, not kept). Any problem is named (`root/UUID/part-000003.zst.age:
   missing`) and the restore refuses.
3. Decrypt the first part with the identity; if age cannot, say which recipient the
   backup needs.
4. For each link, full first: download each part (again checking its hash, in case the
   bucket changed in between), `age -d -i IDENTITY` it and write the plaintext into
   `zstd -d | SINK`. The sink is `btrfs receive DIR` in production.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from subvault.errors import CommandFailed, NotFound, Refused, SubvaultError
from subvault.offsite import layout
from subvault.offsite.manifest import MacKey, Manifest, ManifestError, authenticate, from_json
from subvault.process.filters import filter_bytes
from subvault.process.streams import PipelineWriter
from subvault.stores.base import ObjectNotFound, Store

DECOMPRESS = ("zstd", "-d", "-q", "-c")


class RestoreRefused(Refused):
    """Objects are missing or corrupt; nothing was fed to the sink."""


class IdentityMismatch(SubvaultError):
    """The age identity given does not decrypt the backup."""


@dataclass(frozen=True)
class Problem:
    """Something wrong with one object: its key and what."""

    key: str
    what: str

    def __str__(self) -> str:
        return f"{self.key}: {self.what}"


@dataclass(frozen=True)
class RestoreResult:
    chain: tuple[Manifest, ...]
    bytes_in: int


def load_manifest(store: Store, subvolume: str, uuid: str, mac_key: MacKey | None) -> Manifest:
    """Return the authenticated manifest of one snapshot. Raise NotFound or ManifestError."""
    key = layout.manifest_key(subvolume, uuid)
    try:
        raw = store.get(key)
    except ObjectNotFound:
        raise NotFound(f"{store.url}: no restore point {subvolume} {uuid} (missing {key})") from None
    manifest = from_json(raw, key)
    authenticate(manifest, mac_key, expected_key=key)
    return manifest


def list_manifests(store: Store, mac_key: MacKey | None, subvolume: str | None = None) -> tuple[list[Manifest], list[Problem]]:
    """Return every manifest that loads and authenticates, and a Problem for each that does not."""
    prefix = f"{layout.check_name('subvolume', subvolume)}/" if subvolume else ""
    good: list[Manifest] = []
    bad: list[Problem] = []
    for info in store.list(prefix):
        if not info.key.endswith("/" + layout.MANIFEST):
            continue
        try:
            manifest = from_json(store.get(info.key), info.key)
            authenticate(manifest, mac_key, expected_key=info.key)
            good.append(manifest)
        except (ManifestError, ObjectNotFound) as exc:
            bad.append(Problem(info.key, str(exc)))
    return good, bad


def resolve_chain(store: Store, target: Manifest, mac_key: MacKey | None) -> list[Manifest]:
    """Return the manifests of target's chain, full first. Raise RestoreRefused if a link is missing or disagrees."""
    links: list[Manifest] = []
    for i, uuid in enumerate(target.chain[:-1]):
        try:
            link = load_manifest(store, target.subvolume, uuid, mac_key)
        except NotFound:
            raise RestoreRefused(
                f"cannot restore {target.subvolume} {target.uuid}: link {i} of its chain ({uuid}) is missing offsite"
            ) from None
        if link.chain != target.chain[: i + 1]:
            raise RestoreRefused(f"{link.key}: its chain does not match the chain of {target.key}")
        links.append(link)
    return links + [target]


def check_parts(store: Store, manifests: Iterable[Manifest], *, hashes: bool = True) -> list[Problem]:
    """Return a Problem for every part that is missing, of the wrong size or (if hashes) wrong SHA-256."""
    problems: list[Problem] = []
    for manifest in manifests:
        for part in manifest.parts:
            try:
                size = store.stat(part.key).size
            except ObjectNotFound:
                problems.append(Problem(part.key, "missing"))
                continue
            if size != part.size:
                problems.append(Problem(part.key, f"size {size}, manifest says {part.size}"))
            elif hashes and _stream_sha256(store, part.key) != part.sha256:
                problems.append(Problem(part.key, "SHA-256 does not match the manifest (corrupt or replaced)"))
    return problems


def whole_chain(store: Store, target: Manifest, mac_key: MacKey | None, *, hashes: bool = True) -> list[Manifest]:
    """Return target's chain, full first, once every link and part is there (and, with hashes, whole).

    Raise RestoreRefused naming the missing link or every missing or damaged part. A dry
    run checks the same without hashes (sizes from the store), so it refuses alike.
    """
    chain = resolve_chain(store, target, mac_key)
    problems = check_parts(store, chain, hashes=hashes)
    if problems:
        raise RestoreRefused(
            f"refusing to restore {target.subvolume} {target.uuid}: " + "; ".join(map(str, problems))
        )
    return chain


def _stream_sha256(store: Store, key: str) -> str:
    digest = hashlib.sha256()
    with store.open(key) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _decrypt(data: bytes, identity: Path, manifest: Manifest, key: str) -> bytes:
    try:
        return filter_bytes(["age", "-d", "-i", str(identity)], data, what=f"decrypting {key}")
    except CommandFailed as exc:
        tail = exc.stderr_tail
        if "no identity matched" in tail or "incorrect" in tail.lower():
            wanted = ", ".join(manifest.recipients) or "the target's recipients"
            raise IdentityMismatch(
                f"the age identity {identity} does not decrypt this backup; use the identity whose recipient is {wanted}"
            ) from None
        if "identity" in tail.lower() and ("open" in tail.lower() or "read" in tail.lower()):
            raise IdentityMismatch(f"the age identity {identity} cannot be read: {exc}") from None
        raise


def _fetch(store: Store, key: str, sha256: str) -> bytes:
    data = store.get(key)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RestoreRefused(f"{key}: SHA-256 changed since it was verified; the bucket is being modified")
    return data


def restore_chain(
    store: Store,
    target: Manifest,
    identity: Path,
    sink: Sequence[str] | Callable[[Manifest], Sequence[str]],
    mac_key: MacKey | None,
    *,
    decompress: Sequence[str] = DECOMPRESS,
    sink_stdout: int | None = None,
) -> RestoreResult:
    """Verify target's whole chain, then feed each link, full first, into `zstd -d | sink`.

    `sink` is an argv run once per link (or a function of the link's manifest giving
    one). Raise RestoreRefused naming every missing or corrupt part before the sink
    runs, IdentityMismatch if the identity cannot decrypt, CommandFailed if a stage
    fails.
    """
    chain = whole_chain(store, target, mac_key)
    first = next((m for m in chain if m.parts), None)
    if first is not None:
        _decrypt(_fetch(store, first.parts[0].key, first.parts[0].sha256), identity, first, first.parts[0].key)
    total = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        for manifest in chain:
            argv = sink(manifest) if callable(sink) else sink
            with PipelineWriter([list(decompress), list(argv)], what=f"restore of {manifest.key}",
                                stdout=sink_stdout) as writer:
                parts = list(manifest.parts)
                ahead = pool.submit(_fetch, store, parts[0].key, parts[0].sha256) if parts else None
                for i, part in enumerate(parts):
                    assert ahead is not None
                    data = ahead.result()
                    if i + 1 < len(parts):
                        ahead = pool.submit(_fetch, store, parts[i + 1].key, parts[i + 1].sha256)
                    plain = _decrypt(data, identity, manifest, part.key)
                    writer.write(plain)
                    total += len(data)
                writer.finish()
    return RestoreResult(tuple(chain), total)


def restore(
    store: Store,
    subvolume: str,
    uuid: str,
    identity: str | Path,
    sink: Sequence[str] | Callable[[Manifest], Sequence[str]],
    mac_key: MacKey | None,
    **kw: object,
) -> RestoreResult:
    """Restore snapshot `uuid` of `subvolume` from store; see `restore_chain`."""
    target = load_manifest(store, subvolume, uuid, mac_key)
    return restore_chain(store, target, Path(identity), sink, mac_key, **kw)  # type: ignore[arg-type]  # kw are restore_chain's keyword options, passed through as given


def verify_target(store: Store, mac_key: MacKey | None, *, hashes: bool = True) -> list[Problem]:
    """Return every problem offsite: manifests that fail, broken chains, bad parts. Empty means whole."""
    manifests, problems = list_manifests(store, mac_key)
    by_key = {(m.subvolume, m.uuid) for m in manifests}
    for m in manifests:
        for link in m.chain[:-1]:
            if (m.subvolume, link) not in by_key:
                problems.append(Problem(m.key, f"chain link {link} has no valid manifest"))
    problems.extend(check_parts(store, manifests, hashes=hashes))
    return problems
