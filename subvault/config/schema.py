"""The config schema: the one source of validation, defaults, the sample and the docs.

Every key is declared once here, with its default and a description (msgspec `Meta`).
`load.py` turns a validation error into one line that names the file, the key and what
was expected; `sample.py` renders the commented sample from these same fields.
Unknown keys are errors (a typo must never silently disable a backup).

msgspec, not pydantic: validating this schema costs microseconds and its import ~5 ms,
where pydantic's import and model build took ~190 ms of every command's start-up
(measured with `python -X importtime`), more than the whole snap-all budget.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from subvault.config import rules as R
from subvault.config.bootopts import boot_value_problems
from subvault.errors import UnknownName as NotFound
from subvault.errors import UsageError

NAME_RE = R.NAME_RE


def _doc(text: str, **constraints: Any) -> Meta:
    return Meta(description=text, **constraints)


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every table: unknown keys are errors."""


class Defaults(Strict):
    timeline: Annotated[str, _doc("local timeline retention; the finest unit is the snapshot cadence")] = "24h 7d 4w"
    prechange_keep: Annotated[int, _doc("pre-change snapshots kept per subvolume", ge=0)] = 10
    prechange_lock_wait: Annotated[float, _doc("seconds pre-change waits for a running subvault (a timer run) before it suspends anything", ge=0, le=86400)] = 600.0
    targets: Annotated[list[str], _doc("targets every subvolume goes to unless it says otherwise")] = msgspec.field(default_factory=list)
    state_dir: Annotated[str, _doc("local cache and lock; safe to delete (invariant 12)")] = "/var/lib/subvault"
    timezone: Annotated[str | None, _doc("IANA zone for retention periods; default: the system's local time")] = None

    def __post_init__(self) -> None:
        problems = [R.retention("timeline", self.timeline), *R.listed_once("targets", self.targets)]
        try:
            self.state_dir = R.abs_path("state_dir", self.state_dir)
        except ValueError as exc:
            problems.append(str(exc))
        if self.timezone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                problems.append(f'timezone: "{self.timezone}" is not a known time zone (expected e.g. "Europe/Berlin")')
        R.fail(*problems)


def _name_and_path(conf: SubvolumeConf | SourceSubvolumeConf) -> list[str | None]:
    """Check a subvolume entry's name and make its path absolute and normal, in place; return the problems (None: none)."""
    problems = [R.name(conf.name)]
    try:
        conf.path = R.abs_path("path", conf.path)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


class SubvolumeConf(Strict):
    name: Annotated[str, _doc("short name, used on targets and in commands")]
    path: Annotated[str, _doc("where the subvolume is mounted or reachable")]
    targets: Annotated[list[str] | None, _doc("overrides defaults.targets")] = None
    timeline: Annotated[str | None, _doc("overrides defaults.timeline")] = None
    prechange_keep: Annotated[Annotated[int, Meta(ge=0)] | None, _doc("overrides defaults.prechange_keep")] = None

    def __post_init__(self) -> None:
        problems = [*_name_and_path(self), *R.listed_once("targets", self.targets)]
        if self.timeline is not None:
            problems.append(R.retention("timeline", self.timeline))
        R.fail(*problems)


class ExcludeConf(Strict):
    reason: Annotated[str, _doc("why it is safe to lose; shown by check")]
    path: Annotated[str | None, _doc("a subvolume deliberately not protected (and everything beneath it)")] = None
    filesystem: Annotated[str | None, _doc("instead of path: a btrfs filesystem UUID, excluded whole (or only `subvolume` on it)")] = None
    subvolume: Annotated[str | None, _doc("with filesystem: a subvolume path from its top level (and everything beneath it), e.g. one mounted nowhere")] = None

    def __post_init__(self) -> None:
        problems: list[str | None] = []
        if (self.path is None) == (self.filesystem is None):
            problems.append('an exclude names either path = "/var/cache" or filesystem = "<btrfs UUID>", not both')
        if self.path is not None:
            try:
                self.path = R.abs_path("path", self.path)
            except ValueError as exc:
                problems.append(str(exc))
        if self.subvolume is not None and self.filesystem is None:
            problems.append('subvolume: needs filesystem = "<btrfs UUID>" beside it')
        if self.filesystem is not None:
            if not re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", self.filesystem):
                problems.append(f'filesystem: "{self.filesystem}" is not a btrfs filesystem UUID (see `btrfs filesystem show`)')
            self.filesystem = self.filesystem.lower()
            if self.subvolume is not None:
                self.subvolume = str(PurePosixPath("/" + self.subvolume.strip().lstrip("/"))).strip("/")
                if not self.subvolume or ".." in PurePosixPath(self.subvolume).parts or self.subvolume.startswith("<"):
                    # "" or "/" would exclude the whole filesystem: that is `filesystem` alone, said on purpose
                    problems.append('subvolume: must name one subvolume below the top level, without ".." '
                                    '(expected e.g. "@scratch"; to exclude the whole filesystem, leave subvolume out)')
        if not self.reason.strip():
            problems.append('reason: an exclude needs a reason (e.g. "ephemeral")')
        R.fail(*problems)


class TargetConf(Strict):
    name: Annotated[str, _doc("target name, used in subvolume.targets and --target")]
    type: Annotated[Literal["btrfs", "object"], _doc('"btrfs" (local path or ssh://) or "object" (s3:// or file://)')]
    url: Annotated[str, _doc("btrfs: /path or ssh://[user@]host[:port]/path; object: s3://bucket/prefix or file:///path")]
    keep: Annotated[str, _doc("retention on the target")] = "24h 8d 5w"
    compress: Annotated[Literal["none", "zstd"], _doc("btrfs over ssh: compress the stream on the wire")] = "none"
    append_only: Annotated[bool, _doc("btrfs: the target's key is `subvault serve --append-only`; never prune there (run `subvault prune-received` on that host)")] = False
    ssh_identity: Annotated[str | None, _doc("ssh private key file (else ~/.ssh/config decides)")] = None
    ssh_cipher: Annotated[str | None, _doc('ssh cipher, e.g. "aes128-gcm@openssh.com"')] = None
    ssh_options: Annotated[list[str], _doc('extra "-o" options, e.g. "ConnectTimeout=10"')] = msgspec.field(default_factory=list)
    stall_minutes: Annotated[float, _doc("a transfer with no bytes for this long is stopped", gt=0, le=10080)] = 10.0
    parallel: Annotated[int, _doc("subvolumes replicated at once over the one connection", ge=1, le=16)] = 4
    endpoint: Annotated[str | None, _doc("S3 endpoint URL")] = None
    region: Annotated[str | None, _doc("S3 region")] = None
    path_style: Annotated[bool, _doc("S3 path-style addressing")] = True
    credentials: Annotated[str | None, _doc("file with AWS_ACCESS_KEY_ID= and AWS_SECRET_ACCESS_KEY= lines (mode 0600)")] = None
    recipients: Annotated[list[str], _doc("age public keys; the identity stays offline")] = msgspec.field(default_factory=list)
    full_every: Annotated[str, _doc("a full send at least this often, bounding chain length")] = "30d"
    part_size_mib: Annotated[int, _doc("size of each uploaded part", ge=1, le=4096)] = 64
    upload_concurrency: Annotated[int, _doc("S3: pieces of 5 MiB sent at once while the next part is encrypted (memory about (N + 1) x 5 MiB; more fills a long fat link)", ge=1, le=64)] = 4
    mac_key: Annotated[str, _doc("key file that authenticates offsite manifests (0600, made while the bucket is empty; keep a copy with the age identity: once restore points exist, a missing key is an error)")] = "/etc/subvault/offsite.mac"
    object_lock_days: Annotated[Annotated[int, Meta(ge=1)] | None, _doc("S3 Object Lock: lock each object while its chain may be kept, plus this many days")] = None

    def __post_init__(self) -> None:
        R.fail(R.name(self.name), self._reserved(), R.retention("keep", self.keep), *self._type_problems())

    def _reserved(self) -> str | None:
        if self.name == "local":
            return 'name: "local" is reserved: `--from local` means this host (expected another name)'
        return None

    def _type_problems(self) -> list[str | None]:
        url = self.url
        other = _OBJECT_ONLY if self.type == "btrfs" else _BTRFS_ONLY
        problems: list[str | None] = [
            f'{key}: applies only to {"object" if self.type == "btrfs" else "btrfs"} targets (remove it, or check `type`)'
            for key in other if getattr(self, key) != _TARGET_DEFAULTS[key]
        ]
        if self.type == "btrfs":
            if url.startswith("ssh://"):
                return [*problems, R.ssh_url(url, "ssh://user@host:22/path")]
            if not url.startswith("/"):
                return [*problems, f'url: "{url}" is not a btrfs target (expected "/mnt/usb/backup" or "ssh://user@host:22/path")']
            try:
                R.abs_path("url", url)
            except ValueError as exc:
                problems.append(str(exc))
            return problems
        problems.append(R.duration("full_every", self.full_every, positive=True))
        problems.append(R.object_url(url))
        if not self.recipients:
            problems.append('recipients: none given (expected at least one age public key, "age1…")')
        problems += [R.recipient(i, r) for i, r in enumerate(self.recipients)]
        return problems

    def storage(self) -> tuple[str, ...]:
        """Where this target's data lives, normalised: two targets with the same storage would prune each other."""

        if self.url.startswith("/"):
            return ("local", R.norm(self.url))
        parts = urlsplit(self.url)
        if parts.scheme == "ssh":
            # the user does not matter (same disk); a URL without a port means ssh's default
            return ("ssh", (parts.hostname or "").lower(), str(R.port(parts) or 22), R.norm(parts.path))
        if parts.scheme == "file":
            return ("file", R.norm(parts.path))
        return (parts.scheme, (self.endpoint or "").rstrip("/").lower(), parts.netloc, R.norm("/" + parts.path))


_OBJECT_ONLY = ("endpoint", "region", "credentials", "recipients", "full_every", "part_size_mib", "upload_concurrency", "object_lock_days")
_BTRFS_ONLY = ("compress", "append_only", "ssh_identity", "ssh_cipher", "ssh_options", "parallel")
_TARGET_DEFAULTS = {f.name: (f.default_factory() if f.default_factory is not msgspec.NODEFAULT else f.default)
                    for f in msgspec.structs.fields(TargetConf) if f.name in _OBJECT_ONLY + _BTRFS_ONLY}


class SourceSubvolumeConf(Strict):
    name: Annotated[str, _doc("the subvolume's name (its directory on this host)")]
    path: Annotated[str, _doc("its path on the source host (snapshots are read from <path>/.snapshots)")]

    def __post_init__(self) -> None:
        R.fail(*_name_and_path(self))


class SourceConf(Strict):
    """Pull mode: this host (the target) pulls from a server whose key only allows `serve --send-only`."""

    name: Annotated[str, _doc("the source host's name; its replicas live under <dest>/<name>/")]
    url: Annotated[str, _doc("ssh://[user@]host[:port]/ of the source")]
    dest: Annotated[str, _doc("local btrfs directory the replicas go to")]
    keep: Annotated[str, _doc("retention of the pulled replicas")] = "24h 8d 5w"
    subvolume: Annotated[list[SourceSubvolumeConf], _doc("the source's subvolumes to pull")] = msgspec.field(default_factory=list)
    compress: Annotated[Literal["none", "zstd"], _doc("compress the stream on the wire")] = "none"
    ssh_identity: Annotated[str | None, _doc("ssh private key file")] = None
    ssh_cipher: Annotated[str | None, _doc('ssh cipher, e.g. "aes128-gcm@openssh.com"')] = None
    ssh_options: Annotated[list[str], _doc('extra "-o" options')] = msgspec.field(default_factory=list)
    stall_minutes: Annotated[float, _doc("a transfer with no bytes for this long is stopped", gt=0, le=10080)] = 10.0
    puller: Annotated[str | None, _doc("name this host's incremental bases are recorded under on the source (its key: `serve --send-only --puller NAME`); default: this host's short name")] = None

    def __post_init__(self) -> None:
        problems = [R.name(self.name), R.retention("keep", self.keep), R.ssh_url(self.url, "ssh://user@host:22/")]
        if self.puller is not None:  # it names a file on the source and a word of its forced command
            problems.append(R.name(self.puller, "puller"))
        try:
            self.dest = R.abs_path("dest", self.dest)
        except ValueError as exc:
            problems.append(str(exc))
        R.fail(*problems)


class DrConf(Strict):
    capture_dir: Annotated[str, _doc("where `dr capture` stores the layout; must be inside a replicated subvolume")] = "/var/lib/subvault/dr"
    disks: Annotated[list[str], _doc("disks to capture (default: those under the configured subvolumes)")] = msgspec.field(default_factory=list)
    fstab: Annotated[str, _doc("the fstab recorded and checked by drill")] = "/etc/fstab"
    boot_dirs: Annotated[list[str], _doc("boot directories restored after the subvolumes")] = msgspec.field(default_factory=lambda: ["/boot", "/boot/efi"])
    drill_dir: Annotated[str, _doc("where drill puts its sparse disk image and mounts")] = "/var/tmp/subvault-drill"
    boot: Annotated[bool, _doc("every drill also boots the restored machine in QEMU (as `drill --boot`)")] = False
    boot_method: Annotated[Literal["auto", "direct", "firmware"], _doc("firmware (OVMF/SeaBIOS through the restored bootloader), direct (restored kernel + initramfs), or auto")] = "auto"
    boot_timeout: Annotated[int, _doc("seconds the booted machine has to reach its milestone")] = 300
    boot_milestone: Annotated[str, _doc("regex on the serial console that means booted (default: multi-user.target or a login prompt)")] = ""
    boot_ports: Annotated[list[int], _doc("TCP ports that must answer after the milestone (through 127.0.0.1 forwards only)")] = msgspec.field(default_factory=list)
    boot_command: Annotated[str, _doc("a command run over the serial console after the milestone")] = ""
    boot_expect: Annotated[str, _doc("regex the boot_command's output must match")] = ""

    def __post_init__(self) -> None:
        problems: list[str | None] = []
        for key in ("capture_dir", "drill_dir"):
            try:
                setattr(self, key, R.abs_path(key, getattr(self, key)))
            except ValueError as exc:
                problems.append(str(exc))
        R.fail(*problems, *boot_value_problems(self.boot_timeout, self.boot_ports, self.boot_milestone, self.boot_command or None, self.boot_expect,
                                   names=BOOT_KEYS))


BOOT_KEYS = {"timeout": "boot_timeout", "ports": "boot_ports", "milestone": "boot_milestone", "command": "boot_command", "expect": "boot_expect"}


class NotifyConf(Strict):
    urls: Annotated[list[str], _doc("Apprise URLs (tgram://, json://, mailto://, …)")] = msgspec.field(default_factory=list)
    urls_file: Annotated[str | None, _doc("file with more Apprise URLs, one per line (mode 0600): keeps bot tokens out of this file")] = None
    ping: Annotated[str | None, _doc("dead-man switch URL, healthchecks.io style")] = None

    def __post_init__(self) -> None:
        # The shape is checked here; Apprise itself checks each URL in `config check`,
        # `check` and before notifying (importing it here would slow every command).
        problems = [f'urls[{i}]: not an Apprise URL (expected e.g. "tgram://BOT_TOKEN/CHAT_ID")' for i, url in enumerate(self.urls) if "://" not in url]
        if self.ping is not None and not self.ping.startswith(("http://", "https://")):
            problems.append('ping: not an http(s) URL (expected e.g. "https://hc-ping.com/UUID")')
        R.fail(*problems)


class FluxConf(Strict):
    kubeconfig: Annotated[str, _doc("kubeconfig used to suspend and resume Flux")]
    namespaces: Annotated[list[str] | None, _doc("limit suspension to these namespaces (default: all)")] = None
    kinds: Annotated[list[Literal["Kustomization", "HelmRelease"]], _doc("Flux kinds to suspend (at least one: [flux] off is said with --flux off)", min_length=1)] = msgspec.field(
        default_factory=lambda: ["Kustomization", "HelmRelease"]
    )
    labels: Annotated[dict[str, str], _doc("only objects with these labels (default: all)")] = msgspec.field(default_factory=dict)
    node: Annotated[str | None, _doc("node whose pods get Velero hooks (default: this host's name)")] = None
    wait_seconds: Annotated[float, _doc("bounded wait for reconciles in flight", ge=0, le=86400)] = 120.0
    auto_resume_seconds: Annotated[float, _doc("systemd timer that resumes Flux if pre-change dies", ge=60, le=30 * 86400)] = 3600.0
    pod_hooks: Annotated[bool, _doc("run Velero-style pod hooks (pre/post.hook.backup.velero.io)")] = True


class HookConf(Strict):
    when: Annotated[Literal["pre-snapshot", "post-snapshot"], _doc("when the hook runs")]
    run: Annotated[list[str], _doc("argv, run without a shell", min_length=1)]
    timeout: Annotated[float, _doc("seconds before the hook is stopped", gt=0, le=86400)] = 30.0
    on_error: Annotated[Literal["fail", "continue"], _doc("a failing hook aborts (fail) or is only reported")] = "fail"

    def __post_init__(self) -> None:
        if not all(arg.strip() for arg in self.run):
            raise ValueError(f"run: {self.run!r} has an empty word (expected a program and its arguments, none blank)")

    @property
    def name(self) -> str:
        return f"hook {' '.join(self.run)}"


class CheckConf(Strict):
    slack: Annotated[str, _doc("tolerated lateness beyond each layer's cadence")] = "1h"
    drill_max_age: Annotated[str, _doc("warn when the last successful drill is older")] = "30d"
    min_free_percent: Annotated[float, _doc("warn below this much free space", ge=0, le=100)] = 10.0
    verify_max_age: Annotated[str, _doc("warn when an object target's last `subvault verify` is older")] = "30d"

    def __post_init__(self) -> None:
        R.fail(
            R.duration("slack", self.slack),
            R.duration("drill_max_age", self.drill_max_age),
            R.duration("verify_max_age", self.verify_max_age),
        )


# The command that uses one type of target, told it was given a target of the other type.
_OTHER_KIND = {
    "btrfs": "target {name} is an object target; `subvault replicate` sends to btrfs targets (use `subvault offsite --target {name}`)",
    "object": "target {name} is a btrfs target; `subvault offsite` uploads to object targets",
}


class Config(Strict):
    defaults: Defaults = msgspec.field(default_factory=Defaults)
    subvolume: list[SubvolumeConf] = msgspec.field(default_factory=list)
    exclude: list[ExcludeConf] = msgspec.field(default_factory=list)
    target: list[TargetConf] = msgspec.field(default_factory=list)
    notify: NotifyConf = msgspec.field(default_factory=NotifyConf)
    flux: FluxConf | None = None
    hook: list[HookConf] = msgspec.field(default_factory=list)
    check: CheckConf = msgspec.field(default_factory=CheckConf)
    source: list[SourceConf] = msgspec.field(default_factory=list)
    dr: DrConf | None = None

    def problems(self, declared_targets: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """Return the rules that span tables, each "where: what is wrong (expected …)".

        `load.py` runs them after every table validated on its own (tables that failed are
        left out; their names are in declared_targets, so they are not reported again
        as unknown).
        """
        problems = R.unique("subvolume", [s.name for s in self.subvolume])
        problems += R.unique("subvolume path", [s.path for s in self.subvolume])
        problems += R.unique("target", [t.name for t in self.target])
        problems += R.unique("source", [s.name for s in self.source])
        for src in self.source:  # two of them would share one replica directory and prune each other
            problems += [f'source "{src.name}": {p}' for p in R.unique("subvolume", [s.name for s in src.subvolume])]
            problems += [f'source "{src.name}": {p}' for p in R.unique("subvolume path", [s.path for s in src.subvolume])]
        known = {t.name for t in self.target}
        declared = known | set(declared_targets)
        for t in self.defaults.targets:
            if t not in declared:
                problems.append(f'defaults: targets: "{t}" is not a configured [[target]] (known: {", ".join(sorted(known)) or "none"})')
        for s in self.subvolume:
            for t in s.targets or []:
                if t not in declared:
                    problems.append(f'subvolume "{s.name}": targets: "{t}" is not a configured [[target]]')
        protected = {s.path for s in self.subvolume}
        for e in self.exclude:
            if e.path in protected:
                problems.append(f'exclude "{e.path}" is also a [[subvolume]]; keep one of them')
        first: dict[tuple[str, ...], TargetConf] = {}
        for target in self.target:
            other = first.setdefault(target.storage(), target)
            if other is not target:
                problems.append(
                    f'target "{target.name}": url: "{target.url}" is the same storage as target "{other.name}" ("{other.url}"), '
                    "and their retentions would prune each other (expected one target per storage)"
                )
        return problems

    # ---- derived views (no I/O) ----
    def targets_of(self, sub: SubvolumeConf) -> list[str]:
        return list(sub.targets if sub.targets is not None else self.defaults.targets)

    def timeline_of(self, sub: SubvolumeConf) -> str:
        return sub.timeline or self.defaults.timeline

    def prechange_keep_of(self, sub: SubvolumeConf) -> int:
        return sub.prechange_keep if sub.prechange_keep is not None else self.defaults.prechange_keep

    def get_subvolume(self, name: str) -> SubvolumeConf:
        for s in self.subvolume:
            if s.name == name:
                return s
        raise NotFound(f'no subvolume named "{name}" in the config (known: {", ".join(s.name for s in self.subvolume)})')

    def get_target(self, name: str) -> TargetConf:
        for t in self.target:
            if t.name == name:
                return t
        raise NotFound(f'no target named "{name}" in the config (known: {", ".join(t.name for t in self.target) or "none"})')

    def targets_by_type(self, kind: Literal["btrfs", "object"], only: str | None = None) -> list[TargetConf]:
        """The targets of one type, or just the one named `only`. Raise NotFound, or UsageError if it is of the other type."""
        if not only:
            return [t for t in self.target if t.type == kind]
        t = self.get_target(only)
        if t.type != kind:
            raise UsageError(_OTHER_KIND[kind].format(name=only))
        return [t]
