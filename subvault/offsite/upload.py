"""The offsite upload executor: `source | zstd` cut into parts, each part its own age file.

Design (why resumption is honest):
- age output is randomized, so a re-run cannot reproduce ciphertext already uploaded.
  Therefore the *plaintext* is cut, not the ciphertext: the compressed stream
  `source | zstd -T0 -3` is read in slices of `part_size` bytes, and each slice is
  encrypted on its own (`age -r R1 -r R2`) into part N. A finished part stays a valid,
  independently decryptable age file whatever happens later.
- After each part is stored, the upload journal (`upload.json`, MAC'd with the
  manifest key) records the part's key, ciphertext size and SHA-256, and the slice's
  plaintext length and CRC-32.
- A re-run regenerates the stream and, for every journaled part, checks the same
  slice instead of uploading it. `btrfs send` of the same read-only snapshot against
  the same parent produces the same stream, and zstd is deterministic for the same
  version and level; this is *checked*, not assumed: at the first slice whose
  plaintext length or CRC-32 differs (a kernel or zstd upgrade in between, say), the
  journal is cut there and that part and all after it are uploaded anew. Earlier parts stay valid
  because they decrypt to exactly the bytes the new stream also starts with.
  Resuming saves the upload, not the local send+compress work.
  The check is against accidental change (a new kernel or zstd), not an adversary
  (the stream is our own), so a CRC-32 at 5 GB/s serves where a second SHA-256 pass
  cost a tenth of the pipeline's CPU; a difference it missed (2^-32 per slice) would
  still fail `zstd -d` at restore (corrupt data, or its XXH64 content checksum), loudly.
  The ciphertext SHA-256 (what the manifest and `verify` rely on) is unchanged.
- The manifest is written last (invariant 4), then the journal is deleted.
- Speed: zstd's output moves into age's stdin by splice(2), and Python reads a tee(2)
  copy once, a chunk at a time, for the CRC; no stage waits for a whole slice. Where
  age's output goes depends on the store: one offering `stage(key)` (see Staged) has
  age write each part in place, hashed afterwards through one mapping; one offering
  `stream(key)` (see Streamed: S3) has age write into a pipe the store sends from as
  it arrives, in pieces uploaded concurrently (bounded by the store) and hashed by the
  store as it reads; any other gets `put(key, bytes)` from one of two reused buffers,
  filled and hashed as age writes. The store thread finishes part i-1 (its last
  pieces, the journal) while part i is encrypted and sent.
- Memory: at most two parts in flight: about 2 x part_size of buffers for a store
  with neither `stage` nor `stream`, none with `stage`, the store's bounded piece
  buffers with `stream`, whatever the stream's length (on a resume, one plaintext
  slice more while the journaled slices are compared).
- Parts are finished (committed, then journaled) one at a time in order, whatever
  runs concurrently inside the store, and none after one that failed, so the journal
  is always a contiguous prefix of stored parts: a resume never skips a part that was
  not stored.
- Every stage is checked (invariant 9): if the source or zstd fails, the error is
  raised and no manifest is written; the journal stays for the next run.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from subvault.errors import SubvaultError
from subvault.offsite import layout
from subvault.offsite.manifest import MacKey, Manifest, ManifestError, Part, authenticate, from_json, to_json
from subvault.offsite.parts import (
    JOURNAL_FORMAT,
    Job,
    Journal,
    JournalPart,
    PartWriter,
    UploadRequest,
)
from subvault.process.splice import CHUNK
from subvault.process.streams import PipelineReader
from subvault.stores.base import ObjectNotFound, Store

log = logging.getLogger("subvault.offsite")

DEFAULT_PART_SIZE = 64 << 20
COMPRESS = ("zstd", "-T0", "-3", "-q", "-c")




@dataclass(frozen=True)
class UploadResult:
    manifest: Manifest
    parts_uploaded: int
    parts_reused: int
    stream_bytes: int
    already_done: bool = False


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
    replace: bool = False,
) -> UploadResult:
    """Upload one snapshot's stream as parts and a manifest; resume an unfinished one.

    Return the signed manifest. If the manifest already exists and authenticates,
    return it without running the source, unless `replace` (the point is damaged:
    a part is missing, short or corrupt): then its parts and manifest are written anew. Raise CommandFailed if a stage fails,
    StoreError/StoreUnreachable if the store does; in both cases no manifest is written
    and the journal lets the next call resume.
    """
    if not request.recipients:
        raise SubvaultError(f"offsite upload of {request.subvolume}: no age recipients configured")
    mkey = layout.manifest_key(request.subvolume, request.uuid)
    existing = _existing_manifest(store, mkey, mac_key)
    if existing is not None and not replace:
        return UploadResult(existing, 0, 0, 0, already_done=True)
    journal = _load_journal(store, request, mac_key, part_size, list(compress))
    age = ["age", *(a for r in request.recipients for a in ("-r", r))]
    jkey = layout.journal_key(request.subvolume, request.uuid)
    what = f"offsite upload of {request.subvolume} {request.uuid}"
    abort_unfinished = getattr(store, "abort_unfinished", None)
    if abort_unfinished is not None:  # multipart uploads a killed run left (never visible as objects)
        abort_unfinished(layout.snapshot_dir(request.subvolume, request.uuid) + "/")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="offsite-list") as lister, \
            PartWriter(store, journal, jkey, mac_key, request, age, what, retain_until, part_size) as writer, \
            PipelineReader([list(request.source), list(compress)], what=what) as reader:
        # Listed while the stream runs, not after it: every part this run writes is one
        # the manifest names, so only keys already there can be strays.
        present = lister.submit(_part_keys, store, request)
        reused, uploaded = _cut(reader, writer, journal, part_size, progress)
        writer.wait()
        earlier = present.result()
    parts = [Part(p.key, p.size, p.sha256) for p in journal.parts]
    _delete_stray_parts(store, earlier, {p.key for p in parts})
    manifest = mac_key.sign(Manifest(
        subvolume=request.subvolume, uuid=request.uuid, parent_uuid=request.parent_uuid,
        chain=tuple(request.chain), created=request.created, parts=tuple(parts),
        recipients=tuple(request.recipients), number=request.number,
    ))
    manifest.check_shape()
    store.put(mkey, to_json(manifest), retain_until=retain_until)
    store.delete(jkey)
    return UploadResult(manifest, uploaded, reused, reader.bytes_read)


def _cut(reader: PipelineReader, writer: PartWriter, journal: Journal, part_size: int,
         progress: ProgressCallback | None) -> tuple[int, int]:
    """Cut the stream into slices of part_size; return (parts reused, parts uploaded).

    A journaled slice whose plaintext length and CRC-32 match is reused; from the first
    one that does not, every slice is encrypted and stored. Only the journaled slices
    are buffered whole (a mismatching one must still be uploaded); the rest stream
    from zstd into age a chunk at a time. Raise the source's or zstd's error at the end
    of the stream, before its last part is stored.
    """
    resumable = len(journal.parts)
    held = bytearray(part_size) if resumable else None
    chunk = memoryview(bytearray(CHUNK))
    index = reused = uploaded = 0
    while True:
        if held is not None and index < resumable:
            n, plain_check = _read_slice(reader, held)
            if n == 0 and index > 0:
                del journal.parts[index:]  # the stream ended early: nothing is in flight yet
                break
            known = journal.parts[index]
            if (known.plain_size, known.plain_crc32) == (n, plain_check):
                reused += 1
                if n < part_size:
                    del journal.parts[index + 1:]  # the stream ends in this slice
            else:
                resumable = index
                job = writer.begin(index)
                writer.feed(job, memoryview(held)[:n])
                _end_of_stream_checked(reader, n, part_size)
                writer.commit(index, n, plain_check)
                uploaded += 1
        else:
            held = None  # streaming from here on: no plaintext slice is kept
            first = reader.readinto(chunk[:min(CHUNK, part_size)])
            if first == 0 and index > 0:
                break
            job = writer.begin(index)
            n, plain_check = _stream_slice(reader, writer, job, chunk, first, part_size)
            _end_of_stream_checked(reader, n, part_size)
            writer.commit(index, n, plain_check)
            uploaded += 1
        index += 1
        if progress:
            progress(index, reader.bytes_read)
        if n < part_size:
            break
    reader.finish()
    return reused, uploaded


def _end_of_stream_checked(reader: PipelineReader, n: int, part_size: int) -> None:
    """At a short slice (the stream's end), raise if the source or zstd failed."""
    if n < part_size:
        reader.finish()


class _PlainCheck:
    """The CRC-32 of a slice's plaintext, fed as it passes (see the module docstring)."""

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: memoryview) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def hexdigest(self) -> str:
        return f"{self._crc:08x}"


def _read_slice(reader: PipelineReader, buf: bytearray) -> tuple[int, str]:
    """Fill buf from the stream (less only at its end); return (bytes read, their CRC-32 hex)."""
    digest = _PlainCheck()
    got = 0
    with memoryview(buf) as view:
        while got < len(buf):
            k = reader.readinto(view[got:got + CHUNK])
            if not k:
                break
            digest.update(view[got:got + k])  # hashed while still in the cache
            got += k
    return got, digest.hexdigest()


def _stream_slice(reader: PipelineReader, writer: PartWriter, job: Job, chunk: memoryview,
                  first: int, part_size: int) -> tuple[int, str]:
    """Feed one slice from the stream to job, `first` bytes of it already in chunk.

    Return (slice length, plaintext CRC-32 hex). The rest of the slice moves from
    zstd's pipe into age's inside the kernel; Python reads a copy once to check it.
    """
    digest = _PlainCheck()
    writer.feed(job, chunk[:first])
    digest.update(chunk[:first])
    got = first
    while got < part_size:
        try:
            k = reader.pass_to(job.stdin, part_size - got, chunk, digest.update)
        except BrokenPipeError:
            job.result()  # raises why age stopped reading
            raise
        if not k:
            break
        got += k
    return got, digest.hexdigest()


def _part_keys(store: Store, request: UploadRequest) -> list[str]:
    """Return the keys of the snapshot's parts in the store."""
    return [info.key for info in store.list(layout.snapshot_dir(request.subvolume, request.uuid) + "/part-")]


def _delete_stray_parts(store: Store, keys: list[str], wanted: set[str]) -> None:
    """Delete parts a longer, earlier attempt left beyond this stream's end, so the
    snapshot's folder holds exactly the manifest's parts (the recipe globs them)."""
    for key in keys:
        if key not in wanted:
            store.delete(key)


def _existing_manifest(store: Store, key: str, mac_key: MacKey) -> Manifest | None:
    try:
        raw = store.get(key)
    except ObjectNotFound:
        return None
    try:
        manifest = from_json(raw, key)
        authenticate(manifest, mac_key, expected_key=key)  # a genuine manifest moved here is not this one's
    except ManifestError as exc:
        raise ManifestError(f"{exc}; refusing to overwrite it: inspect or delete {key} by hand") from None
    return manifest


def _load_journal(store: Store, request: UploadRequest, mac_key: MacKey, part_size: int,
                  compress: list[str]) -> Journal:
    """Return the journal to resume from: the stored one if it matches, else a fresh one."""
    fresh = Journal(request.subvolume, request.uuid, request.parent_uuid, part_size,
                     list(request.recipients), compress)
    jkey = layout.journal_key(request.subvolume, request.uuid)
    try:
        raw = json.loads(store.get(jkey))
        data = raw["journal"]
        if data.get("format") != JOURNAL_FORMAT:
            log.info("%s is of another format; starting the upload over", jkey)
            return fresh
        stored = Journal(**{k: v for k, v in data.items() if k not in ("format", "parts")},
                          parts=[JournalPart(**p) for p in data["parts"]])
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
