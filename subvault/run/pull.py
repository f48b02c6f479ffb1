"""Pull mode: this host (the target) pulls from a source whose key allows only `serve --send-only`.

The same endpoint protocol and the same pure planner as push: only the sides are
swapped. The source's snapshots are listed by `subvault snapshots PATH` (answered by
`serve` on the source), sent with `btrfs send` there, received and verified here.
A compromised source holds no credential for this host and cannot delete its backups.

The source is untrusted: its names, times, uuids and streams may be lies. So this host
- pulls only the source's newest snapshot (when it does not hold it yet): what the
  source says of older ones decides nothing;
- receives with --chroot, finds what the stream made by what is new in the container
  (never by the name the source reported), and on a failed check deletes only that;
- names each entry by its own clock, and prunes by plan_received_prune: by each
  entry's creation time on this filesystem and the order it was received, exactly as
  `prune-received` does. No time the source reports reaches retention.
After pulling, this host records on the source which snapshot each next pull builds on
(subvault.pullholds), so the source's prune keeps it (invariant 1 on the source side).
"""

from __future__ import annotations

import json
from datetime import datetime

from subvault.config.schema import SourceConf, SourceSubvolumeConf
from subvault.context import Context, host_name
from subvault.endpoints import commands as C
from subvault.endpoints.endpoint import Endpoint
from subvault.endpoints.runner import LocalRunner, SshRunner, parse_ssh_url
from subvault.endpoints.transfer import prune_steps, settle_steps, transfer
from subvault.errors import SubvaultError, UsageError
from subvault.plan.replication import Source, entry_name, plan_received_prune, plan_replication
from subvault.results import Item, Outcome
from subvault.run import renamed
from subvault.run.prune_received import received
from subvault.units import human_size


def _source_endpoint(src: SourceConf) -> Endpoint:
    url = parse_ssh_url(src.url)
    runner = SshRunner(url, identity=src.ssh_identity, cipher=src.ssh_cipher, options=src.ssh_options)
    return Endpoint(runner, url.path or "/", src.name)


def remote_snapshots(ep: Endpoint, sub: SourceSubvolumeConf) -> list[Source]:
    """Return the source subvolume's timeline snapshots as replication sources."""
    res = ep.runner.run([C.snapshots(sub.path)], what=f"list snapshots of {sub.path}")
    try:
        rows = json.loads(res.stdout)
    except ValueError:
        raise SubvaultError(f"{ep.name}: `subvault snapshots {sub.path}` did not answer JSON; is subvault installed there?") from None
    return [
        Source(uuid=r["uuid"], time=datetime.fromisoformat(r["date"]), path=r["path"], received_uuid=r.get("received_uuid"), number=r["number"])
        for r in rows
        if r.get("kind") == "timeline" and r.get("uuid")
    ]


def pull(ctx: Context, *, source: str | None = None) -> Outcome:
    """Pull every configured source subvolume into its dest, then prune by the source's keep."""
    out = Outcome("pull", dry_run=ctx.dry_run)
    sources = [s for s in ctx.config.source if source in (None, s.name)]
    if source and not sources:
        raise UsageError(f'no [[source]] named "{source}" in the config')
    for src in sources:
        dest = Endpoint(LocalRunner(), src.dest, "local")
        try:
            dest.check()
            ep = _source_endpoint(src)
        except (SubvaultError, OSError) as exc:
            out.fail(src.name, exc)
            continue
        with ep:
            bases: list[tuple[SourceSubvolumeConf, str]] = []
            for sub in src.subvolume:
                try:
                    base = _pull_one(ctx, src, ep, dest, sub, out)
                except (SubvaultError, OSError) as exc:
                    out.fail(f"{src.name}:{sub.name}", exc)
                    continue
                if base:
                    bases.append((sub, base))
            if bases and not ctx.dry_run:
                _record_bases(src, ep, bases, out)
    return out


def _record_bases(src: SourceConf, ep: Endpoint, bases: list[tuple[SourceSubvolumeConf, str]], out: Outcome) -> None:
    """Tell the source which snapshot each pulled subvolume's next pull builds on (subvault.pullholds), in one command.

    A source whose key does not allow it gets a warning, not a failure: the pull itself
    succeeded, but that source's prune may then delete the base (a full send follows).
    """
    puller = src.puller or host_name()
    try:
        ep.apply([[C.pulled(puller, sub.path, base)] for sub, base in bases], "record the incremental bases")
    except SubvaultError as exc:
        out.warnings.append(
            f"{src.name}: could not record this host's incremental bases there ({exc}); "
            f"its prune may delete them: give its key `--puller {puller}`"
        )


def _pull_one(ctx: Context, src: SourceConf, ep: Endpoint, dest: Endpoint, sub: SourceSubvolumeConf, out: Outcome) -> str | None:
    """Pull one subvolume; return the source uuid of its incremental base afterwards (None if none)."""
    subject = f"{src.name}:{sub.name}"
    sources = remote_snapshots(ep, sub)
    container = dest.container(src.name, sub.name)
    entries = dest.entries(container, sub.name)
    plan = plan_replication(sub.name, sources, entries or [], "latest", ctx.now, ctx.tz)
    plan.prune = plan_received_prune(received(container), src.keep, ctx.now, ctx.tz).prune if entries is not None else []
    if plan.base_before is None and any(s.full for s in plan.sends):
        # invariant 7: pulled before under another [[source.subvolume]] name? (the uuids are the source's word:
        # a lying source can only stop its own pull this way, never make anything be deleted)
        found = renamed.find_renamed(dest, src.name, sub.name, sources, [])
        if found is not None:
            raise renamed.refusal(subject, sub.name, sub.path, found, entries, where="on this host")
    by_uuid = {s.uuid: s for s in sources}
    taken = {e.name for e in entries or []} | {a.final for a in plan.adopt}
    if ctx.dry_run:
        out.items += [Item(subject, "would-delete-partial", r.name) for r in plan.partials]
        out.items += [Item(subject, "would-adopt", f"{a.name} → {a.final}") for a in plan.adopt]
        out.items += [Item(subject, "would-pull", f"#{by_uuid[s.uuid].number} ({'full' if s.full else 'incremental'})") for s in plan.sends]
        out.items += [Item(subject, "would-prune", f"{r.name} ({r.reason})") for r in plan.prune]
        return None
    dest.apply(settle_steps(container, plan), "delete partials")
    out.items += [Item(subject, "delete-partial", f"{r.name} ({r.reason})") for r in plan.partials]
    out.items += [Item(subject, "adopt", f"{a.name} → {a.final} (complete and verified)") for a in plan.adopt]
    if entries is None and plan.sends:
        dest.ensure_container(container, known_missing=True)
    for send in plan.sends:
        snap = by_uuid[send.uuid]
        done = transfer(
            ep, snap.path, uuid=snap.uuid,
            parent=by_uuid[send.parent].path if send.parent else None,
            clones=[by_uuid[c].path for c in send.clones],
            dest=dest, container=container, final_name=(name := entry_name(sub.name, ctx.now, taken, len(taken))),
            compress=src.compress == "zstd", stall_seconds=src.stall_minutes * 60, untrusted=True,
        )
        taken.add(name)
        kind = "full" if send.full else "incremental"
        out.items.append(Item(subject, "pulled", f"#{snap.number} → {name} ({kind}, {human_size(done.bytes)})", {"full": send.full, "bytes": done.bytes}))
    dest.apply(prune_steps(container, plan.prune), "prune")
    out.items += [Item(subject, "prune", f"{r.name} ({r.reason})") for r in plan.prune]
    if not (plan.sends or plan.prune or plan.partials or plan.adopt):
        out.items.append(Item(subject, "up-to-date", ""))
    return plan.base_after
