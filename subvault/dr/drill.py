"""`drill`: restore the whole machine into sparse disk images, verify it, report RTO and RPO.

Verification (each a Check in the report):
- every captured subvolume is present on the restored filesystem;
- each restored protected subvolume has the tree digest of the source snapshot it came
  from (the local snapshot with that uuid; else the target's copy when it is local).
  What is digested is the verified received copy, as soon as it arrives (overlapping the
  remaining restore): the writable copy under the original name is a kernel snapshot of
  it. Nested subvolumes are left out on both sides: each is its own backup or none
  (see digest.py and docs/design.md, "How the drill treats nested subvolumes");
- the partition tables and filesystems carry the captured ids;
- every fstab entry resolves to a restored filesystem (and subvolume).
RTO is the wall time from start to verified; RPO the age of the oldest restore point.
With --boot (or [dr] boot = true) the restored machine is then booted in QEMU (see
boot.py and bootdrill.py): the boot overlaps the content digests, its time is reported
apart (and counted in RTO), its whole serial log kept beside the drill record as
<state_dir>/drill-logs/<drill id>-boot.log (state.py says how long).
The result is recorded in <state_dir>/drill.json for `check`. Loop devices and mounts
are undone and the images removed afterwards, pass or fail (unless keep).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from subvault import process
from subvault.btrfs import adapter, local_scan
from subvault.config.bootopts import boot_value_problems, unused_option_problems
from subvault.context import Context, host_name
from subvault.dr import bootdrill
from subvault.dr.boot import BootResult, BootSettings
from subvault.dr.digest import TreeDigest, tree_digest
from subvault.dr.disks import NO_CACHE
from subvault.dr.executor import Executor, Restored
from subvault.dr.manifest import Manifest
from subvault.dr.parse import PartitionTable, parse_blkid_export, parse_fstab, parse_sfdisk_dump
from subvault.dr.plan import Choice, DiskFacts, plan_restore
from subvault.dr.report import Check, DrillReport, RestoredFs, compare_ids, resolve_fstab, rpo
from subvault.dr.settings import DrSettings
from subvault.dr.source import TargetSource, find_capture
from subvault.dr.state import new_boot_log, record_drill
from subvault.dr.workspace import Workspace
from subvault.errors import BadArgument, SubvaultError
from subvault.timeutil import parse_at
from subvault.units import human_size


@dataclass
class DrillRequest:
    source: str
    at: str = "latest"
    capture: str | None = None
    host: str | None = None
    workdir: str | None = None  # default: [dr] drill_dir
    keep: bool = False
    boot: bool | None = None  # None: as [dr] boot says
    boot_timeout: float | None = None  # None: [dr] boot_timeout
    boot_ports: tuple[int, ...] = ()  # added to [dr] boot_ports
    boot_command: str | None = None  # None: [dr] boot_command
    boot_expect: str | None = None  # None: [dr] boot_expect
    # A fault injected between restore and boot, for the tests that prove a boot catches what checks cannot.
    after_restore: Callable[[Restored], None] | None = None


def drill(ctx: Context, req: DrillRequest) -> DrillReport:
    """Run a drill and record its result; return the report (its .ok says whether it passed).

    Raise SubvaultError for what stops a drill before it restores anything (no capture,
    no restore point); such a failure is recorded too.
    """
    started = time.monotonic()
    settings = DrSettings.from_config(ctx.config)
    check_boot_options(req, settings.boot)
    when = parse_at(req.at, ctx.now, ctx.tz)
    drill_id = ctx.now.strftime("%Y%m%dT%H%M%SZ")
    work = Path(req.workdir or settings.drill_dir) / drill_id
    try:
        with TargetSource(ctx.config.get_target(req.source), req.host or host_name()) as src:
            manifest, here = find_capture(src, ctx.config, settings.capture_dir, when, req.capture)
            choices = src.choose_all([p.name for p in manifest.protected], when)
            report = _drill_into_images(ctx, manifest, here, src, choices, work, req, _boot_settings(settings.boot, req), drill_id)
    except SubvaultError as exc:
        record_drill(ctx.state_dir, {"id": drill_id, "source": req.source, "at": req.at, "error": str(exc)}, ok=False, finished=ctx.now)
        raise
    finally:
        if not req.keep:
            shutil.rmtree(work, ignore_errors=True)
    report.rto_seconds = time.monotonic() - started
    report.rpo_seconds = rpo(choices, ctx.now).total_seconds()
    record_drill(ctx.state_dir, report.to_json(), ok=report.ok, finished=ctx.now)
    return report


def check_boot_options(req: DrillRequest, conf: BootSettings) -> None:
    """Refuse boot options that cannot work (config/bootopts.py) before the drill locks, restores or records anything."""
    given = {"--boot-timeout": req.boot_timeout is not None, "--boot-port": bool(req.boot_ports),
             "--boot-command": req.boot_command is not None, "--boot-expect": req.boot_expect is not None}
    enabled = conf.enabled if req.boot is None else req.boot
    problems = boot_value_problems(req.boot_timeout, req.boot_ports, None, req.boot_command, req.boot_expect,
                                   command_elsewhere=bool(conf.command.strip()))
    if not enabled:
        problems += unused_option_problems(name for name, yes in given.items() if yes)
    if problems:
        raise BadArgument("; ".join(problems))


def _boot_settings(conf: BootSettings, req: DrillRequest) -> BootSettings:
    from dataclasses import replace

    return replace(conf, enabled=conf.enabled if req.boot is None else req.boot,
                   timeout=req.boot_timeout or conf.timeout, ports=tuple(dict.fromkeys(conf.ports + tuple(req.boot_ports))),
                   command=conf.command if req.boot_command is None else req.boot_command,
                   expect=conf.expect if req.boot_expect is None else req.boot_expect)


def _drill_into_images(ctx: Context, m: Manifest, here: Path, src: TargetSource, choices: dict[str, Choice], work: Path, req: DrillRequest,
                       boot: BootSettings, drill_id: str) -> DrillReport:
    work.mkdir(parents=True, exist_ok=True)
    images = []
    for disk in m.disks:
        image = work / f"{disk.name}.img"
        with open(image, "wb") as fh:
            fh.truncate(disk.size_bytes)
        images.append(DiskFacts(str(image), disk.size_bytes))
    fstab = parse_fstab((here / "fstab").read_text())
    plan = plan_restore(m, images, choices, fstab, source=src.name, drill=True)
    report = DrillReport(src.name, req.at, 0.0, 0.0, {n: c.time.isoformat() for n, c in choices.items()}, image=str(work), id=drill_id)
    sources = _source_paths(ctx, src, choices)
    digests: dict[str, tuple[Future[TreeDigest], Future[TreeDigest] | None]] = {}
    booting: Future[BootResult] | None = None
    # The boot pool is left last: a boot never outlives its drill.
    with ThreadPoolExecutor(max_workers=1) as boot_pool, ThreadPoolExecutor(max_workers=2) as pool, Workspace(work / "mnt") as ws:
        # Source digests run while the receives run; each received copy's digest as soon as it is verified.
        early = {n: pool.submit(tree_digest, p) for n, p in sources.items()}

        restored_at: dict[str, Path] = {}

        def on_received(name: str, path: Path, _nested: frozenset[str]) -> None:
            # The writable copy is a kernel snapshot of this received one: same tree, digested while the rest restores.
            restored_at[name] = path
            digests[name] = (pool.submit(tree_digest, path), early.get(name))

        done = Executor(plan, m, here, src, ws, ctx.say, on_received, scratch=True).run()
        if boot.enabled:
            if req.after_restore:
                req.after_restore(done)
            # The boot runs while the digests finish (the filesystems are read-only from here on).
            booting = bootdrill.start(boot, m, fstab, done, ws.root, [i.path for i in images], work / "boot",
                                      new_boot_log(ctx.state_dir, drill_id), boot_pool, ctx.say)
        report.bytes_received = done.bytes
        report.checks += _subvolume_checks(m, done)
        report.checks += _digest_checks(m, digests, sources, restored_at)
        restored = _restored_filesystems(m, done)
        tables = {d.name: _table_of(img.path) for d, img in zip(m.disks, images, strict=True)}
        report.checks += compare_ids(m, tables, restored)
        report.checks += resolve_fstab(fstab, restored)
        # The boot reads its kernel and initrd from the restored filesystems: wait for it
        # before the workspace unmounts them (a fast drill once unmounted them first).
        boot_result = booting.result() if booting is not None else None
    report.checks.append(Check("plan", not plan.warnings, "; ".join(plan.warnings)))
    if booting is not None and boot_result is not None:
        report.boot = boot_result
        report.checks.append(Check("boot", boot_result.ok, f"{boot_result.method} on {boot_result.accelerator}: {boot_result.reason}"))
        report.checks += boot_result.probes
    return report


def _table_of(image: str) -> PartitionTable | None:
    """The image's partition table, or None when it has none (sfdisk finds no table)."""
    res = process.run(["sfdisk", "--dump", image], check=False)
    return parse_sfdisk_dump(res.stdout) if res.returncode == 0 else None


def _source_paths(ctx: Context, src: TargetSource, choices: dict[str, Choice]) -> dict[str, Path]:
    """For each choice, the source snapshot it came from: the local snapshot with its uuid, else the target's copy if local."""
    paths: dict[str, Path | None] = {}
    for sub in ctx.config.subvolume:
        c = choices.get(sub.name)
        if c is None:
            continue
        try:
            snaps = local_scan.scan(sub.name, sub.path, with_uuids=True)
        except SubvaultError:
            snaps = []
        found = next((s.path for s in snaps if s.uuid == c.received_uuid or (s.received_uuid and s.received_uuid == c.received_uuid)), None)
        paths[sub.name] = Path(found) if found else src.local_entry_path(c)
    for name, c in choices.items():
        if name not in paths and src.local_entry_path(c) is not None:
            paths[name] = src.local_entry_path(c)
    return {n: p for n, p in paths.items() if p is not None}


def _subvolume_checks(m: Manifest, done: Restored) -> list[Check]:
    checks = []
    for fs in m.btrfs:
        top = done.tops.get(fs.fs_uuid)
        missing = [s.path for s in fs.subvolumes if top is None or not adapter.is_subvolume(top / s.path)]
        checks.append(Check(f"subvolumes of {fs.fs_uuid}", not missing, f"missing: {', '.join(missing)}" if missing else f"{len(fs.subvolumes)} present"))
    return checks


def _first_difference(source: Path | None, restored: Path | None) -> str:
    """Name the first record that differs between two trees (a second walk, keeping records)."""
    if source is None or restored is None:
        return "no path to compare"
    theirs = tree_digest(restored, keep_records=True)
    diff = tree_digest(source, keep_records=True).first_difference(theirs)
    return f"first difference: {diff!r}" if diff else "the trees changed while they were read"


def _digest_checks(m: Manifest, digests: dict[str, tuple[Future[TreeDigest], Future[TreeDigest] | None]], sources: dict[str, Path], restored_at: dict[str, Path]) -> list[Check]:
    checks = []
    for p in m.protected:
        pair = digests.get(p.name)
        if pair is None:
            checks.append(Check(f"content {p.name}", False, "not restored"))
            continue
        restored = pair[0].result()
        if pair[1] is None:
            checks.append(Check(f"content {p.name}", True, f"source snapshot not reachable from here; {restored.entries} entries restored"))
            continue
        source = pair[1].result()
        ok = source.digest == restored.digest
        detail = f"{restored.entries} entries, {human_size(restored.bytes)}"
        if not ok:
            detail += f", tree digest differs from the source snapshot ({_first_difference(sources.get(p.name), restored_at.get(p.name))})"
        checks.append(Check(f"content {p.name}", ok, detail))
    return checks


def _restored_filesystems(m: Manifest, done: Restored) -> list[RestoredFs]:
    out = []
    for fs in m.filesystems:
        dev = done.devices.get((fs.disk, fs.partition))
        if dev is None:
            continue
        res = process.run(["blkid", "-p", "-o", "export", dev], check=False, env=NO_CACHE)
        probe = parse_blkid_export(res.stdout)[0] if res.returncode == 0 and res.stdout.strip() else None
        table = next(d.table for d in m.disks if d.name == fs.disk)
        part = None if table.whole_disk else table.partition(fs.partition)
        subs: frozenset[str] = frozenset()
        top = done.tops.get(fs.uuid or "")
        if fs.type == "btrfs" and top is not None:
            subs = frozenset(s.path for s in adapter.list_subvolumes(top))
        out.append(RestoredFs(fs.disk, fs.partition, probe.type if probe else None, probe.uuid if probe else None,
                              probe.label if probe else None, part.uuid if part else None, part.name if part else None, subs))
    return out
