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
- Memory: a slice being read, one being encrypted, and the ciphertexts of the part
  being encrypted and the part being stored: about 4 x part_size, whatever the
  stream's length. Reading, encrypting and storing overlap.
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
    with _PartPipeline(store, journal, jkey, mac_key, request, age, what, retain_until, part_size) as parts_out, \
            PipelineReader([list(request.source), list(compress)], what=what) as reader:
        index = 0
        while True:
            buf = parts_out.slice_buffer(index)
            n = reader.fill(buf)
            if n == 0 and index > 0:
                break
            plain = memoryview(buf)[:n]
            if index < len(journal.parts) and journal.parts[index].plain_size == n \
                    and journal.parts[index].plain_sha256 == hashlib.sha256(plain).hexdigest():
                reused += 1
            else:
                parts_out.submit(index, plain)
                uploaded += 1
            index += 1
            if progress:
                progress(index, reader.bytes_read)
            if n < part_size:
                break
        parts_out.wait()
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


class _PartPipeline:
    """Encrypt part i+1 while part i is being stored, and read slice i+2 meanwhile.

    Two threads, each one job at a time and in order: `encrypt` (age, hashing as bytes
    pass) and `store` (put the part, then the journal: the journal never names a part
    before it is stored). Buffers are allocated once and reused: two plaintext slices
    and two ciphertext buffers, so memory is about 4 x part_size.
    """

    def __init__(self, store: Store, journal: _Journal, jkey: str, mac_key: MacKey, request: UploadRequest,
                 age: list[str], what: str, retain_until: datetime | None, part_size: int) -> None:
        self._args = (store, journal, jkey, mac_key, request, retain_until)
        self._age, self._what = age, what
        self._slices = (bytearray(part_size), bytearray(part_size))
        self._ciphers = (bytearray(), bytearray())
        self._encrypt = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offsite-age")
        self._store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offsite-put")
        self._encrypted: dict[int, Future] = {}
        self._stored: dict[int, Future] = {}
        self._first = True

    def __enter__(self) -> "_PartPipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self._encrypt.shutdown(wait=True, cancel_futures=True)
        self._store.shutdown(wait=True, cancel_futures=True)

    def _done(self, jobs: dict[int, Future], index: int) -> None:
        job = jobs.pop(index, None)
        if job is not None:
            job.result()  # raises the job's error here, in the reading thread

    def slice_buffer(self, index: int) -> bytearray:
        """Return the buffer for slice `index`, once the encryption that used it is done."""
        self._done(self._encrypted, index - 2)
        return self._slices[index % 2]

    def submit(self, index: int, plain: memoryview) -> None:
        """Encrypt and store slice `index`; parts before it not already stored are dropped from the journal."""
        journal = self._args[1]
        if self._first:
            del journal.parts[index:]  # nothing is in flight before the first submission
            self._first = False
        self._done(self._stored, index - 2)  # frees ciphertext buffer index % 2
        cipher = self._ciphers[index % 2]
        enc = self._encrypt.submit(filter_bytes_hashed, self._age, plain, cipher, what=f"{self._what}: age")
        self._encrypted[index] = enc
        self._stored[index] = self._store.submit(self._put, index, enc, cipher, len(plain))

    def _put(self, index: int, enc: Future, cipher: bytearray, plain_size: int) -> None:
        store, journal, jkey, mac_key, request, retain_until = self._args
        n, plain_sha, cipher_sha = enc.result()
        key = layout.part_key(request.subvolume, request.uuid, index)
        with memoryview(cipher) as view:
            store.put(key, view[:n], retain_until=retain_until)
        journal.parts.append(_JournalPart(key, n, cipher_sha, plain_size, plain_sha))
        store.put(jkey, _signed_journal(journal, mac_key))

    def wait(self) -> None:
        """Wait for every part to be stored; raise the first error."""
        for index in sorted(self._encrypted):
            self._done(self._encrypted, index)
        for index in sorted(self._stored):
            self._done(self._stored, index)


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
