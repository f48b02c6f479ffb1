"""One writer per bucket prefix: a claim object, written and then checked by listing.

Two `offsite` runs against the same prefix (two hosts, or one config copied with
another state dir) would write the same part keys with different ciphertext, and each
manifest would then name hashes the other run overwrote. The local lock cannot see
the other run, so the bucket itself holds the claim.

Why not a conditional put: `rclone serve s3` accepts `If-None-Match: *` and
`If-Match` on PutObject and ignores them (tested: the second put replaces the
object), and a file:// store has no such call. So the protocol needs only put, list
and delete, with read-after-write and list-after-write consistency (AWS S3, R2, B2,
MinIO, Ceph and rclone over one directory all give it):

1. put our claim under a new, unique key `_subvault/writers/STAMP-RANDOM.json`;
2. list the claims; if any other live one (authenticated, not expired) is there,
   delete ours and give up (or retry after a random pause);
3. otherwise we are the writer: keep the claim fresh (rewritten every ttl/3) and
   delete it at the end.

Safety: if two runs both went on, each listed after its own put and saw no other
claim; but the later of the two puts happened before the later run listed, so that
run saw the other's claim. At worst both give up, and the next timer run retries.
A claim carries its expiry (a run that died leaves one that lapses after `ttl`).
Claims that fail authentication are ignored and reported: an attacker with the
bucket cannot stop backups by planting one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from subvault.errors import SubvaultError
from subvault.offsite import layout
from subvault.offsite.manifest import MacKey
from subvault.stores.base import ObjectNotFound, Store
from subvault.timeutil import utcnow

log = logging.getLogger("subvault.offsite")

TTL = timedelta(minutes=15)


class WriterBusy(SubvaultError):
    """Another writer holds the bucket prefix."""


@dataclass(frozen=True)
class Claim:
    key: str
    host: str
    pid: int
    since: datetime
    expires: datetime


def _payload(claim: Claim) -> bytes:
    data = {"host": claim.host, "pid": claim.pid, "since": claim.since.isoformat(), "expires": claim.expires.isoformat()}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def read_claims(store: Store, key: MacKey) -> tuple[list[Claim], list[str]]:
    """Return the authenticated claims and the keys of those that are not."""
    good: list[Claim] = []
    bad: list[str] = []
    for info in store.list(layout.WRITERS):
        try:
            raw = json.loads(store.get(info.key))
            data = raw["claim"]
            claim = Claim(info.key, str(data["host"]), int(data["pid"]), datetime.fromisoformat(data["since"]),
                          datetime.fromisoformat(data["expires"]))
            authentic = key.check_bytes(_payload(claim), raw["mac"])
        except ObjectNotFound:
            continue  # released while we listed
        except (ValueError, KeyError, TypeError, AttributeError):
            authentic = False
        (good.append(claim) if authentic else bad.append(info.key))
    return good, bad


class WriterLease:
    """Hold the writer claim of a store for the duration of a `with` block."""

    def __init__(self, store: Store, key: MacKey, *, ttl: timedelta = TTL, attempts: int = 3,
                 clock: Callable[[], datetime] = utcnow, pause: Callable[[float], None] | None = None) -> None:
        self.store, self.key, self.ttl, self.attempts, self.clock = store, key, ttl, attempts, clock
        self._pause = pause or (lambda s: threading.Event().wait(s))
        self._claim: Claim | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.warnings: list[str] = []

    def __enter__(self) -> WriterLease:
        other = self._try()  # `attempts` tries in all, at least one
        for _ in range(self.attempts - 1):
            if other is None:
                break
            self._pause(random.uniform(0.5, 2.0))  # two runs that started together: one goes on
            other = self._try()
        if other is not None:
            raise WriterBusy(
                f"another offsite run writes to {self.store.url}: {other.host} pid {other.pid} since "
                f"{other.since:%Y-%m-%d %H:%M:%S}Z (claim {other.key}, expires {other.expires:%H:%M:%S}Z); "
                "run only one writer per bucket prefix"
            )
        self._thread = threading.Thread(target=self._renew_loop, name="offsite-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._claim is not None:
            self.store.delete(self._claim.key)
            self._claim = None

    def _try(self) -> Claim | None:
        """Put our claim and list; return None if ours is the only live one, else the other (ours removed)."""
        now = self.clock()
        stamp = f"{now:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(6)}"
        mine = Claim(f"{layout.WRITERS}{stamp}.json", socket.gethostname(), os.getpid(), now, now + self.ttl)
        self._put(mine)
        claims, forged = read_claims(self.store, self.key)
        for key in forged:
            self.warnings.append(f"{key}: a writer claim that fails authentication; ignored (inspect and delete it)")
        now = self.clock()
        dead = {c.key for c in claims if c.key != mine.key and (c.expires <= now or _died_here(c))}
        others = [c for c in claims if c.key != mine.key and c.key not in dead]
        for key in dead:
            self.store.delete(key)  # ours (authenticated), and lapsed or its process gone: its run died
        if others:
            self.store.delete(mine.key)
            return min(others, key=lambda c: c.since)
        self._claim = mine
        return None

    def _put(self, claim: Claim) -> None:
        payload = _payload(claim)
        body = {"claim": json.loads(payload), "mac": self.key.mac_bytes(payload)}
        self.store.put(claim.key, json.dumps(body, sort_keys=True).encode())

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl.total_seconds() / 3):
            claim = self._claim
            if claim is None:
                return
            renewed = Claim(claim.key, claim.host, claim.pid, claim.since, self.clock() + self.ttl)
            try:
                self._put(renewed)
                self._claim = renewed
            except SubvaultError as exc:  # the next renewal retries; the claim lasts ttl
                log.warning("could not renew the writer claim %s: %s", claim.key, exc)


def _died_here(claim: Claim) -> bool:
    """A claim made on this host by a process that no longer exists (a killed run): stale at once,
    not after its ttl. A pid taken again by another process only keeps it live (the safe side)."""
    if claim.host != socket.gethostname():
        return False
    try:
        os.kill(claim.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
