"""The offsite upload executor: `source | zstd` cut into parts, each part its own age file.

Design (why resumption is honest):
- age output is randomized, so a re-run cannot reproduce ciphertext already uploaded.
  Therefore the *plaintext* is cut, not the ciphertext: the compressed stream
  `source | zstd -T0 -3` is read in slices of `part_size` bytes, and each slice is
  encrypted on its own (`age -r R1 -r R2`) into part N. A finished part stays a valid,
  independently decryptable age file whatever happens later.
- After each part is stored, the upload journal (`upload.json`, MAC'd with the
  manifest key) records the part's key, ciphertext size and SHA-256, and the slice's
  plaintext length and SHA-256.
- A re-run regenerates the stream and, for every journaled part, hashes the same
  slice instead of uploading it. `btrfs send` of the same read-only snapshot against
  the same parent produces the same stream, and zstd is deterministic for the same
  version and level; this is *checked*, not assumed: at the first slice whose
  plaintext hash differs (a kernel or zstd upgrade in between, say), the journal is
  cut there and that part and all after it are uploaded anew. Earlier parts stay valid
  because they decrypt to exactly the bytes the new stream also starts with.
  Resuming saves the upload, not the local send+compress work.
- The manifest is written last (invariant 4), then the journal is deleted.
- Memory: one slice being read, one being encrypted and stored, and its ciphertext;
  about 3 x part_size, whatever the stream's length.
- Every stage is checked (invariant 9): if the source or zstd fails, the error is
  raised and no manifest is written; the journal stays for the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

from subvault.errors import PermanentError
from subvault.offsite import layout
from subvault.offsite.manifest import MacKey, Manifest, ManifestError, Part, from_json, to_json
from subvault.offsite.streams import PipelineReader, filter_bytes_hashed
from subvault.stores.base import ObjectNotFound, Store

log = logging.getLogger("subvault.offsite")

DEFAULT_PART_SIZE = 64 << 20
COMPRESS = ("zstd", "-T0", "-3", "-q", "-c")
JOURNAL_FORMAT = 1


@dataclass(frozen=True)
class UploadRequest:
    """One snapshot to upload. `source` is an argv writing its send stream to stdout."""

    subvolume: str
    uuid: str
    parent_uuid: str | None
    chain: tuple[str, ...]
    created: datetime
    source: Sequence[str]
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class UploadResult:
    manifest: Manifest
    parts_uploaded: int
    parts_reused: int
    stream_bytes: int
    already_done: bool = False


@dataclass
class _JournalPart:
    key: str
    size: int
    sha256: str
    plain_size: int
    plain_sha256: str


@dataclass
class _Journal:
    subvolume: str
    uuid: str
    parent_uuid: str | None
    part_size: int
    recipients: list[str]
    compress: list[str]
    parts: list[_JournalPart] = field(default_factory=list)

    def payload(self) -> bytes:
        data = asdict(self)
        data["format"] = JOURNAL_FORMAT
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


ProgressCallback = Callable[[int, int], None]  # (parts done, stream bytes read)


def upload(
    store: Store,
    request: UploadRequest,
    mac_key: MacKey,
    *,
    part_size: int = DEFAULT_PART_SIZE,
    compress: Sequence[str] = COMPRESS,
    retain_until: datetime | None = None,
    progress: ProgressCallback | None = None,
) -> UploadResult:
    """Upload one snapshot's stream as parts and a manifest; resume an unfinished one.

    Return the signed manifest. If the manifest already exists and authenticates,
    return it without running the source. Raise CommandFailed if a stage fails,
    StoreError/StoreUnreachable if the store does; in both cases no manifest is written
    and the journal lets the next call resume.
    """
    if not request.recipients:
        raise PermanentError(f"offsite upload of {request.subvolume}: no age recipients configured")
    mkey = layout.manifest_key(request.subvolume, request.uuid)
    existing = _existing_manifest(store, mkey, mac_key)
    if existing is not None:
        return UploadResult(existing, 0, 0, 0, already_done=True)
    journal = _load_journal(store, request, mac_key, part_size, list(compress))
    age = ["age", *(a for r in request.recipients for a in ("-r", r))]
    reused = uploaded = 0
    parts: list[Part] = []
    jkey = layout.journal_key(request.subvolume, request.uuid)
    what = f"offsite upload of {request.subvolume} {request.uuid}"
    # Two slice buffers (one being read, one being encrypted) and one ciphertext buffer,
    # allocated once: memory is ~3 x part_size whatever the stream's length.
    slices = (bytearray(part_size), bytearray(part_size))
    cipher = bytearray()
    with ThreadPoolExecutor(max_workers=1) as pool, PipelineReader(
        [list(request.source), list(compress)], what=what
    ) as reader:
        pending: Future | None = None
        index = 0
        while True:
            buf = slices[index % 2]  # the job using it (index - 2) finished before index - 1 was submitted
            n = reader.fill(buf)
            if n == 0 and index > 0:
                break
            plain = memoryview(buf)[:n]
            if index < len(journal.parts) and journal.parts[index].plain_size == n \
                    and journal.parts[index].plain_sha256 == hashlib.sha256(plain).hexdigest():
                reused += 1
            else:
                if pending is not None:
                    pending.result()  # the journal must not run ahead of stored parts
                del journal.parts[index:]
                pending = pool.submit(_store_part, store, journal, jkey, mac_key, request, index, plain,
                                      cipher, age, what, retain_until)
                uploaded += 1
            index += 1
            if progress:
                progress(index, reader.bytes_read)
            if n < part_size:
                break
        if pending is not None:
            pending.result()
        reader.finish()
    parts = [Part(p.key, p.size, p.sha256) for p in journal.parts]
    _delete_stray_parts(store, request, {p.key for p in parts})
    manifest = mac_key.sign(Manifest(
        subvolume=request.subvolume, uuid=request.uuid, parent_uuid=request.parent_uuid,
        chain=tuple(request.chain), created=request.created, parts=tuple(parts),
        recipients=tuple(request.recipients),
    ))
    manifest.check_shape()
    store.put(mkey, to_json(manifest), retain_until=retain_until)
    store.delete(jkey)
    return UploadResult(manifest, uploaded, reused, reader.bytes_read)


def _store_part(store: Store, journal: _Journal, jkey: str, mac_key: MacKey, request: UploadRequest,
                index: int, plain: memoryview, cipher: bytearray, age: list[str], what: str,
                retain_until: datetime | None) -> None:
    n, plain_sha, cipher_sha = filter_bytes_hashed(age, plain, cipher, what=f"{what}: age")
    key = layout.part_key(request.subvolume, request.uuid, index)
    with memoryview(cipher) as view:
        store.put(key, view[:n], retain_until=retain_until)  # type: ignore[arg-type]
    journal.parts.append(_JournalPart(key, n, cipher_sha, len(plain), plain_sha))
    store.put(jkey, _signed_journal(journal, mac_key))


def _delete_stray_parts(store: Store, request: UploadRequest, wanted: set[str]) -> None:
    """Delete parts a longer, earlier attempt left beyond this stream's end, so the
    snapshot's folder holds exactly the manifest's parts (the recipe globs them)."""
    prefix = layout.snapshot_dir(request.subvolume, request.uuid) + "/part-"
    for info in list(store.list(prefix)):
        if info.key not in wanted:
            store.delete(info.key)


def _signed_journal(journal: _Journal, mac_key: MacKey) -> bytes:
    payload = journal.payload()
    return json.dumps({"journal": json.loads(payload), "mac": mac_key.mac_bytes(payload)}, indent=1).encode()


def _existing_manifest(store: Store, key: str, mac_key: MacKey) -> Manifest | None:
    try:
        raw = store.get(key)
    except ObjectNotFound:
        return None
    try:
        manifest = from_json(raw, key)
        mac_key.check(manifest)
    except ManifestError as exc:
        raise ManifestError(f"{exc}; refusing to overwrite it: inspect or delete {key} by hand") from None
    return manifest


def _load_journal(store: Store, request: UploadRequest, mac_key: MacKey, part_size: int,
                  compress: list[str]) -> _Journal:
    """Return the journal to resume from: the stored one if it matches, else a fresh one."""
    fresh = _Journal(request.subvolume, request.uuid, request.parent_uuid, part_size,
                     list(request.recipients), compress)
    jkey = layout.journal_key(request.subvolume, request.uuid)
    try:
        raw = json.loads(store.get(jkey))
        data = raw["journal"]
        stored = _Journal(**{k: v for k, v in data.items() if k not in ("format", "parts")},
                          parts=[_JournalPart(**p) for p in data["parts"]])
        authentic = mac_key.check_bytes(stored.payload(), raw["mac"])
    except ObjectNotFound:
        return fresh
    except (ValueError, KeyError, TypeError):
        log.warning("%s is unreadable; starting the upload over", jkey)
        return fresh
    if not authentic:
        log.warning("%s fails authentication; starting the upload over", jkey)
        return fresh
    if (stored.parent_uuid, stored.part_size, stored.recipients, stored.compress) != \
            (fresh.parent_uuid, part_size, fresh.recipients, compress):
        log.info("%s was for other settings; starting the upload over", jkey)
        return fresh
    for i, part in enumerate(stored.parts):
        try:
            present = store.stat(part.key).size == part.size
        except ObjectNotFound:
            present = False
        if not present or part.key != layout.part_key(request.subvolume, request.uuid, i):
            del stored.parts[i:]
            break
    return stored
