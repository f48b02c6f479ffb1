"""Layer 4 executor: age-encrypted send streams in object storage.

Per object target and subvolume: read what is offsite (manifests, unfinished uploads),
plan (offsite/plan.py: one upload, incremental unless a full is due; deletions that no
kept chain needs), upload parts then the manifest (invariant 4), then delete. Holds for
the local pruner come from the same plan, or from the target when it is read afresh,
or from the cache of the last successful read when the bucket is unreachable.

Against anyone with write access to the bucket (docs/design.md, threat model): one
writer per prefix (offsite/lease.py); damaged points are not up to date and are sent
again (offsite/target.py); the ledger names points that are gone (offsite/ledger.py);
a missing MAC key is an error, never silently a new one, and nothing is deleted
because it fails to authenticate.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter, local_scan
from subvault.config.schema import SubvolumeConf, TargetConf
from subvault.context import Context
from subvault.errors import NotFound, Refused, SubvaultError, UsageError
from subvault.model import LocalSnapshot
from subvault.offsite import layout, verified
from subvault.offsite import ledger as ledgers
from subvault.offsite import plan as oplan
from subvault.offsite.lease import WriterLease
from subvault.offsite.ledger import cache_path
from subvault.offsite.manifest import MacKey, MacKeyMissing, Manifest, ManifestError
from subvault.offsite.parts import UploadRequest
from subvault.offsite.restore import Problem, list_manifests, restore_chain, verify_target, whole_chain
from subvault.offsite.target import TargetState, apply_deletions, holds_for_pruner, scan
from subvault.offsite.upload import UploadResult, upload
from subvault.plan import restore_point
from subvault.plan.cadence import due
from subvault.plan.retention import Point, Policy, parse_policy, plan_retention
from subvault.results import Item, Outcome
from subvault.run import renamed
from subvault.secrets import read_private
from subvault.stores import Store, open_store
from subvault.timeutil import parse_duration

HOLDS_CACHE = "offsite-holds"
MIB = 1 << 20


def open_target_store(tconf: TargetConf) -> Store:
    return open_store(tconf.url, endpoint=tconf.endpoint, region=tconf.region, credentials=tconf.credentials, path_style=tconf.path_style,
                      concurrency=tconf.upload_concurrency)


def mac_key(tconf: TargetConf, store: Store | None = None, *, create: bool = False) -> MacKey:
    """Return the target's manifest key; make one only with `create` (a real upload) and
    only while the bucket holds no restore point.

    Without `create` (check, status, prune's holds, every dry run) a missing key over an
    empty bucket is a throwaway key in memory: nothing signed exists to verify, and
    nothing is written. Raise MacKeyMissing if the key file is gone but the bucket holds
    manifests or a ledger: a new key would make every one of them fail authentication.
    """
    path = Path(tconf.mac_key)
    if not path.exists():
        store = store if store is not None else open_target_store(tconf)
        signed = next((i.key for i in store.list("") if i.key.endswith(("/" + layout.MANIFEST, "/" + layout.LEDGER))), None)
        if signed is not None:
            raise MacKeyMissing(
                f"the manifest key {path} is missing but {store.url} holds restore points signed with it ({signed}); "
                f"copy it back from the backup copy kept with the age identity (mode 0600) and run again; "
                "no new key is made, since every restore point would then fail authentication"
            )
        if not create:
            return MacKey(secrets.token_bytes(32))
    return MacKey.load_or_create(path)


def ledger_cache(ctx: Context, target: str, subvolume: str) -> Path:
    return cache_path(ctx.state_dir, target, subvolume)


def scan_target(ctx: Context, store: Store, key: MacKey, tconf: TargetConf, subvolume: str) -> TargetState:
    """scan() with this host's ledger cache and the last verify's findings."""
    suspect = verified.last(ctx.state_dir, tconf.name)[1].get(subvolume, {})
    return scan(store, key, subvolume, cache=None if ctx.dry_run else ledger_cache(ctx, tconf.name, subvolume), suspect=suspect)


@dataclass(frozen=True)
class _Local:
    by_uuid: dict[str, LocalSnapshot]

    @property
    def points(self) -> list[oplan.LocalSnapshot]:
        return [oplan.LocalSnapshot(u, s.date, s.number) for u, s in self.by_uuid.items()]


def _locals(sub: SubvolumeConf) -> _Local:
    snaps = local_scan.scan(sub.name, sub.path, with_uuids=True)
    return _Local({s.uuid: s for s in snaps if s.replicable and s.uuid})


def offsite(ctx: Context, *, target: str | None = None, only_due: bool = False) -> Outcome:
    """Upload what each object target is owed and delete what no kept chain needs.

    only_due (inside `run`): a subvolume is skipped while its newest restore point is
    within the cadence of the target's keep (the finest unit, e.g. daily for "8d 5w 12m").
    """
    from contextlib import nullcontext

    out = Outcome("offsite", dry_run=ctx.dry_run)
    for tconf in ctx.config.targets_by_type("object", target):
        subs = [s for s in ctx.config.subvolume if tconf.name in ctx.config.targets_of(s)]
        if not subs:
            continue
        try:
            store = open_target_store(tconf)
            key = mac_key(tconf, store, create=not ctx.dry_run)
            lease = nullcontext() if ctx.dry_run else WriterLease(store, key)
            with lease:
                for sub in subs:
                    try:
                        _offsite_one(ctx, store, key, sub, tconf, out, only_due)
                    except (SubvaultError, OSError) as exc:
                        out.fail(f"{sub.name}→{tconf.name}", exc)
            if isinstance(lease, WriterLease):
                out.warnings.extend(lease.warnings)
        except (SubvaultError, OSError) as exc:
            out.fail(tconf.name, exc)
    return out


def _offsite_one(ctx: Context, store: Store, key: MacKey, sub: SubvolumeConf, tconf: TargetConf, out: Outcome, only_due: bool) -> None:
    subject = f"{sub.name}→{tconf.name}"
    locals_ = _locals(sub)
    state = scan_target(ctx, store, key, tconf, sub.name)
    if not state.manifests and any(p.key.endswith("/" + layout.MANIFEST) for p in state.problems):
        raise ManifestError(
            f"{store.url}: no restore point of {sub.name} authenticates with the key {tconf.mac_key} "
            "(a new or wrong key?); refusing to write there: put the original key back"
        )
    out.warnings.extend(f"{subject}: {p}" for p in state.problems)
    policy = parse_policy(tconf.keep)
    plan = oplan.plan_offsite(state.points, locals_.points, policy, parse_duration(tconf.full_every), ctx.now, ctx.tz,
                              state.in_progress, state.damaged)
    ctx.cache.setdefault(HOLDS_CACHE, {})[(sub.name, tconf.name)] = dict(plan.hold_local)
    newest = max((p.created for p in state.points), default=None)
    step = plan.upload
    # "Not due" only over a whole bucket: with a point damaged, gone or failing to
    # authenticate, the step goes ahead (and fails loudly if it must), never "up to date".
    whole = not state.damaged and not state.problems and not (state.judgement and state.judgement.gone)
    if only_due and step and not step.resume and whole and not due(newest, policy, ctx.now, ctx.tz).is_due:
        out.items.append(Item(subject, "not-due", f"newest restore point {newest:%Y-%m-%d %H:%M} is within {policy.describe()}"))
        step = None
    present = {m.uuid: m.created for m in state.manifests}
    order = {m.uuid: len(m.chain) for m in state.manifests}
    deletions = list(plan.delete) + _damaged_dropped(state, plan, step, policy, ctx)
    if step is not None and step.parent_uuid is None and not state.points and not state.manifests:
        # invariant 7: a first full under this name may follow a rename in the config (run/renamed.py)
        old = renamed.offsite_old_names((o.key for o in store.list("")), sub.name, set(locals_.by_uuid))
        if old:
            out.warnings.append(renamed.offsite_warning(subject, store.url, sub.name, sub.path, old))
    if step is not None:
        snap = locals_.by_uuid[step.uuid]
        kind = "full" if step.parent_uuid is None else "incremental"
        again = " again: the offsite copy is damaged" if step.uuid in state.damaged else ""
        if ctx.dry_run:
            why = step.reason.removeprefix(f"{kind}: ")  # the planner's reason may already name the kind
            out.items.append(Item(subject, "would-upload", f"#{snap.number} ({kind}: {why}){again}"))
        else:
            ctx.say(f"{subject}: uploading #{snap.number} ({kind}){again}")
            done = _upload_step(ctx, store, key, sub, tconf, locals_, step, policy, replace=step.uuid in state.damaged)
            present[step.uuid] = snap.date
            order[step.uuid] = len(step.chain)
            data = {"full": step.parent_uuid is None, "bytes": done.stream_bytes, "parts": done.parts_uploaded, "reused": done.parts_reused,
                    "reason": step.reason}
            out.items.append(Item(subject, "uploaded",
                                  f"#{snap.number} ({kind}: {step.reason}; {done.parts_uploaded} parts, {done.parts_reused} resumed){again}", data))
    elif not deletions:
        out.items.append(Item(subject, "up-to-date" if not state.damaged else "damaged",
                              "" if not state.damaged else f"{len(state.damaged)} restore points cannot be restored; see `subvault check`"))
    if not ctx.dry_run:
        _write_ledger(ctx, store, key, tconf, sub.name, state, present, order, {d.uuid for d in deletions if d.manifest}, policy)
    for d in deletions:
        if ctx.dry_run:
            out.items.append(Item(subject, "would-delete", f"{d.uuid} ({d.reason})"))
            continue
        apply_deletions(store, sub.name, [d])
        out.items.append(Item(subject, "deleted", f"{d.uuid} ({d.reason})"))


def _upload_step(ctx: Context, store: Store, key: MacKey, sub: SubvolumeConf, tconf: TargetConf, locals_: _Local,
                 step: oplan.UploadStep, policy: Policy, *, replace: bool) -> UploadResult:
    """Upload one planned snapshot (send | zstd | age, in parts); return what upload did."""
    snap = locals_.by_uuid[step.uuid]
    argv = ["btrfs", "send", "-q"]
    if step.parent_uuid:
        argv += ["-p", str(locals_.by_uuid[step.parent_uuid].path)]
    request = UploadRequest(sub.name, step.uuid, step.parent_uuid, tuple(step.chain), snap.date, [*argv, str(snap.path)],
                            tuple(tconf.recipients), number=snap.number)
    retain = None
    if tconf.object_lock_days:
        # Locked while any link of its chain may still be kept, plus the margin.
        covers = oplan.lock_until(snap.date, policy, parse_duration(tconf.full_every)) or ctx.now
        retain = covers + timedelta(days=tconf.object_lock_days)
    return upload(store, request, key, part_size=tconf.part_size_mib * MIB, retain_until=retain, replace=replace)


def _damaged_dropped(state: TargetState, plan: oplan.OffsitePlan, step: oplan.UploadStep | None, policy: Policy,
                     ctx: Context) -> list[oplan.Deletion]:
    """Damaged points the keep policy no longer keeps and no kept chain needs: deleted like any other."""
    damaged = [m for m in state.manifests if m.uuid in state.damaged and (step is None or m.uuid != step.uuid)]
    if not damaged:
        return []
    kept = {d.key for d in plan_retention([Point(m.uuid, m.created) for m in state.manifests], policy, ctx.now, ctx.tz) if d.keep}
    needed = {link for m in state.manifests if m.uuid in kept or m.uuid in plan.keep for link in m.chain}
    return [oplan.Deletion(m.uuid, f"damaged ({state.damaged[m.uuid]}) and no longer kept")
            for m in damaged if m.uuid not in kept and m.uuid not in needed]


def _write_ledger(ctx: Context, store: Store, key: MacKey, tconf: TargetConf, subvolume: str, state: TargetState,
                  present: Mapping[str, datetime], order: Mapping[str, int], dropped: Iterable[str], policy: Policy) -> None:
    """Write the ledger when it would change (before any deletion); never over one that fails authentication."""
    j = state.judgement
    if j is None or any("fails authentication" in p or "unreadable ledger" in p for p in j.problems):
        return
    new = ledgers.next_ledger(subvolume, j, state.ledger, present, dropped, policy, ctx.now, ctx.tz, order)
    if state.ledger is not None and j.reference is state.ledger and dict(new.points) == dict(state.ledger.points) \
            and dict(new.order) == dict(state.ledger.order):
        return
    ledgers.save(store, key, new)
    ledgers.remember(ledger_cache(ctx, tconf.name, subvolume), new)


def _record_verify(ctx: Context, target: str, manifests: Iterable[Manifest], problems: Iterable[Problem | str]) -> None:
    """Remember when this verify ran and which points it found corrupt (by their manifest MAC)."""
    mac = {(m.subvolume, m.uuid): m.mac for m in manifests}
    suspect: dict[str, dict[str, str]] = {}
    for p in problems:
        if not isinstance(p, Problem):
            continue  # a ledger's finding names no part
        parts = p.key.split("/")
        if len(parts) == 3 and parts[2].startswith("part-") and (parts[0], parts[1]) in mac:
            suspect.setdefault(parts[0], {})[parts[1]] = mac[(parts[0], parts[1])]
    verified.record(ctx.state_dir, target, ctx.now, suspect)


def offsite_holds(ctx: Context, sub: SubvolumeConf) -> dict[str, str]:
    """Local snapshots each object target still needs: its next parent and what is owed (invariant 2)."""
    held: dict[str, str] = {}
    for tconf in ctx.config.target:
        if tconf.type != "object" or tconf.name not in ctx.config.targets_of(sub):
            continue
        found = ctx.cache.get(HOLDS_CACHE, {}).get((sub.name, tconf.name))
        if found is None:
            snaps = list(_locals(sub).points)
            cache = ctx.state_dir / f"offsite-holds-{tconf.name}-{sub.name}.json"
            try:
                store = open_target_store(tconf)
                key = mac_key(tconf, store)
                found, warning = holds_for_pruner(store, key, sub.name, snaps, cache, write_cache=not ctx.dry_run)
            except SubvaultError as exc:
                found, warning = {s.uuid: "offsite target unusable" for s in snaps}, str(exc)
            if warning:
                ctx.say(f"warning: {tconf.name}: {warning}")
        for uuid, why in found.items():
            reason = f"{tconf.name}: {why}"
            held[uuid] = f"{held[uuid]}; {reason}" if uuid in held else reason
    return held


def _local_numbers(ctx: Context, subvolume: str) -> dict[str, int]:
    """Return {uuid: snapper number} of the subvolume's local snapshots, or {} if it cannot be read (a new machine)."""
    try:
        sub = ctx.config.get_subvolume(subvolume)
        return {s.uuid: s.number for s in local_scan.scan(sub.name, sub.path, with_uuids=True) if s.uuid}
    except (SubvaultError, OSError):
        return {}


def restore_from_offsite(ctx: Context, target: str, subvolume: str, at: str, into: str, identity: str, *, verify_mac: bool = True) -> Outcome:
    """Download, verify, decrypt and receive the chain of the newest restore point at or before `at`.

    The result is <into>/<subvolume>, a writable snapshot of the received one; the
    received links are kept read-only under <into>/.subvault-offsite/ only while needed.
    """
    read_private(identity, "age identity")  # invariant 11: a readable identity decrypts every backup
    tconf = ctx.config.get_target(target)
    store = open_target_store(tconf)
    key = mac_key(tconf, store) if verify_mac else None
    manifests, problems = list_manifests(store, key, subvolume)
    numbers = _local_numbers(ctx, subvolume)
    points = {m.uuid: restore_point.Point(m.uuid, m.created, len(m.chain), m.number if m.number is not None else numbers.get(m.uuid))
              for m in manifests}
    try:
        pick = restore_point.choose(points.values(), at, ctx.now, ctx.tz, where=f"{target} ({subvolume})")
    except NotFound as exc:
        extra = f" ({'; '.join(map(str, problems))})" if problems else ""
        raise NotFound(f"{exc}{extra}") from None
    chosen = next(m for m in manifests if m.uuid == pick.uuid)
    when = restore_point.time_of(at, points.values(), ctx.now, ctx.tz)
    if when is not None:  # a point named by number or uuid is chosen explicitly, never in place of a newer one
        _refuse_if_newer_point_gone(ctx, store, key, target, subvolume, manifests, chosen, when)
    dest = Path(into)
    if not dest.is_dir() or not adapter.is_btrfs(dest):
        raise UsageError(f"--into {into}: must be an existing directory on btrfs")
    final = dest / subvolume
    if final.exists():
        raise UsageError(f"{final} exists; choose another --into or move it aside")
    out = Outcome("restore", dry_run=ctx.dry_run)
    label = f"{pick.label(ctx.tz)} (chain of {len(chosen.chain)})"
    if ctx.dry_run:  # the same verdict as the real run: every link there, every part there at its size
        whole_chain(store, chosen, key, hashes=False)
        out.items.append(Item(subvolume, "would-restore", f"{label} -> {final} (links and part sizes checked; SHA-256 when restoring)"))
        return out
    work = dest / ".subvault-offsite"
    work.mkdir(exist_ok=True)
    link_dirs: dict[str, Path] = {}

    def sink(manifest: Manifest) -> list[str]:
        d = work / manifest.uuid
        d.mkdir(exist_ok=True)
        link_dirs[manifest.uuid] = d
        return ["btrfs", "receive", "-q", str(d)]

    try:
        restore_chain(store, chosen, Path(identity), sink, key, sink_stdout=process.DEVNULL)
        received = link_dirs[chosen.uuid] / "snapshot"
        adapter.snapshot(received, final, readonly=False)
    finally:
        for d in link_dirs.values():
            for child in d.iterdir():
                if adapter.is_subvolume(child):
                    adapter.delete(child)
            d.rmdir()
        work.rmdir()
    out.items.append(Item(subvolume, "restored", f"{label} -> {final} (writable)"))
    return out


def _refuse_if_newer_point_gone(ctx: Context, store: Store, key: MacKey | None, target: str, subvolume: str,
                               manifests: Iterable[Manifest], chosen: Manifest, when: datetime) -> None:
    """Never restore an older point silently when the ledger says a newer one (at or before `when`) is gone."""
    found, distrust = ledgers.load(store, key, subvolume)
    j = ledgers.judge(subvolume, found, distrust, ledgers.read_cache(ledger_cache(ctx, target, subvolume)),
                      {m.uuid for m in manifests})
    lost = ledgers.newer_gone(j, chosen.created, len(chosen.chain), when)
    if lost:
        t, u = lost[-1]
        raise Refused(
            f"restore point {subvolume} {u} of {t:%Y-%m-%d %H:%M} is gone from {target} (deleted, or the bucket rolled back); "
            f"not restoring the older {chosen.uuid} in its place silently: to restore that one, pass --at {chosen.created.isoformat()}"
        )


def verify(ctx: Context, target: str, *, deep: bool = False, identity: str | None = None) -> Outcome:
    """Check every object's presence and hash; with deep, decrypt the newest chain per subvolume through `btrfs receive --dump`."""

    if deep and identity:
        read_private(identity, "age identity")  # invariant 11: a readable identity decrypts every backup
    tconf = ctx.config.targets_by_type("object", target)[0]
    store = open_target_store(tconf)
    key = mac_key(tconf, store)
    out = Outcome("verify")
    problems: list[Problem | str] = [*verify_target(store, key)]
    manifests, _ = list_manifests(store, key)
    names = {m.subvolume for m in manifests} | {s.name for s in ctx.config.subvolume if tconf.name in ctx.config.targets_of(s)}
    for name in sorted(names):  # points the ledger lists that are gone, a rolled-back ledger
        judgement = scan(store, key, name, cache=ledger_cache(ctx, tconf.name, name)).judgement
        if judgement is not None:  # scan always judges the ledger; the field is optional for states built without one
            problems += judgement.problems
    for p in problems:
        out.errors.append(str(p))
    _record_verify(ctx, tconf.name, manifests, problems)
    if manifests:
        out.items.append(Item(target, "verified", f"{len(manifests)} restore points, {len(problems)} problems"))
    # A subvolume sent here with nothing in the bucket is not verified: it has no backup there.
    held = {m.subvolume for m in manifests}
    for sub in ctx.config.subvolume:
        if tconf.name in ctx.config.targets_of(sub) and sub.name not in held:
            out.fail(f"{sub.name}→{target}", NotFound(f"no restore point in {target}; run `subvault offsite --target {target}`"))
    if deep:
        if not identity:
            raise UsageError("--deep decrypts a sample: give --identity KEYFILE")
        newest = {m.subvolume: m for m in sorted(manifests, key=lambda m: m.created)}  # the newest per subvolume
        for name, m in sorted(newest.items()):
            try:
                restore_chain(store, m, Path(identity), ["btrfs", "receive", "--dump"], key, sink_stdout=process.DEVNULL)
                out.items.append(Item(name, "decrypted", f"{m.uuid}: the stream parses (btrfs receive --dump)"))
            except SubvaultError as exc:
                out.fail(name, exc)
    return out
