"""Read an installation for adoption: snapper configs, btrbk.conf, snapshots, target entries, schedulers.

I/O only; judging is `plan.plan_adoption`. `root` is the installation's root as in
`snapper --root`: its /etc is read under it, and snapper's SUBVOLUME paths are inside it.
btrbk has no root option: the paths in btrbk.conf are used as written.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from datetime import UTC, tzinfo
from pathlib import Path

from subvault.adopt.btrbk_conf import BtrbkConfig, BtrbkSubvolume, BtrbkTarget, parse_btrbk_conf, parse_snapshot_name
from subvault.adopt.connection import connection
from subvault.adopt.found import BtrbkSnapshot, FoundBtrbk, FoundSnapper, Scheduler
from subvault.adopt.snapper_conf import parse_snapper_config
from subvault.adopt.source import AdoptInputError
from subvault.btrfs import adapter, local_scan
from subvault.btrfs.snapdir import numbered_dirs
from subvault.endpoints.commands import parse_show
from subvault.endpoints.runner import SshRunner, parse_ssh_url
from subvault.errors import CommandFailed, SubvaultError
from subvault.model import LocalSnapshot

SNAPPER_CONFIGS = "etc/snapper/configs"
BTRBK_CONF = "etc/btrbk/btrbk.conf"
Listed = list[tuple[str, str, str | None, bool]]  # (name, uuid, received_uuid, read-only)
UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
CRON_FILES = ("etc/crontab",)
CRON_DIRS = ("etc/cron.d", "var/spool/cron/crontabs", "var/spool/cron")
RUN_PARTS = ("etc/cron.hourly", "etc/cron.daily", "etc/cron.weekly", "etc/cron.monthly")


def under(root: str, path: str) -> str:
    """Return path as seen from here when the installation lives at root."""
    if root in ("", "/"):
        return path
    return posixpath.join(root, path.lstrip("/")).rstrip("/") or "/"


def identity(path: str) -> str | None:
    """Return "<filesystem uuid>:<subvolume id>" of the subvolume at path, or None if it is not one."""
    try:
        if not adapter.is_subvolume(path):
            return None
        return f"{adapter.fs_id(path)}:{adapter.show(path).id}"
    except (SubvaultError, OSError):
        return None


def snapper_configs(root: str) -> list[FoundSnapper]:
    """Read every snapper config under root; return each with its snapshots.

    Raise AdoptInputError (file and line) for a config adopt cannot take over, such as
    one whose SUBVOLUME is not a btrfs subvolume.
    """
    cdir = Path(under(root, "/" + SNAPPER_CONFIGS))
    found = []
    for cfile in sorted(cdir.iterdir()) if cdir.is_dir() else []:
        if not cfile.is_file() or cfile.name.startswith("."):
            continue
        conf = parse_snapper_config(cfile.name, cfile.read_text(errors="replace"), str(cfile))
        path = under(root, conf.subvolume)
        if not os.path.exists(path):
            raise AdoptInputError(str(cfile), conf.line_of("SUBVOLUME"), f'SUBVOLUME="{conf.subvolume}" ({path}) does not exist; '
                                  "fix the path or remove the config")
        if not adapter.is_btrfs(path):
            raise AdoptInputError(str(cfile), conf.line_of("SUBVOLUME"), f'SUBVOLUME="{conf.subvolume}" ({path}) is not on btrfs; subvault adopts btrfs configs only')
        ident = identity(path)
        if ident is None:
            raise AdoptInputError(str(cfile), conf.line_of("SUBVOLUME"), f'SUBVOLUME="{conf.subvolume}" ({path}) is not a btrfs subvolume')
        snaps = tuple(local_scan.scan(conf.name, path, with_uuids=True))
        found.append(FoundSnapper(conf, path, ident, snaps, _unreadable(Path(path) / ".snapshots", snaps)))
    return found


def _unreadable(sdir: Path, snaps: tuple[LocalSnapshot, ...]) -> tuple[str, ...]:
    """snapper snapshots (a subvolume under N/) that scan left out: info.xml missing or unreadable."""
    seen = {s.number for s in snaps}
    return tuple(str(sdir / str(n)) for n in numbered_dirs(sdir) if n not in seen and (sdir / str(n) / "snapshot").is_dir())


def btrbk_config(path: str) -> BtrbkConfig:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise AdoptInputError(path, None, f"cannot read: {exc.strerror}") from None
    return parse_btrbk_conf(text, path)


def btrbk_state(conf: BtrbkConfig, tz: tzinfo, ssh_options: Sequence[str] = ()) -> list[FoundBtrbk]:
    """For each btrbk subvolume: its identity, its local snapshots and the entries in each target directory."""
    out = []
    listings: dict[tuple[object, ...], Listed] = {}
    for sub in conf.subvolumes:
        path = sub.full_path
        ident = identity(path)
        if ident is None:
            raise AdoptInputError(conf.file, sub.line, f'subvolume {path} is not a btrfs subvolume here')
        snaps = tuple(_local_snapshots(sub, tz))
        entries: list[tuple[BtrbkSnapshot, ...] | str] = []
        for t in sub.targets:
            if t.type != "send-receive":
                entries.append(())
                continue
            key = (t.url, t.get("ssh_user"), t.get("ssh_port"), t.get("ssh_identity"), tuple(ssh_options))
            if key not in listings:
                listings[key] = _list_target_dir(conf, t, ssh_options)
            listed = listings[key]
            if isinstance(listed, str):
                entries.append(listed)
                continue
            entries.append(tuple(_named(sub, listed, tz)))
        out.append(FoundBtrbk(sub, ident, snaps, tuple(entries)))
    return out


def _named(sub: BtrbkSubvolume, listed: Listed, tz: tzinfo) -> list[BtrbkSnapshot]:
    found = []
    for name, uuid, received, readonly in listed:
        parsed = parse_snapshot_name(name, tz)
        if parsed is None or parsed[0] != sub.snapshot_name:
            continue
        found.append(BtrbkSnapshot(name, parsed[1], parsed[2], uuid, received, readonly))
    return found


def _local_snapshots(sub: BtrbkSubvolume, tz: tzinfo) -> list[BtrbkSnapshot]:
    d = sub.snapshot_dir
    listed = []
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    prefix = sub.snapshot_name + "."
    for name in names:
        if not name.startswith(prefix):
            continue
        p = f"{d}/{name}"
        if not adapter.is_subvolume(p):
            continue
        info = adapter.show(p)
        listed.append((name, info.uuid, info.received_uuid, info.readonly))
    return [s for s in _named(sub, listed, tz) if s.readonly]


def _list_target_dir(conf: BtrbkConfig, t: BtrbkTarget, ssh_options: Sequence[str]) -> Listed:
    """Return (name, uuid, received_uuid, readonly) for each subvolume in the target directory.

    Local: read in-process. ssh: one `ls`, then one round trip of `btrfs subvolume show`s.
    Raise AdoptInputError (btrbk.conf:line) when ssh cannot connect with btrbk's settings.
    """
    conn = connection(t, ssh_options)
    if not t.is_ssh:
        if not os.path.isdir(conn.directory):
            raise AdoptInputError(conf.file, t.line, f"target {t.url}: no such directory here (is the disk mounted?)")
        out = []
        for name in sorted(os.listdir(conn.directory)):
            p = f"{conn.directory}/{name}"
            if adapter.is_subvolume(p):
                info = adapter.show(p)
                out.append((name, info.uuid, info.received_uuid, info.readonly))
        return out
    url = parse_ssh_url(conn.url)
    runner = SshRunner(url, identity=conn.identity, cipher=conn.cipher, options=list(conn.options))
    try:
        res = runner.run([["ls", "-1", "-A", conn.directory]], what=f"list {t.url}", check=False)
        if res.returncode == 255:
            raise AdoptInputError(
                conf.file, t.line,
                f"target {t.url}: ssh could not connect as {conn.url.split('/')[2]} with btrbk's ssh_user, ssh_port and "
                f"ssh_identity ({(res.stderr.strip().splitlines() or ['no message'])[-1]}); btrbk may have used options "
                "~/.ssh/config does not have: add them there or pass --ssh-option",
            )
        if res.returncode != 0:
            raise AdoptInputError(conf.file, t.line, f"target {t.url}: cannot list {conn.directory} ({res.stderr.strip()[:200]})")
        names = [n for n in res.stdout.splitlines() if n and parse_snapshot_name(n, UTC) is not None]
        if not names:
            return []
        steps = [[["btrfs", "subvolume", "show", f"{conn.directory}/{n}"]] for n in names]
        res = runner.run_steps(steps, what=f"show entries in {t.url}", check=False)
        blocks = _show_blocks(res.stdout)
        out = []
        for n in names:
            text = blocks.get(n)
            if text is None:
                continue
            try:
                shown = parse_show(text)
            except ValueError:
                continue
            out.append((n, shown.uuid, shown.received_uuid, shown.readonly))
        return out
    except AdoptInputError:
        raise
    except CommandFailed as exc:
        raise AdoptInputError(conf.file, t.line, f"target {t.url}: {exc}") from None
    except SubvaultError as exc:  # ssh itself failed: the connection, the host key, the login
        raise AdoptInputError(
            conf.file, t.line,
            f"target {t.url}: ssh could not connect as {conn.url.split('/')[2]} with btrbk's ssh_user, ssh_port and "
            f"ssh_identity ({str(exc).splitlines()[0][:200]}); btrbk may have used options ~/.ssh/config does not "
            "have: add them there or pass --ssh-option",
        ) from None
    finally:
        runner.close()


def _show_blocks(text: str) -> dict[str, str]:
    """Split concatenated `btrfs subvolume show` outputs by their unindented first line (the path)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = blocks.setdefault(line.strip().rstrip("/").rsplit("/", 1)[-1], [])
        if current is not None:
            current.append(line)
    return {k: "\n".join(v) for k, v in blocks.items()}


def schedulers(root: str) -> list[Scheduler]:
    """Find what runs btrbk on a schedule under root: systemd timers and cron entries."""
    found: list[Scheduler] = []
    seen: set[str] = set()
    for d in UNIT_DIRS:
        base = Path(under(root, "/" + d))
        for f in sorted(base.glob("btrbk*.timer")) if base.is_dir() else []:
            if f.name in seen:
                continue
            seen.add(f.name)
            wants = Path(under(root, "/etc/systemd/system"))
            enabled = any(wants.glob(f"*.wants/{f.name}")) if wants.is_dir() else False
            found.append(Scheduler("systemd", str(f), unit=f.name, enabled=enabled))
    for rel in CRON_FILES:
        found += _cron_file(Path(under(root, "/" + rel)))
    for d in CRON_DIRS:
        base = Path(under(root, "/" + d))
        for f in sorted(base.iterdir()) if base.is_dir() else []:
            if f.is_file():
                found += _cron_file(f)
    for d in RUN_PARTS:
        base = Path(under(root, "/" + d))
        for f in sorted(base.iterdir()) if base.is_dir() else []:
            if f.is_file() and os.access(f, os.X_OK) and "btrbk" in _read(f):
                found.append(Scheduler("cron", str(f)))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _cron_file(path: Path) -> list[Scheduler]:
    lines = tuple(
        n for n, line in enumerate(_read(path).splitlines(), start=1)
        if "btrbk" in line and not line.lstrip().startswith("#")
    )
    return [Scheduler("cron", str(path), lines=lines)] if lines else []
