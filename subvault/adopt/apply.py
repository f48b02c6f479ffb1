"""Carry out an adoption plan (`adopt --apply`). Nothing here deletes a snapshot.

Order: stop btrbk's schedule and snapper's timeline/cleanup first (neither may act
half-way through), then move btrbk's local snapshots into .snapshots and its target
entries into subvault's layout, then mark snapper's snapshots as subvault's, then
install subvault's timers. Every step can be repeated: a second --apply finds what
is already done and skips it.

A btrbk snapshot moves into `.snapshots/N` in the order of local.create: mkdir N and
the "create" marker, info.xml, then the rename (the subvolume keeps its uuid), then
the marker goes. A crash leaves a marker that `finish_pending` completes (info.xml and
a read-only snapshot: kept) or clears (info.xml alone: removed; the snapshot is still
where btrbk left it).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from subvault import process, systemd
from subvault.adopt.flip import PYTHON3_PROBE, move_argv, move_into, set_readonly
from subvault.adopt.planned import ADOPTED_KEY, SNAPPER_OFF, Action, AdoptPlan, TargetPlan
from subvault.btrfs import adapter, local, numbered
from subvault.btrfs.snapdir import OWNER_KEY, snapshots_dir, write_atomic
from subvault.btrfs.snapper import Info, parse_info, render_info
from subvault.config.schema import TargetConf
from subvault.endpoints import commands as C
from subvault.endpoints.endpoint import open_target
from subvault.errors import NotFound, SubvaultError
from subvault.results import Item, Outcome

if TYPE_CHECKING:
    from subvault.endpoints.endpoint import Endpoint

INFO_PENDING = "info.xml.adopt"  # info.xml of a btrbk snapshot being moved in (see _move_local)
ORDER = ("disable-timer", "disable-cron", "snapper-config", "move-local", "move-entry", "take-over", "install-timers")


def apply_plan(plan: AdoptPlan, *, root: str, config_path: str, out: Outcome) -> None:
    """Run every action of the plan in ORDER; each failure is recorded and the rest go on."""
    by_kind: dict[str, list[Action]] = {}
    for a in plan.actions:
        by_kind.setdefault(a.kind, []).append(a)
    for kind in ORDER:
        actions = by_kind.get(kind, [])
        if kind == "move-entry":
            _move_entries(plan, actions, out)
            continue
        if kind == "move-local":
            for s in plan.subvolumes:
                try:
                    finished = finish_local(s.path) if s.btrbk else []
                except OSError as exc:
                    out.fail(f"{s.name} (move-local)", SubvaultError(f"finishing an interrupted move in {s.path}/.snapshots: {exc}"))
                    continue
                if finished:
                    out.items.append(Item(s.name, kind, f"finished #{', #'.join(map(str, finished))} (an earlier --apply was interrupted)"))
        for a in actions:
            try:
                detail = _APPLY[kind](a, root=root, config_path=config_path)
                out.items.append(Item(a.subject, kind, detail or a.detail))
            except (SubvaultError, OSError) as exc:
                out.fail(f"{a.subject} ({kind})", exc if isinstance(exc, SubvaultError) else SubvaultError(str(exc)))
        if kind == "take-over" and actions:
            # info.xml was replaced without an fsync each (2,000 snapshots: seconds): one syncfs per filesystem.
            try:
                numbered.sync_filesystems(sorted({str(Path(a.data["path"]).parent) for a in actions}))
            except OSError as exc:
                out.fail("take-over (sync)", SubvaultError(f"syncing the rewritten info.xml files: {exc}"))


def _systemctl(root: str, *args: str) -> list[str]:
    return ["systemctl", *([] if root in ("", "/") else [f"--root={root}"]), *args]


def _disable_timer(a: Action, *, root: str, config_path: str) -> str:
    unit = a.data["unit"]
    if root in ("", "/") and Path("/run/systemd/system").is_dir():
        process.run(["systemctl", "disable", "--now", unit], what=f"disable {unit}", timeout=120)
    else:
        process.run(_systemctl(root, "disable", unit), what=f"disable {unit}", timeout=120)
    return f"disabled {unit}"


def _disable_cron(a: Action, *, root: str, config_path: str) -> str:
    path = Path(a.data["path"])
    lines = set(a.data["lines"])
    if not lines:
        path.chmod(path.stat().st_mode & ~0o111)  # run-parts skips files that are not executable
        return f"made {path} not executable (run-parts skips it)"
    text = path.read_text().splitlines(keepends=True)
    for n in lines:
        if n <= len(text) and not text[n - 1].lstrip().startswith("#"):
            text[n - 1] = "# disabled by subvault adopt: " + text[n - 1]
    write_atomic(path, "".join(text), path.stat().st_mode & 0o7777)
    return f"commented out line(s) {', '.join(map(str, sorted(lines)))} of {path}"


def _snapper_config(a: Action, *, root: str, config_path: str) -> str:
    name = a.data["config"]
    if root in ("", "/"):
        res = process.run(["snapper", "-c", name, "set-config", *SNAPPER_OFF], what="snapper set-config", check=False, timeout=120)
        if res.returncode == 0:
            return f"snapper -c {name}: {' '.join(SNAPPER_OFF)}"
    # No snapperd to talk to (or a --root): snapper edits its config file itself.
    argv = ["snapper", "--no-dbus", *([] if root in ("", "/") else ["--root", root]), "-c", name, "set-config", *SNAPPER_OFF]
    process.run(argv, what="snapper set-config", timeout=120)
    return f"snapper -c {name}: {' '.join(SNAPPER_OFF)}"


def _move_local(a: Action, *, root: str, config_path: str) -> str:
    """Move one btrbk snapshot into .snapshots/N as a subvault timeline snapshot (same uuid).

    No pending marker here: `finish_pending` removes a marked snapshot that is not
    read-only, and this one is writable for a moment. Order: mkdir N, info.xml under a
    name snapper and subvault ignore (INFO_PENDING), flip rw, rename, flip ro, then
    INFO_PENDING becomes info.xml. A crash leaves N with INFO_PENDING, which the next
    --apply finishes (`finish_local`); nothing deletes it meanwhile.
    """
    src, sub_path = a.data["src"], a.data["sub_path"]
    if not os.path.lexists(src):
        return f"{src} already moved"
    sdir = local.ensure_snapshots_dir(sub_path)
    num = numbered.next_number(sub_path)
    ndir = sdir / str(num)
    os.mkdir(ndir, 0o755)
    dst = ndir / "snapshot"
    info = Info(num=num, date=datetime.fromisoformat(a.data["time"]), description=f"btrbk {a.data['btrbk_name']}",
                cleanup="timeline", userdata=((OWNER_KEY, "timeline"), (ADOPTED_KEY, "btrbk")))
    write_atomic(ndir / INFO_PENDING, render_info(info))
    set_readonly(src, False)
    try:
        _rename_subvolume(src, dst, a.data.get("btrbk_sub_path"), sub_path, num)
    except BaseException:
        set_readonly(src, True)
        (ndir / INFO_PENDING).unlink()
        ndir.rmdir()
        raise
    set_readonly(dst, True)
    os.rename(ndir / INFO_PENDING, ndir / "info.xml")
    return f"{src} → {dst} (#{num}, same uuid)"


def finish_local(sub_path: str) -> list[int]:
    """Finish the btrbk snapshots an interrupted --apply moved into sub_path/.snapshots: return their numbers."""

    done = []
    for pending in sorted(Path(snapshots_dir(sub_path)).glob(f"*/{INFO_PENDING}")):
        ndir = pending.parent
        if (ndir / "snapshot").is_dir():
            set_readonly(ndir / "snapshot", True)
            os.rename(pending, ndir / "info.xml")
            done.append(int(ndir.name))
        else:  # the rename had not happened: the snapshot is still where btrbk left it
            pending.unlink()
            ndir.rmdir()
    return done


def _rename_subvolume(src: str, dst: Path, btrbk_sub_path: str | None, sub_path: str, num: int) -> None:
    """Rename src to dst; across mounts of one filesystem, through btrbk's volume (the same directory)."""
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV or not btrbk_sub_path:
            raise
    alt = Path(btrbk_sub_path) / ".snapshots" / str(num)
    here = os.stat(dst.parent)
    there = os.stat(alt) if alt.exists() else None
    if there is None or (there.st_dev, there.st_ino) != (here.st_dev, here.st_ino):
        raise SubvaultError(
            f"cannot move {src} to {dst}: they are on different mounts and {alt} is not the same directory; "
            f"mount the filesystem's top level and `mv` it there, then run adopt --apply again"
        )
    os.rename(src, alt / "snapshot")


def _take_over(a: Action, *, root: str, config_path: str) -> str:
    ndir = Path(a.data["path"])
    info_path = ndir / "info.xml"
    info = parse_info(info_path.read_text())
    ud = info.userdata_dict
    if OWNER_KEY in ud:
        return f"#{info.num} already subvault's"
    userdata = (*info.userdata, (OWNER_KEY, a.data["kind"]), (ADOPTED_KEY, "snapper"))
    new = Info(info.num, info.date, info.description, info.cleanup, info.type, userdata)
    write_atomic(info_path, render_info(new), info_path.stat().st_mode & 0o7777, durable=False)  # synced by apply_plan
    return f"#{info.num} ({info.cleanup}) → subvault {a.data['kind']} (retention from now on by subvault's policy)"


def _install_timers(a: Action, *, root: str, config_path: str) -> str:
    dest = Path(root) / "etc/systemd/system" if root not in ("", "/") else systemd.DEFAULT_DEST
    exe = os.path.abspath(shutil.which("subvault") or sys.argv[0])
    # The units name the config as the running system sees it (without --root).
    seen_path = config_path[len(root.rstrip("/")):] if root not in ("", "/") and config_path.startswith(root) else config_path
    systemd.install(dest, exe, seen_path, dry_run=False)
    if root in ("", "/") and Path("/run/systemd/system").is_dir():
        systemd.run_commands(systemd.activate_commands())
        return "installed and started subvault-run.timer, subvault-check.timer"
    process.run(_systemctl(root, "enable", *systemd.TIMERS), what="enable timers", timeout=120)
    return f"installed and enabled subvault-run.timer, subvault-check.timer in {dest}"


def _move_entries(plan: AdoptPlan, actions: list[Action], out: Outcome) -> None:
    """Move btrbk's entries into `<dir>/<host>/<sub>/`: one round trip per subvolume and target.

    Each subvolume's entries gather in a staging container `<dir>/<host>/.adopt-<sub>`
    (a subvolume subvault never lists), each flipped writable for its rename and
    read-only right after (received_uuid kept, see flip.py); only then does the staging
    container take its final name. A crash half-way leaves the staging container and
    btrbk's directory, neither of which subvault prunes: nothing is lost, and the next
    --apply finishes it (entries in staging made read-only, the rest moved, the rename).
    """
    by_target: dict[str, dict[str, list[Action]]] = {}
    for tp in plan.targets:
        for container in tp.containers:
            by_target.setdefault(tp.name, {}).setdefault(container, [])
    for a in actions:
        by_target.setdefault(a.data["target"], {}).setdefault(a.data["container"], []).append(a)
    targets = {t.name: t for t in plan.targets}
    for name, containers in by_target.items():
        tp = targets[name]
        conf = TargetConf(name=tp.name, type="btrfs", url=tp.url, keep=tp.keep, ssh_identity=tp.ssh_identity,
                          ssh_cipher=tp.ssh_cipher, ssh_options=list(tp.ssh_options))
        try:
            with open_target(conf) as ep:
                ep.check()
                for container, group in containers.items():
                    _move_group(ep, tp, container, group, out)
        except SubvaultError as exc:
            out.fail(f"{name} (move-entry)", exc)


def _move_group(ep: Endpoint, tp: TargetPlan, container: str, group: list[Action], out: Outcome) -> None:

    parent, leaf = container.rsplit("/", 1)
    staging = f"{parent}/.adopt-{leaf}"
    subject = group[0].subject if group else f"{leaf}→{tp.name}"
    resumed = _exists(ep, staging)
    if not group and not resumed:
        return
    if _exists(ep, container):
        out.fail(f"{subject} (move-entry)", SubvaultError(
            f"{container} exists already (subvault ran before adopt?): btrbk's entries stay in {tp.btrbk_dir}"
            f"{f' and {staging}' if resumed else ''}; move them into it by hand (see docs/adopt.md)"))
        return
    moves = [(a.data["src"], a.data["dst"].rsplit("/", 1)[1]) for a in group]
    try:
        if ep.is_local:
            os.makedirs(parent, exist_ok=True)
            if not resumed:
                adapter.create_subvolume(staging)
            move_into(staging, container, moves)
        else:
            steps: list[list[list[str]]] = [[C.mkdirs(parent)]]
            if not resumed:
                steps.append([C.create(staging)])
            steps.append([move_argv(staging, container, moves)])
            ep.apply(steps, f"move btrbk entries into {container}")
    except OSError as exc:
        out.fail(f"{subject} (move-entry)", SubvaultError(
            f"moving btrbk entries into {staging}: {exc.strerror} ({exc.filename}); nothing is lost: "
            f"the entries are in {tp.btrbk_dir} or {staging}; fix the cause and run adopt --apply again"))
        return
    if resumed:
        out.items.append(Item(subject, "move-entry", f"finished {staging} → {container} (an earlier --apply was interrupted)"))
    out.items += [Item(a.subject, "move-entry", a.detail) for a in group]


def _exists(ep: Endpoint, path: str) -> bool:

    try:
        ep.show(path)
        return True
    except NotFound:
        return False


def preflight(plan: AdoptPlan) -> None:
    """Check, before --apply changes anything, what it needs on each ssh target: python3 (see flip.py).

    Raise SubvaultError naming the target and what to install.
    """

    moving = {a.data["target"] for a in plan.actions if a.kind == "move-entry"}
    for tp in plan.targets:
        if not tp.url.startswith("ssh://") or not (tp.name in moving or tp.containers):
            continue
        conf = TargetConf(name=tp.name, type="btrfs", url=tp.url, keep=tp.keep, ssh_identity=tp.ssh_identity,
                          ssh_cipher=tp.ssh_cipher, ssh_options=list(tp.ssh_options))
        with open_target(conf) as ep:
            res = ep.runner.run([PYTHON3_PROBE], what=f"{tp.name}: look for python3", check=False)
        if res.returncode not in (0, 255):  # 255: ssh itself failed; the moves will say why
            host = tp.url[len("ssh://"):].split("/", 1)[0]
            raise SubvaultError(
                f"target {tp.name} ({host}): adopt --apply needs python3 there to move btrbk's entries keeping "
                "their received_uuid, and it is missing: install it on that host (Debian/Raspberry Pi OS: "
                "`apt install python3-minimal`) and run adopt --apply again; nothing was changed"
            )


_APPLY = {
    "disable-timer": _disable_timer,
    "disable-cron": _disable_cron,
    "snapper-config": _snapper_config,
    "move-local": _move_local,
    "take-over": _take_over,
    "install-timers": _install_timers,
}
