"""Plan an adoption: the subvault.toml, the hand-over actions, what stays manual. Pure.

Inputs are the parsed configs and what discovery saw (snapshots, btrbk's local
snapshots, the entries in each btrbk target directory, schedulers); the output is an
AdoptPlan with reasons. No I/O, no clock.

Rules:
- A subvolume is matched across snapper and btrbk by its btrfs identity (filesystem
  uuid + subvolume id), never by name (invariant 7). Its subvault name is btrbk's
  snapshot_name (what the target entries are called), else the snapper config's name.
- The local timeline policy is snapper's TIMELINE_LIMIT_*; pre-change keep is NUMBER_LIMIT.
  A subvolume only btrbk knew keeps two periods of its target's finest unit.
- A btrbk send-receive target becomes a [[target]] whose url is btrbk's target
  directory; subvolumes sharing url, keep and ssh options share one target. Raw targets
  are not adopted (reported, and a comment in the config).
- Layout: btrbk's verified entries (read-only, with a received_uuid) are renamed from
  `<dir>/<name>.<btrbk timestamp>` into subvault's `<dir>/<host>/<sub>/<sub>.<UTC>Z`.
  A rename keeps received_uuid, so they stay restore points and the newest stays the
  incremental base. Entries that fail that check are left in place and reported.
- btrbk's local snapshots move into `<sub>/.snapshots/N/snapshot` (a rename: same
  uuid) as subvault timeline snapshots marked adopted=btrbk; the newest is the parent
  of the first incremental send.
- snapper's timeline and number snapshots stay where they are, with their numbers;
  with --apply they are marked subvault's (adopted=snapper), so subvault's policy prunes
  them from then on. They are local history: never sent (they were never on a target).
  Snapshots without a cleanup algorithm stay snapper's and are never deleted.
- adopt deletes nothing.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from subvault.adopt.btrbk_conf import BtrbkConfig, BtrbkSubvolume, BtrbkTarget, btrbk_retention, preserve_to_keep
from subvault.adopt.snapper_conf import SnapperConfig
from subvault.adopt.source import AdoptInputError
from subvault.config.schema import NAME_RE
from subvault.model import LocalSnapshot
from subvault.plan.replication import entry_name
from subvault.plan.retention import KEEP_ALL, KEEP_LATEST, UNITS, Policy, parse_policy

SNAPPER_OFF = ("TIMELINE_CREATE=no", "TIMELINE_CLEANUP=no", "NUMBER_CLEANUP=no", "EMPTY_PRE_POST_CLEANUP=no")
ADOPTED_KEY = "adopted"


@dataclass(frozen=True)
class FoundSnapper:
    conf: SnapperConfig
    path: str  # SUBVOLUME as reachable here (under --root)
    ident: str | None
    snapshots: tuple[LocalSnapshot, ...] = ()
    unreadable: tuple[str, ...] = ()  # .snapshots/N holding a snapshot whose info.xml is missing or unreadable


@dataclass(frozen=True)
class BtrbkSnapshot:
    """One of btrbk's local snapshots, or an entry in one of its target directories."""

    name: str
    time: datetime  # aware
    suffix: int = 0
    uuid: str | None = None
    received_uuid: str | None = None
    readonly: bool = True


@dataclass(frozen=True)
class FoundBtrbk:
    sub: BtrbkSubvolume
    ident: str | None
    snapshots: tuple[BtrbkSnapshot, ...] = ()
    # per sub.targets index: the entries found, or an error string (unreachable, not btrfs)
    entries: tuple[tuple[BtrbkSnapshot, ...] | str, ...] = ()


@dataclass(frozen=True)
class Scheduler:
    """Something that runs btrbk or snapper on a schedule: a systemd timer or cron lines."""

    kind: str  # "systemd" or "cron"
    path: str
    unit: str = ""  # systemd: the timer's name
    enabled: bool = True
    lines: tuple[int, ...] = ()  # cron: the lines that run btrbk


@dataclass
class Action:
    kind: str  # write-config, snapper-config, disable-timer, disable-cron, move-local, move-entry, take-over, install-timers
    subject: str
    detail: str
    command: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class SubPlan:
    name: str
    path: str
    timeline: str
    prechange_keep: int
    targets: list[str]
    snapper: str | None = None
    btrbk: str | None = None
    comments: list[str] = field(default_factory=list)


@dataclass
class TargetPlan:
    name: str
    url: str
    keep: str
    compress: str = "none"
    ssh_identity: str | None = None
    ssh_cipher: str | None = None
    ssh_options: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    btrbk_dir: str = ""  # btrbk's target directory (the path part of url)
    keeps: dict[str, tuple[str, int]] = field(default_factory=dict)  # subvolume -> (keep btrbk gave it, btrbk.conf line)
    line: int = 0  # btrbk.conf line of the first target line for this directory
    containers: list[str] = field(default_factory=list)  # <dir>/<host>/<sub> of each subvolume listed there


@dataclass
class AdoptPlan:
    subvolumes: list[SubPlan] = field(default_factory=list)
    targets: list[TargetPlan] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)  # top-of-file: what has no equivalent
    toml: str = ""


@dataclass
class Inputs:
    host: str
    state_dir: str = "/var/lib/subvault"
    snapper: Sequence[FoundSnapper] = ()
    btrbk: BtrbkConfig | None = None
    btrbk_found: Sequence[FoundBtrbk] = ()
    schedulers: Sequence[Scheduler] = ()
    snapper_root: str = "/"  # snapper --root for the printed commands
    ssh_options: Sequence[str] = ()  # adopt --ssh-option: what ~/.ssh/config would otherwise have to say
    config_path: str = "/etc/subvault/subvault.toml"


def plan_adoption(inp: Inputs) -> AdoptPlan:
    """Given what discovery found, return the config, the actions and the manual steps."""
    plan = AdoptPlan()
    targets: dict[tuple[object, ...], TargetPlan] = {}
    by_ident_btrbk = {f.ident: f for f in inp.btrbk_found if f.ident}
    used_btrbk: set[int] = set()
    names: set[str] = set()

    for fs in inp.snapper:
        fb = by_ident_btrbk.get(fs.ident) if fs.ident else None
        if fb is not None:
            used_btrbk.add(id(fb))
        plan.subvolumes.append(_subvolume(plan, inp, fs, fb, targets, names))
    for fb in inp.btrbk_found:
        if id(fb) not in used_btrbk:
            plan.subvolumes.append(_subvolume(plan, inp, None, fb, targets, names))
    plan.targets = list(targets.values())
    _schedulers(plan, inp)
    if plan.subvolumes:
        plan.actions.append(Action(
            "install-timers", "systemd", "install subvault-run.timer (hourly) and subvault-check.timer (daily)",
            f"SUBVAULT_CONFIG={inp.config_path} subvault install-systemd && systemctl daemon-reload && "
            "systemctl enable --now subvault-run.timer subvault-check.timer",
        ))
    if inp.btrbk is not None:
        for text, line, why in inp.btrbk.unmapped:
            plan.comments.append(f"{inp.btrbk.file}:{line}: {text}: no equivalent ({why})")
        for group, members in sorted(inp.btrbk.groups.items()):
            plan.comments.append(
                f"btrbk group {group} ({', '.join(members) or 'no subvolume'}): no equivalent; "
                f"`btrbk run {group}` becomes `subvault snapshot {' '.join(members)}` / `subvault replicate --target T`"
            )
    plan.manual.append("subvolumes neither tool covered: run `subvault check` and add each as [[subvolume]] or [[exclude]] with a reason")
    plan.manual.append("the snap-all script: call `subvault snap-all DESC` (or `subvault pre-change --desc DESC`, which also suspends Flux)")
    plan.manual.append("the coverage script and its OnFailure notify unit: `subvault check` (daily timer) with [notify] urls")
    plan.toml = render_toml(plan, inp)
    return plan


def _unique_name(wanted: str, names: set[str], fallback: str = "subvolume") -> str:
    """A config name (ASCII letters, digits, `_.-`) for wanted, not in names; added to names.

    Accents are dropped (rööt → root), other non-ASCII becomes `_`: every candidate the
    loop tries is then a valid name, so it ends.
    """
    ascii_ = unicodedata.normalize("NFKD", wanted).encode("ascii", "ignore").decode() if not wanted.isascii() else wanted
    base = "".join(c if (c.isascii() and c.isalnum()) or c in "_.-" else "_" for c in ascii_).lstrip("_.-") or fallback
    name, n = base[:60], 2
    while name in names or not NAME_RE.match(name):
        name = f"{base[:57]}_{n}"
        n += 1
    names.add(name)
    return name


def _subvolume(plan: AdoptPlan, inp: Inputs, fs: FoundSnapper | None, fb: FoundBtrbk | None,
               targets: dict[tuple[object, ...], TargetPlan], names: set[str]) -> SubPlan:
    wanted = fb.sub.snapshot_name if fb else fs.conf.name  # type: ignore[union-attr]  # callers pass fs or fb, never neither
    name = _unique_name(wanted, names)
    path = fs.path if fs else fb.sub.full_path  # type: ignore[union-attr]  # callers pass fs or fb, never neither
    comments: list[str] = []
    if name != wanted:
        comments.append(f'{"btrbk snapshot_name" if fb else "snapper config"} "{wanted}" is named "{name}" here: subvault names are '
                        "ASCII letters, digits and _ . - (the moved target entries take this name)")
    timeline, keep_n = None, 10
    if fs is not None:
        conf = fs.conf
        timeline = conf.timeline_policy()
        keep_n = conf.number_limit()
        for text, line, why in conf.unmapped():
            comments.append(f"{conf.file}:{line}: {text}: no equivalent ({why})")
        if not conf.timeline_create:
            comments.append(f"{conf.file}: TIMELINE_CREATE was no; subvault takes timeline snapshots by this policy")
        plan.found.append(
            f"snapper config {conf.name}: {conf.subvolume} → {path}; timeline {timeline or 'none'}"
            f"{' (created)' if conf.timeline_create else ' (not created)'}, NUMBER_LIMIT {keep_n}, "
            f"{len(fs.snapshots)} snapshots"
        )
        _take_over(plan, inp, fs, name)
    sub_targets: list[str] = []
    if fb is not None:
        plan.found.append(
            f"btrbk subvolume {fb.sub.full_path} ({inp.btrbk.file if inp.btrbk else 'btrbk.conf'}:{fb.sub.line}): "
            f"snapshot_name {fb.sub.snapshot_name}, {len(fb.snapshots)} local snapshots in {fb.sub.snapshot_dir}, "
            f"{len(fb.sub.targets)} targets"
        )
        for i, t in enumerate(fb.sub.targets):
            if t.type == "raw":
                msg = (f"raw target {t.url} ({_where(inp, t.line)}): not adopted — its .btrfs stream files stay where they are; "
                       "add an object target (type = \"object\") for an encrypted offsite copy")
                plan.manual.append(msg)
                comments.append(msg)
                continue
            tp = _target(plan, inp, fb, t, targets, name)
            if tp.name in sub_targets:  # btrbk lists it twice for this subvolume: one target, adopted once
                msg = f"{_where(inp, t.line)}: target {t.url} is listed again for {fb.sub.path}; adopted once"
                comments.append(msg)
                plan.found.append(msg)
                continue
            sub_targets.append(tp.name)
            found = fb.entries[i] if i < len(fb.entries) else "not listed"
            _entries(plan, inp, fb, t, tp, name, found)
        _moves(plan, inp, fb, name, path)
        timeline = _local_timeline(plan, inp, fb, name, timeline, comments,
                                   [tp for tp in targets.values() if tp.name in sub_targets])
        if fb.sub.get("snapshot_create") not in ("always", ""):
            comments.append(f"{_where(inp, fb.sub.line_of('snapshot_create'))}: snapshot_create {fb.sub.get('snapshot_create')}: "
                            "no equivalent (subvault snapshots on its timeline's cadence)")
    if timeline is None:
        timeline = "24h 7d 4w"
        comments.append("snapper's TIMELINE_LIMIT_* are all 0: subvault needs a timeline; using the default 24h 7d 4w")
    return SubPlan(name, path, timeline, keep_n, sub_targets, fs.conf.name if fs else None,
                   fb.sub.full_path if fb else None, comments)


def _local_timeline(plan: AdoptPlan, inp: Inputs, fb: FoundBtrbk, name: str, snapper: str | None,
                    comments: list[str], tps: list[TargetPlan]) -> str:
    """The local timeline keeps at least what btrbk's snapshot_preserve(_min) kept (its
    snapshots become subvault timeline snapshots) and what snapper's limits kept; where
    that cannot be expressed it keeps more ("all") and says so."""
    pres, pmin = fb.sub.get("snapshot_preserve"), fb.sub.get("snapshot_preserve_min")
    where = _where(inp, fb.sub.line_of("snapshot_preserve_min") or fb.sub.line_of("snapshot_preserve"))
    keep, notes = btrbk_retention(pres, pmin)
    comments += [f"{where}: snapshot{n}" for n in notes]
    if keep is None:
        if snapper is not None:
            return snapper
        timeline = f"2{_finest_target_unit(tps)}"
        comments.append(f"btrbk kept only its newest snapshot as the parent (snapshot_preserve_min {pmin}, snapshot_preserve {pres}); "
                        f"subvault keeps {timeline} locally plus whatever a target still needs")
        return timeline
    hours = Counter(s.time.replace(minute=0, second=0, microsecond=0) for s in fb.snapshots)
    if keep != KEEP_ALL and pmin not in ("latest", "no") and any(n > 1 for n in hours.values()):
        msg = (f"{name}: btrbk kept every snapshot younger than {pmin} ({where}) and some of its {len(fb.snapshots)} snapshots "
               'share an hour; subvault keeps one per hour, so the adopted timeline is "all" (nothing pruned) — '
               "shorten it by hand once those snapshots have aged out")
        plan.manual.append(msg)
        comments.append(msg)
        keep = KEEP_ALL
    if snapper is None:
        return keep
    wider = _wider(snapper, keep)
    if wider != snapper:
        comments.append(f"timeline {wider}: snapper's {snapper} widened to keep what btrbk kept ({keep})")
    return wider


def _wider(a: str, b: str) -> str:
    """A policy keeping at least the periods of both (per unit the larger count)."""
    pa, pb = parse_policy(a), parse_policy(b)
    if pa.keep_all or pb.keep_all:
        return KEEP_ALL
    counts: dict[str, int | None] = {}
    for unit in UNITS:
        if unit in pa.counts or unit in pb.counts:
            ca, cb = pa.counts.get(unit, 0), pb.counts.get(unit, 0)
            counts[unit] = None if ca is None or cb is None else max(ca, cb)
    return Policy(counts=counts).describe() if counts else b


def _where(inp: Inputs, line: int | None) -> str:
    file = inp.btrbk.file if inp.btrbk else "btrbk.conf"
    return f"{file}:{line}" if line else file


def _finest_target_unit(tps: list[TargetPlan]) -> str:
    for unit in ("h", "d", "w", "m", "y"):
        for tp in tps:
            policy = parse_policy(tp.keep)
            if policy.counts.get(unit) not in (None, 0) or (unit in policy.counts and policy.counts[unit] is None):
                return unit
    return "d"


def _target(plan: AdoptPlan, inp: Inputs, fb: FoundBtrbk, t: BtrbkTarget, targets: dict[tuple[object, ...], TargetPlan],
            sub_name: str) -> TargetPlan:
    """One [[target]] per btrbk target directory: btrbk's per-subvolume target_preserve on
    the same directory becomes the keep that keeps the most (a comment names each); ssh
    settings that differ for the same directory are refused naming btrbk.conf:LINE."""
    keep, notes = preserve_to_keep(t.get("target_preserve"), t.get("target_preserve_min"))
    line = t.line_of("target_preserve") or t.line_of("target_preserve_min")
    comments = [f"{_where(inp, line)}: target{n}" for n in notes]
    conn = connection(t, inp.ssh_options)
    url, directory, identity, cipher, options = conn.url, conn.directory, conn.identity, conn.cipher, list(conn.options)
    compress = "none"
    if t.is_ssh:
        sc = t.get("stream_compress")
        if sc not in ("no", ""):
            compress = "zstd"
            if sc != "zstd":
                comments.append(f"{_where(inp, t.line_of('stream_compress'))}: stream_compress {sc}: subvault compresses with zstd")
    elif t.get("stream_compress") not in ("no", ""):
        comments.append(f"{_where(inp, t.line_of('stream_compress'))}: stream_compress on a local target: not needed, not written")
    if t.get("incremental") == "no":
        comments.append(f"{_where(inp, t.line_of('incremental'))}: incremental no: subvault always sends incrementally when a parent exists")
    key = (url,)
    if key not in targets:
        host = url[len("ssh://"):].split("/", 1)[0].rsplit("@", 1)[-1].split(":")[0] if t.is_ssh else ""
        wanted = host.split(".")[0] if host else (directory.rstrip("/").rsplit("/", 1)[-1] or "local")
        taken = {tp.name for tp in targets.values()}
        name = _unique_name(wanted, taken, "target")
        targets[key] = TargetPlan(name, url, keep, compress, identity, cipher, options, comments, directory.rstrip("/") or "/",
                                  {sub_name: (keep, t.line)}, t.line)
        plan.found.append(f"btrbk target {t.url} ({_where(inp, t.line)}) → [[target]] {name}: keep {keep}")
        return targets[key]
    tp = targets[key]
    if (identity, cipher, options) != (tp.ssh_identity, tp.ssh_cipher, tp.ssh_options):
        raise AdoptInputError(
            inp.btrbk.file if inp.btrbk else "btrbk.conf", t.line,
            f"target {t.url} is reached with other ssh_identity/ssh_cipher_spec/ssh_compression than at line {tp.line}; "
            "subvault has one set per target directory: make them the same in btrbk.conf and run adopt again",
        )
    if compress == "zstd":
        tp.compress = "zstd"
    tp.keeps.setdefault(sub_name, (keep, t.line))
    if keep != tp.keep:
        wider = _wider(tp.keep, keep) if KEEP_LATEST not in (tp.keep, keep) else (keep if tp.keep == KEEP_LATEST else tp.keep)
        tp.keep = wider
        tp.comments = [c for c in tp.comments if not c.startswith("btrbk kept ")]
        each = ", ".join(f"{s} {k} ({_where(inp, ln)})" for s, (k, ln) in tp.keeps.items())
        tp.comments.append(f"btrbk kept {each} here; subvault has one keep per target: {wider}, which keeps at least each")
    for c in comments:
        if c not in tp.comments:
            tp.comments.append(c)
    return tp


@dataclass(frozen=True)
class Connection:
    """How btrbk reached a target, as subvault will: url with user and port, identity, cipher, -o options."""

    url: str
    directory: str
    identity: str | None = None
    cipher: str | None = None
    options: tuple[str, ...] = ()


def connection(t: BtrbkTarget, extra_options: Sequence[str] = ()) -> Connection:
    """Return the subvault connection for a btrbk target: ssh_user/ssh_port go into the url,
    ssh_identity and ssh_cipher_spec into their keys, ssh_compression and `extra_options`
    (adopt --ssh-option) into ssh_options."""
    if not t.is_ssh:
        return Connection(t.url.rstrip("/") or "/", t.url.rstrip("/") or "/")
    hostport, _, path = t.url[len("ssh://"):].partition("/")
    directory = ("/" + path).rstrip("/") or "/"
    if "@" not in hostport:
        hostport = f"{t.get('ssh_user') or 'root'}@{hostport}"
    if t.get("ssh_port") and ":" not in hostport.split("@", 1)[1]:
        hostport = f"{hostport}:{t.get('ssh_port')}"
    cipher = t.get("ssh_cipher_spec")
    options = (["Compression=yes"] if t.get("ssh_compression") == "yes" else []) + list(extra_options)
    return Connection(f"ssh://{hostport}{directory}", directory, t.get("ssh_identity") or None,
                      cipher if cipher not in ("", "default") else None, tuple(options))


def _entries(plan: AdoptPlan, inp: Inputs, fb: FoundBtrbk, t: BtrbkTarget, tp: TargetPlan, name: str,
             found: tuple[BtrbkSnapshot, ...] | str) -> None:
    if isinstance(found, str):
        plan.manual.append(f"{tp.name}: could not list {t.url} ({found}); run adopt --apply again once it is reachable")
        return
    container = f"{tp.btrbk_dir.rstrip('/')}/{inp.host}/{name}"
    if container not in tp.containers:
        tp.containers.append(container)  # an interrupted --apply may have left its staging container to finish
    taken: set[str] = set()
    moved = 0
    for e in sorted(found, key=lambda e: (e.time, e.suffix, e.name)):
        if not (e.readonly and e.received_uuid):
            lacks = " and ".join(x for x in ("is writable" if not e.readonly else "",
                                             "has no received_uuid" if not e.received_uuid else "") if x)
            hint = ""
            if e.received_uuid:  # writable with a received_uuid: an adopt --apply was interrupted
                hint = (f"; if it is whole (an adopt --apply interrupted between its flip and its rename), "
                        f"`btrfs property set -ts {tp.btrbk_dir}/{e.name} ro true` and run adopt --apply again")
            plan.manual.append(f"{tp.name}: {tp.btrbk_dir}/{e.name} {lacks}, so it is not a verified receive; "
                               f"left in place, not a restore point for subvault{hint}")
            continue
        final = entry_name(name, e.time, taken, e.suffix or moved + 1)
        taken.add(final)
        moved += 1
        src, dst = f"{tp.btrbk_dir.rstrip('/')}/{e.name}", f"{container}/{final}"
        plan.actions.append(Action("move-entry", f"{name}→{tp.name}", f"{src} → {dst}",
                                   data={"target": tp.name, "src": src, "dst": dst, "container": container}))
    if moved:
        plan.found.append(f"{tp.name}: {moved} btrbk entries of {fb.sub.snapshot_name} in {tp.btrbk_dir} (restore points, kept by keep {tp.keep})")


def _moves(plan: AdoptPlan, inp: Inputs, fb: FoundBtrbk, name: str, path: str) -> None:
    for s in sorted(fb.snapshots, key=lambda s: (s.time, s.suffix, s.name)):
        src = f"{fb.sub.snapshot_dir}/{s.name}"
        plan.actions.append(Action(
            "move-local", name, f"{src} → {path}/.snapshots/N/snapshot (timeline, adopted=btrbk, dated {s.time:%Y-%m-%d %H:%M} UTC)",
            data={"src": src, "sub_path": path, "time": s.time.isoformat(), "btrbk_name": s.name, "uuid": s.uuid,
                  "btrbk_sub_path": fb.sub.full_path},
        ))


def _take_over(plan: AdoptPlan, inp: Inputs, fs: FoundSnapper, name: str) -> None:
    conf = fs.conf
    kinds: Counter[str] = Counter()
    for s in fs.snapshots:
        if s.owned:
            continue
        kind = {"timeline": "timeline", "number": "prechange"}.get(s.cleanup)
        kinds[kind or "none"] += 1
        if kind:
            plan.actions.append(Action("take-over", name, f"#{s.number} ({s.cleanup}) → subvault {kind}",
                                       data={"path": str(s.path.parent), "kind": kind, "number": s.number}))
    if fs.unreadable:
        shown = ", ".join(fs.unreadable[:5]) + (f" and {len(fs.unreadable) - 5} more" if len(fs.unreadable) > 5 else "")
        plan.manual.append(f"{name}: {len(fs.unreadable)} snapper snapshots with a missing or unreadable info.xml ({shown}) "
                           "stay as they are: neither tool lists or prunes them; repair the info.xml or delete them by hand")
    if kinds["none"]:
        plan.manual.append(f"{name}: {kinds['none']} snapper snapshots without a cleanup algorithm stay snapper's (never deleted by either tool)")
    root = "" if inp.snapper_root in ("", "/") else f" --no-dbus --root {inp.snapper_root}"
    plan.actions.append(Action(
        "snapper-config", conf.name, f"stop snapper's timeline and cleanup for {conf.name} (its snapshots stay)",
        f"snapper{root} -c {conf.name} set-config {' '.join(SNAPPER_OFF)}",
        data={"config": conf.name},
    ))


def _schedulers(plan: AdoptPlan, inp: Inputs) -> None:
    for s in inp.schedulers:
        if s.kind == "systemd":
            plan.found.append(f"btrbk timer {s.unit} ({s.path}){'' if s.enabled else ', not enabled'}")
            if s.enabled:
                plan.actions.append(Action("disable-timer", s.unit, f"disable {s.unit}", f"systemctl disable --now {s.unit}",
                                           data={"unit": s.unit}))
        else:
            plan.found.append(f"btrbk cron entry {s.path}" + (f" lines {', '.join(map(str, s.lines))}" if s.lines else ""))
            cmd = (f"sed -i '{';'.join(f'{n}s/^/# disabled by subvault adopt: /' for n in s.lines)}' {s.path}"
                   if s.lines else f"chmod -x {s.path}")
            plan.actions.append(Action("disable-cron", s.path, f"disable btrbk in {s.path}", cmd,
                                       data={"path": s.path, "lines": list(s.lines)}))


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def render_toml(plan: AdoptPlan, inp: Inputs) -> str:
    """Return the subvault.toml for the plan; what has no equivalent is a comment saying so."""
    lines = ["# Written by `subvault adopt` from the snapper and btrbk configuration found on this host.",
             "# Review it, then `subvault config check`."]
    lines += [f"# {c}" for c in plan.comments]
    timelines = Counter(s.timeline for s in plan.subvolumes)
    keeps = Counter(s.prechange_keep for s in plan.subvolumes)
    default_timeline = timelines.most_common(1)[0][0] if timelines else "24h 7d 4w"
    default_keep = keeps.most_common(1)[0][0] if keeps else 10
    common = set(plan.subvolumes[0].targets) if plan.subvolumes else set()
    for s in plan.subvolumes[1:]:
        common &= set(s.targets)
    default_targets = [t.name for t in plan.targets if t.name in common]
    lines += ["", "[defaults]", f"timeline = {_q(default_timeline)}", f"prechange_keep = {default_keep}",
              f"targets = [{', '.join(_q(t) for t in default_targets)}]", f"state_dir = {_q(inp.state_dir)}"]
    for s in plan.subvolumes:
        lines.append("")
        origin = " and ".join(x for x in (f"snapper config {s.snapper}" if s.snapper else "", f"btrbk {s.btrbk}" if s.btrbk else "") if x)
        lines.append(f"# from {origin}")
        lines += [f"# {c}" for c in s.comments]
        lines += ["[[subvolume]]", f"name = {_q(s.name)}", f"path = {_q(s.path)}"]
        if s.timeline != default_timeline:
            lines.append(f"timeline = {_q(s.timeline)}")
        if s.prechange_keep != default_keep:
            lines.append(f"prechange_keep = {s.prechange_keep}")
        if sorted(s.targets) != sorted(default_targets):
            lines.append(f"targets = [{', '.join(_q(t) for t in s.targets)}]")
    for t in plan.targets:
        lines.append("")
        lines += [f"# {c}" for c in t.comments]
        lines += ["[[target]]", f"name = {_q(t.name)}", 'type = "btrfs"', f"url = {_q(t.url)}", f"keep = {_q(t.keep)}"]
        if t.compress != "none":
            lines.append(f"compress = {_q(t.compress)}")
        if t.ssh_identity:
            lines.append(f"ssh_identity = {_q(t.ssh_identity)}")
        if t.ssh_cipher:
            lines.append(f"ssh_cipher = {_q(t.ssh_cipher)}")
        if t.ssh_options:
            lines.append(f"ssh_options = [{', '.join(_q(o) for o in t.ssh_options)}]")
    return "\n".join(lines) + "\n"
