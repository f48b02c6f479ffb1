"""Parse btrbk.conf and btrbk's snapshot names. Pure: text in, values out.

Grammar (btrbk.conf(5)): one `key value…` per line, `#` comments, indentation free.
`volume DIR`, `subvolume PATH` and `target [send-receive|raw] URL` open sections; a
target after a volume line (before its first subvolume) applies to every subvolume of
that volume, a target after a subvolume line to that subvolume only. Options belong to
the section they follow; a value is looked up target → subvolume → volume → global,
then btrbk's default.

What subvault cannot express is an AdoptInputError naming file:line: wildcard
subvolumes, a target URL that is neither a path nor ssh://, a remote reached through
sudo/doas backends (subvault runs btrfs as the ssh user), an option btrbk does not have.
What has no equivalent but changes nothing essential becomes a comment (`unmapped`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from subvault.adopt.source import AdoptInputError

DEFAULTS = {
    "snapshot_dir": "",
    "timestamp_format": "short",
    "snapshot_preserve_min": "all",
    "snapshot_preserve": "no",
    "target_preserve_min": "all",
    "target_preserve": "no",
    "ssh_user": "root",
    "stream_compress": "no",
    "incremental": "yes",
    "snapshot_create": "always",
}
MAPPED = {
    "snapshot_dir", "snapshot_name", "timestamp_format", "snapshot_preserve", "snapshot_preserve_min",
    "target_preserve", "target_preserve_min", "ssh_user", "ssh_identity", "ssh_port", "ssh_compression",
    "ssh_cipher_spec", "stream_compress", "incremental", "group", "backend", "backend_local", "backend_remote",
    "snapshot_create",
}
# Options with no subvault equivalent that change neither what is kept nor what is sent.
HARMLESS = {
    "transaction_log", "transaction_syslog", "lockfile", "btrfs_commit_delete", "incremental_prefs",
    "incremental_clones", "incremental_resolve", "warn_unknown_targets", "send_protocol", "send_compressed_data",
    "stream_buffer", "stream_buffer_remote", "rate_limit", "rate_limit_remote", "stream_compress_level",
    "stream_compress_threads", "stream_compress_long", "stream_compress_adapt", "noauto", "snapshot_qgroup_destroy",
    "target_qgroup_destroy", "archive_qgroup_destroy", "compat", "compat_local", "compat_remote", "cache_dir",
    "backend_local_user", "ssh_filter_btrbk",
}
# Options that shape retention or layout in a way subvault does not have: written as comments.
NO_EQUIVALENT = {
    "preserve_day_of_week": "subvault's weeks start on Sunday (as btrbk's default)",
    "preserve_hour_of_day": "subvault's days start at midnight",
    "archive_preserve": "btrbk archive has no subvault equivalent",
    "archive_preserve_min": "btrbk archive has no subvault equivalent",
    "archive_exclude": "btrbk archive has no subvault equivalent",
}
RAW_PREFIXES = ("raw_target_", "gpg_", "openssl_", "kdf_")
SECTIONS = ("volume", "subvolume", "target")
TARGET_TYPES = ("send-receive", "raw")
UNSUPPORTED_BACKENDS = ("btrfs-progs-sudo", "btrfs-progs-doas", "btrfs-progs-btrbk")

_SSH_AUTHORITY = re.compile(r"^(?:[A-Za-z0-9_.][A-Za-z0-9_.-]*@)?(?:[A-Za-z0-9_.][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\])(?::\d+)?$")
_NAME_RE = re.compile(
    r"^(?P<name>.+)\.(?P<date>\d{8})(?:T(?P<hm>\d{4})(?:(?P<s>\d{2})(?P<off>[+-]\d{4}|Z))?)?(?:_(?P<n>\d+))?$"
)


@dataclass(frozen=True)
class Setting:
    value: str
    line: int


@dataclass
class Section:
    kind: str  # global, volume, subvolume, target
    arg: str
    line: int
    parent: Section | None = None
    options: dict[str, Setting] = field(default_factory=dict)
    target_type: str = "send-receive"

    def lookup(self, key: str) -> Setting | None:
        node: Section | None = self
        while node is not None:
            if key in node.options:
                return node.options[key]
            node = node.parent
        return None


class _Options:
    """An option as btrbk resolves it: this section, then its parents, then btrbk's default."""

    section: Section

    def get(self, key: str) -> str:
        s = self.section.lookup(key)
        return s.value if s is not None else DEFAULTS.get(key, "")

    def line_of(self, key: str) -> int | None:
        s = self.section.lookup(key)
        return s.line if s is not None else None


@dataclass
class BtrbkTarget(_Options):
    type: str
    url: str
    line: int
    section: Section  # options resolve target → subvolume → volume → global

    @property
    def is_ssh(self) -> bool:
        return self.url.startswith("ssh://")


@dataclass
class BtrbkSubvolume(_Options):
    volume: str
    path: str  # as written: relative to the volume, or absolute
    line: int
    section: Section
    targets: list[BtrbkTarget] = field(default_factory=list)

    @property
    def full_path(self) -> str:
        if self.path.startswith("/"):
            return self.path.rstrip("/") or "/"
        return f"{self.volume.rstrip('/')}/{self.path}".rstrip("/")

    @property
    def snapshot_name(self) -> str:
        return self.get("snapshot_name") or self.full_path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def snapshot_dir(self) -> str:
        """Absolute directory of btrbk's local snapshots of this subvolume."""
        d = self.get("snapshot_dir")
        if d.startswith("/"):
            return d.rstrip("/")
        return f"{self.volume.rstrip('/')}/{d}".rstrip("/") if d else self.volume.rstrip("/")


@dataclass
class BtrbkConfig:
    file: str
    subvolumes: list[BtrbkSubvolume] = field(default_factory=list)
    unmapped: list[tuple[str, int, str]] = field(default_factory=list)  # (key value, line, why)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> snapshot names


def parse_btrbk_conf(text: str, file: str) -> BtrbkConfig:
    """Given btrbk.conf text, return its subvolumes with their targets. Raise AdoptInputError naming file:line."""
    conf = BtrbkConfig(file=file)
    root = Section("global", "", 0)
    volume: Section | None = None
    subvol: BtrbkSubvolume | None = None
    current: Section = root
    volume_targets: list[tuple[Section, Section]] = []  # (volume, target section) declared at volume level
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        key, value = parts[0], " ".join(parts[1].split()) if len(parts) > 1 else ""
        if key == "volume":
            _need(value, file, number, "volume needs a directory")
            volume = current = Section("volume", value, number, root)
            subvol = None
        elif key == "subvolume":
            subvol = _subvolume(conf, value, number, volume, root, volume_targets)
            conf.subvolumes.append(subvol)
            current = subvol.section
        elif key == "target":
            ttype, url = _target_line(value, file, number)
            if subvol is not None:
                sec = Section("target", url, number, subvol.section, target_type=ttype)
                subvol.targets.append(BtrbkTarget(ttype, url, number, sec))
            elif volume is not None:
                sec = Section("target", url, number, volume, target_type=ttype)
                volume_targets.append((volume, sec))
            else:
                raise AdoptInputError(file, number, "target outside a volume or subvolume section")
            current = sec
        else:
            _option(conf, current, key, value, number)
    for sub in conf.subvolumes:
        _check_subvolume(conf, sub)
    return conf


def _subvolume(conf: BtrbkConfig, value: str, number: int, volume: Section | None, root: Section,
               volume_targets: list[tuple[Section, Section]]) -> BtrbkSubvolume:
    """A `subvolume` line: its section, with the targets declared at its volume's level."""
    file = conf.file
    _need(value, file, number, "subvolume needs a path")
    if any(c in value for c in "*?["):
        raise AdoptInputError(file, number, f'subvolume "{value}": wildcards are not adopted; list each subvolume on its own line')
    sec = Section("subvolume", value, number, volume or root)
    vol_dir = volume.arg if volume else value.rstrip("/").rsplit("/", 1)[0] or "/"
    if not volume and not value.startswith("/"):
        raise AdoptInputError(file, number, f'subvolume "{value}" outside a volume section needs an absolute path')
    subvol = BtrbkSubvolume(vol_dir, value, number, sec)
    first = next((s for s in conf.subvolumes if s.full_path == subvol.full_path), None)
    if first is not None:
        raise AdoptInputError(file, number, f'subvolume "{value}" is listed again (first at line {first.line}); '
                              "merge the two sections into one (their targets under it) and run adopt again")
    for vol, tsec in volume_targets:
        if vol is volume:
            # A volume-level target applies here, with this subvolume's options under its own.
            own = Section("target", tsec.arg, tsec.line, sec, dict(tsec.options), tsec.target_type)
            subvol.targets.append(BtrbkTarget(own.target_type, own.arg, own.line, own))
    return subvol


def _target_line(value: str, file: str, number: int) -> tuple[str, str]:
    """A `target [send-receive|raw] URL` line: its type and URL."""
    words = value.split()
    ttype = "send-receive"
    if len(words) == 2 and words[0] in TARGET_TYPES:
        ttype, words = words[0], words[1:]
    if len(words) != 1:
        raise AdoptInputError(file, number, f'"target {value}": expected "target [send-receive|raw] URL"')
    url = words[0]
    if not (url.startswith("/") or url.startswith("ssh://")):
        raise AdoptInputError(file, number, f'target "{url}": subvault reaches btrfs targets by path or ssh:// only')
    return ttype, url


def _need(value: str, file: str, number: int, what: str) -> None:
    if not value:
        raise AdoptInputError(file, number, what)


def _option(conf: BtrbkConfig, section: Section, key: str, value: str, number: int) -> None:
    if key in MAPPED or key in HARMLESS or key in NO_EQUIVALENT or key.startswith(RAW_PREFIXES):
        section.options[key] = Setting(value, number)
        if key in NO_EQUIVALENT:
            conf.unmapped.append((f"{key} {value}", number, NO_EQUIVALENT[key]))
        if key == "group":
            for g in value.split():
                conf.groups.setdefault(g, [])
        return
    raise AdoptInputError(conf.file, number, f'"{key}" is not a btrbk option subvault knows; remove it or adopt by hand')


def _check_subvolume(conf: BtrbkConfig, sub: BtrbkSubvolume) -> None:
    for g in sub.get("group").split():
        conf.groups.setdefault(g, []).append(sub.snapshot_name)
    fmt = sub.get("timestamp_format")
    if fmt not in ("short", "long", "long-iso"):
        raise AdoptInputError(conf.file, sub.line_of("timestamp_format"), f'timestamp_format "{fmt}": expected short, long or long-iso')
    _check_retention(conf, sub.get, sub.line_of, "snapshot")
    for t in sub.targets:
        if t.type != "send-receive":
            continue
        _check_retention(conf, t.get, t.line_of, "target")
        if t.is_ssh:
            _check_ssh(conf, t)
        for key in ("backend", "backend_remote"):
            if t.is_ssh and t.get(key) in UNSUPPORTED_BACKENDS:
                raise AdoptInputError(
                    conf.file, t.line_of(key),
                    f"{key} {t.get(key)}: btrbk reached {t.url} through sudo/doas/ssh_filter; subvault runs btrfs "
                    "directly as the ssh user (use root, or `subvault serve` as the key's forced command)",
                )


def _check_ssh(conf: BtrbkConfig, t: BtrbkTarget) -> None:
    port, user = t.get("ssh_port").strip(), t.get("ssh_user").strip()
    if port and not (port.isascii() and port.isdigit()):
        raise AdoptInputError(conf.file, t.line_of("ssh_port") or t.line, f'ssh_port "{port}" is not a number')
    if user and not re.match(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$", user):
        raise AdoptInputError(conf.file, t.line_of("ssh_user") or t.line, f'ssh_user "{user}" is not a user name')
    authority, slash, _ = t.url[len("ssh://"):].partition("/")
    if not _SSH_AUTHORITY.match(authority) or not slash:
        raise AdoptInputError(conf.file, t.line, f'target "{t.url}": expected ssh://[user@]host[:port]/directory')


_PRESERVE_TOKEN = re.compile(r"^(\*|[0-9]+)([hdwmyHDWMY])$")
_MIN_RE = re.compile(r"^([0-9]+)([hdwmy])$")
# Hours that cover btrbk's `preserve_min N<unit>`: btrbk keeps every snapshot whose
# delta in that unit, counted from the start of the current period, is <= N, so
# N + 1 whole periods plus the current partial one (months/years at their longest).
_UNIT_HOURS = {"h": 1, "d": 24, "w": 7 * 24, "m": 31 * 24, "y": 366 * 24}


def parse_preserve(value: str) -> dict[str, int | None] | None:
    """Given a btrbk *_preserve value, return {unit: count or None for `*`}; {} for `no`.

    Return None if btrbk would refuse it (its grammar: whitespace-separated `N<unit>` or
    `*<unit>`, unit in hdwmy either case, each unit once).
    """
    if value.strip() in ("no", ""):
        return {}
    counts: dict[str, int | None] = {}
    for token in value.split():
        m = _PRESERVE_TOKEN.match(token)
        unit = m.group(2).lower() if m else ""
        if not m or unit in counts:
            return None
        counts[unit] = None if m.group(1) == "*" else int(m.group(1))
    return counts


def _check_retention(conf: BtrbkConfig, get: Callable[[str], str], line_of: Callable[[str], int | None], prefix: str) -> None:
    for key in (f"{prefix}_preserve", f"{prefix}_preserve_min"):
        try:
            btrbk_retention(get(key) if key.endswith("preserve") else "no", get(key) if key.endswith("_min") else "latest")
        except ValueError as exc:
            raise AdoptInputError(conf.file, line_of(key), f"{key} {get(key)}: {exc}; btrbk refuses it too") from exc


def btrbk_retention(preserve: str, preserve_min: str) -> tuple[str | None, list[str]]:
    """Map btrbk's *_preserve and *_preserve_min to a subvault retention that keeps at
    least every snapshot btrbk keeps, and notes saying where it keeps more.

    Rules (btrbk's schedule()): `_min all` keeps everything → "all". `_min N<unit>` keeps
    every snapshot of the last N + 1 periods (delta <= N): subvault has no minimum age, so
    it becomes hourly buckets over that window (one snapshot per hour: btrbk ran at most
    hourly, else adopt keeps all). `_preserve N<unit>` keeps the first of each of the last
    N + 1 periods (delta <= N); subvault's N<unit> counts N periods including the current
    one, so it becomes (N + 1)<unit>; `*` stays `*`; 0 keeps none. `_min latest`/`no` with
    `_preserve no` keeps only the newest: return None (the caller picks the floor).
    Raise ValueError naming the value if btrbk's grammar does not accept it.
    """
    notes: list[str] = []
    pmin = preserve_min.strip()
    counts = parse_preserve(preserve)
    if counts is None:
        raise ValueError(f'"{preserve}" is not a btrbk retention (expected e.g. "24h 7d 4w" or "no")')
    if pmin == "all":
        notes.append("_preserve_min all (btrbk's default) kept every snapshot: subvault keeps all of them "
                     '("all"); choose a shorter policy once you decide what may be pruned')
        return "all", notes
    mapped: dict[str, int | None] = {u: (c + 1 if c else c) for u, c in counts.items()}
    if any(c for c in counts.values() if c is not None):
        notes.append(f"_preserve {preserve}: btrbk counts the current period too (delta <= N), so subvault keeps one more of each")
    m = _MIN_RE.match(pmin)
    if m:
        hours = (int(m.group(1)) + 2) * _UNIT_HOURS[m.group(2)] if m.group(2) != "h" else int(m.group(1)) + 1
        if mapped.get("h", 0) is not None:  # `*h` keeps every hour already
            mapped["h"] = max(mapped.get("h") or 0, hours)
        notes.append(f"_preserve_min {pmin}: btrbk kept every snapshot of that window; subvault has no minimum age and "
                     f"keeps the first of each hour for {hours}h instead")
    elif pmin not in ("latest", "no", ""):
        raise ValueError(f'"{pmin}" is not a btrbk minimum (expected all, latest, no or N<unit>)')
    if not any(c is None or c > 0 for c in mapped.values()):
        return None, notes
    return " ".join(f"{'*' if mapped[u] is None else mapped[u]}{u}" for u in "hdwmy" if u in mapped), notes


def preserve_to_keep(preserve: str, preserve_min: str) -> tuple[str, list[str]]:
    """Map btrbk's target_preserve and target_preserve_min to a target's keep (see btrbk_retention)."""
    keep, notes = btrbk_retention(preserve, preserve_min)
    return keep or "latest", notes


def parse_snapshot_name(name: str, tz: tzinfo) -> tuple[str, datetime, int] | None:
    """Given a btrbk snapshot or backup name, return (snapshot_name, aware time, _N suffix), or None.

    btrbk reads every format whatever timestamp_format says: short `YYYYMMDD`, long
    `YYYYMMDDTHHMM` (both local time, here `tz`), long-iso `YYYYMMDDTHHMMSS+hhmm`.
    A local time that does not exist or is ambiguous (DST) is taken as the earlier instant.
    """
    m = _NAME_RE.match(name)
    if not m:
        return None
    try:
        day = datetime.strptime(m.group("date"), "%Y%m%d")
        if m.group("hm"):
            day = day.replace(hour=int(m.group("hm")[:2]), minute=int(m.group("hm")[2:]))
        if m.group("s"):
            day = day.replace(second=int(m.group("s")))
    except ValueError:
        return None
    off = m.group("off")
    if off and off != "Z":
        sign = 1 if off[0] == "+" else -1
        when = day.replace(tzinfo=timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[3:5]))))
    elif off == "Z":
        when = day.replace(tzinfo=UTC)
    else:
        when = day.replace(tzinfo=tz, fold=0)
    return m.group("name"), when.astimezone(UTC), int(m.group("n") or 0)


def format_snapshot_name(snapshot_name: str, when: datetime, fmt: str, tz: tzinfo) -> str:
    """Return the name btrbk gives a snapshot taken at `when` (tests simulate history with it)."""
    local = when.astimezone(tz)
    if fmt == "short":
        return f"{snapshot_name}.{local:%Y%m%d}"
    if fmt == "long":
        return f"{snapshot_name}.{local:%Y%m%dT%H%M}"
    return f"{snapshot_name}.{local:%Y%m%dT%H%M%S%z}"
